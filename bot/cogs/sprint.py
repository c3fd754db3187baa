"""/sprint plan | start | status | pause | resume | review. Status comes with a burndown chart, the agents at work
and the sprint branch; review lists the branch's commits, for a person to merge or open a pull request from."""
import asyncio
import io
from typing import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.inputs import id_list
from orchestration.models import GOAL_MAX
from orchestration.results import SprintView
from orchestration.sprint_rules import DEFAULT_CAPACITY

from .. import render
from ..chart import burndown_png
from ..handling import defer, handled, send
from ..permissions import Access
from ._shared import BaseCog


@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
class SprintCog(BaseCog, commands.GroupCog, group_name="sprint", group_description="Plan and run sprints"):
    @app_commands.command(name="plan", description="Plan the next sprint: given stories, or an automatic pick")
    @app_commands.describe(stories="Story IDs separated by spaces or commas; empty: pick by priority",
                           goal="The sprint's goal",
                           capacity=f"Points the automatic pick fills (default {DEFAULT_CAPACITY}); kept with the "
                                    "sprint")
    @handled
    async def plan(self, interaction: discord.Interaction, stories: str | None = None,
                   goal: app_commands.Range[str, 1, GOAL_MAX] | None = None,
                   capacity: app_commands.Range[int, 1] | None = None) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.plan_sprint(project, id_list(stories) or None, goal, capacity=capacity,
                                             by=interaction.user.name)
        await send(interaction, embed=render.sprint_planned(result))

    @app_commands.command(name="start", description="Start the planned sprint")
    @handled
    async def start(self, interaction: discord.Interaction) -> None:
        await self._step(interaction, self.orch.start_sprint, "{} started")

    @app_commands.command(name="status", description="Progress of the current sprint, with its burndown chart")
    @handled
    async def status(self, interaction: discord.Interaction) -> None:
        project = await self.project(interaction, Access.everyone)
        result = await self.orch.sprint_status(project)  # a refusal is still answered privately
        await defer(interaction)
        png = await asyncio.to_thread(burndown_png, result)
        embed = render.sprint_view(result)
        embed.set_image(url="attachment://burndown.png")
        await send(interaction, embed=embed, file=discord.File(io.BytesIO(png), filename="burndown.png"))

    @app_commands.command(name="pause", description="Pause the active sprint")
    @handled
    async def pause(self, interaction: discord.Interaction) -> None:
        await self._step(interaction, self.orch.pause_sprint, "{} paused")

    @app_commands.command(name="resume", description="Resume the paused sprint")
    @handled
    async def resume(self, interaction: discord.Interaction) -> None:
        await self._step(interaction, self.orch.resume_sprint, "{} resumed")

    @app_commands.command(name="review", description="End the sprint (early if need be) and open its review")
    @handled
    async def review(self, interaction: discord.Interaction) -> None:
        await self._step(interaction, self.orch.review_sprint, "{} in review: /feedback closes it", commits=True)

    async def _step(self, interaction: discord.Interaction, step: Callable[..., Awaitable[SprintView]],
                    title: str, commits: bool = False) -> None:
        """start, pause, resume, review: one orchestrator call on the channel's project, the sprint as reply
        (`title` names the sprint with {}; with `commits`, the sprint branch's commits are listed)."""
        project = await self.project(interaction, Access.member)
        result = await step(project, by=interaction.user.name)
        embed = render.sprint_view(result, title.format(result.sprint.id), commits, self.server_paths(interaction))
        await send(interaction, embed=embed)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(SprintCog(bot))
