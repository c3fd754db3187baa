"""/epic: create an epic in the channel's project."""
import discord
from discord import app_commands
from discord.ext import commands

from .. import render
from ..handling import handled, send
from ..permissions import Access
from ._shared import BaseCog


class EpicCog(BaseCog):
    @app_commands.command(name="epic", description="Create an epic in this channel's project")
    @app_commands.describe(title="A short title", description="What the epic is about")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def epic(self, interaction: discord.Interaction, title: str, description: str | None = None) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.create_epic(project, title, description or "", by=interaction.user.name)
        await send(interaction, embed=render.epic_created(result))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(EpicCog(bot))
