"""The README's walk-through, from /project register to /feedback, as a person would run it."""
from __future__ import annotations

from tests.bot.conftest import assert_within_limits, embed_of, field, load, register, reply
from tests.conftest import git


async def test_walkthrough_from_register_to_feedback(world, make_repo, orch):
    repo = make_repo("shop")
    (repo / "notes.txt").write_text("the user's own work in progress\n")
    git(repo, "add", "notes.txt")  # staged by the user: must stay staged and uncommitted
    alice = world.alice

    registered, channel = await register(world, repo)
    assert channel is not None and "Registered shop" in embed_of(registered).title

    steps = [
        (alice, "epic create", {"title": "Checkout", "description": "Customers pay online"}, "E-1 · Checkout"),
        (alice, "backlog add_story", {"epic": "E-1", "title": "Card form", "points": 3, "priority": "high"},
         "S-1 · Card form"),
        (alice, "backlog add_story", {"epic": "E-1", "title": "Receipt email", "points": 2}, "S-2 · Receipt email"),
        (alice, "backlog add_story", {"epic": "E-1", "title": "Refunds", "points": 8, "priority": "low"},
         "S-3 · Refunds"),
        (alice, "backlog prioritize", {"story": "S-2", "priority": "critical"}, "S-2 · Receipt email"),
        (alice, "backlog remove", {"story": "S-3"}, "S-3 · Refunds"),
        (alice, "sprint plan", {"goal": "Take the first payment"}, "sprint-001 · planned · Take the first payment"),
        (alice, "sprint start", {}, "sprint-001 · active · Take the first payment"),
        (alice, "story update", {"story": "S-1", "status": "in_progress"}, "S-1 · Card form"),
        (alice, "story update", {"story": "S-1", "status": "done"}, "S-1 · Card form"),
        (alice, "sprint pause", {}, "sprint-001 · paused · Take the first payment"),
        (alice, "sprint resume", {}, "sprint-001 · active · Take the first payment"),
    ]
    for actor, command, options, title in steps:
        result = await actor.slash(channel, command, **options)
        message = reply(result)
        assert not message.ephemeral, (command, message.embeds[0].to_dict())
        assert message.embeds[0].title == title, command
        assert_within_limits(message)

    view = await alice.slash(channel, "backlog view")
    assert "S-3" not in embed_of(view).description and "S-2" in embed_of(view).description

    last = await alice.slash(channel, "story update", story="S-2", status="done")
    also = field(embed_of(last), "Also")
    assert "sprint moved to review" in also and "SPRINT_ACTIVE → SPRINT_REVIEW" in also

    status = await alice.slash(channel, "sprint status")
    assert reply(status).attachments[0].filename == "burndown.png"
    assert "5/5" in field(embed_of(status), "Points")

    feedback = await alice.slash(channel, "feedback", text="Smooth sprint; write tests first next time.")
    assert "sprint-001 closed" in embed_of(feedback).author.name
    state = await alice.slash(channel, "state")
    assert embed_of(state).title == "shop · IDLE"
    assert "/feedback by alice: SPRINT_REVIEW → IDLE" in field(embed_of(state), "Recent changes")

    sprint = load(repo, "sprints/sprint-001.json")
    assert sprint["status"] == "closed" and sprint["retrospective"]["by"] == "alice"
    assert load(repo, "status.json")["state"] == "IDLE"
    await orch.flush()
    log = git(repo, "log", "--format=%B", "--", ".orch-state")
    for text in ('create epic "Checkout"', "S-1, E-1", "priority medium -> critical", 'remove story "Refunds"',
                 "plan sprint-001", "start sprint-001", "status in_progress -> done", "pause sprint-001",
                 "close sprint-001 with feedback"):
        assert text in log, text
    assert git(repo, "status", "--porcelain") == "A  notes.txt\n"  # the user's staged file, untouched


async def test_changes_requested_returns_to_the_backlog(world, demo):
    repo, channel = demo
    await world.alice.slash(channel, "epic create", title="Search")
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Index", points=5)
    await world.alice.slash(channel, "sprint plan")
    await world.alice.slash(channel, "sprint start")
    await world.alice.slash(channel, "sprint review")

    result = await world.alice.slash(channel, "feedback", text="Not good enough yet", changes_requested=True)

    assert "back to the backlog: S-1" in embed_of(result).author.name
    assert load(repo, "status.json")["state"] == "BACKLOG_READY"
    assert load(repo, "sprints/sprint-001.json")["retrospective"]["changes_requested"] is True
    refused = await world.alice.slash(channel, "feedback", text="again")
    assert "`/feedback changes_requested:True`" not in field(embed_of(refused), "Allowed now")
    assert "`/sprint plan`" in field(embed_of(refused), "Allowed now")
