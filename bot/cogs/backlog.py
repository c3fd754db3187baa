"""/backlog view | add_story | prioritize | remove | depend | next. The view pages with Previous / Next buttons;
next is the work queue (orchestration/queue.py holds its rules)."""
import logging

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.errors import OrchError
from orchestration.inputs import id_list
from orchestration.models import Priority, StoryStatus
from orchestration.results import BacklogPage
from orchestration.service import Orchestrator

from .. import render
from ..handling import handled, send, send_error
from ..permissions import Access
from ._shared import BaseCog

log = logging.getLogger(__name__)


class BacklogPager(discord.ui.View):
    """Previous / Next over orchestrator.view_backlog pages. Read-only, so anyone in the channel may page."""

    def __init__(self, orch: Orchestrator, page: BacklogPage, epic: str | None, status: str | None) -> None:
        super().__init__(timeout=600)
        self.orch, self.project, self.epic, self.status = orch, page.project, epic, status
        self.show(page)

    message: discord.InteractionMessage | None = None

    async def on_timeout(self) -> None:
        """Grey the buttons out once they stop working, rather than let a click fail."""
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                pass  # deleted meanwhile, or the token expired: nothing to tidy

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item) -> None:
        """An unexpected failure of a click: logged with its traceback, and the click still gets an answer."""
        log.error("backlog pager of %s failed: %r", self.project, error, exc_info=error)
        await send(interaction, embed=render.crash_embed(), ephemeral=True)

    def show(self, page: BacklogPage) -> None:
        self.page, self.pages = page.page, page.pages
        self.previous.disabled = page.page <= 1
        self.next.disabled = page.page >= page.pages

    async def _turn(self, interaction: discord.Interaction, page: int) -> None:
        try:
            result = await self.orch.view_backlog(self.project, self.epic, self.status, page=page)
        except OrchError as error:  # e.g. stories removed meanwhile: fewer pages now
            await send_error(interaction, error)
            return
        self.show(result)
        await interaction.response.edit_message(embed=render.backlog_page(result), view=self,
                                                allowed_mentions=render.NO_MENTIONS)

    @discord.ui.button(label="Previous", emoji="◀️", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, _button: discord.ui.Button) -> None:
        await self._turn(interaction, self.page - 1)

    @discord.ui.button(label="Next", emoji="▶️", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, _button: discord.ui.Button) -> None:
        await self._turn(interaction, self.page + 1)


@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
class BacklogCog(BaseCog, commands.GroupCog, group_name="backlog", group_description="The project's backlog"):
    @app_commands.command(name="view", description="The backlog, highest priority first")
    @app_commands.describe(epic="Only this epic's stories", status="Only stories with this status")
    @handled
    async def view(self, interaction: discord.Interaction, epic: str | None = None,
                   status: StoryStatus | None = None) -> None:
        project = await self.project(interaction, Access.everyone)
        status_value = status.value if status else None
        page = await self.orch.view_backlog(project, epic, status_value, page=1)
        pager = BacklogPager(self.orch, page, epic, status_value) if page.pages > 1 else None
        await send(interaction, embed=render.backlog_page(page), view=pager)
        if pager is not None:
            pager.message = await interaction.original_response()

    @app_commands.command(name="add_story", description="Add a story to an epic")
    @app_commands.describe(epic="The epic (ID or words of its title)", title="A short title",
                           description="What it takes, how we know it is done", points="Estimate in points",
                           priority="critical, high, medium (default) or low",
                           depends_on="IDs of the stories it waits for, separated by spaces or commas")
    @handled
    async def add_story(self, interaction: discord.Interaction, epic: str, title: str, description: str | None = None,
                        points: int | None = None, priority: Priority = Priority.medium,
                        depends_on: str | None = None) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.add_story(project, epic, title, description or "", points, priority,
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
