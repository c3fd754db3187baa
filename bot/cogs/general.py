"""/feedback, /state, /health."""
import discord
from discord import app_commands
from discord.ext import commands

from orchestration.models import TEXT_MAX

from .. import render
from ..handling import handled, send
from ..permissions import Access, is_admin
from ..routing import guild_of
from ._shared import BaseCog


class GeneralCog(BaseCog):
    @app_commands.command(name="feedback", description="Close the sprint review with your feedback")
    @app_commands.describe(text="What went well, what to change",
                           changes_requested="True: back to the backlog for changes instead of closing the cycle")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def feedback(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, TEXT_MAX],
                       changes_requested: bool = False) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.feedback(project, text, by=interaction.user.name, changes_requested=changes_requested)
        await send(interaction, embed=render.feedback_given(result))

    @app_commands.command(name="state", description="Where this channel's project stands and what can run now")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def state(self, interaction: discord.Interaction) -> None:
        project = await self.project(interaction, Access.everyone)
        await send(interaction, embed=render.state_view(await self.orch.state(project)))

    @app_commands.command(name="health", description="Whether this server's projects are in good shape")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def health(self, interaction: discord.Interaction) -> None:
        self.allow(interaction, Access.everyone)
        report = await self.orch.health(guild_of(interaction))  # this server's projects only
        # bot.latency is the last heartbeat's round trip: NaN before the first one (rendered "n/a").
        await send(interaction, embed=render.health(report, self.bot.metrics.snapshot(), self.bot.latency,
                                                    show_paths=is_admin(interaction, self.bot.config.discord)))


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(GeneralCog(bot))
