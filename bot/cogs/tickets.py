"""/ticket open | resolve | reopen | list | show, and the listener that reads replies in ticket threads.

A ticket is a message in the project's channel (the question) with a thread started on it, named
`TK-7: <question>`. A ticket opened without Discord (an agent, `orch ticket open`) is handed off by a
background loop: every few seconds it posts the question and starts the thread exactly as /ticket open does
(one function, `TicketCog.post_question`). A person's reply in that thread goes to `Orchestrator.reply_to_ticket`, which scores it:
clear -> the thread gets a confirmation naming what was unblocked and is archived; unclear -> the thread
gets the follow-up questions. The rules (scoring, which thread belongs to which project) live in
orchestration/; this module only moves messages.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands, tasks

from orchestration.errors import OrchError, ProjectNotFound
from orchestration.models import TEXT_MAX
from orchestration.tickets import OPTIONS_MAX, QUESTION_MAX, ReplyOutcome, Ticket, TicketList, TicketStatus, TicketView

from .. import render
from ..handling import defer, handled, send
from ..permissions import Access, author_is_member
from ._shared import BaseCog, matching_choices

if TYPE_CHECKING:
    from ..client import OrchBot

log = logging.getLogger("bot.tickets")

ARCHIVE_AFTER_MIN = 10080  # a week: the longest Discord offers, so a waiting question stays in view
STATUS_ICON = {TicketStatus.open: "❓", TicketStatus.resolved: "✅", TicketStatus.closed: "☑️"}
LIST_MAX = 25
# Only what a person types is an answer; joins, pins, thread renames and the like are not.
REPLY_TYPES = (discord.MessageType.default, discord.MessageType.reply)
HANDOFF_EVERY_S = 5.0  # how soon a ticket opened by an agent shows up in its project's channel
BACKOFF_MAX_ROUNDS = 60  # a ticket Discord keeps refusing is tried at least every 5 minutes
HANDOFF_BY = "bot"  # who recorded a handed-off ticket's thread, in the commit message


def split_options(text: str | None) -> list[str]:
    """"Postgres | MongoDB" -> ["Postgres", "MongoDB"]."""
    return [part.strip() for part in (text or "").split("|") if part.strip()]


# -- rendering (through render.fit / render.cut: Discord's limits are enforced there) ----------------------
def _story_text(result: TicketView | ReplyOutcome) -> str:
    s = result.story
    if s is None:
        return result.ticket.story or "none"
    return f"{render.STATUS_ICON[s.status]} {s.id} · {render.one_line(s.title, 80)} [{s.status.value}]"


def question_embed(ticket: Ticket, result: TicketView) -> discord.Embed:
    """The message the thread hangs off: the question, its context and choices, what it holds up."""
    text = ticket.question + (f"\n\n{ticket.context}" if ticket.context else "")
    embed = discord.Embed(title=render.one_line(f"{ticket.id} · {ticket.question}", render.TITLE_MAX),
                          description=render.cut(text, 3000), colour=render.COLOR_WARN)
    embed.set_author(name=render.one_line(f"Question from {ticket.created_by}", 200))
    if ticket.options:
        embed.add_field(name="Options", value=render.cut("\n".join(f"• {o}" for o in ticket.options), 1000),
                        inline=False)
    if ticket.story:
        embed.add_field(name="Holds up", value=_story_text(result), inline=False)
    embed.set_footer(text="Answer in the thread below: a clear reply (a choice and a reason) resolves it.")
    return render.fit(embed)


def resolved_embed(result: TicketView | ReplyOutcome, by: str) -> discord.Embed:
    t = result.ticket
    lines = render.cascade_lines(result.cascade, shown=t.id) or (["Nothing was waiting on it."] if not t.story else
                                               [f"{t.story} was not waiting on this ticket any more."])
    how = f"by the reply of {by} (clarity {result.score.total}/100)" \
        if isinstance(result, ReplyOutcome) and result.score else f"by {by}"
    embed = discord.Embed(title=render.one_line(f"{t.id} resolved", render.TITLE_MAX),
                          description=render.cut(f"Resolved {how}.\n\n**Decision:** {t.resolution}", 3000),
                          colour=render.COLOR_OK)
    embed.add_field(name="What goes on", value="\n".join(lines), inline=False)
    if t.story and result.story:
        embed.add_field(name="Story", value=_story_text(result), inline=False)
    embed.set_footer(text=f"{result.project} · state {result.state.value} · /ticket reopen if this was wrong")
    return render.fit(embed)


def follow_up_embed(outcome: ReplyOutcome) -> discord.Embed:
    s = outcome.score
    asks = "\n".join(f"• {q}" for q in outcome.follow_ups) or "• Can you say it more plainly?"
    embed = discord.Embed(title=render.one_line(f"{outcome.ticket.id}: not clear enough yet", render.TITLE_MAX),
                          description=render.cut(asks, 3000), colour=render.COLOR_WARN)
    if s is not None:
        embed.add_field(name="Clarity", value=f"{s.total}/100 (resolves at {outcome.threshold}): completeness "
                        f"{s.completeness}, consistency {s.consistency}, actionability {s.actionability}", inline=False)
    embed.set_footer(text="Reply again in this thread, or a member decides with /ticket resolve.")
    return render.fit(embed)


def ticket_embed(result: TicketView, headline: str = "") -> discord.Embed:
    t = result.ticket
    text = t.question + (f"\n\n{t.context}" if t.context else "")
    embed = discord.Embed(title=render.one_line(f"{STATUS_ICON[t.status]} {t.id} · {t.question}", render.TITLE_MAX),
                          description=render.cut(text, 2000),
                          colour=render.COLOR_WARN if t.status is TicketStatus.open else render.COLOR_OK)
    if headline:
        embed.set_author(name=render.one_line(headline, 200))
    embed.add_field(name="Status", value=t.status.value, inline=True)
    embed.add_field(name="Story", value=_story_text(result), inline=True)
    embed.add_field(name="Thread", value=f"<#{t.thread_id}>" if t.thread_id else "none", inline=True)
    if t.options:
        embed.add_field(name="Options", value=render.cut(" · ".join(t.options), 1000), inline=False)
    for r in t.replies[-5:]:
        score = f" · {r.score.total}/100" if r.score else ""
        embed.add_field(name=render.one_line(f"{r.author}{score}", 200), value=render.cut(r.text or "(empty)", 500),
                        inline=False)
    if t.resolution:
        embed.add_field(name=f"Resolution ({t.status.value} by {t.resolved_by})", value=render.cut(t.resolution, 1000),
                        inline=False)
    notes = render.cascade_lines(result.cascade, shown=result.ticket.id)
    if notes:
        embed.add_field(name="Also", value="\n".join(notes), inline=False)
    embed.set_footer(text=f"{result.project} · state {result.state.value} · opened by {t.created_by}")
    return render.fit(embed)


def list_embed(result: TicketList) -> discord.Embed:
    lines = []
    for t in result.tickets[:LIST_MAX]:
        story = f" · {t.story}" if t.story else ""
        thread = f" · <#{t.thread_id}>" if t.thread_id else ""
        lines.append(f"{STATUS_ICON[t.status]} **{t.id}** {render.one_line(t.question, 90)}{story}{thread}")
    if len(result.tickets) > LIST_MAX:
        lines.append(f"… and {len(result.tickets) - LIST_MAX} more (filter with status:)")
    title = f"Tickets of {result.project}" + (f" ({result.status_filter})" if result.status_filter else "")
    embed = discord.Embed(title=title, description="\n".join(lines) or "No tickets here. `/ticket open` asks one.",
                          colour=render.COLOR_INFO)
    embed.set_footer(text=f"{result.open_count} open · state {result.state.value}")
    return render.fit(embed)


# -- Discord helpers (also used by the story cog) -----------------------------------------------------------
async def channel_by_id(bot: OrchBot, channel_id: int | None) -> discord.abc.GuildChannel | discord.Thread | None:
    if not channel_id:
        return None
    channel = bot.get_channel(channel_id)
    if channel is None:
        try:
            channel = await bot.fetch_channel(channel_id)
        except discord.HTTPException:
            return None
    return channel


async def thread_by_id(bot: OrchBot, thread_id: int | None) -> discord.Thread | None:
    channel = await channel_by_id(bot, thread_id)
    return channel if isinstance(channel, discord.Thread) else None


async def ticket_thread(bot: OrchBot, project: str, ticket: Ticket) -> discord.Thread | None:
    """The ticket's thread, if it really is the thread of this ticket in its project's channel: the rule replies
    follow (Orchestrator.ticket_for_thread), so a hand-edited mapping never has the bot post in, or archive,
    another project's thread."""
    thread = await thread_by_id(bot, ticket.thread_id)
    if thread is None:
        return None
    try:
        found = await bot.orchestrator.ticket_for_thread(thread.id, parent_channel_id=thread.parent_id)
    except OrchError as exc:  # the change is made already: only the thread goes without its note
        log.warning("project=%s ticket=%s thread %s not checked: %s", project, ticket.id, thread.id, exc)
        return None
    return thread if found is not None and (found[0], found[1].id) == (project, ticket.id) else None


async def say_in(thread: discord.Thread, content: str | None = None, *, embed: discord.Embed | None = None,
                 reference: discord.Message | None = None) -> None:
    try:
        await thread.send(content=render.cut(content, render.CONTENT_MAX) if content else None, embed=embed,
                          reference=reference, mention_author=False, allowed_mentions=render.NO_MENTIONS)
    except discord.HTTPException as exc:
        log.warning("could not post in thread %s: %r", thread.id, exc)


async def delete_quietly(target: discord.Message | discord.Thread | None) -> None:
    """Remove what a failed hand-off left half done, so a retry leaves no orphan copy behind."""
    if target is None:
        return
    try:
        await target.delete()
    except discord.HTTPException as exc:
        log.warning("could not remove %s %s: %r", type(target).__name__, target.id, exc)


async def set_archived(thread: discord.Thread, archived: bool) -> None:
    try:
        await thread.edit(archived=archived)
    except discord.HTTPException as exc:
        log.warning("could not %s thread %s: %r", "archive" if archived else "unarchive", thread.id, exc)


async def close_threads(bot: OrchBot, project: str, ticket_ids: list[str], why: str) -> None:
    """After a change to their story closed `ticket_ids` (`why`: "S-3 was finished"): a short note in each one's
    thread, then archive it, as for a resolved ticket. Runs after the command's reply; never raises (the change
    is made already)."""
    for ident in ticket_ids:
        try:
            ticket = (await bot.orchestrator.show_ticket(project, ident)).ticket
            if ticket.status is not TicketStatus.closed:  # reopened meanwhile: its thread stays as it is
                continue
            thread = await ticket_thread(bot, project, ticket)
            if thread is not None:
                await say_in(thread, f"Closed: {why}, so this question is no longer needed "
                                     f"(`/ticket reopen {ticket.id}` brings it back).")
                await set_archived(thread, True)
        except OrchError as exc:
            log.warning("project=%s ticket=%s thread not closed: %s", project, ident, exc)
        except Exception:  # the story is done and the user has their answer: only the log hears of this
            log.exception("project=%s ticket=%s thread not closed", project, ident)


# -- the cog ---------------------------------------------------------------------------------------------
@app_commands.guild_only()  # projects live in server channels: the commands are not offered in DMs
class TicketCog(BaseCog, commands.GroupCog, group_name="ticket",
                group_description="Questions for people, answered in threads, that unblock the work"):
    def __init__(self, bot: OrchBot) -> None:
        super().__init__(bot)
        # One ticket is posted at a time, and each re-reads its ticket under this lock first: so a ticket never
        # gets two threads, whether the hand-off races /ticket open or a direct call overlaps a round.
        self._posting = asyncio.Lock()
        self._backoff: dict[tuple[str, str], tuple[int, int]] = {}  # (project, ticket) -> (failures, rounds to skip)
        self._handoff_error = ""  # the last error listing the tickets, logged once rather than every round

    async def cog_load(self) -> None:
        self.hand_off.start()

    async def cog_unload(self) -> None:
        self.hand_off.cancel()

    # -- posting a ticket: the one code path for /ticket open and the hand-off ---------------------------
    async def post_question(self, project: str, ticket_id: str, *, by: str,
                            fallback: discord.abc.Messageable | None = None) -> discord.Thread | None:
        """Post the ticket's question in its project's channel (else in `fallback`), start its thread on that
        message and record it with set_ticket_thread. Returns the ticket's thread: the new one, or the one it
        had already (then nothing is posted); None if there is none (Discord refused: logged, and whatever
        was half made is removed, so the hand-off's retry posts the question once)."""
        async with self._posting:
            try:
                view = await self.orch.show_ticket(project, ticket_id)
            except OrchError as exc:
                log.warning("project=%s ticket=%s not posted: %s", project, ticket_id, exc)
                return None
            ticket = view.ticket
            if ticket.thread_id is not None or not ticket.is_open:
                return await thread_by_id(self.bot, ticket.thread_id)
            try:
                entry = await self.orch.entry(project)
            except ProjectNotFound:
                entry = None
            channel = await channel_by_id(self.bot, entry.channel_id if entry else None) or fallback
            if isinstance(channel, discord.Thread):  # a thread cannot hold threads: post in its parent channel
                channel = channel.parent
            if not isinstance(channel, discord.abc.Messageable):  # gone, or e.g. a category or a forum
                log.warning("project=%s ticket=%s not posted: channel %s %s", project, ticket.id,
                            entry.channel_id if entry else None, "not found" if channel is None
                            else f"cannot hold messages (a {type(channel).__name__})")
                return None
            message = thread = None
            try:
                message = await channel.send(embed=question_embed(ticket, view), allowed_mentions=render.NO_MENTIONS)
                thread = await message.create_thread(name=ticket.thread_name,
                                                     auto_archive_duration=ARCHIVE_AFTER_MIN)
                recorded = await self.orch.set_ticket_thread(project, ticket.id, thread.id, by=by)
            except Exception as exc:
                await delete_quietly(thread)
                await delete_quietly(message)
                if not isinstance(exc, (discord.HTTPException, OrchError)):
                    raise  # a bug: the caller logs it with its traceback
                log.warning("project=%s ticket=%s thread not created: %r", project, ticket.id, exc)
                return None
            if recorded.ticket.thread_id != thread.id:  # another process recorded one first: that one stays
                await delete_quietly(thread)
                await delete_quietly(message)
                return await thread_by_id(self.bot, recorded.ticket.thread_id)
            return thread

    @tasks.loop(seconds=HANDOFF_EVERY_S)
    async def hand_off(self) -> None:
        await self.hand_off_once()

    @hand_off.before_loop
    async def _until_ready(self) -> None:
        await self.bot.wait_until_ready()  # the first round runs as soon as the bot is ready (start-up)

    async def hand_off_once(self) -> None:
        """One round: give every open ticket that has no thread yet (opened by an agent or `orch ticket open`)
        its question and thread in its project's channel. Never raises: what fails is logged and tried again
        next round, then less often while it keeps failing."""
        try:
            waiting = await self.orch.tickets_awaiting_thread()
        except Exception as exc:  # the loop goes on, and logs each distinct error once (not every round)
            if repr(exc) != self._handoff_error:
                if isinstance(exc, OrchError):  # e.g. a damaged registry: its message says what to do
                    log.warning("ticket hand-off cannot list the tickets: %s", exc)
                else:
                    log.exception("ticket hand-off cannot list the tickets (retried every %.0f s)", HANDOFF_EVERY_S)
            self._handoff_error = repr(exc)
            return
        if self._handoff_error:
            log.info("ticket hand-off can list the tickets again")
        self._handoff_error = ""
        keys = {(project, t.id) for project, t in waiting}
        self._backoff = {key: value for key, value in self._backoff.items() if key in keys}
        for key in sorted(keys, key=lambda k: (k[0], int(k[1][3:]))):
            failures, skip = self._backoff.get(key, (0, 0))
            if skip:
                self._backoff[key] = (failures, skip - 1)
                continue
            try:
                thread = await self.post_question(*key, by=HANDOFF_BY)
            except Exception:  # never crash the loop; the log has it
                log.exception("project=%s ticket=%s hand-off failed", *key)
                thread = None
            if thread is None:
                failures += 1
                self._backoff[key] = (failures, min(2 ** (failures - 1) - 1, BACKOFF_MAX_ROUNDS))
            else:
                self._backoff.pop(key, None)
                log.info("project=%s ticket=%s handed off to thread %s", *key, thread.id)

    @app_commands.command(name="open", description="Ask a question in a thread; the story waits for the answer")
    @app_commands.describe(question="The question (name the choices: 'A or B?')",
                           story="The story it holds up (ID or words of its title)",
                           options=f"The choices, separated by | (at most {OPTIONS_MAX})",
                           context="What whoever answers should know")
    @handled
    async def open_(self, interaction: discord.Interaction, question: app_commands.Range[str, 1, QUESTION_MAX],
                    story: str | None = None, options: str | None = None,
                    context: app_commands.Range[str, 1, TEXT_MAX] | None = None) -> None:
        project = await self.project(interaction, Access.member)
        await defer(interaction, ephemeral=True)  # four steps (state, post, thread, state): may take a moment
        result = await self.orch.open_ticket(project, question, story=story, context=context or "",
                                             options=split_options(options), by=interaction.user.name)
        ticket = result.ticket
        thread = await self.post_question(project, ticket.id, by=interaction.user.name, fallback=interaction.channel)
        if thread is None:  # the hand-off loop tries again: the ticket has no thread yet
            await send(interaction, embed=ticket_embed(result, f"{ticket.id} opened, but its thread could not be "
                                                               "created yet: the bot tries again shortly, or decide "
                                                               "it with /ticket resolve"), ephemeral=True)
            return
        await send(interaction, f"{ticket.id} opened: answer in {thread.mention}."
                   + (f" {ticket.story} waits for the answer." if ticket.story else ""), ephemeral=True)

    @app_commands.command(name="resolve", description="Decide a ticket yourself; its story goes on")
    @app_commands.describe(ticket="The ticket", resolution="The decision")
    @handled
    async def resolve(self, interaction: discord.Interaction, ticket: str,
                      resolution: app_commands.Range[str, 1, TEXT_MAX]) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.resolve_ticket(project, ticket, resolution, by=interaction.user.name)
        await send(interaction, embed=ticket_embed(result, f"{result.ticket.id} resolved by {interaction.user.name}"))
        thread = await ticket_thread(self.bot, project, result.ticket)
        if thread is not None:
            await say_in(thread, embed=resolved_embed(result, interaction.user.name))
            await set_archived(thread, True)

    @app_commands.command(name="reopen", description="Open a resolved ticket again; its story waits again")
    @app_commands.describe(ticket="The ticket")
    @handled
    async def reopen(self, interaction: discord.Interaction, ticket: str) -> None:
        project = await self.project(interaction, Access.member)
        result = await self.orch.reopen_ticket(project, ticket, by=interaction.user.name)
        await send(interaction, embed=ticket_embed(result, f"{result.ticket.id} reopened by {interaction.user.name}"))
        thread = await ticket_thread(self.bot, project, result.ticket)
        if thread is not None:
            await set_archived(thread, False)
            await say_in(thread, f"Reopened by {interaction.user.name}: the question stands, answer here.")

    @app_commands.command(name="list", description="This project's tickets, open ones first")
    @app_commands.describe(status="Only tickets with this status")
    @app_commands.choices(status=[app_commands.Choice(name=s.value, value=s.value) for s in TicketStatus])
    @handled
    async def list_(self, interaction: discord.Interaction, status: app_commands.Choice[str] | None = None) -> None:
        project = await self.project(interaction, Access.everyone)
        result = await self.orch.list_tickets(project, status.value if status else None)
        await send(interaction, embed=list_embed(result))

    @app_commands.command(name="show", description="A ticket with its replies and resolution")
    @app_commands.describe(ticket="The ticket")
    @handled
    async def show(self, interaction: discord.Interaction, ticket: str) -> None:
        project = await self.project(interaction, Access.everyone)
        await send(interaction, embed=ticket_embed(await self.orch.show_ticket(project, ticket)))

    @open_.autocomplete("story")
    async def _stories(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return await self.story_choices(interaction, current)

    @resolve.autocomplete("ticket")
    @reopen.autocomplete("ticket")
    @show.autocomplete("ticket")
    async def _tickets(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        name = await self._channel_project(interaction)
        if name is None:
            return []
        try:
            listing = await self.orch.list_tickets(name)
        except OrchError:
            return []
        return matching_choices([(t.id, f"{t.id} · {t.status.value} · {t.question}") for t in listing.tickets], current)

    # -- replies in ticket threads -------------------------------------------------------------------------
    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or message.webhook_id or message.type not in REPLY_TYPES:
            return
        thread = message.channel
        if not isinstance(thread, discord.Thread):
            return
        try:
            # The mapping must agree with the thread's parent channel: another project's thread never counts.
            found = await self.orch.ticket_for_thread(thread.id, parent_channel_id=thread.parent_id)
        except Exception:  # not known to be a ticket thread: log only, never talk into an unrelated thread
            log.exception("ticket lookup for thread %s failed", thread.id)
            return
        if found is None:
            return
        project, ticket = found
        if not author_is_member(message.author, self.bot.config.discord):  # the same rule as /ticket resolve
            log.info("project=%s ticket=%s reply by non-member %s ignored", project, ticket.id, message.author.name)
            role = self.bot.config.discord.member_role
            await say_in(thread, f"Only members (the `{role}` role) can answer tickets; this reply changes "
                                    "nothing.", reference=message)
            return
        try:
            outcome = await self.orch.reply_to_ticket(project, ticket.id, message.author.name, message.content,
                                                      is_bot=message.author.bot)
            log.info("project=%s ticket=%s reply_by=%s outcome=%s score=%s", project, ticket.id, message.author.name,
                     outcome.action, outcome.score.total if outcome.score else "-")
            if outcome.action == "resolved":
                await say_in(thread, embed=resolved_embed(outcome, message.author.name), reference=message)
                await set_archived(thread, True)
            elif outcome.action == "unclear":
                await say_in(thread, embed=follow_up_embed(outcome), reference=message)
            elif outcome.ticket.status is not TicketStatus.open:
                await say_in(thread, f"{outcome.ticket.id} is {outcome.ticket.status.value} already; a member "
                                        "can `/ticket reopen` it.", reference=message)
        except OrchError as error:  # e.g. the project's files are locked or damaged: say so, change nothing
            log.warning("ticket reply in thread %s refused: %s", thread.id, error)
            await say_in(thread, embed=render.error_embed(error), reference=message)
        except Exception:  # never a traceback in the thread; the log has it
            log.exception("ticket reply in thread %s failed", thread.id)
            await say_in(thread, embed=render.crash_embed(), reference=message)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(TicketCog(bot))
