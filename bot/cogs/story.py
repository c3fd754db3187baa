"""/story show: a story whole (criteria, dependencies, tickets, attempts, history); /story edit: its title,
description, acceptance criteria, points and epic in a form; /story update: move a story through todo, in_progress,
done, blocked. /story retry gives a blocked or failed story back to the agents; /story log shows its agent attempts
and the end of the latest one's output."""
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.inputs import SETTABLE_STATUSES, criteria_list, points_of
from orchestration.models import POINTS_MAX, TITLE_MAX, Story

from .. import render
from ..forms import Form
from ..handling import handled, send, send_modal
from ..permissions import Access
from ._shared import BaseCog
from .tickets import close_threads

# The statuses a person sets (blocked_awaiting_feedback belongs to tickets): the core's list.
STATUSES = [app_commands.Choice(name=s.value, value=s.value) for s in SETTABLE_STATUSES]


class StoryForm(Form):
    """/story edit's form: the story's title, description, criteria (one a line), points and epic."""

    command = "story edit"

    def __init__(self, cog: BaseCog, project: str, story: Story) -> None:
        super().__init__(f"Edit {story.id}", cog, project)
        self.story = story.id
        self.field("title", "Title", story.title, required=True, max_length=TITLE_MAX)
        self.field("description", "Description", story.description, long=True)
        self.field("criteria", "Acceptance criteria (one a line)", "\n".join(story.acceptance_criteria), long=True)
        self.field("points", f"Points (0 to {POINTS_MAX}; empty: not estimated)", "" if story.points is None
                   else str(story.points), max_length=3)
        self.field("epic", "Epic (its ID)", story.epic, required=True, max_length=12)

    async def submitted(self, interaction: discord.Interaction, changed: dict[str, Any]) -> None:
        fields: dict[str, Any] = {k: v for k, v in changed.items() if k in ("title", "description", "epic")}
        if "criteria" in changed:
            fields["acceptance_criteria"] = criteria_list(changed["criteria"], semicolons=False)
        if "points" in changed:
            fields["points"] = points_of(changed["points"])
        result = await self.cog.orch.edit_story(self.project, self.story, by=interaction.user.name, **fields)
        await send(interaction, embed=render.story_edited(result))


@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
class StoryCog(BaseCog, commands.GroupCog, group_name="story", group_description="Work on a story"):
    @app_commands.command(name="show", description="A story whole: criteria, dependencies, tickets, attempts, history")
    @app_commands.describe(story="The story (type its ID or words of its title)")
    @handled
    async def show(self, interaction: discord.Interaction, story: str) -> None:
        project = await self.project(interaction, Access.everyone)
        result = await self.orch.story_detail(project, story)
        await send(interaction, embed=render.story_detail(result))

    @app_commands.command(name="edit", description="Edit a story's title, description, criteria, points or epic")
    @app_commands.describe(story="The story (type its ID or words of its title)")
    @handled
    async def edit(self, interaction: discord.Interaction, story: str) -> None:
        project = await self.project(interaction, Access.member)
        current = (await self.orch.story_detail(project, story, history=0)).story
        await send_modal(interaction, StoryForm(self, project, current))

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

    @show.autocomplete("story")
    @edit.autocomplete("story")
    @update.autocomplete("story")
    @retry.autocomplete("story")
    @log.autocomplete("story")
    async def _stories(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.story_choices(interaction, current)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(StoryCog(bot))
