"""The ticket hand-off, through SimCord and discord.py's real dispatch: a ticket an agent opened through the
Orchestrator API (no Discord) gets its question posted and its thread started by the bot's background loop,
exactly as /ticket open does, and never twice."""
from __future__ import annotations

import asyncio
import json
import logging

import discord

from bot.client import create_bot
from bot.cogs.tickets import HANDOFF_EVERY_S
from tests.bot.conftest import load
from tests.bot.test_tickets_bot import CLEAR, QUESTION, archived, bot_messages, open_ticket, sprint_with_stories, \
    story, ticket
from tests.conftest import change_lines


def cog(world):
    return world.env.bot.get_cog("TicketCog")


def questions(channel, ident: str = "TK-1") -> list:
    """The question messages of one ticket in a channel (each thread hangs off one)."""
    return [m for m in channel.history() if m.embeds and (m.embeds[0].title or "").startswith(f"{ident} ·")]


def threads_started(world) -> int:
    """Threads the bot asked Discord for, counting any it removed again: a second thread is never even made."""
    return sum(r.method == "POST" and r.path.endswith("/threads") for r in world.env.http_requests)


def thread_commits(repo) -> list[str]:
    return [line for line in change_lines(repo) if "discussed in thread" in line]


async def test_an_agents_ticket_is_posted_by_the_loop_and_a_reply_in_its_thread_resolves_it(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    start = len(world.env.http_requests)

    opened = await orch.open_ticket("demo", QUESTION, story="S-1", options=["PostgreSQL", "MongoDB"],
                                    context="Sessions need a store.", by="agent-7")  # as an agent process would
    assert opened.ticket.thread_id is None and channel.threads == []
    assert story(repo, "S-1")["status"] == "blocked_awaiting_feedback"
    assert load(repo, "status.json")["state"] == "BLOCKED"

    await world.env.advance_time(HANDOFF_EVERY_S)  # the bot's own loop, on SimCord's clock

    [thread] = channel.threads
    assert thread.name == f"TK-1: {QUESTION}"
    [question] = questions(channel)
    assert question.id == thread.id  # the thread is started on the question's message, as /ticket open does
    assert question.embeds[0].author.name == "Question from agent-7"
    assert "Sessions need a store." in question.embeds[0].description
    assert {f.name for f in question.embeds[0].fields} == {"Options", "Holds up"}
    assert ticket(repo)["thread_id"] == thread.id
    sent = [r for r in world.env.http_requests[start:] if r.method == "POST" and r.path.endswith("/messages")]
    assert sent and all(r.json.get("allowed_mentions", {}).get("parse") == [] for r in sent)
    await orch.flush()
    assert thread_commits(repo) == [f"orch(TK-1): discussed in thread {thread.id} (/ticket open by bot)"]

    await world.alice.send(thread, CLEAR)

    assert ticket(repo)["status"] == "resolved" and ticket(repo)["resolved_by"] == "alice"
    assert story(repo, "S-1")["status"] == "todo" and load(repo, "status.json")["state"] == "SPRINT_ACTIVE"
    assert bot_messages(world, thread)[-1].embeds[0].title == "TK-1 resolved"
    assert await archived(world, thread)


async def test_rounds_run_twice_or_at_once_make_one_thread(world, demo, orch):
    repo, channel = demo
    await orch.open_ticket("demo", QUESTION, by="agent-7")
    await orch.open_ticket("demo", "Which port: 8080 or 9000?", by="agent-7")

    await asyncio.gather(cog(world).hand_off_once(), cog(world).hand_off_once())  # a slow round overlapping
    await cog(world).hand_off_once()
    await world.env.advance_time(3 * HANDOFF_EVERY_S)

    assert sorted(t.name for t in channel.threads) == [f"TK-1: {QUESTION}", "TK-2: Which port: 8080 or 9000?"]
    assert len(questions(channel, "TK-1")) == 1 and len(questions(channel, "TK-2")) == 1
    assert threads_started(world) == 2
    await orch.flush()
    assert len(thread_commits(repo)) == 2
    assert await orch.tickets_awaiting_thread() == []


async def test_a_ticket_opened_with_slash_ticket_open_is_not_posted_again(world, demo, orch):
    repo, channel = demo
    _, thread = await open_ticket(world, channel)
    await cog(world).hand_off_once()
    await world.env.advance_time(3 * HANDOFF_EVERY_S)
    assert [t.id for t in channel.threads] == [thread.id] and len(questions(channel)) == 1
    assert threads_started(world) == 1
    await orch.flush()
    assert thread_commits(repo) == [f"orch(TK-1): discussed in thread {thread.id} (/ticket open by alice)"]


async def test_slash_ticket_open_and_the_loop_racing_for_one_ticket_make_one_thread(world, demo, orch):
    repo, channel = demo
    await orch.open_ticket("demo", QUESTION, by="alice")  # /ticket open has opened it, the loop sees it too

    by_command, _ = await asyncio.gather(cog(world).post_question("demo", "TK-1", by="alice"),
                                         cog(world).hand_off_once())

    assert channel.threads and [t.id for t in channel.threads] == [by_command.id]
    assert len(questions(channel)) == 1 and ticket(repo)["thread_id"] == by_command.id
    again = await cog(world).post_question("demo", "TK-1", by="alice")  # it has a thread: that one, nothing new
    assert again.id == by_command.id and len(questions(channel)) == 1
    assert threads_started(world) == 1 and not any(r.method == "DELETE" for r in world.env.http_requests)


async def test_a_ticket_keeps_its_first_thread(orch, project):
    await orch.open_ticket(project, QUESTION, by="agent")
    first = await orch.set_ticket_thread(project, "TK-1", 9001, by="bot")
    await orch.flush()
    kept = await orch.set_ticket_thread(project, "TK-1", 9002, by="bot")  # a second thread is never recorded
    assert first.action == "thread" and kept.action == "thread_kept" and kept.ticket.thread_id == 9001
    found = await orch.ticket_for_thread(9001)
    assert found and found[1].id == "TK-1" and await orch.ticket_for_thread(9002) is None


async def test_a_project_without_a_channel_is_skipped(world, demo, orch, make_repo):
    repo, channel = demo
    quiet = make_repo("quiet")
    await orch.register_project(str(quiet), by="agent")  # registered from a terminal: no channel
    await orch.open_ticket("quiet", QUESTION, by="agent")
    await orch.open_ticket("demo", "Blue or green?", by="agent")

    assert [(p, t.id) for p, t in await orch.tickets_awaiting_thread()] == [("demo", "TK-1")]
    await cog(world).hand_off_once()

    assert ticket(quiet)["thread_id"] is None and ticket(repo)["thread_id"] is not None
    assert [t.name for t in channel.threads] == ["TK-1: Blue or green?"]
    assert all(not c.threads for c in world.guild.channels.values() if c.id != channel.id)


async def test_a_damaged_project_is_skipped_and_the_others_go_on(world, demo, orch, make_repo, caplog):
    repo, channel = demo
    broken = make_repo("broken")
    await orch.register_project(str(broken), by="admin", channel_id=world.general.id)
    await orch.open_ticket("demo", QUESTION, by="agent")
    (broken / ".orch-state" / "tickets.json").write_text("{ not json")

    await cog(world).hand_off_once()
    await cog(world).hand_off_once()

    assert [t.name for t in channel.threads] == [f"TK-1: {QUESTION}"] and world.general.threads == []
    skips = [r for r in caplog.records if "broken skipped in the ticket hand-off" in r.getMessage()]
    assert len(skips) == 1  # once, not every round
    assert "tickets.json" in skips[0].getMessage()


async def test_discord_refusing_leaves_no_orphan_and_the_next_round_retries(world, demo, orch):
    repo, channel = demo
    no_threads = world.guild.create_text_channel(
        "no-threads", overwrites={world.guild.me: discord.PermissionOverwrite(create_public_threads=False)})
    await orch.set_channel("demo", world.guild.id, no_threads.id)
    await orch.open_ticket("demo", QUESTION, by="agent")

    await cog(world).hand_off_once()  # the question is posted, the thread refused: the question is removed

    assert no_threads.threads == [] and questions(no_threads) == [] and ticket(repo)["thread_id"] is None
    removed = [r for r in world.env.http_requests if r.method == "DELETE"]
    assert [r.path.rsplit("/", 1)[0] for r in removed] == [f"/channels/{no_threads.id}/messages"]
    await orch.set_channel("demo", world.guild.id, 424242)  # a channel that is gone
    await cog(world).hand_off_once()  # retried next round: no channel, logged, nothing posted
    assert ticket(repo)["thread_id"] is None

    await orch.set_channel("demo", world.guild.id, channel.id)
    await world.env.advance_time(10 * HANDOFF_EVERY_S)  # fewer tries after failures, but it comes back
    assert [t.name for t in channel.threads] == [f"TK-1: {QUESTION}"] and len(questions(channel)) == 1
    assert ticket(repo)["thread_id"] == channel.threads[0].id


async def test_a_ticket_opened_while_the_bot_was_away_is_posted_at_start_up(world, demo, config, orch):
    repo, channel = demo
    await orch.open_ticket("demo", QUESTION, by="agent")
    await orch.flush()

    restarted = create_bot(config)  # its own Orchestrator over the same data_dir
    await world.env.restart_bot(restarted)  # no time passes: the first round runs when the bot is ready
    try:
        [thread] = channel.threads
        assert thread.name == f"TK-1: {QUESTION}" and ticket(repo)["thread_id"] == thread.id
        await world.alice.send(thread, CLEAR)
        assert ticket(repo)["status"] == "resolved"
    finally:
        await restarted.orchestrator.close()


async def test_a_resolved_ticket_is_not_handed_off(world, demo, orch):
    repo, channel = demo
    await orch.open_ticket("demo", QUESTION, by="agent")
    await orch.resolve_ticket("demo", "TK-1", "PostgreSQL.", by="agent")
    await cog(world).hand_off_once()
    assert channel.threads == [] and questions(channel) == []
    assert json.loads((repo / ".orch-state" / "tickets.json").read_text())["tickets"][0]["thread_id"] is None


async def test_an_unexpected_error_listing_the_tickets_is_logged_with_its_traceback_once(world, demo, orch, caplog,
                                                                                         config):
    caplog.set_level(logging.INFO, logger="bot.tickets")
    registry = config.orchestrator.data_dir / "registry.json"
    kept = registry.read_bytes()
    registry.unlink()
    registry.mkdir()  # not a file any more: reading it fails in a way nothing expects

    for _ in range(3):
        await cog(world).hand_off_once()

    [failed] = [r for r in caplog.records if r.name == "bot.tickets" and "cannot list the tickets" in r.getMessage()]
    assert failed.levelname == "ERROR" and failed.exc_info and failed.exc_info[0] is IsADirectoryError
    registry.rmdir()
    registry.write_bytes(kept)
    await cog(world).hand_off_once()
    assert any(r.name == "bot.tickets" and "can list the tickets again" in r.getMessage() for r in caplog.records)


async def test_a_channel_that_cannot_hold_messages_is_named_in_the_log(world, demo, orch, caplog):
    repo, _ = demo
    category = world.guild.create_category("Projects")
    await orch.set_channel("demo", world.guild.id, category.id)
    await orch.open_ticket("demo", QUESTION, by="agent")

    await cog(world).hand_off_once()

    assert ticket(repo)["thread_id"] is None
    [said] = [r for r in caplog.records if r.name == "bot.tickets" and "not posted" in r.getMessage()]
    assert said.levelname == "WARNING" and f"channel {category.id} cannot hold messages" in said.getMessage()
