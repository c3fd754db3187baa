"""The orchestration core: everything a command does, without Discord.

Front-ends (the Discord bot, the `orch` CLI) call `Orchestrator` methods and render the typed results.
"""
