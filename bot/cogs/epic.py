"""/epic: create an epic in the channel's project (with plan:True, the planning agent breaks it into stories:
bot/cogs/planning.py)."""
import discord
from discord import app_commands
from discord.ext import commands

from orchestration.errors import OrchError

from .. import render
from ..handling import handled, send
from ..permissions import Access
from ._shared import BaseCog


class EpicCog(BaseCog):
    @app_commands.command(name="epic", description="Create an epic in this channel's project")
    @app_commands.describe(title="A short title", description="What the epic is about",
                           plan="Ask the planning agent to break it into stories (posted here to approve)")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def epic(self, interaction: discord.Interaction, title: str, description: str | None = None,
                   plan: bool = False) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.create_epic(project, title, description or "", by=interaction.user.name)
        embed = render.epic_created(result)
        if plan:
            try:
                await self.orch.plan_epic(project, result.epic.id, by=interaction.user.name)
                embed.add_field(name="Plan", value="The planner is at work; its proposals are posted here.")
            except OrchError as error:  # the epic is made all the same: say why it is not planned
                embed.add_field(name="Plan", value=render.cut(f"Not planned: {error.message}", 1000))
        await send(interaction, embed=render.fit(embed))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(EpicCog(bot))
