"""The work queue in Discord: /backlog depend, /backlog next and add_story's depends_on, through SimCord and
discord.py's real dispatch over a real repository and the real orchestrator."""
from __future__ import annotations

from tests.bot.conftest import assert_within_limits, embed_of, field, load, reply
from tests.conftest import git


def depends(repo, story: str) -> list[str]:
    return next(s["depends_on"] for s in load(repo, "backlog.json")["stories"] if s["id"] == story)


def backlog_bytes(repo) -> bytes:
    return (repo / ".orch-state" / "backlog.json").read_bytes()


async def three_stories(orch) -> None:
    await orch.create_epic("demo", "Shop", by="t")
    for title in ("Card form", "Receipt", "Refunds"):
        await orch.add_story("demo", "E-1", title, by="t")


async def test_depend_sets_the_dependencies_shows_them_and_lands_in_git_log(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)

    result = await world.alice.slash(channel, "backlog depend", story="S-3", on="s-1, S-2")

    assert depends(repo, "S-3") == ["S-1", "S-2"]
    embed = embed_of(result)
    assert not reply(result).ephemeral and embed.title == "S-3 · Refunds" and embed.author.name == "Dependencies set"
    assert field(embed, "Depends on") == "S-1, S-2 (was nothing)"
    assert_within_limits(reply(result))
    await orch.flush()
    assert "orch(S-3): depends on S-1, S-2 (was nothing) (/backlog depend by alice)" in \
        git(repo, "log", "--format=%B", "-1")


async def test_depend_without_on_clears_and_says_what_became_ready(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)
    await orch.set_dependencies("demo", "S-3", ["S-1"], by="t")

    result = await world.alice.slash(channel, "backlog depend", story="S-3")

    assert depends(repo, "S-3") == []
    embed = embed_of(result)
    assert field(embed, "Depends on") == "nothing (was S-1)"
    assert "Now ready: S-3" in field(embed, "Also")


async def test_depend_offers_the_stories_in_autocomplete(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)

    choices = await world.alice.autocomplete(channel, "backlog depend", "story", "refu")

    assert choices == [{"name": "S-3 · Refunds [todo]", "value": "S-3"}]


async def test_a_cycle_is_refused_privately_and_changes_nothing(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)
    await world.alice.slash(channel, "backlog depend", story="S-2", on="S-1")
    await world.alice.slash(channel, "backlog depend", story="S-3", on="S-2")
    before = backlog_bytes(repo)

    result = await world.alice.slash(channel, "backlog depend", story="S-1", on="S-3")

    assert reply(result).ephemeral
    embed = embed_of(result)
    assert embed.title == "Not done" and "S-1 -> S-3 -> S-2 -> S-1" in embed.description
    assert backlog_bytes(repo) == before


async def test_itself_and_a_missing_story_are_refused_privately(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)
    before = backlog_bytes(repo)

    itself = await world.alice.slash(channel, "backlog depend", story="S-2", on="S-1 S-2")
    missing = await world.alice.slash(channel, "backlog depend", story="S-2", on="S-9")
    no_story = await world.alice.slash(channel, "backlog depend", story="S-42", on="S-1")

    assert all(reply(r).ephemeral for r in (itself, missing, no_story))
    assert "S-2 cannot depend on itself" in embed_of(itself).description
    assert "there is no story S-9" in embed_of(missing).description
    assert "there is no story 'S-42'" in embed_of(no_story).description
    assert "`/backlog view`" in field(embed_of(missing), "Hint")
    assert backlog_bytes(repo) == before


async def test_a_non_member_may_read_the_queue_but_not_set_dependencies(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)
    world.env.bot.config.discord.member_role = "scrum"
    before = backlog_bytes(repo)

    refused = await world.alice.slash(channel, "backlog depend", story="S-3", on="S-1")

    assert reply(refused).ephemeral and "Only the `scrum` role and admins" in embed_of(refused).description
    assert backlog_bytes(repo) == before
    looked = await world.alice.slash(channel, "backlog next")
    assert embed_of(looked).title == "Next: S-1 · Card form"


async def test_next_orders_by_priority_then_dependencies_then_age(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    await orch.add_story("demo", "E-1", "Old medium", by="t")  # S-1
    await orch.add_story("demo", "E-1", "Blocked high", priority="high", by="t")  # S-2, waits for S-3 below
    await orch.add_story("demo", "E-1", "Ready high", priority="high", by="t")  # S-3
    await orch.add_story("demo", "E-1", "New medium", by="t")  # S-4
    await orch.add_story("demo", "E-1", "Busy", by="t")  # S-5
    await orch.set_dependencies("demo", "S-2", ["S-3"], by="t")
    await orch.update_story("demo", "S-5", "in_progress", by="t")

    result = await world.alice.slash(channel, "backlog next")

    embed = embed_of(result)
    assert not reply(result).ephemeral and embed.title == "Next: S-3 · Ready high"
    assert field(embed, "Scope") == "the backlog (no sprint under way)"
    ready = field(embed, "Ready, next first (3)")
    assert [line.split("**")[1] for line in ready.splitlines()] == ["S-3", "S-1", "S-4"]
    assert field(embed, "Waiting (1)") == "**S-2** waits for S-3"
    assert field(embed, "In progress (1)") == "S-5"
    assert_within_limits(reply(result))

    await world.alice.slash(channel, "story update", story="S-3", status="done")
    after = embed_of(await world.alice.slash(channel, "backlog next"))
    assert after.title == "Next: S-2 · Blocked high"  # its dependency is done: high priority goes first


async def test_next_switches_to_the_sprints_stories_during_a_sprint(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    await orch.add_story("demo", "E-1", "Old medium", by="t")  # S-1
    await orch.add_story("demo", "E-1", "Critical, not in the sprint", priority="critical", by="t")  # S-2
    await orch.add_story("demo", "E-1", "Newer medium", by="t")  # S-3
    await world.alice.slash(channel, "sprint plan", stories="S-3 S-1")
    await world.alice.slash(channel, "sprint start")

    embed = embed_of(await world.alice.slash(channel, "backlog next"))

    assert embed.title == "Next: S-1 · Old medium"
    assert field(embed, "Scope") == "sprint-001's stories"
    assert "S-2" not in field(embed, "Ready, next first (2)")

    await world.alice.slash(channel, "sprint review")
    await world.alice.slash(channel, "feedback", text="Done for now")
    back = embed_of(await world.alice.slash(channel, "backlog next"))
    assert back.title == "Next: S-2 · Critical, not in the sprint"  # no sprint under way: the whole backlog
    assert field(back, "Scope") == "the backlog (no sprint under way)"


async def test_next_with_nothing_ready_says_so(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    await orch.add_story("demo", "E-1", "Only one", by="t")
    await orch.update_story("demo", "S-1", "blocked", by="t")

    embed = embed_of(await world.alice.slash(channel, "backlog next"))

    assert embed.title == "Nothing is ready" and field(embed, "Blocked (1)") == "S-1"


async def test_a_long_queue_is_cut_with_a_note_within_discords_limits(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    for n in range(60):
        await orch.add_story("demo", "E-1", f"A rather long story title, number {n} " + "x" * 80, by="t")
    for n in range(31, 61):
        await orch.set_dependencies("demo", f"S-{n}", [f"S-{m}" for m in range(1, 31)], by="t")

    result = await world.alice.slash(channel, "backlog next")

    assert_within_limits(reply(result))
    embed = embed_of(result)
    ready = field(embed, "Ready, next first (30)")
    assert ready.startswith("⬜ **S-1**") and ready.splitlines()[-1].startswith("… and ")
    shown = len(ready.splitlines()) - 1
    assert ready.splitlines()[-1] == f"… and {30 - shown} more"
    assert field(embed, "Waiting (30)").splitlines()[-1].startswith("… and ")


async def test_add_story_with_depends_on(world, demo, orch):
    repo, channel = demo
    await three_stories(orch)

    result = await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Invoices", depends_on="S-1,S-3")

    assert depends(repo, "S-4") == ["S-1", "S-3"]
    embed = embed_of(result)
    assert embed.author.name == "Story added" and field(embed, "Depends on") == "S-1, S-3"
    nothing = await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Alone")
    assert depends(repo, "S-5") == [] and all(f.name != "Depends on" for f in embed_of(nothing).fields)

    before = backlog_bytes(repo)
    refused = await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Ghost", depends_on="S-99")
    assert reply(refused).ephemeral and "there is no story S-99" in embed_of(refused).description
    assert backlog_bytes(repo) == before
