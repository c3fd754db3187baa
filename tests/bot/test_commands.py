"""Project commands in their channel: real files, real git, Discord's rules on what comes back."""
from __future__ import annotations

import logging
import re

import discord

from tests.bot.conftest import assert_within_limits, embed_of, field, load, reply
from tests.conftest import git


async def test_epic_changes_backlog_json_and_lands_in_git_log(world, demo, orch):
    repo, channel = demo
    result = await world.alice.slash(channel, "epic create", title="Checkout flow", description="Pay by card")

    assert not reply(result).ephemeral
    assert embed_of(result).title == "E-1 · Checkout flow"
    backlog = load(repo, "backlog.json")
    assert [(e["id"], e["title"], e["created_by"]) for e in backlog["epics"]] == [("E-1", "Checkout flow", "alice")]
    await orch.flush()
    assert 'orch(E-1): create epic "Checkout flow" (/epic create by alice)' in git(repo, "log", "--format=%B", "-1")


async def test_sprint_plan_writes_the_sprint_file(world, demo, orch):
    repo, channel = demo
    await world.alice.slash(channel, "epic create", title="Checkout")
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Card form", points=3, priority="high")
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Receipt", points=2)

    result = await world.alice.slash(channel, "sprint plan", stories="S-2, S-1", goal="Take money")

    sprint = load(repo, "sprints/sprint-001.json")
    assert sorted(sprint["stories"]) == ["S-1", "S-2"] and sprint["goal"] == "Take money"
    assert load(repo, "status.json")["state"] == "SPRINT_PLANNED"
    embed = embed_of(result)
    assert embed.title.startswith("sprint-001") and "`░░░░░░░░░░ 0%` 0/5" in field(embed, "Points")


async def test_a_change_made_despite_a_write_error_says_saved_but(world, demo):
    """The sprint file's place is taken by a folder: once the journal is durable the plan is made (the next
    command finishes it), so the reply is a success that says what went wrong, not an error that invites a retry."""
    repo, channel = demo
    await world.alice.slash(channel, "epic create", title="Checkout")
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Card form", points=3)
    (repo / ".orch-state" / "sprints" / "sprint-001.json").mkdir()

    embed = embed_of(await world.alice.slash(channel, "sprint plan"))

    assert embed.title.startswith("sprint-001") and "not fully on disk" in field(embed, "Saved, but")
    assert load(repo, "backlog.json")["stories"][0]["sprint"] == "sprint-001"


async def test_a_command_in_the_wrong_state_answers_with_the_allowed_commands(world, demo):
    repo, channel = demo
    before = (repo / ".orch-state" / "status.json").read_bytes()

    result = await world.alice.slash(channel, "sprint start")

    assert reply(result).ephemeral
    embed = embed_of(result)
    assert embed.title == "Not possible now" and "`/sprint start`" in embed.description
    assert field(embed, "Current state") == "`IDLE`"
    allowed = field(embed, "Allowed now")
    assert "`/epic create`" in allowed and "`/sprint plan`" in allowed and "/sprint start" not in allowed
    assert "`/epic create`" in field(embed, "Hint")  # the core's hint, with slash commands
    assert (repo / ".orch-state" / "status.json").read_bytes() == before


async def test_a_command_in_an_unregistered_channel_changes_nothing_and_lists_project_channels(world, demo):
    repo, channel = demo
    before = (repo / ".orch-state" / "backlog.json").read_bytes()

    result = await world.alice.slash(world.general, "epic create", title="Lost")

    assert reply(result).ephemeral
    embed = embed_of(result)
    assert "belongs to no project" in embed.description and f"{channel.mention} → demo" in field(embed, "Hint")
    assert (repo / ".orch-state" / "backlog.json").read_bytes() == before


async def test_a_command_in_a_thread_goes_to_the_parent_channels_project(world, demo):
    repo, channel = demo
    parent = world.env.bot.get_channel(channel.id)
    await parent.create_thread(name="design talk", type=discord.ChannelType.public_thread)
    await world.env.settle()
    thread = channel.threads[0]

    result = await world.alice.slash(thread, "epic create", title="From a thread")

    assert embed_of(result).title == "E-1 · From a thread"
    assert load(repo, "backlog.json")["epics"][0]["title"] == "From a thread"


async def test_a_non_member_is_refused(world, demo):
    repo, channel = demo
    world.env.bot.config.discord.member_role = "scrum"
    role = world.guild.create_role("scrum")
    bob = world.guild.add_member(world.env.create_user("bob"), roles=[role])

    refused = await world.alice.slash(channel, "epic create", title="Nope")
    assert reply(refused).ephemeral and "Only the `scrum` role and admins" in embed_of(refused).description
    assert load(repo, "backlog.json")["epics"] == []

    looked = await world.alice.slash(channel, "state")  # reading is for everyone
    assert embed_of(looked).title == "demo · IDLE"
    allowed = await bob.slash(channel, "epic create", title="Yes")
    assert embed_of(allowed).title == "E-1 · Yes"
    by_admin = await world.admin.slash(channel, "epic create", title="Admins are members")
    assert embed_of(by_admin).title.startswith("E-2")


async def test_2000_character_inputs_get_a_clear_answer_and_stay_within_limits(world, demo, orch):
    repo, channel = demo
    long = "x" * 1999 + "!"

    too_long = await world.alice.slash(channel, "epic create", title=long)
    assert reply(too_long).ephemeral
    assert "title must be at most 200 characters (got 2000)" in embed_of(too_long).description
    assert load(repo, "backlog.json")["epics"] == []

    epic = await world.alice.slash(channel, "epic create", title="Big", description=long)
    assert_within_limits(reply(epic))
    assert load(repo, "backlog.json")["epics"][0]["description"] == long  # stored whole, shown cut
    story = await world.alice.slash(channel, "backlog add_story", epic="E-1", title="y" * 200, description=long * 2)
    assert_within_limits(reply(story))
    assert "chars cut" in embed_of(story).description
    await world.alice.slash(channel, "sprint plan")
    await world.alice.slash(channel, "sprint start")
    await world.alice.slash(channel, "sprint review")

    feedback = await world.alice.slash(channel, "feedback", text=long)

    assert_within_limits(reply(feedback))
    assert load(repo, "sprints/sprint-001.json")["retrospective"]["text"] == long


async def test_everyone_in_a_title_pings_nobody(world, demo):
    repo, channel = demo
    await world.alice.slash(channel, "epic create", title="Hello @everyone and @here")
    await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Ping <@&123> @everyone")
    await world.alice.slash(channel, "backlog view")

    replies = [r for r in world.env.http_requests
               if r.method == "POST" and (r.path.endswith("/callback") or "/webhooks/" in r.path
                                          or r.path.endswith("/messages"))]
    echoed = [r for r in replies if "@everyone" in str(r.json)]
    assert len(echoed) >= 3
    for request in echoed:
        payload = request.json.get("data", request.json)
        assert payload["allowed_mentions"] == {"parse": []}, request


async def test_autocomplete_offers_at_most_25_matching_choices(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    await orch.create_epic("demo", "Search", by="t")
    for n in range(30):
        await orch.add_story("demo", "E-1", f"Story number {n}", by="t")

    stories = await world.alice.autocomplete(channel, "story update", "story", "")
    assert len(stories) == 25 and all(len(c["name"]) <= 100 for c in stories)
    narrowed = await world.alice.autocomplete(channel, "backlog remove", "story", "number 2")
    assert {c["value"] for c in narrowed} == {"S-3", *(f"S-{n}" for n in range(21, 31))}
    epics = await world.alice.autocomplete(channel, "backlog add_story", "epic", "sea")
    assert epics == [{"name": "E-2 · Search", "value": "E-2"}]
    elsewhere = await world.alice.autocomplete(world.general, "story update", "story", "")
    assert elsewhere == []


async def test_backlog_view_pages_with_buttons(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    for n in range(23):
        await orch.add_story("demo", "E-1", f"Story {n + 1}", by="t")

    first = await world.alice.slash(channel, "backlog view")
    message = reply(first)
    assert message.embeds[0].footer.text.startswith("page 1/3 · 23 stories")
    assert "S-1" in message.embeds[0].description and "S-11" not in message.embeds[0].description

    await world.alice.click(message, label="Next")
    page2 = world.env.bot.get_channel(channel.id)
    edited = (await page2.fetch_message(message.id)).embeds[0]
    assert edited.footer.text.startswith("page 2/3") and "S-11" in edited.description
    await world.alice.click(message, label="Next")
    last = await page2.fetch_message(message.id)
    assert last.embeds[0].footer.text.startswith("page 3/3")
    assert [c.disabled for c in last.components[0].children] == [False, True]  # no Next on the last page
    await world.alice.click(message, label="Previous")
    assert (await page2.fetch_message(message.id)).embeds[0].footer.text.startswith("page 2/3")

    await world.env.advance_time(601)  # the buttons do not expire (tests/bot/test_discord_finish.py: restarts)
    await world.alice.click(message, label="Next")
    assert (await page2.fetch_message(message.id)).embeds[0].footer.text.startswith("page 3/3")


async def test_a_failing_page_turn_still_answers_the_click(world, demo, orch, caplog):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    for n in range(12):
        await orch.add_story("demo", "E-1", f"Story {n + 1}", by="t")
    message = reply(await world.alice.slash(channel, "backlog view"))
    backlog = repo / ".orch-state" / "backlog.json"
    saved = backlog.read_bytes()
    backlog.unlink()
    backlog.mkdir()  # reading it now fails with an OSError, no OrchError: an unexpected failure
    try:
        with caplog.at_level(logging.ERROR):
            clicked = await world.alice.click(message, label="Next")
    finally:
        backlog.rmdir()
        backlog.write_bytes(saved)
    [answer] = clicked.followups  # the click was answered at once (deferred), the failure privately after
    assert answer.ephemeral and answer.embeds[0].title == "Something went wrong"
    [logged] = [r for r in caplog.records if "backlog pager" in r.getMessage()]
    assert isinstance(logged.exc_info[1], IsADirectoryError)


async def test_sprint_status_attaches_a_burndown_chart(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Shop", by="t")
    await orch.add_story("demo", "E-1", "One", points=3, by="t")
    await orch.add_story("demo", "E-1", "Two", points=5, by="t")
    await orch.plan_sprint("demo", by="t")
    await orch.start_sprint("demo", by="t")
    await orch.update_story("demo", "S-2", "done", by="t")

    result = await world.alice.slash(channel, "sprint status")

    message = reply(result)
    assert not message.ephemeral
    [attachment] = message.attachments
    assert attachment.filename == "burndown.png"
    png = await attachment.read()
    assert png.startswith(b"\x89PNG")
    embed = message.embeds[0]
    assert embed.image.url == "attachment://burndown.png"
    assert "`██████░░░░ 62%` 5/8" in field(embed, "Points")


async def test_sprint_status_before_any_sprint_is_a_private_answer(world, demo):
    repo, channel = demo
    result = await world.alice.slash(channel, "sprint status")
    assert reply(result).ephemeral and "No sprint yet" in embed_of(result).description


async def test_an_unexpected_failure_is_a_friendly_message_and_a_logged_traceback(world, demo, caplog):
    repo, channel = demo
    # Discord fails the first reply: an exception that is no OrchError, raised inside the command.
    world.env.inject_error("POST", "/interactions/*/callback", status=500, times=1)

    with caplog.at_level(logging.INFO):
        result = await world.alice.slash(channel, "epic create", title="Anyone there?")

    embed = embed_of(result)
    assert reply(result).ephemeral and embed.title == "Something went wrong"
    assert "Traceback" not in str(embed.to_dict())
    [error] = world.env.errors  # recorded by the tree's on_error (acknowledged here)
    assert isinstance(error.original, discord.HTTPException)
    failed = [r for r in caplog.records if r.name == "bot" and r.levelno == logging.ERROR]
    assert failed and failed[0].exc_info  # the traceback is in the log, for the admins
    assert "project=demo command=\"epic create\" user=alice outcome=error" in caplog.text
    assert load(repo, "backlog.json")["epics"][0]["title"] == "Anyone there?"  # the change itself was made


async def test_one_structured_log_line_per_command(world, demo, caplog):
    repo, channel = demo
    with caplog.at_level(logging.INFO, logger="bot.commands"):
        await world.alice.slash(channel, "epic create", title="Logged")
        await world.alice.slash(channel, "sprint start")
        await world.alice.slash(world.general, "state")
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.commands"]
    assert len(lines) == 3
    assert re.fullmatch(r"project=demo command=\"epic create\" user=alice outcome=ok latency_ms=\d+", lines[0])
    assert "command=\"sprint start\"" in lines[1] and "outcome=refused:CommandNotAllowed" in lines[1]
    assert lines[2].startswith("project=- command=state") and "outcome=refused:WrongChannel" in lines[2]


async def test_autocomplete_answers_with_no_choices_when_the_registry_is_damaged(world, demo, config):
    """An autocomplete that raises is never answered (Discord shows "loading options failed"): it offers none."""
    repo, channel = demo
    (config.orchestrator.data_dir / "registry.json").write_text("{ not json")

    def answered() -> int:
        return sum(1 for r in world.env.http_requests
                   if r.path.endswith("/callback") and r.json.get("type") == 8)

    for user, command, option in ((world.alice, "story update", "story"), (world.alice, "backlog add_story", "epic"),
                                  (world.alice, "ticket show", "ticket"),
                                  (world.admin, "project unregister", "name")):
        before = answered()
        assert await user.autocomplete(channel, command, option, "") == []
        assert answered() == before + 1, command


async def test_a_message_that_mentions_the_bot_logs_no_error(world, demo, simcord_bot, caplog):
    """The bot has slash commands only: a mention is a message like any other, not an unknown command.
    SimCord listens for command errors itself, which silences discord.py's default handler: that listener goes,
    so this sees what the bot itself logs in production."""
    repo, channel = demo
    simcord_bot.extra_events.pop("on_command_error", None)
    with caplog.at_level(logging.INFO):
        for where in (world.general, channel):
            await world.alice.send(where, f"{simcord_bot.user.mention} hello, what can you do?")
            await world.alice.send(where, f"{simcord_bot.user.mention}help")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert world.env.errors == []


async def test_without_an_agent_configured_the_bot_runs_none_and_people_move_the_stories(world, demo, orch):
    repo, channel = demo
    assert not orch.agents.running_here
    for command, options in [("epic create", {"title": "Shop"}), ("backlog add_story", {"epic": "E-1", "title": "Cart"}),
                             ("sprint plan", {}), ("sprint start", {})]:
        await world.alice.slash(channel, command, **options)
    await world.alice.slash(channel, "story update", story="S-1", status="done")
    assert load(repo, "status.json")["state"] == "SPRINT_REVIEW"
    assert not (repo / ".orch-state" / "runs").exists()  # no agent attempt was ever made
