"""Planning an epic from Discord: /plan, /approve, /request_changes (and /epic plan:True), and the proposals the
planner makes, posted in the project's channel with Approve all / Reject all buttons and a menu to approve some.

The buttons and the menu are `DynamicItem`s: their custom_id carries project, epic and plan version
(`plan:approve:shop:E-1:2`), and the bot registers them at start, so a click works on a message posted before a
restart. A click is deferred at once (Discord's 3 s), then decided by the core: the version in the custom_id must
still be the epic's latest (a click on a superseded plan is refused), and a plan decided already answers who
decided it and when. Only members may decide; mentions are off everywhere (planner text is echoed).
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.agents.planning import PlanStatus, PlanView, Proposal
from orchestration.errors import OrchError
from orchestration.models import TEXT_MAX
from orchestration.wording import plural

from .. import render
from ..handling import defer, handled, send, send_error
from ..permissions import Access, require
from ..routing import project_for
from ._shared import BaseCog

if TYPE_CHECKING:
    from ..client import OrchBot

log = logging.getLogger("bot.planning")

PER_PAGE = 8  # proposals per message at most, to keep a page readable; fewer when long ones fill its 6,000 characters
SELECT_MAX = 25  # options Discord allows in a select menu
_IDS = r"(?P<project>[a-z0-9][a-z0-9-]{0,39}):(?P<epic>E-[0-9]+):(?P<version>[0-9]+)"


# -- rendering ---------------------------------------------------------------------------------------------------
def _proposal_field(p: Proposal) -> tuple[str, str]:
    head = f"{p.key} · {p.title}"
    deps = f" · after {', '.join(p.depends_on)}" if p.depends_on else ""
    points = plural(p.points, "point") if p.points is not None else "unestimated"
    lines = [f"{render.PRIORITY_ICON.get(p.priority.value, '')} {p.priority.value} · {points}{deps}"
             + (f" · {p.phase}" if p.phase else "")]
    if p.description:
        lines.append(render.cut(p.description, 300))
    lines += [f"☐ {render.one_line(c, 150)}" for c in p.criteria[:5]]
    return render.one_line(head, render.FIELD_NAME_MAX), render.cut("\n".join(lines), render.FIELD_VALUE_MAX)


def plan_pages(view: PlanView, hidden=()) -> list[discord.Embed]:
    """The plan as embeds, one message each: the overview and the first proposals, then the rest, as many a page
    as fit (at most PER_PAGE): no proposal is cut from the view people approve from."""
    v = view.plan
    title = render.one_line(f"Plan for {view.epic} · {view.epic_title}", render.TITLE_MAX)
    author = f"Planner · version {v.version} · {len(v.proposals)} proposed stories"
    overview = render.cut(render.without_paths(v.plan, hidden), 2000)
    fields = [(name, render.without_paths(value, hidden)) for name, value in map(_proposal_field, v.proposals)]
    room = render.EMBED_TOTAL_MAX - len(title) - len(author) - _FOOTER_ROOM
    chunks = _paged(fields, room - len(overview), room)
    pages = []
    for n, chunk in enumerate(chunks, start=1):
        embed = discord.Embed(title=title, description=(overview if n == 1 else "") or None, colour=render.COLOR_INFO)
        embed.set_author(name=author)
        for name, value in chunk:
            embed.add_field(name=name, value=value, inline=False)
        footer = [f"Page {n} of {len(chunks)}"] if len(chunks) > 1 else []
        if n == len(chunks):  # the page the controls go under
            footer.append(_CONTROLS)
        embed.set_footer(text=" · ".join(footer))
        pages.append(render.fit(embed))  # a safety net: the pages were cut to fit
    return pages


_CONTROLS = "Approve all, reject all, or pick stories below; /request_changes to ask for another plan."
_FOOTER_ROOM = len(f"Page 999 of 999 · {_CONTROLS}")  # the longest footer a page can have


def _paged(fields: list[tuple[str, str]], first_room: int, room: int) -> list[list[tuple[str, str]]]:
    """Fields in pages of at most PER_PAGE whose names and values fit the room left on each page."""
    pages: list[list[tuple[str, str]]] = [[]]
    used = 0
    for name, value in fields:
        size = len(name) + len(value)
        if pages[-1] and (len(pages[-1]) == PER_PAGE or used + size > (first_room if len(pages) == 1 else room)):
            pages.append([])
            used = 0
        pages[-1].append((name, value))
        used += size
    return pages


def plan_message(view: PlanView, hidden=()) -> discord.Embed:
    """What became of a plan: requested, waiting for an answer, failed, approved or rejected."""
    v = view.plan
    if view.action == "approved":
        made = "\n".join(f"{key} → **{story}** · {render.one_line(_title(v, key), 80)}"
                         for key, story in view.created.items())
        embed = discord.Embed(title=render.one_line(f"Plan for {view.epic} approved", render.TITLE_MAX),
                              description=render.cut(f"Approved by {v.decided_by}. In the backlog now:\n{made}", 3500),
                              colour=render.COLOR_OK)
        if rejected := [p.key for p in v.proposals if p.status.value == "rejected"]:
            embed.add_field(name="Rejected", value=render.cut(", ".join(rejected), 1000), inline=False)
        if view.dropped:
            embed.add_field(name="Dependencies dropped (on stories not approved)",
                            value=render.cut(", ".join(view.dropped), 1000), inline=False)
        embed.add_field(name="State", value=render.state_text(view.state), inline=True)
        return render.fit(embed)
    text = {
        "requested": "The planner is at work; its proposals are posted here when it is done.",
        "rejected": f"Every proposal was rejected by {v.decided_by}.",
        "waiting": f"The planner asked a question ({', '.join(v.tickets)}): answer it in its thread, and planning "
                   "goes on.",
        "failed": f"Planning failed: {render.without_paths(v.summary, hidden)}\n`/plan` asks again.",
    }.get(view.action, f"The plan is {v.status.value}.")
    colour = render.COLOR_ERROR if view.action == "failed" else render.COLOR_WARN if view.action == "waiting" \
        else render.COLOR_INFO
    embed = discord.Embed(title=render.one_line(f"Plan for {view.epic} · {view.epic_title}", render.TITLE_MAX),
                          description=render.cut(text, 3500), colour=colour)
    embed.set_author(name=f"Planner · version {v.version} · {v.status.value}")
    return render.fit(embed)


def _title(v, key: str) -> str:
    return next((p.title for p in v.proposals if p.key == key), "")


# -- the buttons and the menu (they outlive a restart) ---------------------------------------------------------
class PlanButton(discord.ui.DynamicItem[discord.ui.Button], template=r"plan:(?P<action>approve|reject):" + _IDS):
    def __init__(self, action: str, project: str, epic: str, version: int) -> None:
        approve = action == "approve"
        super().__init__(discord.ui.Button(
            label="Approve all" if approve else "Reject all",
            style=discord.ButtonStyle.success if approve else discord.ButtonStyle.danger,
            custom_id=f"plan:{action}:{project}:{epic}:{version}"))
        self.action, self.project, self.epic, self.version = action, project, epic, version

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> PlanButton:
        return cls(match["action"], match["project"], match["epic"], int(match["version"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await decide(interaction, self.action, self.project, self.epic, self.version)


class PlanSelect(discord.ui.DynamicItem[discord.ui.Select], template=r"plan:some:" + _IDS):
    def __init__(self, project: str, epic: str, version: int, select: discord.ui.Select | None = None,
                 proposals: list[Proposal] = ()) -> None:
        if select is None:
            shown = list(proposals)[:SELECT_MAX]
            select = discord.ui.Select(
                custom_id=f"plan:some:{project}:{epic}:{version}", min_values=1, max_values=len(shown),
                placeholder="Approve some (the others are rejected)…",
                options=[discord.SelectOption(label=render.one_line(f"{p.key} · {p.title}", 100), value=p.key)
                         for p in shown])
        super().__init__(select)
        self.project, self.epic, self.version = project, epic, version

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> PlanSelect:
        return cls(match["project"], match["epic"], int(match["version"]), select=item)

    async def callback(self, interaction: discord.Interaction) -> None:
        await decide(interaction, "approve", self.project, self.epic, self.version, list(self.item.values))


def decision_view(view: PlanView) -> discord.ui.View:
    v = view.plan
    buttons = discord.ui.View(timeout=None)
    buttons.add_item(PlanButton("approve", view.project, view.epic, v.version))
    buttons.add_item(PlanButton("reject", view.project, view.epic, v.version))
    buttons.add_item(PlanSelect(view.project, view.epic, v.version, proposals=v.proposals))
    return buttons


async def decide(interaction: discord.Interaction, action: str, project: str, epic: str, version: int,
                 items: list[str] | None = None) -> None:
    """A click: answered at once (deferred), then decided by the core; a refusal is a private reply."""
    bot: OrchBot = interaction.client  # type: ignore[assignment]
    try:
        await defer(interaction)
        require(interaction, bot.config.discord, Access.member)
        if await project_for(interaction, bot.orchestrator) != project:
            raise OrchError("This plan belongs to another project's channel; nothing was changed.")
        orch, by = bot.orchestrator, interaction.user.name
        if action == "approve":
            result = await orch.approve_plan(project, epic, items or "all", by=by, version=version)
        else:
            result = await orch.reject_plan(project, epic, by=by, version=version)
        await send(interaction, embed=plan_message(result))
    except OrchError as error:
        await send_error(interaction, error)
    except Exception as exc:  # the click still gets an answer; the traceback goes to the log
        log.error("plan %s of %s/%s failed: %r", action, project, epic, exc, exc_info=exc)
        await send(interaction, embed=render.crash_embed(), ephemeral=True)


async def post_plan(bot: OrchBot, view: PlanView) -> None:
    """A planner's outcome in the project's channel: the proposals with the decision controls, or what became
    of the run (a question, a failure)."""
    channel, hidden = await bot.project_channel(view.project)
    if view.plan.status is not PlanStatus.proposed:
        await channel.send(embed=plan_message(view, hidden), allowed_mentions=render.NO_MENTIONS)
        return
    pages = plan_pages(view, hidden)
    for page in pages[:-1]:
        await channel.send(embed=page, allowed_mentions=render.NO_MENTIONS)
    await channel.send(embed=pages[-1], view=decision_view(view), allowed_mentions=render.NO_MENTIONS)


# -- the commands ------------------------------------------------------------------------------------------------
class PlanningCog(BaseCog):
    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(PlanButton, PlanSelect)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(PlanButton, PlanSelect)

    @app_commands.command(name="plan", description="Ask the planning agent to break an epic into stories")
    @app_commands.describe(epic="The epic to plan (ID or words of its title)")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def plan(self, interaction: discord.Interaction, epic: str) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.plan_epic(project, epic, by=interaction.user.name)
        await send(interaction, embed=plan_message(result))

    @app_commands.command(name="approve", description="Turn proposals of a plan into stories (the rest are rejected)")
    @app_commands.describe(items="P-1,P-3 or all",
                           epic="The epic, ID or words of its title (default: the latest plan waiting for a decision)")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def approve(self, interaction: discord.Interaction, items: str, epic: str | None = None) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.approve_plan(project, epic, items, by=interaction.user.name)
        await send(interaction, embed=plan_message(result))

    @app_commands.command(name="request_changes", description="Ask the planner for another plan, with feedback")
    @app_commands.describe(description="What the planner should change",
                           epic="The epic, ID or words of its title (default: the latest plan waiting for a decision)")
    @app_commands.guild_only()  # projects live in server channels: not offered in DMs
    @handled
    async def request_changes(self, interaction: discord.Interaction,
                              description: app_commands.Range[str, 1, TEXT_MAX],
                              epic: str | None = None) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.request_plan_changes(project, epic, description, by=interaction.user.name)
        await send(interaction, embed=plan_message(result))

    @plan.autocomplete("epic")
    @approve.autocomplete("epic")
    @request_changes.autocomplete("epic")
    async def _epics(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.epic_choices(interaction, current)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(PlanningCog(bot))
