"""Ticket and queue commands of the Orchestrator (a mixin: `class Orchestrator(TicketCommands)`).

Tickets are not gated by the state machine (a question can come up in any state), but every change still
goes through `Orchestrator._change`: project lock, atomic write, commit. The story a ticket holds up moves
through `sprint_rules.set_story_status`, so burndown and BLOCKED in/out follow the one rule that lives there:
the project is BLOCKED while every unfinished story of the active sprint is blocked.

A story held by a ticket is `blocked_awaiting_feedback`. When its last open ticket resolves, it returns to
the status it had when the ticket took it (`in_progress` stays with whoever was working on it; anything
else becomes `todo`, i.e. ready).
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import queue
from .errors import InvalidInput, OrchError
from .gitlog import quote
from .inputs import story_of, validated
from .models import TEXT_MAX, Story, StoryStatus, next_number, utcnow
from .results import StoryChanged
from .scoring import DEFAULT_SCORER, THREAD_MAX, Score, Scorer
from .store import TICKETS
from .tickets import (
    OPTIONS_MAX, Reply, ReplyOutcome, Ticket, TicketFile, TicketList, TicketStatus, TicketView, normalize_id,
)

if TYPE_CHECKING:
    from .service import Orchestrator
    from .unit_of_work import Change

log = logging.getLogger(__name__)

RESCORE_MAX = 3  # scorings of one reply while other replies keep coming in; the last one is applied as it is


# -- rules on a Change (run inside `_change`, in the worker thread, under the project's locks) ------------------
def tickets_of(c: Change) -> TicketFile:
    """The project's tickets, as changed so far by this unit of work. Call `touch_tickets` after a change."""
    tf = c.dirty.get(TICKETS)
    if tf is None:
        tf = c.tickets() or TicketFile(project=c.name)
    return tf  # type: ignore[return-value]


def touch_tickets(c: Change, tf: TicketFile) -> None:
    c.dirty[TICKETS] = tf


def find_ticket(c: Change, tf: TicketFile, ident: str) -> Ticket:
    ticket = tf.ticket(ident)
    if ticket is None:
        known = ", ".join(t.id for t in tf.tickets[-10:]) or "none yet"
        raise InvalidInput("ticket", f"there is no ticket {normalize_id(ident) or repr(ident)} in {c.name}.",
                           f"Tickets here: {known}. `ticket list` lists them.")
    return ticket


def hold_story(c: Change, tf: TicketFile, ticket: Ticket, story: Story) -> None:
    """The ticket holds `story` up: blocked_awaiting_feedback, remembering where it was."""
    from .sprint_rules import set_story_status

    if story.status is StoryStatus.done:
        raise InvalidInput("story", f"{story.id} is done already; a ticket cannot hold it up.",
                           "Open the ticket without a story, or for the story that needs the answer.")
    earlier = [t for t in tf.open_for_story(story.id) if t.id != ticket.id]
    if story.status is StoryStatus.blocked_awaiting_feedback and earlier:
        ticket.story_was = earlier[0].story_was  # the story returns where it was before the first ticket
    else:
        ticket.story_was = story.status if story.status is StoryStatus.in_progress else StoryStatus.todo
    if story.status is not StoryStatus.blocked_awaiting_feedback:
        set_story_status(c, story, StoryStatus.blocked_awaiting_feedback)


def new_ticket(c: Change, tf: TicketFile, question: str, story: Story | None, context: str, options: list[str],
               by: str) -> Ticket:
    """Open a ticket (the next free ID); a linked story waits for it (blocked_awaiting_feedback)."""
    number = next_number(tf.next_ticket, (t.id for t in tf.tickets))
    ticket = validated(lambda: Ticket(
        id=f"TK-{number}", question=question or "", context=(context or "").strip(), options=options,
        story=story.id if story else None, created_by=by))
    if story is not None:
        hold_story(c, tf, ticket, story)
    tf.tickets.append(ticket)
    tf.next_ticket = number + 1
    touch_tickets(c, tf)
    return ticket


def release_story(c: Change, tf: TicketFile, ticket: Ticket) -> Story | None:
    """After `ticket` stopped being open: give its story back unless another open ticket still holds it.
    Returns the story if it was unblocked."""
    from .sprint_rules import set_story_status

    story = c.edit_story(ticket.story) if ticket.story else None
    if story is None or story.status is not StoryStatus.blocked_awaiting_feedback or tf.open_for_story(story.id):
        return None
    set_story_status(c, story, ticket.story_was or StoryStatus.todo)
    c.cascade.stories_unblocked.append(story.id)
    return story


def close_open_tickets(c: Change, story: Story, resolution: str) -> list[Ticket]:
    """Close the tickets still open on `story`, no longer needed (`resolution` says why); returns them."""
    if not c.store.path(TICKETS).exists() and TICKETS not in c.dirty:
        return []
    tf = tickets_of(c)
    closed = tf.open_for_story(story.id)
    for ticket in closed:
        ticket.status = TicketStatus.closed
        ticket.resolution = resolution
        ticket.resolved_by, ticket.resolved_at = c.by, utcnow()
        c.cascade.tickets_closed.append(ticket.id)
        touch_tickets(c, tf)
    return closed


def close_tickets_of_done_story(c: Change, story: Story) -> None:
    """A story was finished while tickets still asked about it: they are no longer needed (closed)."""
    for ticket in close_open_tickets(c, story, f"{story.id} was finished without an answer."):
        c.lines.append(f"orch({ticket.id}, {story.id}): close ticket, {story.id} is done")


def _resolve(c: Change, tf: TicketFile, ticket: Ticket, resolution: str, by: str) -> Story | None:
    ticket.status = TicketStatus.resolved
    ticket.resolution = resolution[:TEXT_MAX]
    ticket.resolved_by, ticket.resolved_at = by, utcnow()
    c.cascade.tickets_resolved.append(ticket.id)
    touch_tickets(c, tf)
    return release_story(c, tf, ticket)


class _TicketMoved(Exception):
    """The ticket got another reply (or was decided) while a reply to it was being scored."""


def _seen(t: Ticket) -> tuple:
    """What a score depends on: the ticket's status and conversation."""
    return t.status, len(t.replies), t.resolved_at


def _apply_reply(c: Change, ticket: str, seen: tuple | None, author: str, clean: str, score: Score,
                threshold: int) -> ReplyOutcome:
    """Record a scored reply; it resolves the ticket at `threshold` or more. With `seen`, raises _TicketMoved if
    the ticket is no longer as it was when the reply was scored."""
    tf = tickets_of(c)
    t = find_ticket(c, tf, ticket)
    if not t.is_open:
        return _ignored(c, tf, t.id, threshold, f"{t.id} is {t.status.value}")
    if seen is not None and _seen(t) != seen:
        raise _TicketMoved
    earlier = t.replies[-THREAD_MAX:]
    t.replies.append(Reply(author=author, text=clean, score=score))
    touch_tickets(c, tf)
    by = f" by the {score.scorer} scorer" if score.scorer != "rule" else ""
    if score.total >= threshold:
        # An answer over several messages: the resolution is the conversation that gave it.
        resolution = ("\n".join(f"{r.author}: {r.text}" for r in [*earlier, t.replies[-1]])[-TEXT_MAX:]
                      if earlier and score.conversation else clean)
        story = _resolve(c, tf, t, resolution, author)
        c.note(_ids(t), f"resolve ticket {quote(t.question)} with a reply scored {score.total}{by}"
                        f"{_unblocked_text(c)}")
        return ReplyOutcome(**c.result_fields(), action="resolved", ticket=t, score=score,
                            threshold=threshold, story=story or _story_of(c, t), cascade=c.cascade)
    c.note(t.id, f"reply scored {score.total}{by} (below {threshold}); asked for more")
    return ReplyOutcome(**c.result_fields(), action="unclear", ticket=t, score=score, threshold=threshold,
                        follow_ups=score.missing, story=_story_of(c, t), cascade=c.cascade)


def _ids(ticket: Ticket) -> str:
    return f"{ticket.id}, {ticket.story}" if ticket.story else ticket.id


def _unblocked_text(c: Change) -> str:
    parts = []
    if c.cascade.stories_unblocked:
        parts.append(f"{', '.join(c.cascade.stories_unblocked)} unblocked")
    if c.cascade.state_change:
        parts.append(f"project {c.cascade.state_change[0].value} -> {c.cascade.state_change[1].value}")
    return "; " + "; ".join(parts) if parts else ""


# -- the commands ----------------------------------------------------------------------------------------------
class TicketCommands:
    """Async ticket and queue commands; mixed into Orchestrator, whose `_change`/`_read` they use."""

    # Any object with score(question, options, reply) -> Score; assign another on the instance to plug one in.
    scorer: Scorer = DEFAULT_SCORER

    # -- opening and linking ---------------------------------------------------------------------------
    async def open_ticket(self: Orchestrator, project: str, question: str, story: str | None = None,
                          context: str = "", options: list[str] | None = None, by: str = "unknown") -> TicketView:
        """Ask a question. A linked story waits (blocked_awaiting_feedback) until the ticket is resolved."""
        def work(c: Change) -> TicketView:
            tf = tickets_of(c)
            if options and len([o for o in options if o.strip()]) > OPTIONS_MAX:
                raise InvalidInput("options", f"at most {OPTIONS_MAX} options.")
            linked = None
            if story and story.strip():
                linked = story_of(c, story, "`backlog view` lists the stories; or open the ticket without one.")
            ticket = new_ticket(c, tf, question, linked, context, options or [], by)
            held = f"; {linked.id} waits for the answer" if linked else ""
            c.note(_ids(ticket), f"open ticket {quote(ticket.question)}{held}{_unblocked_text(c)}")
            return TicketView(**c.result_fields(), action="opened", ticket=ticket, story=linked, cascade=c.cascade)

        return await self._change(project, "open_ticket", by, work)

    async def set_ticket_thread(self: Orchestrator, project: str, ticket: str, thread_id: int,
                                by: str = "unknown") -> TicketView:
        """Remember the thread a ticket is discussed in (the persisted thread -> ticket mapping).

        A ticket keeps its first thread: if it has one already, nothing changes and the view (action
        "thread_kept") names the thread it has, so a caller that raced another one can remove its own."""
        def work(c: Change) -> TicketView:
            tf = tickets_of(c)
            t = find_ticket(c, tf, ticket)
            other = tf.by_thread(thread_id)
            if other is not None and other.id != t.id:
                raise InvalidInput("thread", f"that thread already belongs to {other.id}.")
            if t.thread_id is not None:
                return TicketView(**c.result_fields(), action="thread_kept", ticket=t, story=_story_of(c, t))
            t.thread_id = thread_id
            touch_tickets(c, tf)
            c.note(t.id, f"discussed in thread {thread_id}")
            return TicketView(**c.result_fields(), action="thread", ticket=t, story=_story_of(c, t))

        view = await self._change(project, "set_ticket_thread", by, work)
        _thread_cache(self)[view.ticket.thread_id] = (project, view.ticket.id)
        return view

    async def tickets_awaiting_thread(self: Orchestrator) -> list[tuple[str, Ticket]]:
        """Open tickets with no Discord thread yet, as (project, ticket), in every registered project that has
        a channel: those an agent or `orch ticket open` opened, for the bot to post. Cheap enough to call every
        few seconds (tickets.json is read through the store's cache). A project that cannot be read is skipped
        with one log line (again only when its error changes), so it never holds up the others."""
        found: list[tuple[str, Ticket]] = []
        skipped = _handoff_skipped(self)
        for entry in await self.project_entries():
            if not entry.channel_id:
                continue
            try:
                waiting = await self._read(entry.name, _awaiting_thread)
            except Exception as exc:  # damaged, moved away, unreadable, anything: the others still go on
                if skipped.get(entry.name) != str(exc):
                    log.warning("project=%s skipped in the ticket hand-off: %s", entry.name, exc,
                                exc_info=not isinstance(exc, (OrchError, OSError)))  # a bug: where it happened
                skipped[entry.name] = str(exc)
                continue
            if skipped.pop(entry.name, None) is not None:
                log.info("project=%s readable again: its tickets are handed off", entry.name)
            found.extend((entry.name, t) for t in waiting)
        return found

    async def ticket_for_thread(self: Orchestrator, thread_id: int,
                                parent_channel_id: int | None = None) -> tuple[str, Ticket] | None:
        """The (project, ticket) discussed in a thread, or None. With `parent_channel_id` (the channel the
        thread hangs off), only a ticket of that channel's project counts: a reply in another project's
        thread never touches this one."""
        cache = _thread_cache(self)
        found = None
        if thread_id in cache:
            found = await asyncio.to_thread(_lookup, self, *cache[thread_id], thread_id)
        if found is None:
            found = await asyncio.to_thread(_scan, self, thread_id)
        if found is None:
            cache.pop(thread_id, None)
            return None
        name, ticket = found
        if parent_channel_id is not None:
            entry = await asyncio.to_thread(self.registry.get, name)
            if entry is None or entry.channel_id != parent_channel_id:
                return None
        return name, ticket

    # -- replies and decisions -------------------------------------------------------------------------
    async def reply_to_ticket(self: Orchestrator, project: str, ticket: str, author: str, text: str,
                              is_bot: bool = False) -> ReplyOutcome:
        """Score a reply (with the thread's earlier replies as its conversation). At or above
        config.tickets.resolve_threshold it resolves the ticket and gives the story back; below it, the outcome
        carries follow-up questions."""
        threshold = self.config.tickets.resolve_threshold
        if is_bot:  # the bot's own follow-ups, or other bots: never an answer
            return await self._read(project, lambda c: _ignored(c, tickets_of(c), ticket, threshold, "from a bot"))
        clean = (text or "").strip()
        clean = clean if len(clean) <= TEXT_MAX else clean[: TEXT_MAX - 1] + "…"
        for tries_left in reversed(range(RESCORE_MAX)):
            # Scored outside the project lock (a language model may take a while), then applied under it if the
            # ticket is still as it was scored; a reply that came in meanwhile changed the conversation, so the
            # reply is scored again (the last try applies what it scored).
            current = await self._read(project, lambda c: find_ticket(c, tickets_of(c), ticket))
            score = await self._score_reply(project, current, text or "")
            seen = _seen(current) if tries_left else None
            try:
                return await self._change(project, "reply_ticket", author, lambda c: _apply_reply(
                    c, ticket, seen, author, clean, score, threshold))
            except _TicketMoved:
                continue
        raise AssertionError("unreachable: the last try never raises _TicketMoved")

    async def _score_reply(self: Orchestrator, project: str, t: Ticket, text: str) -> Score:
        """The configured scorer's score of `text` as a reply to `t`, its earlier replies being the conversation."""
        thread = [(r.author, r.text) for r in t.replies]
        settings = self.config.tickets
        if settings.scorer == "command":
            from .agents.clarity import score_by_command  # its runners are imported only for a scorer command
            return await score_by_command(self.agents.runner, self.config, self.scorer, project, t.question,
                                          t.options, text, thread)
        return await asyncio.to_thread(self.scorer.score, t.question, t.options, text, thread)

    async def resolve_ticket(self: Orchestrator, project: str, ticket: str, resolution: str,
                             by: str = "unknown") -> TicketView:
        """A person decides, whatever the score of the replies."""
        def work(c: Change) -> TicketView:
            tf = tickets_of(c)
            t = find_ticket(c, tf, ticket)
            if not t.is_open:
                raise InvalidInput("ticket", f"{t.id} is {t.status.value} already.", "`ticket reopen` opens it again.")
            text = (resolution or "").strip()
            if not text:
                raise InvalidInput("resolution", "is empty.", "Write the decision, so the work can go on from it.")
            if len(text) > TEXT_MAX:
                raise InvalidInput("resolution", f"must be at most {TEXT_MAX} characters (got {len(text)}).")
            story = _resolve(c, tf, t, text, by)
            c.note(_ids(t), f"resolve ticket {quote(t.question)}: {quote(text, 60)}{_unblocked_text(c)}")
            return TicketView(**c.result_fields(), action="resolved", ticket=t, story=story or _story_of(c, t),
                              cascade=c.cascade)

        return await self._change(project, "resolve_ticket", by, work)

    async def reopen_ticket(self: Orchestrator, project: str, ticket: str, by: str = "unknown") -> TicketView:
        """Open a resolved or closed ticket again; its story (unless done) waits for the answer again."""
        def work(c: Change) -> TicketView:
            tf = tickets_of(c)
            t = find_ticket(c, tf, ticket)
            if t.is_open:
                raise InvalidInput("ticket", f"{t.id} is open already.")
            t.status = TicketStatus.open
            t.resolution = t.resolved_by = t.resolved_at = None
            story = c.edit_story(t.story) if t.story else None
            held = ""
            if story is not None and story.status is not StoryStatus.done:
                hold_story(c, tf, t, story)
                held = f"; {story.id} waits for the answer again"
            touch_tickets(c, tf)
            c.note(_ids(t), f"reopen ticket {quote(t.question)}{held}{_unblocked_text(c)}")
            return TicketView(**c.result_fields(), action="reopened", ticket=t, story=story, cascade=c.cascade)

        return await self._change(project, "reopen_ticket", by, work)

    # -- reading -----------------------------------------------------------------------------------------
    async def list_tickets(self: Orchestrator, project: str, status: str | None = None) -> TicketList:
        """Tickets, open ones first, then by number."""
        wanted = None
        if status:
            try:
                wanted = TicketStatus(status.strip().lower())
            except ValueError:
                raise InvalidInput("status", f"{status!r} is not a ticket status.",
                                   "Use one of: " + ", ".join(s.value for s in TicketStatus) + ".") from None

        def work(c: Change) -> TicketList:
            tf = tickets_of(c)
            tickets = [t for t in tf.tickets if wanted is None or t.status is wanted]
            tickets.sort(key=lambda t: (not t.is_open, t.number))
            return TicketList(**c.result_fields(), tickets=tickets, status_filter=wanted.value if wanted else None,
                              open_count=sum(t.is_open for t in tf.tickets))

        return await self._read(project, work)

    async def show_ticket(self: Orchestrator, project: str, ticket: str) -> TicketView:
        def work(c: Change) -> TicketView:
            t = find_ticket(c, tickets_of(c), ticket)
            return TicketView(**c.result_fields(), action="shown", ticket=t, story=_story_of(c, t))

        return await self._read(project, work)

    # -- the work queue ---------------------------------------------------------------------------------
    async def next_story(self: Orchestrator, project: str) -> queue.QueueView:
        """The next ready story (priority, then satisfied dependencies, then age), and what waits."""
        return await self._read(project, queue.queue_view)

    async def set_dependencies(self: Orchestrator, project: str, story: str, depends_on: list[str],
                               by: str = "unknown") -> StoryChanged:
        """Replace a story's dependencies. Cycles and missing stories are refused."""
        return await self._change(project, "set_dependencies", by,
                                  lambda c: queue.set_dependencies(c, story, depends_on))


# -- helpers ---------------------------------------------------------------------------------------------------
def _story_of(c: Change, t: Ticket) -> Story | None:
    return c.story(t.story) if t.story else None


def _ignored(c: Change, tf: TicketFile, ticket: str, threshold: int, reason: str) -> ReplyOutcome:
    t = find_ticket(c, tf, ticket)
    return ReplyOutcome(**c.result_fields(), action="ignored", ticket=t, threshold=threshold, reason=reason,
                        story=_story_of(c, t))


def _awaiting_thread(c: Change) -> list[Ticket]:
    return [t for t in tickets_of(c).tickets if t.is_open and t.thread_id is None]


def _handoff_skipped(orch: Any) -> dict[str, str]:
    """project -> the error it was last skipped for, so a damaged project is logged once, not every round."""
    return orch.__dict__.setdefault("_handoff_skipped", {})


def _thread_cache(orch: Any) -> dict[int, tuple[str, str]]:
    """thread id -> (project, ticket id); rebuilt from tickets.json whenever it misses (e.g. after a restart)."""
    return orch.__dict__.setdefault("_ticket_threads", {})


def _lookup(orch: Orchestrator, name: str, ticket_id: str, thread_id: int) -> tuple[str, Ticket] | None:
    """Check a cached mapping against the file (it may have changed by hand or by a checkout)."""
    try:
        project = orch._projects.get(name)
        if project is None:
            return None
        tf = project.store.tickets()
    except Exception:  # unreadable now: the full scan says why
        return None
    t = tf.ticket(ticket_id) if tf else None
    return (name, t) if t is not None and t.thread_id == thread_id else None


def _scan(orch: Orchestrator, thread_id: int) -> tuple[str, Ticket] | None:
    """Look through every registered project's tickets.json; refresh the cache on the way."""
    cache = _thread_cache(orch)
    found = None
    for entry in orch.registry.all():
        try:
            tf = orch.project(entry.name).store.tickets()
        except Exception as exc:  # one damaged project must not stop replies in the other projects
            log.warning("project=%s skipped in the thread lookup: %s", entry.name, exc)
            continue
        for t in tf.tickets if tf else []:
            if t.thread_id is not None:
                cache[t.thread_id] = (entry.name, t.id)
                if t.thread_id == thread_id and found is None:
                    found = (entry.name, t)
    return found
