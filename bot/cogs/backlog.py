"""/backlog view | add_story | prioritize | remove | depend | next. The view pages with Previous / Next buttons that
outlive a restart; add_story without a title opens a form; next is the work queue (orchestration/queue.py holds its
rules)."""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.errors import OrchError
from orchestration.inputs import criteria_list, id_list
from orchestration.models import (
    CRITERIA_MAX, CRITERION_MAX, POINTS_MAX, TEXT_MAX, TITLE_MAX, Epic, Priority, StoryStatus,
)
from orchestration.results import BacklogPage

from .. import render
from ..forms import INPUT_MAX, Form
from ..handling import handled, send, send_error, send_modal
from ..permissions import Access
from ..routing import project_for
from ._shared import BaseCog

if TYPE_CHECKING:
    from ..client import OrchBot

log = logging.getLogger(__name__)

PAGER = (r"backlog:(?P<turn>prev|next):(?P<project>[a-z0-9][a-z0-9-]{0,39}):(?P<page>[0-9]+):(?P<epic>E-[0-9]+|-)"
         r":(?P<status>[a-z_]+|-):(?P<stamp>[0-9a-f]+)")


# -- the pager's buttons (they outlive a restart) ------------------------------------------------------------
class PageButton(discord.ui.DynamicItem[discord.ui.Button], template=PAGER):
    """Previous / Next under a backlog page. The custom_id carries what a click needs (project, the page it
    turns to, the filters, and the stamp of the backlog as shown), so a click works after a restart. Read-only:
    anyone in the project's channel may page."""

    def __init__(self, turn: str, project: str, page: int, epic: str | None, status: str | None, stamp: str,
                 disabled: bool = False) -> None:
        previous = turn == "prev"
        super().__init__(discord.ui.Button(
            label="Previous" if previous else "Next", emoji="◀️" if previous else "▶️", disabled=disabled,
            style=discord.ButtonStyle.secondary,
            custom_id=f"backlog:{turn}:{project}:{page}:{epic or '-'}:{status or '-'}:{stamp}"))
        self.project, self.page, self.epic, self.status, self.stamp = project, page, epic, status, stamp

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> PageButton:
        def given(value: str) -> str | None:
            return None if value == "-" else value
        return cls(match["turn"], match["project"], int(match["page"]), given(match["epic"]),
                   given(match["status"]), match["stamp"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Answered at once (a deferred update), then the page as the backlog is now: the page asked for (the
        last one if fewer remain); if the backlog changed since this page was shown, the page says so."""
        bot: OrchBot = interaction.client  # type: ignore[assignment]
        try:
            await interaction.response.defer()
            if await project_for(interaction, bot.orchestrator) != self.project:
                raise OrchError("This backlog belongs to another project's channel.")
            page = await bot.orchestrator.view_backlog(self.project, self.epic, self.status, self.page, nearest=True)
            changed = "The backlog changed since the page before: this is how it is now." \
                if page.stamp != self.stamp else ""
            await interaction.edit_original_response(embed=render.backlog_page(page, changed), view=pager(page),
                                                     allowed_mentions=render.NO_MENTIONS)
        except OrchError as error:  # e.g. the project was unregistered meanwhile
            await send_error(interaction, error)
        except Exception as exc:  # the click still gets an answer; the traceback goes to the log
            log.error("backlog pager of %s failed: %r", self.project, exc, exc_info=exc)
            await send(interaction, embed=render.crash_embed(), ephemeral=True)


def pager(page: BacklogPage) -> discord.ui.View | None:
    """Previous / Next for a page of several (none for a single page); no time-out, the buttons are persistent."""
    if page.pages <= 1:
        return None
    view = discord.ui.View(timeout=None)
    for turn, to, off in (("prev", page.page - 1, page.page <= 1), ("next", page.page + 1, page.page >= page.pages)):
        view.add_item(PageButton(turn, page.project, to, page.epic_filter, page.status_filter, page.stamp, off))
    return view


# -- the form /backlog add_story opens without a title -----------------------------------------------------------
class StoryForm(Form):
    """Title, description and acceptance criteria (one a line) in paragraph fields; the command's other options
    (epic, points, priority, dependencies) come along. Submitting adds the story like the command with a title."""

    command = "backlog add_story"

    def __init__(self, cog: BacklogCog, project: str, epic: Epic, points: int | None, priority: Priority,
                 depends_on: str | None, description: str | None, criteria: str | None) -> None:
        super().__init__(f"New story in {epic.id} · {epic.title}", cog, project)
        self.epic, self.points, self.priority, self.depends_on = epic.id, points, priority, depends_on
        self.field("title", "Title", "", required=True, max_length=TITLE_MAX)
        self.field("description", "Description", description or "", long=True, max_length=TEXT_MAX,
                   placeholder="What it takes, how we know it is done")
        self.field("criteria", "Acceptance criteria, one a line", "\n".join(criteria_list(criteria)), long=True,
                   placeholder=f"At most {CRITERIA_MAX}, each up to {CRITERION_MAX} characters")

    async def submitted(self, interaction: discord.Interaction, changed: dict[str, Any]) -> None:
        typed = self.values()  # every field counts, changed or not: the story is new
        result = await self.cog.orch.add_story(
            self.project, self.epic, typed["title"], typed["description"], self.points, self.priority,
            acceptance_criteria=criteria_list(typed["criteria"], semicolons=False),
            depends_on=id_list(self.depends_on), by=interaction.user.name)
        await send(interaction, embed=render.story_changed(result))


@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
class BacklogCog(BaseCog, commands.GroupCog, group_name="backlog", group_description="The project's backlog"):
    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PageButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PageButton)

    @app_commands.command(name="view", description="The backlog, highest priority first")
    @app_commands.describe(epic="Only this epic's stories (ID or words of its title)",
                           status="Only stories with this status")
    @handled
    async def view(self, interaction: discord.Interaction, epic: str | None = None,
                   status: StoryStatus | None = None) -> None:
        project = await self.project(interaction, Access.everyone)
        page = await self.orch.view_backlog(project, epic, status.value if status else None, page=1)
        await send(interaction, embed=render.backlog_page(page), view=pager(page))

    @app_commands.command(name="add_story", description="Add a story to an epic (no title: type it in a form)")
    @app_commands.describe(epic="The epic (ID or words of its title)",
                           title="A short title; leave out to type title, description and criteria in a form",
                           description="What it takes, how we know it is done", points=f"Estimate, 0 to {POINTS_MAX}",
                           priority="critical, high, medium (default) or low",
                           depends_on="IDs of the stories it waits for, separated by spaces or commas",
                           criteria=f"Acceptance criteria separated by ; (at most {CRITERIA_MAX})")
    @handled
    async def add_story(self, interaction: discord.Interaction, epic: str,
                        title: app_commands.Range[str, 1, TITLE_MAX] | None = None,
                        description: app_commands.Range[str, 1, TEXT_MAX] | None = None,
                        points: app_commands.Range[int, 0, POINTS_MAX] | None = None,
                        priority: Priority = Priority.medium, depends_on: str | None = None,
                        criteria: app_commands.Range[str, 1, INPUT_MAX] | None = None) -> None:
        project = await self.project(interaction, Access.member)
        if title is None:  # the form must be the first answer: only a quick check of the epic before it
            [parent] = (await self.orch.list_epics(project, epic)).epics
            await send_modal(interaction, StoryForm(self, project, parent.epic, points, priority, depends_on,
                                                    description, criteria), "Run the command again, or give the "
                             "title as an option.")
            return
        result = await self.orch.add_story(project, epic, title, description or "", points, priority,
                                           acceptance_criteria=criteria_list(criteria),
                                           depends_on=id_list(depends_on), by=interaction.user.name)
        await send(interaction, embed=render.story_changed(result))

    @app_commands.command(name="prioritize", description="Change a story's priority")
    @app_commands.describe(story="The story (ID or words of its title)", priority="Its new priority")
    @handled
    async def prioritize(self, interaction: discord.Interaction, story: str, priority: Priority) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.prioritize_story(project, story, priority, by=interaction.user.name)
        await send(interaction, embed=render.story_changed(result))

    @app_commands.command(name="remove", description="Remove a story from the backlog")
    @app_commands.describe(story="The story (ID or words of its title)")
    @handled
    async def remove(self, interaction: discord.Interaction, story: str) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.remove_story(project, story, by=interaction.user.name)
        await send(interaction, embed=render.story_changed(result))

    @app_commands.command(name="depend", description="Set the stories a story waits for (replaces them)")
    @app_commands.describe(story="The story (type its ID or words of its title)",
                           on="IDs of the stories it waits for, separated by spaces or commas; leave out to clear")
    @handled
    async def depend(self, interaction: discord.Interaction, story: str, on: str | None = None) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.set_dependencies(project, story, id_list(on), by=interaction.user.name)
        await send(interaction, embed=render.story_changed(result))

    @app_commands.command(name="next", description="The next story to work on, and what is ready or waits")
    @handled
    async def next_story(self, interaction: discord.Interaction) -> None:
        project = await self.project(interaction, Access.everyone)
        result = await self.orch.next_story(project)
        await send(interaction, embed=render.queue_view(result))

    @view.autocomplete("epic")
    @add_story.autocomplete("epic")
    async def _epics(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.epic_choices(interaction, current)

    @prioritize.autocomplete("story")
    @remove.autocomplete("story")
    @depend.autocomplete("story")
    async def _stories(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.story_choices(interaction, current)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(BacklogCog(bot))
