"""/epic create | list | edit. Create makes an epic in the channel's project (with plan:True, the planning agent
breaks it into stories: bot/cogs/planning.py); list shows each with its stories by status and its points; edit
changes its title and description in a form."""
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.errors import OrchError
from orchestration.models import TEXT_MAX, TITLE_MAX, Epic

from .. import render
from ..forms import Form
from ..handling import handled, send, send_modal
from ..permissions import Access
from ._shared import BaseCog


class EpicForm(Form):
    command = "epic edit"

    def __init__(self, cog: BaseCog, project: str, epic: Epic) -> None:
        super().__init__(f"Edit {epic.id}", cog, project)
        self.epic = epic.id
        self.field("title", "Title", epic.title, required=True, max_length=TITLE_MAX)
        self.field("description", "Description", epic.description, long=True, max_length=TEXT_MAX)

    async def submitted(self, interaction: discord.Interaction, changed: dict[str, Any]) -> None:
        result = await self.cog.orch.edit_epic(self.project, self.epic, by=interaction.user.name, **changed)
        await send(interaction, embed=render.epic_edited(result))


@app_commands.guild_only()  # projects live in server channels: not offered in DMs
class EpicCog(BaseCog, commands.GroupCog, group_name="epic", group_description="The project's epics"):
    @app_commands.command(name="create", description="Create an epic in this channel's project")
    @app_commands.describe(title="A short title", description="What the epic is about",
                           plan="Ask the planning agent to break it into stories (posted here to approve)")
    @handled
    async def create(self, interaction: discord.Interaction, title: str, description: str | None = None,
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
        await send(interaction, embed=embed)

    @app_commands.command(name="list", description="The epics, with their stories by status and their points")
    @handled
    async def list_(self, interaction: discord.Interaction) -> None:
        project = await self.project(interaction, Access.everyone)
        await send(interaction, embed=render.epic_list(await self.orch.list_epics(project)))

    @app_commands.command(name="edit", description="Edit an epic's title or description")
    @app_commands.describe(epic="The epic (type its ID or words of its title)")
    @handled
    async def edit(self, interaction: discord.Interaction, epic: str) -> None:
        project = await self.project(interaction, Access.member)
        [current] = (await self.orch.list_epics(project, epic)).epics
        await send_modal(interaction, EpicForm(self, project, current.epic))

    @edit.autocomplete("epic")
    async def _epics(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.epic_choices(interaction, current)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(EpicCog(bot))
