"""One module per command group; each has an async `setup(bot)` that adds its cog."""
