"""Issue 12's "wrong or surprising" through Discord's real dispatch: a re-plan keeps what is not given and names
the stories that left and joined, one that changes nothing writes nothing; each front-end speaks its own names;
messages in plain words."""
from __future__ import annotations

from tests.bot.conftest import embed_of, field, load, reply
from tests.conftest import git


async def _three_stories(world, channel) -> None:
    await world.alice.slash(channel, "epic create", title="Checkout")
    for title, points in (("Cart", 3), ("Pay", 5), ("Receipt", 8)):
        await world.alice.slash(channel, "backlog add_story", epic="E-1", title=title, points=points)


async def test_a_replan_keeps_the_goal_names_who_left_and_joined_and_an_idle_one_commits_nothing(world, demo, orch):
    repo, channel = demo
    await _three_stories(world, channel)
    embed = embed_of(await world.alice.slash(channel, "sprint plan", stories="S-1 S-2", goal="Take money"))
    assert embed.author.name == "sprint-001 planned"

    embed = embed_of(await world.alice.slash(channel, "sprint plan", stories="S-1 S-3"))
    assert embed.author.name == "sprint-001 re-planned"
    assert field(embed, "Changes") == "Joined: S-3\nLeft (back to the backlog): S-2"
    sprint = load(repo, "sprints/sprint-001.json")
    assert sprint["goal"] == "Take money" and sprint["stories"] == ["S-1", "S-3"]  # the goal was not given: kept
    await orch.flush()
    assert "re-plan sprint-001 with 2 stories, 11 points: S-3 joined; S-2 left (/sprint plan by alice)" in \
        git(repo, "log", "-1", "--format=%s")

    head, files = git(repo, "rev-parse", "HEAD"), (repo / ".orch-state" / "sprints" / "sprint-001.json").read_bytes()
    result = await world.alice.slash(channel, "sprint plan", stories="S-1, S-3")
    assert "unchanged" in embed_of(result).author.name and "nothing committed" in embed_of(result).author.name
    await orch.flush()
    assert git(repo, "rev-parse", "HEAD") == head
    assert (repo / ".orch-state" / "sprints" / "sprint-001.json").read_bytes() == files


async def test_discord_hints_name_slash_commands_and_a_waiting_story_names_its_ticket(world, demo):
    repo, channel = demo
    embed = embed_of(await world.alice.slash(channel, "epic create", title="Checkout"))
    assert field(embed, "Next") == "Shape the backlog, then `/sprint plan`."
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Cart", points=3)
    await world.alice.slash(channel, "sprint plan")
    await world.alice.slash(channel, "sprint start")
    await world.alice.slash(channel, "ticket open", question="Card or cash?", story="S-1")

    refused = await world.alice.slash(channel, "story update", story="S-1", status="in_progress")
    assert reply(refused).ephemeral
    embed = embed_of(refused)
    assert embed.description == "status: S-1 waits for an answer to TK-1."
    assert '`/ticket resolve TK-1 "..."`' in field(embed, "Hint")
