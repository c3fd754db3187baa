"""Ticket follow-ups in Discord, through SimCord and discord.py's real dispatch: a finished story's ticket threads
are closed, non-members cannot answer tickets, and /ticket is guild-only."""
from __future__ import annotations


from tests.bot.conftest import embed_of, load
from tests.bot.test_tickets_bot import CLEAR, archived, bot_messages, open_ticket, sprint_with_stories, \
    story, ticket


async def test_finishing_a_story_closes_its_ticket_threads_after_the_reply(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel, count=2)
    _, first = await open_ticket(world, channel, story="S-1")
    _, second = await open_ticket(world, channel, question="Which port: 8080 or 9000?", story="S-1")
    _, other = await open_ticket(world, channel, question="Blue or green?", story="S-2")

    start = len(world.env.http_requests)
    result = await world.alice.slash(channel, "story update", story="S-1", status="done")

    cascade = next(f.value for f in embed_of(result).fields if "TK-1" in f.value)
    assert "TK-2" in cascade and "TK-3" not in cascade
    for ident, thread in (("TK-1", first), ("TK-2", second)):
        note = bot_messages(world, thread)[-1]
        assert note.content == "Closed: S-1 was finished, so this question is no longer needed " \
                               f"(`/ticket reopen {ident}` brings it back)."
        assert len(bot_messages(world, thread)) == 1  # one note, nothing else
        assert await archived(world, thread)
    assert [t["status"] for t in load(repo, "tickets.json")["tickets"]] == ["closed", "closed", "open"]
    assert bot_messages(world, other) == [] and not await archived(world, other)  # S-2's ticket is untouched
    # The notes come after the command's answer, so the user is never kept waiting for the threads.
    requests = world.env.http_requests[start:]
    answered = next(i for i, r in enumerate(requests) if "in_progress" in str(r.json) or "done" in str(r.json))
    noted = next(i for i, r in enumerate(requests) if r.path == f"/channels/{first.id}/messages")
    assert answered < noted
    sent = [r for r in requests if r.method == "POST" and r.path.endswith("/messages")]
    assert all(r.json.get("allowed_mentions", {}).get("parse") == [] for r in sent)


async def test_a_ticket_on_no_story_is_not_closed_by_a_finished_story(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    _, thread = await open_ticket(world, channel)  # no story: finishing one never closes it
    await world.alice.slash(channel, "story update", story="S-1", status="done")
    assert bot_messages(world, thread) == [] and not await archived(world, thread)
    assert ticket(repo)["status"] == "open"


async def test_a_non_member_reply_changes_nothing_and_gets_one_short_answer(world, demo, orch):
    repo, channel = demo
    await sprint_with_stories(world, channel)
    _, thread = await open_ticket(world, channel, story="S-1")  # alice opens it while everyone is a member
    world.env.bot.config.discord.member_role = "scrum"
    role = world.guild.create_role("scrum")
    bob = world.guild.add_member(world.env.create_user("bob"), roles=[role])
    await orch.flush()
    before = (repo / ".orch-state" / "tickets.json").read_bytes()

    await world.alice.send(thread, CLEAR)

    answers = bot_messages(world, thread)
    assert len(answers) == 1
    assert answers[0].content == "Only members (the `scrum` role) can answer tickets; this reply changes nothing."
    assert answers[0].reference and answers[0].reference.message_id == thread.history()[-2].id
    assert (repo / ".orch-state" / "tickets.json").read_bytes() == before
    assert story(repo, "S-1")["status"] == "blocked_awaiting_feedback" and not await archived(world, thread)

    await world.admin.send(thread, "maybe mongo? not sure")  # an admin is a member: scored, not refused
    assert bot_messages(world, thread)[-1].embeds[0].title == "TK-1: not clear enough yet"
    await bob.send(thread, CLEAR)  # a member with the role: resolves
    assert ticket(repo)["status"] == "resolved" and [r["author"] for r in ticket(repo)["replies"]] == ["ada", "bob"]
    assert story(repo, "S-1")["status"] == "todo" and await archived(world, thread)


async def test_ticket_commands_are_offered_in_servers_only(world, demo):
    _, channel = demo
    ticket_commands = {"ticket open", "ticket resolve", "ticket reopen", "ticket list", "ticket show"}
    assert ticket_commands <= set(world.alice.available_commands(channel))
    assert not ticket_commands & set(world.env.create_user("carol").available_commands())
    assert world.env.bot.tree.get_command("ticket").guild_only is True
    shown = await world.alice.slash(channel, "ticket list")  # still works where it belongs
    assert embed_of(shown).title == "Tickets of demo"
