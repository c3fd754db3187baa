"""/story update: move a story through todo, in_progress, done, blocked. /story retry gives a blocked or failed
story back to the agents; /story log shows its agent attempts and the end of the latest one's output."""
import discord
from discord import app_commands
from discord.ext import commands

from orchestration.inputs import SETTABLE_STATUSES

from .. import render
from ..handling import handled, send
from ..permissions import Access
from ._shared import BaseCog
from .tickets import close_threads

# The statuses a person sets (blocked_awaiting_feedback belongs to tickets): the core's list.
STATUSES = [app_commands.Choice(name=s.value, value=s.value) for s in SETTABLE_STATUSES]


@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
class StoryCog(BaseCog, commands.GroupCog, group_name="story", group_description="Work on a story"):
    @app_commands.command(name="update", description="Set a story's status")
    @app_commands.describe(story="The story (type its ID or words of its title)", status="Its new status")
    @app_commands.choices(status=STATUSES)
    @handled
    async def update(self, interaction: discord.Interaction, story: str, status: app_commands.Choice[str]) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.update_story(project, story, status.value, by=interaction.user.name)
        await self._answer(interaction, project, result, f"{result.story.id} was finished")

    @app_commands.command(name="retry", description="Give a blocked or failed story back to the agents, afresh")
    @app_commands.describe(story="The story (type its ID or words of its title)")
    @handled
    async def retry(self, interaction: discord.Interaction, story: str) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.retry_story(project, story, by=interaction.user.name)
        await self._answer(interaction, project, result,
                           f"{result.story.id} was retried as it is by {interaction.user.name}")

    async def _answer(self, interaction: discord.Interaction, project: str, result, why: str) -> None:
        """The reply; then, if the change closed open tickets (the story finished, or retried), say so in their
        threads."""
        await send(interaction, embed=render.story_changed(result))
        if ended := [*result.cascade.tickets_resolved, *result.cascade.tickets_closed]:
            await close_threads(self.bot, project, ended, why)

    @app_commands.command(name="log", description="A story's agent attempts and the end of the latest one's output")
    @app_commands.describe(story="The story (type its ID or words of its title)")
    @handled
    async def log(self, interaction: discord.Interaction, story: str) -> None:
        project = await self.project(interaction, Access.everyone)
        result = await self.orch.story_log(project, story)
        await send(interaction, embed=render.story_log(result, self.server_paths(interaction)), ephemeral=True)

    @update.autocomplete("story")
    @retry.autocomplete("story")
    @log.autocomplete("story")
    async def _stories(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.story_choices(interaction, current)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(StoryCog(bot))
