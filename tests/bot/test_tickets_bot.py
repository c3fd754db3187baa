"""Tickets in Discord, through SimCord and discord.py's real dispatch: slash commands, threads, human replies."""
from __future__ import annotations

import json

import discord

from bot.client import create_bot
from tests.bot.conftest import assert_within_limits, embed_of, load, register, reply
from tests.conftest import git

QUESTION = "Should we use PostgreSQL or MongoDB?"
CLEAR = "PostgreSQL, because we already run it in production."


async def sprint_with_stories(world, channel, count: int = 1) -> None:
    await world.alice.slash(channel, "epic create", title="Accounts")
    for i in range(count):
        await world.alice.slash(channel, "backlog add_story", epic="E-1", title=f"Story {i + 1}", points=2)
    await world.alice.slash(channel, "sprint plan", stories=", ".join(f"S-{i + 1}" for i in range(count)))
    await world.alice.slash(channel, "sprint start")


async def open_ticket(world, channel, question: str = QUESTION, **options):
    """/ticket open; returns (interaction result, the ticket's thread handle)."""
    before = {t.id for t in channel.threads}
    result = await world.alice.slash(channel, "ticket open", question=question, **options)
    new = [t for t in channel.threads if t.id not in before]
    return result, (new[0] if new else None)


def story(repo, ident: str) -> dict:
    return next(s for s in load(repo, "backlog.json")["stories"] if s["id"] == ident)


def ticket(repo, ident: str = "TK-1") -> dict:
    return next(t for t in load(repo, "tickets.json")["tickets"] if t["id"] == ident)


async def archived(world, thread) -> bool:
    fetched = await world.env.bot.fetch_channel(thread.id)  # what Discord says now, not a cache
    return fetched.archived


def bot_messages(world, thread) -> list:
    return [m for m in thread.history() if m.author.id == world.env.bot.user.id]


async def test_open_posts_the_question_starts_a_thread_and_blocks_the_story(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)

    result, thread = await open_ticket(world, channel, story="S-1", options="PostgreSQL | MongoDB",
                                       context="Sessions need a store.")

    assert thread is not None and thread.name == f"TK-1: {QUESTION}"
    assert reply(result).ephemeral and thread.mention in reply(result).content
    question = next(m for m in channel.history() if m.embeds and m.embeds[0].title.startswith("TK-1"))
    assert question.id == thread.id  # the thread is started on the question's message
    assert "Sessions need a store." in question.embeds[0].description
    assert story(repo, "S-1")["status"] == "blocked_awaiting_feedback"
    assert ticket(repo)["thread_id"] == thread.id and ticket(repo)["options"] == ["PostgreSQL", "MongoDB"]
    assert load(repo, "status.json")["state"] == "BLOCKED"
    state = await world.alice.slash(channel, "state")
    assert "S-1" in next(f.value for f in embed_of(state).fields if f.name == "Blocked in the sprint")
    await orch.flush()
    log = git(repo, "log", "--format=%B", "--", ".orch-state")
    assert "open ticket" in log and f"discussed in thread {thread.id}" in log


async def test_a_clear_reply_resolves_unblocks_archives_and_commits(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    _, thread = await open_ticket(world, channel, story="S-1")
    await orch.flush()

    await world.alice.send(thread, CLEAR)

    t = ticket(repo)
    assert t["status"] == "resolved" and t["resolution"] == CLEAR and t["resolved_by"] == "alice"
    assert t["replies"][0]["score"]["total"] == 100
    assert story(repo, "S-1")["status"] == "todo"
    assert load(repo, "status.json")["state"] == "SPRINT_ACTIVE"
    confirmation = bot_messages(world, thread)[-1].embeds[0]
    assert confirmation.title == "TK-1 resolved"
    assert "Unblocked: S-1" in confirmation.fields[0].value
    assert "SPRINT_ACTIVE" in confirmation.fields[0].value
    assert await archived(world, thread)
    await orch.flush()
    log = git(repo, "log", "--format=%B", "-1")
    assert f'orch(TK-1, S-1): resolve ticket "{QUESTION}" with a reply scored 100; S-1 unblocked' in log
    assert "(reply by alice)" in log
    assert git(repo, "status", "--porcelain", "--", ".orch-state") == ""


async def test_an_unclear_reply_gets_follow_up_questions_and_the_story_stays_blocked(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    _, thread = await open_ticket(world, channel, story="S-1")

    await world.alice.send(thread, "maybe mongo? not sure")

    follow_up = bot_messages(world, thread)[-1]
    assert_within_limits(follow_up)
    embed = follow_up.embeds[0]
    assert embed.title == "TK-1: not clear enough yet"
    assert "decide firmly" in embed.description and "/100 (resolves at 85)" in embed.fields[0].value
    assert follow_up.reference and follow_up.reference.message_id == thread.history()[-2].id
    assert ticket(repo)["status"] == "open" and len(ticket(repo)["replies"]) == 1
    assert story(repo, "S-1")["status"] == "blocked_awaiting_feedback"
    assert not await archived(world, thread)

    await world.alice.send(thread, "Fine: MongoDB, since the data is document-shaped.")  # a second try
    assert ticket(repo)["status"] == "resolved" and story(repo, "S-1")["status"] == "todo"


async def test_bots_and_threads_that_are_no_ticket_change_nothing(world, demo):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    _, thread = await open_ticket(world, channel, story="S-1")
    before = (repo / ".orch-state" / "tickets.json").read_bytes()
    other_bot = world.guild.add_member(world.env.create_user("helper-bot", bot=True))

    await other_bot.send(thread, CLEAR)
    assert (repo / ".orch-state" / "tickets.json").read_bytes() == before
    assert len(bot_messages(world, thread)) == 0

    parent = world.env.bot.get_channel(channel.id)
    await parent.create_thread(name="chat", type=discord.ChannelType.public_thread)
    await world.env.settle()
    chat = next(t for t in channel.threads if t.name == "chat")
    await world.alice.send(chat, CLEAR)
    await world.alice.send(channel, CLEAR)  # not in a thread at all
    assert (repo / ".orch-state" / "tickets.json").read_bytes() == before
    assert story(repo, "S-1")["status"] == "blocked_awaiting_feedback"
    assert bot_messages(world, chat) == []


async def ticket_in_each_of_two_projects(world, demo, make_repo):
    """demo's TK-1 holds S-1; a second project "other" has a ticket too. Returns (other repo, channel, thread)."""
    _, channel = demo
    other_repo = make_repo("other")
    _, other_channel = await register(world, other_repo)
    await world.alice.slash(channel, "epic create", title="Demo work")
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Demo story")
    await open_ticket(world, channel, story="S-1")
    _, other_thread = await open_ticket(world, other_channel, question="Should the logo be blue or green?")
    return other_repo, other_channel, other_thread


async def test_a_reply_in_another_projects_thread_never_touches_this_one(world, demo, make_repo):
    repo, channel = demo
    other_repo, other_channel, other_thread = await ticket_in_each_of_two_projects(world, demo, make_repo)
    await world.env.bot.get_channel(other_channel.id).create_thread(name="chat", type=discord.ChannelType.public_thread)
    await world.env.settle()
    other_chat = next(t for t in other_channel.threads if t.name == "chat")

    # A hand edit points demo's ticket at a thread of the other project's channel: the mapping alone would
    # send replies there to demo; the thread's parent channel says they are not demo's.
    path = repo / ".orch-state" / "tickets.json"
    data = json.loads(path.read_text())
    data["tickets"][0]["thread_id"] = other_chat.id
    path.write_text(json.dumps(data, indent=2))
    before = path.read_bytes()

    await world.alice.send(other_chat, CLEAR)
    await world.alice.send(other_thread, "Blue, since it matches the website.")

    assert path.read_bytes() == before and story(repo, "S-1")["status"] == "blocked_awaiting_feedback"
    assert bot_messages(world, other_chat) == []
    assert ticket(other_repo)["status"] == "resolved"  # its own project's ticket, and only that one


async def test_a_reply_after_a_restart_still_resolves(world, demo, config, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    _, thread = await open_ticket(world, channel, story="S-1")
    await orch.flush()

    restarted = create_bot(config)  # a new bot with its own new Orchestrator over the same data_dir
    await world.env.restart_bot(restarted)
    assert restarted.orchestrator is not orch
    try:
        await world.alice.send(thread, CLEAR)
        assert ticket(repo)["status"] == "resolved" and story(repo, "S-1")["status"] == "todo"
        assert await archived(world, thread)
        await restarted.orchestrator.flush()
        assert "resolve ticket" in git(repo, "log", "--format=%B", "-1")
    finally:
        await restarted.orchestrator.close()


async def test_a_person_resolves_and_reopens_and_lists(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel, count=2)
    _, thread1 = await open_ticket(world, channel, story="S-1")
    _, thread2 = await open_ticket(world, channel, question="Which port: 8080 or 9000?", story="S-2")
    assert load(repo, "status.json")["state"] == "BLOCKED"

    resolved = await world.alice.slash(channel, "ticket resolve", ticket="TK-2", resolution="8080, as everywhere")
    assert embed_of(resolved).author.name == "TK-2 resolved by alice"
    assert ticket(repo, "TK-2")["status"] == "resolved" and story(repo, "S-2")["status"] == "todo"
    assert bot_messages(world, thread2)[-1].embeds[0].title == "TK-2 resolved"
    assert await archived(world, thread2)
    assert load(repo, "status.json")["state"] == "SPRINT_ACTIVE"

    listing = embed_of(await world.alice.slash(channel, "ticket list"))
    lines = listing.description.splitlines()
    assert lines[0].startswith("❓ **TK-1**") and lines[1].startswith("✅ **TK-2**")
    assert listing.footer.text.startswith("1 open")

    reopened = await world.alice.slash(channel, "ticket reopen", ticket="TK-2")
    assert embed_of(reopened).author.name == "TK-2 reopened by alice"
    assert story(repo, "S-2")["status"] == "blocked_awaiting_feedback" and not await archived(world, thread2)
    assert load(repo, "status.json")["state"] == "BLOCKED"

    shown = embed_of(await world.alice.slash(channel, "ticket show", ticket="TK-1"))
    assert shown.title.startswith("❓ TK-1") and thread1.mention in next(f.value for f in shown.fields
                                                                       if f.name == "Thread")


async def test_bad_input_gets_a_clear_private_answer_and_changes_nothing(world, demo):
    repo, channel = demo
    no_story = await world.alice.slash(channel, "ticket open", question=QUESTION, story="S-9")
    assert reply(no_story).ephemeral and "no story 'S-9'" in embed_of(no_story).description
    assert not (repo / ".orch-state" / "tickets.json").exists() and channel.threads == []
    unknown = await world.alice.slash(channel, "ticket resolve", ticket="TK-4", resolution="x")
    assert reply(unknown).ephemeral and "no ticket TK-4" in embed_of(unknown).description
    elsewhere = await world.alice.slash(world.general, "ticket list")
    assert reply(elsewhere).ephemeral and "belongs to no project" in embed_of(elsewhere).description


async def test_long_questions_and_mentions_stay_within_discords_rules(world, demo):
    repo, channel = demo
    question = "@everyone <@&1> should we " + "really " * 140 + "ship it or wait?"
    question = question[:1000]
    result, thread = await open_ticket(world, channel, question=question, context="x" * 4000)
    assert thread is not None and len(thread.name) <= 100 and thread.name.startswith("TK-1: @everyone")
    posted = next(m for m in channel.history() if m.embeds and m.embeds[0].title.startswith("TK-1"))
    assert_within_limits(posted)
    await world.alice.send(thread, "@everyone " + "hmm " * 450)
    assert_within_limits(bot_messages(world, thread)[-1])
    sent = [r for r in world.env.http_requests if r.method == "POST" and r.path.endswith("/messages")]
    assert sent and all(r.json.get("allowed_mentions", {}).get("parse") == [] for r in sent)


async def test_deciding_a_ticket_never_posts_in_or_archives_another_projects_thread(world, demo, make_repo):
    repo, channel = demo
    other_repo, other_channel, other_thread = await ticket_in_each_of_two_projects(world, demo, make_repo)
    # A hand edit points demo's ticket at the other project's thread.
    path = repo / ".orch-state" / "tickets.json"
    data = json.loads(path.read_text())
    data["tickets"][0]["thread_id"] = other_thread.id
    path.write_text(json.dumps(data, indent=2))

    resolved = await world.alice.slash(channel, "ticket resolve", ticket="TK-1", resolution="Use PostgreSQL.")
    assert ticket(repo)["status"] == "resolved" and not reply(resolved).ephemeral  # demo's own ticket is decided
    await world.alice.slash(channel, "ticket reopen", ticket="TK-1")
    assert ticket(repo)["status"] == "open"
    await world.alice.slash(channel, "story update", story="S-1", status="done")  # closes TK-1: no note there
    assert ticket(repo)["status"] == "closed"

    assert bot_messages(world, other_thread) == []
    assert not await archived(world, other_thread)
    assert ticket(other_repo)["status"] == "open"


async def test_a_thread_reply_is_scored_by_the_command_scorer(world, demo, orch, config):
    import sys
    from pathlib import Path

    from orchestration.config import TicketSettings

    repo, channel = demo
    _, thread = await open_ticket(world, channel)
    standin = Path(__file__).parents[1] / "orchestration" / "agents" / "fixtures" / "clarity_standin.py"
    scores = json.dumps({"completeness": 30, "consistency": 60, "actionability": 20,
                         "missing": ["Which region will it run in?"]})
    config.tickets = TicketSettings(scorer="command", scorer_command=[sys.executable, str(standin), "answer", scores])

    await world.alice.send(thread, CLEAR)  # the rules would resolve it; the command says no

    follow_up = bot_messages(world, thread)[-1].embeds[0]
    assert follow_up.title == "TK-1: not clear enough yet" and "Which region will it run in?" in follow_up.description
    assert ticket(repo)["status"] == "open" and ticket(repo)["replies"][0]["score"]["scorer"] == "command"

    reference = Path(__file__).parents[2] / "agents" / "clarity_scorer.py"
    config.tickets = TicketSettings(scorer="command", scorer_command=[sys.executable, str(reference)])
    await world.alice.send(thread, "Because we already run it.")

    assert bot_messages(world, thread)[-1].embeds[0].title == "TK-1 resolved"
    assert ticket(repo)["status"] == "resolved" and ticket(repo)["replies"][1]["score"]["scorer"] == "command"
    assert await archived(world, thread)
