"""Results and errors -> Discord embeds. The single place where Discord's size limits are enforced.

Every embed leaves through `fit()` (title 256, description 4,096, 25 fields of 256/1,024, footer 2,048,
6,000 in total) and every plain content through `cut(…, CONTENT_MAX)`. Long text is cut with a note rather
than refused, so a reply always goes out.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from orchestration.wording import plural
from orchestration.errors import CommandNotAllowed, OrchError, ProjectExists
from orchestration.events import Event
from orchestration.models import Epic, State, Story, StoryStatus
from orchestration.queue import QueueView
from orchestration.commands import DISCORD, name as command_name, spelled
from orchestration.results import (
    BacklogPage, Cascade, EpicCreated, EpicEdited, EpicList, FieldChange, Health, HistoryEntry, ProjectHealth,
    ProjectHistory, ProjectInfo, Registered, Restored, Result, SprintPlanned, SprintView, StateView, StoryChanged,
    StoryDetail, StoryEdited, StoryLog, Unregistered,
)

from .metrics import Snapshot

if TYPE_CHECKING:
    from orchestration.agents.scheduler import StoryProgress

CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
EMBED_TOTAL_MAX = 6000
CHOICES_MAX = 25
CHOICE_NAME_MAX = 100
SPRINT_TEXT_MAX = 3000  # a sprint's stories and criteria; its fields (progress, agents, commits, feedback) get the rest
CRITERIA_SHOWN = 5  # acceptance criteria a story in the sprint view, when they fit

NO_MENTIONS = discord.AllowedMentions.none()

COLOR_OK = discord.Colour.green()
COLOR_INFO = discord.Colour.blurple()
COLOR_WARN = discord.Colour.orange()
COLOR_ERROR = discord.Colour.red()

STATUS_ICON = {
    StoryStatus.todo: "⬜", StoryStatus.in_progress: "🔄", StoryStatus.blocked: "⛔",
    StoryStatus.blocked_awaiting_feedback: "❓", StoryStatus.done: "✅",
}
PRIORITY_ICON = {"critical": "🔴", "high": "🟠", "medium": "🟡", "low": "🟢"}


# -- text helpers -------------------------------------------------------------------------------------------

def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters; a cut ends with a note saying how much was left out."""
    text = text or ""
    if len(text) <= limit:
        return text
    # The count below never has more digits than len(text), so text + note stays within the limit.
    keep = max(0, limit - len(f"… (+{len(text)} chars cut)"))
    note = f"… (+{len(text) - keep} chars cut)"
    return text[:keep] + note[: limit - keep]


def one_line(text: str, limit: int) -> str:
    return cut(" ".join((text or "").split()), limit)


def without_paths(text: str, paths: Iterable[Path]) -> str:
    """`text` with each folder of `paths` shown as `…/<its name>`: server paths are for the admins of the
    server that owns the project only."""
    for path in sorted({str(p) for p in paths}, key=len, reverse=True):  # a folder before its parents
        text = text.replace(path, f"…/{Path(path).name}")
    return text


def slashed(text: str) -> str:
    """`sprint plan` -> `/sprint plan` (only for our own command names: see orchestration/commands.py)."""
    return spelled(text, DISCORD)


def bar(done: int, total: int, width: int = 10) -> str:
    """███████░░░ 70%"""
    ratio = done / total if total else 0.0
    filled = round(ratio * width)
    return "█" * filled + "░" * (width - filled) + f" {round(ratio * 100)}%"


def allowed_text(allowed: Iterable[str]) -> str:
    names = [f"`{command_name(a, DISCORD)}`" for a in allowed]
    return ", ".join(names) if names else "none"


def state_text(state: State | str | None) -> str:
    value = state.value if isinstance(state, State) else state
    return f"`{value}`" if value else "unknown"


# -- limits ------------------------------------------------------------------------------------------------

def _embed_size(embed: discord.Embed) -> int:
    size = len(embed.title or "") + len(embed.description or "")
    size += sum(len(f.name or "") + len(f.value or "") for f in embed.fields)
    size += len(embed.footer.text or "") + len(embed.author.name or "")
    return size


def fit(embed: discord.Embed) -> discord.Embed:
    """Bring an embed within every Discord limit, cutting (with a note) rather than failing."""
    if embed.title:
        embed.title = cut(embed.title, TITLE_MAX)
    if embed.description:
        embed.description = cut(embed.description, DESCRIPTION_MAX)
    fields = embed.fields
    dropped = max(0, len(fields) - FIELDS_MAX)
    embed.clear_fields()
    for f in fields[: FIELDS_MAX - (1 if dropped else 0)]:
        embed.add_field(name=cut(f.name or "\u200b", FIELD_NAME_MAX), value=cut(f.value or "\u200b", FIELD_VALUE_MAX),
                        inline=f.inline)
    if dropped:
        embed.add_field(name="…", value=f"{dropped + 1} more fields cut", inline=False)
    if embed.footer.text:
        embed.set_footer(text=cut(embed.footer.text, FOOTER_MAX), icon_url=embed.footer.icon_url)
    excess = _embed_size(embed) - EMBED_TOTAL_MAX
    if excess > 0 and embed.description:
        embed.description = cut(embed.description, max(200, len(embed.description) - excess))
    while _embed_size(embed) > EMBED_TOTAL_MAX and len(embed.fields) > 1:
        embed.remove_field(len(embed.fields) - 2)  # keep the last field: it may be the "cut" note
    excess = _embed_size(embed) - EMBED_TOTAL_MAX
    if excess > 0 and embed.description:  # a last resort, for a huge title + description + footer
        embed.description = cut(embed.description, max(1, len(embed.description) - excess))
    return embed


def _embed(title: str, description: str = "", colour: discord.Colour = COLOR_INFO) -> discord.Embed:
    return discord.Embed(title=one_line(title, TITLE_MAX), description=description or None, colour=colour)


def _footer(embed: discord.Embed, result: Result) -> discord.Embed:
    if result.warning:  # the change was made; what failed after it is said beside it
        embed.add_field(name="Saved, but", value=cut(result.warning, FIELD_VALUE_MAX), inline=False)
    embed.set_footer(text=f"{result.project} · state {result.state.value}")
    return embed


def _next(embed: discord.Embed, result: Result) -> None:
    if result.next_step:
        embed.add_field(name="Next", value=slashed(result.next_step), inline=False)


# -- errors ------------------------------------------------------------------------------------------------

def error_embed(error: OrchError, hidden: Iterable[Path] = ()) -> discord.Embed:
    """What went wrong, the current state, the commands allowed now, and a hint; the folders in `hidden`
    shortened (see without_paths)."""
    embed = _embed("Not done", slashed(without_paths(error.message, hidden)), COLOR_ERROR)
    if isinstance(error, CommandNotAllowed):
        embed.title = "Not possible now"
        wanted = command_name(error.command, DISCORD)
        embed.description = f"`{wanted}` is not possible while the project is {state_text(error.state)}."
        embed.add_field(name="Current state", value=state_text(error.state), inline=True)
        embed.add_field(name="Allowed now", value=allowed_text(error.allowed), inline=True)
    elif isinstance(error, ProjectExists):
        embed.title = "Already registered"
    if error.hint:
        embed.add_field(name="Hint", value=slashed(without_paths(error.hint, hidden)), inline=False)
    return fit(embed)


def crash_embed() -> discord.Embed:
    return fit(_embed("Something went wrong", "It was logged for the bot's admins; nothing more to do here. "
                      "Try again in a moment.", COLOR_ERROR))


# -- projects ----------------------------------------------------------------------------------------------

def registered(result: Registered, channel: discord.abc.GuildChannel | None) -> discord.Embed:
    how = "adopted its existing `.orch-state/`" if result.adopted else "created `.orch-state/`"
    if result.renamed_from:
        how += f" (its files named it {result.renamed_from}: they name it {result.project} now)"
    where = f" Its channel is {channel.mention}." if channel else ""
    embed = _embed(f"Registered {result.project}", f"`{result.info.path}`: {how}.{where}", COLOR_OK)
    embed.add_field(name="State", value=state_text(result.state), inline=True)
    _next(embed, result)
    return fit(embed)


def welcome(result: Registered, by: str) -> discord.Embed:
    embed = _embed(f"Welcome to {result.project}",
                   f"This channel drives the Scrum cycle of **{result.project}** (registered by {by}). "
                   "Commands run here act on this project only.", COLOR_OK)
    embed.add_field(name="State", value=state_text(result.state), inline=True)
    embed.add_field(name="Allowed now", value=allowed_text(result.allowed), inline=True)
    _next(embed, result)
    embed.add_field(name="Start with", value="`/epic create title:…` then `/backlog add_story`, `/sprint plan`, "
                    "`/sprint start`, `/story update`, `/feedback`. `/state` shows where things stand.", inline=False)
    return fit(embed)


def project_list(projects: list[ProjectInfo]) -> discord.Embed:
    if not projects:
        return fit(_embed("Projects", "No project is registered yet: an admin runs `/project register`."))
    lines = [f"**{p.name}** · {state_text(p.state)} · " + (f"<#{p.channel_id}>" if p.channel_id else "no channel")
             for p in projects]
    return fit(_embed(f"Projects ({len(projects)})", "\n".join(lines)))


def unregistered(result: Unregistered) -> discord.Embed:
    kept = f" Its channel <#{result.channel_id}> is kept; delete it by hand if no longer needed." \
        if result.channel_id else ""
    return fit(_embed(f"Unregistered {result.name}",
                      f"The bot no longer drives `{result.path}`; its files and `.orch-state/` are untouched.{kept}",
                      COLOR_WARN))


# -- backlog -----------------------------------------------------------------------------------------------

def _story_line(s: Story, limit: int = 120, show_sprint: bool = True) -> str:
    points = f"{s.points} pt" if s.points is not None else "– pt"
    sprint = f" · {s.sprint}" if s.sprint and show_sprint else ""
    return f"{STATUS_ICON[s.status]} **{s.id}** {PRIORITY_ICON[s.priority.value]} {points} · {one_line(s.title, limit)}{sprint}"


def epic_created(result: EpicCreated) -> discord.Embed:
    e = result.epic
    embed = _embed(f"{e.id} · {e.title}", cut(e.description, 1500) if e.description else "", COLOR_OK)
    embed.set_author(name="Epic created")
    embed.add_field(name="State", value=state_text(result.state), inline=True)
    _next(embed, result)
    return fit(_footer(embed, result))


def story_changed(result: StoryChanged) -> discord.Embed:
    s = result.story
    verb = {"added": "Story added", "reprioritized": "Priority changed", "removed": "Story removed",
            "status": "Status changed", "dependencies": "Dependencies set",
            "retried": "Retried by the agents"}.get(result.action, result.action)
    embed = _embed(f"{s.id} · {s.title}", cut(s.description, 1000) if result.action == "added" else "",
                   COLOR_WARN if result.action == "removed" else COLOR_OK)
    embed.set_author(name=verb)
    embed.add_field(name="Epic", value=s.epic, inline=True)
    priority = f"{PRIORITY_ICON[s.priority.value]} {s.priority.value}"
    if result.action == "reprioritized" and result.previous:
        priority = f"{result.previous} → {priority}"
    embed.add_field(name="Priority", value=priority, inline=True)
    embed.add_field(name="Points", value=str(s.points) if s.points is not None else "–", inline=True)
    status = f"{STATUS_ICON[s.status]} {s.status.value}"
    if result.action in ("status", "retried") and result.previous:
        status = f"{result.previous} → {status}"
    embed.add_field(name="Status", value=status, inline=True)
    if result.action == "dependencies" or s.depends_on:
        depends = ", ".join(s.depends_on) or "nothing"
        if result.action == "dependencies":
            depends += f" (was {result.previous or 'nothing'})"
        embed.add_field(name="Depends on", value=depends, inline=False)
    if result.action == "added" and s.acceptance_criteria:
        embed.add_field(name=f"Acceptance criteria ({len(s.acceptance_criteria)})", inline=False,
                        value=_listed([f"☐ {one_line(c, 200)}" for c in s.acceptance_criteria]))
    _cascade(embed, result.cascade)
    _next(embed, result)
    return fit(_footer(embed, result))


def cascade_lines(cascade: Cascade, shown: str | None = None) -> list[str]:
    """What a change set off, one line each; `shown` is a ticket the reply is about already (not repeated)."""
    notes = []
    if cascade.state_change:
        notes.append(f"State {cascade.state_change[0].value} → {cascade.state_change[1].value}")
    if cascade.sprint_to_review:
        notes.append("Every story of the sprint is done: the sprint moved to review.")
    if cascade.stories_ready:
        notes.append("Now ready: " + ", ".join(cascade.stories_ready))
    if cascade.stories_unblocked:
        notes.append("Unblocked: " + ", ".join(cascade.stories_unblocked))
    if tickets := [t for t in cascade.tickets_resolved if t != shown]:
        notes.append("Tickets resolved: " + ", ".join(tickets))
    if cascade.tickets_closed:
        notes.append("Tickets closed (no longer needed): " + ", ".join(cascade.tickets_closed))
    return notes


def _cascade(embed: discord.Embed, cascade: Cascade) -> None:
    if notes := cascade_lines(cascade):
        embed.add_field(name="Also", value="\n".join(notes), inline=False)


def backlog_page(result: BacklogPage, note: str = "") -> discord.Embed:
    """A page of the backlog; `note` goes above its stories (a page turned after the backlog changed)."""
    filters = [f for f in (result.epic_filter, result.status_filter) if f]
    title = f"Backlog of {result.project}" + (f" ({', '.join(filters)})" if filters else "")
    lines = [_story_line(s) for s in result.stories] or ["No stories here yet: `/backlog add_story` adds one."]
    embed = _embed(title, "\n".join(([f"*{note}*"] if note else []) + lines))
    epics = _epic_lines(result.epics)
    if epics:
        embed.add_field(name=f"Epics ({len(result.epics)})", value=epics, inline=False)
    embed.set_footer(text=f"page {result.page}/{result.pages} · {plural(result.total, 'story')} · "
                          f"state {result.state.value}")
    return fit(embed)


def _epic_lines(epics: list[Epic]) -> str:
    return _listed([f"**{e.id}** {one_line(e.title, 80)}" for e in epics])


def _listed(items: list[str], sep: str = "\n", limit: int = FIELD_VALUE_MAX) -> str:
    """As many whole items as fit in `limit` (a field's value); the rest become a note "… and 7 more"."""
    text = ""
    for i, item in enumerate(items):
        if len(text) + len(item) + len(sep) > limit - 30:  # room for the note
            return text + f"… and {len(items) - i} more"
        text += item + sep
    return text[: len(text) - len(sep)] if text else ""


# -- the work queue ----------------------------------------------------------------------------------------

def queue_view(result: QueueView) -> discord.Embed:
    """The next story, the ready ones (next first), what waits and for what, the blocked and the in-progress."""
    in_sprint = result.scope != "backlog"
    where = f"{result.scope}'s stories" if in_sprint else "the backlog (no sprint under way)"
    n = result.next
    if n is not None:
        embed = _embed(f"Next: {n.id} · {n.title}", _story_line(n, 200, show_sprint=not in_sprint), COLOR_OK)
    else:
        embed = _embed("Nothing is ready", "No story is `todo` with all its dependencies done.", COLOR_WARN)
    embed.set_author(name=f"Work queue of {result.project}")
    embed.add_field(name="Scope", value=where, inline=False)
    if result.ready:
        embed.add_field(name=f"Ready, next first ({len(result.ready)})", inline=False, value=_listed(
            [_story_line(s, 70, show_sprint=not in_sprint) for s in result.ready]))
    if result.waiting:
        embed.add_field(name=f"Waiting ({len(result.waiting)})", inline=False, value=_listed(
            [one_line(f"**{sid}** waits for {', '.join(deps)}", 300) for sid, deps in result.waiting.items()]))
    if result.in_progress:
        embed.add_field(name=f"In progress ({len(result.in_progress)})", value=_listed(result.in_progress, ", "),
                        inline=False)
    if result.blocked:
        embed.add_field(name=f"Blocked ({len(result.blocked)})", value=_listed(result.blocked, ", "),
                        inline=False)
    return fit(_footer(embed, result))


# -- sprints -----------------------------------------------------------------------------------------------

def sprint_view(result: SprintView, headline: str = "", commits: bool = False,
                hidden: Iterable[Path] = ()) -> discord.Embed:
    """The sprint's stories and progress, the agents at work and its branch; with `commits`, the branch's commits
    (their subjects may be agents' text: shown without the server's paths in `hidden`)."""
    sp = result.sprint
    title = f"{sp.id} · {sp.status.value}" + (f" · {one_line(sp.goal, 150)}" if sp.goal else "")
    embed = _embed(title, _stories_with_criteria(result.stories) or "No stories.", COLOR_INFO)
    if headline:
        embed.set_author(name=one_line(headline, 200))
    embed.add_field(name="Stories", value=f"`{bar(result.done_stories, result.total_stories)}` "
                    f"{result.done_stories}/{result.total_stories}", inline=True)
    embed.add_field(name="Points", value=f"`{bar(result.done_points, result.total_points)}` "
                    f"{result.done_points}/{result.total_points}", inline=True)
    if result.blocked:
        embed.add_field(name="Blocked", value=", ".join(result.blocked), inline=False)
    if sp.retrospective:
        r = sp.retrospective
        label = "Feedback (changes requested)" if r.changes_requested else "Feedback"
        embed.add_field(name=f"{label} by {one_line(r.by, 80)}", value=cut(r.text, 900), inline=False)
    _agent_work(embed, result, commits, hidden)
    _cascade(embed, result.cascade)
    _next(embed, result)
    return fit(_footer(embed, result))


def sprint_planned(result: SprintPlanned) -> discord.Embed:
    """`/sprint plan`'s answer: planned; re-planned, naming the stories that joined and left; or nothing changed."""
    sp = result.sprint
    if result.unchanged:
        headline = f"{sp.id} unchanged: it has these stories, goal and capacity already (nothing committed)"
    else:
        headline = f"{sp.id} {'re-planned' if result.replanned else 'planned'}"
    embed = sprint_view(result, headline)
    moves = [f"Joined: {', '.join(result.joined)}"] * bool(result.joined) + \
        [f"Left (back to the backlog): {', '.join(result.left)}"] * bool(result.left)
    if moves:
        embed.insert_field_at(0, name="Changes", value=cut("\n".join(moves), FIELD_VALUE_MAX), inline=False)
    return fit(embed)


def _stories_with_criteria(stories: list[Story], budget: int = SPRINT_TEXT_MAX) -> str:
    """A line per story, each followed by its acceptance criteria (☑ once the story is done): as many criteria a
    story as keep the text within `budget` (the fields below it need the rest of the embed's 6,000)."""
    for most in (CRITERIA_SHOWN, 3, 1, 0):
        lines = []
        for s in stories:
            lines.append(_story_line(s, 90, show_sprint=False))
            box = "☑" if s.status is StoryStatus.done else "☐"
            lines += [f"\u2003{box} {one_line(c, 90)}" for c in s.acceptance_criteria[:most]]
            if most and len(s.acceptance_criteria) > most:
                lines.append(f"\u2003… {len(s.acceptance_criteria) - most} more criteria")
        text = "\n".join(lines)
        if len(text) <= budget:
            break
    return text


def _agent_work(embed: discord.Embed, result: SprintView, commits: bool, hidden: Iterable[Path]) -> None:
    if result.agents:
        lines = [f"🤖 **{a.story}** · attempt {a.attempt} · {a.phase} · {duration(a.elapsed_s)}"
                 for a in result.agents]
        embed.add_field(name=f"Agents at work ({len(result.agents)})", value=_listed(lines), inline=False)
    if result.branch:
        count = plural(len(result.commits), "commit")
        embed.add_field(name="Sprint branch", value=f"`{result.branch}` · {count}", inline=False)
        if commits and result.commits:
            embed.add_field(name=f"Commits on {result.branch}", value=_commit_lines(result.commits, hidden),
                            inline=False)


def _commit_lines(commits: list[str], hidden: Iterable[Path]) -> str:
    """'sha subject' lines; a subject may be an agent's summary, so without the server's paths."""
    lines = []
    for line in commits:
        sha, _, subject = line.partition(" ")
        lines.append(f"`{sha[:10]}` {one_line(without_paths(subject, hidden), 100)}")
    return _listed(lines)


def review_ready(result: SprintView, hidden: Iterable[Path] = ()) -> discord.Embed:
    """Posted once when the agents finished every story of the sprint (no command was typed)."""
    sp = result.sprint
    where = (f"Their work is on the branch `{result.branch}`: merge it (`git merge --no-ff {result.branch}`) or "
             "open a pull request from it. " if result.branch else "")
    embed = _embed(f"{sp.id} is ready for review" + (f": branch {result.branch}" if result.branch else ""),
                   f"Every story of {sp.id} is done. {where}`/feedback` closes the sprint.", COLOR_OK)
    embed.add_field(name="Stories", value=f"{result.done_stories}/{result.total_stories} done, "
                    f"{result.done_points}/{result.total_points} points", inline=False)
    if result.commits:
        embed.add_field(name=f"Commits on {result.branch}", value=_commit_lines(result.commits, hidden), inline=False)
    return fit(_footer(embed, result))


# -- agents ------------------------------------------------------------------------------------------------

def _of(attempt: int, most: int) -> str:
    return f"{attempt} of {most}" if attempt <= most else str(attempt)  # numbers go on after an answer or a retry


def _phase_line(p: StoryProgress, since: float | None) -> tuple[str, discord.Colour]:
    """What a story run's step says, and its colour."""
    started = f" · started <t:{int(since)}:R>" if since else ""
    lines = {
        "running": (f"🔄 Attempt {_of(p.attempt, p.max_attempts)} running{started}", COLOR_INFO),
        "testing": (f"🧪 Attempt {_of(p.attempt, p.max_attempts)}: the agent is done, the tests run{started}",
                    COLOR_INFO),
        "done": (f"✅ Done in attempt {p.attempt}", COLOR_OK),
        "retrying": (f"🔁 Attempt {_of(p.attempt, p.max_attempts)} failed; the next one is queued", COLOR_WARN),
        "waiting": (f"❓ Attempt {p.attempt}: the agent asked a question; {p.story} waits for the answer in the "
                    "ticket's thread", COLOR_WARN),
        "blocked": (f"⛔ Blocked after {p.max_attempts} failed attempts: a ticket asks how to go on "
                    f"(`/story retry {p.story}` tries again as it is)", COLOR_ERROR),
        "stopped": (f"⏸️ Attempt {p.attempt} stopped (the sprint was paused, or the bot stopped); it runs again "
                    "when the sprint goes on", COLOR_WARN),
        "recorded": (f"📝 Attempt {p.attempt} recorded; {p.story} was moved by a person meanwhile", COLOR_INFO),
    }
    return lines.get(p.phase, (f"Attempt {p.attempt}: {p.phase}", COLOR_INFO))


def story_run(project: str, p: StoryProgress, since: float | None = None, hidden: Iterable[Path] = ()) -> discord.Embed:
    """The one message of a story's run by agents (edited at each step): its phase, the last attempt's
    summary, tests, branch and duration. Agent text is shown without the server's paths (`hidden`)."""
    line, colour = _phase_line(p, since)
    embed = _embed(f"{p.story} · {p.title}" if p.title else p.story, line, colour)
    embed.set_author(name=f"Agent · {p.sprint}")
    if p.summary:
        embed.add_field(name="Summary", value=cut(without_paths(p.summary, hidden), 900), inline=False)
    if p.tests_passed is not None or p.tests_failed is not None:
        embed.add_field(name="Tests", value=f"{p.tests_passed or 0} passed · {p.tests_failed or 0} failed",
                        inline=True)
    if p.branch:
        embed.add_field(name="Branch", value=f"`{p.branch}`", inline=True)
    if p.duration_s is not None:
        embed.add_field(name="Duration", value=duration(p.duration_s), inline=True)
    embed.set_footer(text=f"{project} · {p.sprint}")
    return fit(embed)


LOG_TAIL_MAX = 2500
LOG_ATTEMPTS_SHOWN = 8


def _code_block(text: str, limit: int) -> str:
    """The end of `text` (a log's tail matters most) in a code block no text inside can close."""
    text = (text or "").replace("```", "`\u200b``")
    if len(text) > limit:
        text = "…" + text[-(limit - 1):]
    return f"```\n{text}\n```"


def story_log(result: StoryLog, hidden: Iterable[Path] = ()) -> discord.Embed:
    """A story's agent attempts (outcome, summary, tests, duration) and the tail of the latest one's output,
    without the server's paths (`hidden`); the log file itself stays on the server."""
    attempts = result.attempts
    if not attempts:
        return fit(_embed(f"{result.story}: no agent attempts yet",
                          "An agent works on a story once its sprint is active and the story is ready."))
    tail = without_paths(result.log_tail, hidden).strip()
    embed = _embed(f"Agent log of {result.story}",
                   f"The end of attempt {attempts[-1].attempt}'s output:\n{_code_block(tail, LOG_TAIL_MAX)}"
                   if tail else f"Attempt {attempts[-1].attempt} wrote no output yet.")
    shown = attempts[-LOG_ATTEMPTS_SHOWN:]
    if len(attempts) > len(shown):
        embed.set_author(name=f"the last {len(shown)} of {len(attempts)} attempts")
    for a in shown:
        facts = [f"<t:{int(a.started_at.timestamp())}:R>"]
        if a.tests_passed is not None or a.tests_failed is not None:
            facts.append(f"tests {a.tests_passed or 0} passed, {a.tests_failed or 0} failed")
        if a.duration_s is not None:
            facts.append(duration(a.duration_s))
        text = " · ".join(facts) + (f"\n{one_line(without_paths(a.summary, hidden), 300)}" if a.summary else "")
        embed.add_field(name=f"Attempt {a.attempt} · {a.outcome or 'running'}", value=text, inline=False)
    embed.set_footer(text=f"{result.project} · {result.story}")
    return fit(embed)


def feedback_given(result: SprintView) -> discord.Embed:
    back = [s.id for s in result.stories if s.status is not StoryStatus.done]
    headline = f"{result.sprint.id} closed" + (f"; back to the backlog: {', '.join(back)}" if back else "")
    return sprint_view(result, headline)


# -- state and health --------------------------------------------------------------------------------------

def state_view(result: StateView) -> discord.Embed:
    embed = _embed(f"{result.project} · {result.state.value}", slashed(result.next_step))
    embed.add_field(name="Allowed now", value=allowed_text(result.allowed), inline=False)
    embed.add_field(name="Current sprint", value=result.current_sprint or "none", inline=True)
    embed.add_field(name="Epics", value=str(result.epics), inline=True)
    counts = " · ".join(f"{STATUS_ICON[StoryStatus(k)]} {k} {v}" for k, v in result.stories_by_status.items() if v)
    embed.add_field(name="Stories", value=counts or "none", inline=False)
    if result.blocked_in_sprint:
        embed.add_field(name="Blocked in the sprint", value=", ".join(result.blocked_in_sprint), inline=False)
    if result.history:
        recent = [f"<t:{int(t.at.timestamp())}:R> {command_name(t.command, DISCORD)} by {one_line(t.by, 40)}: "
                  f"{t.source.value} → {t.dest.value}" for t in result.history[-5:]]
        embed.add_field(name="Recent changes", value="\n".join(recent), inline=False)
    return fit(embed)


def health(result: Health, metrics: Snapshot | None = None, gateway_latency_s: float = math.nan,
           show_paths: bool = False) -> discord.Embed:
    """The orchestrator's health per project (problems first), then, when given, the bot's own figures: uptime,
    gateway latency, and the metrics since start (most used commands with p50/p95 and error rate). Server
    paths in the problems only with `show_paths` (for admins)."""
    embed = _embed("Healthy" if result.ok else "Needs attention", "", COLOR_OK if result.ok else COLOR_ERROR)
    lines = []
    if metrics is not None:
        lines.append(f"Bot up {duration(metrics.uptime_s)} · gateway latency {millis(gateway_latency_s * 1000)}")
        lines.append(f"{plural(metrics.total, 'command')} since start · {plural(metrics.errors, 'error')} · "
                     f"{metrics.refused} refused")
        embed.add_field(name="Commands (most used)", value=_command_lines(metrics), inline=False)
    if result.runner and show_paths:  # where agents run (a broker's host, say) is for admins, like paths
        lines.append(f"Agents: {one_line(result.runner, 300)}")
    if not result.projects:
        lines.append("No project is registered yet.")
    embed.description = "\n".join(lines) or None
    # Problems first: with many projects, the last ones go to one compact field, within 25 fields and 6,000 chars.
    projects = sorted(result.projects, key=lambda p: p.ok)
    shown = 0
    for p in projects:
        text = "\n".join(_project_health_lines(p, metrics))
        value = cut(without_paths(text, [] if show_paths else [p.path]), FIELD_VALUE_MAX)
        name = ("✅ " if p.ok and not p.warnings else "⚠️ ") + p.name
        rest = len(projects) - shown - 1
        room = EMBED_TOTAL_MAX - _embed_size(embed) - (_OVERFLOW_ROOM if rest else 0)
        if len(embed.fields) >= FIELDS_MAX - 1 or len(name) + len(value) > room:
            break
        embed.add_field(name=name, value=value, inline=False)
        shown += 1
    if shown < len(projects):
        compact = [f"{'✅' if p.ok else '⚠️'} **{p.name}** · " + (state_text(p.state) if p.ok else
                   plural(len(p.problems), 'problem')) for p in projects[shown:]]
        embed.add_field(name=plural(len(projects) - shown, 'more project'), value=_listed(compact),
                        inline=False)
    return fit(embed)


_EVENT_LOOK = {"commits_stuck": ("⚠️ Commits stopped", COLOR_ERROR), "commits_resumed": ("✅ Commits resumed", COLOR_OK)}


def event_embed(event: Event) -> discord.Embed:
    """An event the orchestrator published, as posted in the project's channel."""
    title, colour = _EVENT_LOOK.get(event.kind, (event.kind, COLOR_INFO))
    return fit(_embed(f"{title} · {event.project}", cut(event.text, 4096), colour))


_OVERFLOW_ROOM = 40 + FIELD_VALUE_MAX  # the "N more projects" field: its name and its value at most
_TOP_COMMANDS = 10


def _project_health_lines(p: ProjectHealth, metrics: Snapshot | None) -> list[str]:
    lines = [f"state {state_text(p.state)}" +
             (f" · {plural(p.transitions_last_7_days, 'state change')} in 7 days" if p.state is not None else "")]
    used = metrics.projects.get(p.name) if metrics is not None else None
    if used is not None:
        lines.append(f"{plural(used.commands, 'command')} since start · {plural(used.errors, 'error')} · "
                     f"{used.refused} refused")
    if p.pending_commit_lines:
        lines.append(f"{plural(p.pending_commit_lines, 'change')} waiting for a commit")
    if p.last_commit:
        lines.append(f"last commit: {one_line(p.last_commit, 200)}")
    lines += [f"⚠️ {one_line(problem, 300)}" for problem in p.problems + p.warnings]
    return lines


def _command_lines(metrics: Snapshot) -> str:
    if not metrics.commands:
        return "none yet"
    lines = [f"`/{c.name}` ×{c.count} · p50 {millis(c.p50_ms)} · p95 {millis(c.p95_ms)} · "
             f"errors {c.error_rate:.0%}" + (f" · {c.refused} refused" if c.refused else "")
             for c in metrics.commands[:_TOP_COMMANDS]]
    others = len(metrics.commands) - _TOP_COMMANDS
    if others > 0:
        lines.append(f"… and {plural(others, 'more command')}")
    return _listed(lines)


def duration(seconds: float) -> str:
    """3725 -> "1 h 2 min": the two largest units."""
    s = max(0, int(seconds))
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {s % 60} s" if minutes else f"{s} s"


def millis(value_ms: float) -> str:
    """A latency in ms; "n/a" when unknown (NaN: no heartbeat yet, no sample)."""
    if not math.isfinite(value_ms):
        return "n/a"
    return f"{value_ms:.1f} ms" if value_ms < 10 else f"{value_ms:.0f} ms"


def choice_name(text: str) -> str:
    return one_line(text, CHOICE_NAME_MAX)


# -- a story or an epic, seen and edited; a project's history and its restore -----------------------------------

def _refs(refs) -> str:
    return _listed([f"{STATUS_ICON.get(_status(r.status), '•')} **{r.id}** {one_line(r.title, 80)}" for r in refs])


def _status(value: str) -> StoryStatus | None:
    try:
        return StoryStatus(value)
    except ValueError:
        return None


def _history(entries: list[HistoryEntry], width: int = 140) -> str:
    """One line a commit: its sha, when, who, and what (its first line, and how many more)."""
    lines = []
    for e in entries:
        more = f" (+{len(e.lines) - 1} more)" if len(e.lines) > 1 else ""
        lines.append(f"`{e.sha[:10]}` <t:{int(e.at.timestamp())}:R> {one_line(', '.join(e.who), 60)}: "
                     f"{one_line(e.lines[0], width)}{more}")
    return _listed(lines)


def story_detail(result: StoryDetail) -> discord.Embed:
    s = result.story
    embed = _embed(f"{s.id} · {s.title}", cut(s.description, 1500) if s.description else "*No description.*")
    embed.add_field(name="Status", value=f"{STATUS_ICON[s.status]} {s.status.value}", inline=True)
    embed.add_field(name="Priority", value=f"{PRIORITY_ICON[s.priority.value]} {s.priority.value}", inline=True)
    embed.add_field(name="Points", value=str(s.points) if s.points is not None else "–", inline=True)
    epic = f"{s.epic} · {one_line(result.epic.title, 80)}" if result.epic else s.epic
    embed.add_field(name="Epic", value=epic, inline=True)
    embed.add_field(name="Sprint", value=f"{s.sprint} ({result.sprint_status or 'gone'})" if s.sprint else "none",
                    inline=True)
    embed.add_field(name=f"Acceptance criteria ({len(s.acceptance_criteria)})",
                    value=_listed([f"☐ {one_line(c, 300)}" for c in s.acceptance_criteria]) or "none yet: "
                    "`/story edit` adds them", inline=False)
    if result.depends_on:
        embed.add_field(name="Depends on", value=_refs(result.depends_on), inline=False)
    if result.dependants:
        embed.add_field(name="Waited for by", value=_refs(result.dependants), inline=False)
    if result.tickets:
        embed.add_field(name="Tickets", value=_listed([f"**{t.id}** ({t.status}) {one_line(t.question, 150)}"
                                                       for t in result.tickets]), inline=False)
    if result.last_attempt is not None:
        a = result.last_attempt
        embed.add_field(name="Agent attempts", value=f"{result.attempts} · the last: attempt {a.attempt}, "
                        f"{a.outcome or 'running'} (`/story log` shows them)", inline=False)
    if result.history:
        embed.add_field(name="History", value=_history(result.history, 100), inline=False)
    if result.warning:
        embed.add_field(name="History unavailable", value=cut(result.warning, FIELD_VALUE_MAX), inline=False)
    embed.set_footer(text=f"{result.project} · created by {s.created_by} · state {result.state.value}")
    return fit(embed)


def _changes(embed: discord.Embed, changes: list[FieldChange]) -> None:
    for c in changes:
        name = c.field.replace("_", " ").capitalize()
        if "\n" in c.before + c.after or len(c.before) + len(c.after) > 120:
            value = f"**was**\n{cut(c.before or '(empty)', 450)}\n**now**\n{cut(c.after or '(empty)', 450)}"
        else:
            value = f"{c.before or '(empty)'} → {c.after or '(empty)'}"
        embed.add_field(name=name, value=value, inline=False)


def _edited(title: str, changes: list[FieldChange], result: Result) -> discord.Embed:
    embed = _embed(title, "" if changes else "Nothing changed: it has those values already.",
                   COLOR_OK if changes else COLOR_INFO)
    embed.set_author(name="Edited" if changes else "Nothing to change")
    _changes(embed, changes)
    return fit(_footer(embed, result))


def story_edited(result: StoryEdited) -> discord.Embed:
    return _edited(f"{result.story.id} · {result.story.title}", result.changes, result)


def epic_edited(result: EpicEdited) -> discord.Embed:
    return _edited(f"{result.epic.id} · {result.epic.title}", result.changes, result)


def epic_list(result: EpicList) -> discord.Embed:
    if not result.epics:
        return fit(_footer(_embed(f"Epics of {result.project}", "No epics yet: `/epic create` makes one."), result))
    lines = []
    for e in result.epics:
        counts = " ".join(f"{STATUS_ICON[st]} {e.by_status[st.value]}" for st in StoryStatus
                          if e.by_status.get(st.value))
        lines.append(f"**{e.epic.id}** {one_line(e.epic.title, 90)} · {plural(e.stories, 'story')}"
                     f"{' · ' + counts if counts else ''} · {e.done_points}/{e.points} pt done")
    embed = _embed(f"Epics of {result.project} ({len(result.epics)})", _listed(lines, limit=DESCRIPTION_MAX))
    return fit(_footer(embed, result))


def project_history(result: ProjectHistory) -> discord.Embed:
    if not result.entries:
        return fit(_embed(f"History of {result.project}", "No changes on this page." if result.page > 1 else
                          "No changes committed yet."))
    embed = _embed(f"History of {result.project}" + (f" · page {result.page}" if result.page > 1 else ""),
                   _history(result.entries))
    more = f" · more: `/project history page:{result.page + 1}`" if result.has_more else ""
    embed.set_footer(text=f"newest first{more} · /project restore commit:<ID> goes back to one")
    return fit(embed)


def restored(result: Restored) -> discord.Embed:
    short = result.commit[:10]
    if not result.restored:
        return fit(_footer(_embed(f"{result.project} is at {short} already",
                                  "The state holds that commit's content: nothing changed."), result))
    embed = _embed(f"Restored {result.project} to {short}", f"`{short}` {one_line(result.subject, 300)}\n"
                   "As a new commit: the history before it is kept.", COLOR_WARN)
    for name, ids in result.items_changed():
        embed.add_field(name=name, value=_listed(ids, ", "), inline=False)
    if result.sprint:
        embed.add_field(name="Current sprint", value=f"{result.sprint[0] or 'none'} → {result.sprint[1] or 'none'}",
                        inline=True)
    if result.state_change:
        embed.add_field(name="State", value=f"{result.state_change[0].value} → {result.state_change[1].value}",
                        inline=True)
    if result.previous:
        embed.add_field(name="Undo", value=f"`/project restore commit:{result.previous[:10]}`", inline=False)
    _next(embed, result)
    return fit(_footer(embed, result))
