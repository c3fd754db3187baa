"""Fit and finish in Discord: the story form (/backlog add_story without a title), acceptance criteria in the sprint
view, /sprint plan capacity:, option limits Discord enforces, stories and epics by words of their title, and the
backlog pager's buttons across a restart and a changed backlog. All through SimCord's real dispatch."""
from __future__ import annotations

import pytest
from simcord.backend.errors import OptionError

from bot import handling
from bot.client import create_bot
from orchestration.models import POINTS_MAX, TEXT_MAX, TITLE_MAX
from orchestration.tickets import QUESTION_MAX
from tests.bot.conftest import assert_within_limits, deferrals, embed_of, field, load, reply

PARAGRAPH = 2  # a form's multi-line text field


def synced(env, name: str) -> dict:
    """The command `name` ("backlog add_story") as the bot last synced it to Discord."""
    [put] = [r for r in env.http_requests if r.method == "PUT" and r.path.endswith("/commands")][-1:]
    top, *sub = name.split()
    command = next(c for c in put.json if c["name"] == top)
    return next(o for o in command["options"] if o["name"] == sub[0]) if sub else command


def option(command: dict, name: str) -> dict:
    return next(o for o in command["options"] if o["name"] == name)


def form_fields(shown) -> dict[str, dict]:
    return {c["custom_id"]: c for row in shown.modal["components"] for c in row["components"]}


def stories(repo) -> dict[str, dict]:
    return {s["id"]: s for s in load(repo, "backlog.json")["stories"]}


# -- the story form ---------------------------------------------------------------------------------------------

async def test_add_story_without_a_title_opens_a_form_and_its_submit_adds_the_story(world, demo, orch, caplog):
    repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    before = deferrals(world.env)
    shown = await world.alice.slash(channel, "backlog add_story", epic="checkout", points=3, priority="high")

    assert shown.modal is not None and deferrals(world.env) == before  # the form is the first answer
    assert shown.modal["title"] == "New story in E-1 · Checkout"
    fields = form_fields(shown)
    assert fields["title"]["max_length"] == TITLE_MAX and fields["title"].get("required", True)
    assert fields["description"]["style"] == PARAGRAPH and fields["description"]["max_length"] == TEXT_MAX
    assert fields["criteria"]["style"] == PARAGRAPH
    assert stories(repo) == {}  # nothing is added before the form is sent

    with caplog.at_level("INFO", logger="bot.commands"):
        done = await world.alice.submit_modal(shown, {
            "title": "Card form", "description": "Pay by card.\nThree steps at most.",
            "criteria": "accepts Visa\n\n  refuses expired cards; politely  \n"})
    story = stories(repo)["S-1"]
    assert (story["title"], story["epic"], story["points"], story["priority"]) == ("Card form", "E-1", 3, "high")
    assert story["description"] == "Pay by card.\nThree steps at most."
    assert story["acceptance_criteria"] == ["accepts Visa", "refuses expired cards; politely"]  # one a line
    embed = embed_of(done)
    assert embed.title == "S-1 · Card form" and not reply(done).ephemeral
    assert "☐ accepts Visa" in field(embed, "Acceptance criteria (2)")
    assert any("command=\"backlog add_story\"" in r.getMessage() and "outcome=ok" in r.getMessage()
               for r in caplog.records)


async def test_a_refused_form_submit_is_a_private_answer_and_adds_nothing(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    shown = await world.alice.slash(channel, "backlog add_story", epic="E-1", depends_on="S-7")
    refused = await world.alice.submit_modal(shown, {"title": "Card form"})
    assert reply(refused).ephemeral and "there is no story S-7" in embed_of(refused).description
    assert stories(repo) == {}


async def test_the_form_is_not_opened_for_an_epic_that_is_not_there(world, demo, orch):
    _repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    refused = await world.alice.slash(channel, "backlog add_story", epic="E-9")
    assert refused.modal is None and reply(refused).ephemeral
    assert "there is no epic 'E-9'" in embed_of(refused).description


async def test_a_form_too_slow_to_be_the_first_answer_says_so(world, demo, orch, monkeypatch):
    """Discord takes a form only as the first answer: once the watchdog has deferred the command (here at once,
    the delay set to 0), the user is told, privately, what to do instead."""
    _repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    monkeypatch.setattr(handling, "DEFER_AFTER_S", 0)
    refused = await world.alice.slash(channel, "backlog add_story", epic="E-1")
    assert refused.modal is None
    [answer] = [m for m in refused.followups if m.ephemeral]
    assert "The form could not open" in answer.embeds[0].description
    assert "give the title as an option" in answer.embeds[0].fields[-1].value


async def test_with_a_title_criteria_are_separated_by_semicolons(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    done = await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Receipt",
                                   criteria="sent by mail; ; shows the total;")
    assert done.modal is None and embed_of(done).title == "S-1 · Receipt"
    assert stories(repo)["S-1"]["acceptance_criteria"] == ["sent by mail", "shows the total"]


# -- acceptance criteria in the sprint view, /sprint plan capacity: -------------------------------------------------

async def test_sprint_plan_with_capacity_picks_within_it_and_shows_the_criteria(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    await orch.add_story("demo", "E-1", "Card form", points=2, priority="high",
                         acceptance_criteria=["accepts Visa", "refuses expired cards"], by="t")
    await orch.add_story("demo", "E-1", "Receipt", points=3, by="t")

    planned = await world.alice.slash(channel, "sprint plan", capacity=2, goal="Take money")
    sprint = load(repo, "sprints/sprint-001.json")
    assert sprint["stories"] == ["S-1"] and sprint["capacity"] == 2
    text = embed_of(planned).description
    assert "☐ accepts Visa" in text and "☐ refuses expired cards" in text and "Receipt" not in text

    await orch.start_sprint("demo", by="t")
    await orch.update_story("demo", "S-1", "done", by="t")
    status = await world.alice.slash(channel, "sprint status")
    assert "☑ accepts Visa" in embed_of(status).description  # the story is done


async def test_the_sprint_view_keeps_within_discords_limits_with_many_long_criteria(world, demo, orch):
    _repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    for n in range(12):
        await orch.add_story("demo", "E-1", f"Story {n} " + "t" * 150, points=1, by="t",
                             acceptance_criteria=[f"criterion {k} " + "c" * 380 for k in range(20)])
    planned = await world.alice.slash(channel, "sprint plan", capacity=12)
    assert_within_limits(reply(planned))
    text = embed_of(planned).description
    assert all(f"**S-{n}**" in text for n in range(1, 13))  # every story keeps its line; criteria make room
    assert "more criteria" in text


# -- limits Discord enforces before the bot sees a value -----------------------------------------------------------

async def test_option_limits_are_in_the_synced_commands_and_discord_refuses_beyond_them(world, demo):
    _repo, channel = demo
    add = synced(world.env, "backlog add_story")
    assert (option(add, "points")["min_value"], option(add, "points")["max_value"]) == (0, POINTS_MAX)
    assert option(add, "title")["max_length"] == TITLE_MAX and option(add, "description")["max_length"] == TEXT_MAX
    plan = synced(world.env, "sprint plan")
    assert option(plan, "capacity")["min_value"] == 1 and option(plan, "goal")["max_length"] == 2 * TITLE_MAX
    assert option(synced(world.env, "feedback"), "text")["max_length"] == TEXT_MAX
    assert option(synced(world.env, "ticket open"), "question")["max_length"] == QUESTION_MAX
    assert option(synced(world.env, "request_changes"), "description")["max_length"] == TEXT_MAX
    before = len(world.env.http_requests)
    with pytest.raises(OptionError):
        await world.alice.slash(channel, "backlog add_story", epic="E-1", title="Big", points=POINTS_MAX + 1)
    with pytest.raises(OptionError):
        await world.alice.slash(channel, "sprint plan", capacity=0)
    assert len(world.env.http_requests) == before  # never reached the bot


# -- words of a title ----------------------------------------------------------------------------------------------

async def test_stories_are_found_and_offered_by_words_of_their_title(world, demo, orch):
    repo, channel = demo
    await orch.create_epic("demo", "Checkout", by="t")
    for title in ("Card form", "Login page", "Cart page"):
        await orch.add_story("demo", "E-1", title, by="t")

    offered = await world.alice.autocomplete(channel, "backlog prioritize", "story", "page log")
    assert [c["value"] for c in offered] == ["S-2"]
    offered = await world.alice.autocomplete(channel, "backlog prioritize", "story", "s-3")
    assert [c["value"] for c in offered] == ["S-3"]
    offered = await world.alice.autocomplete(channel, "backlog view", "epic", "check")
    assert [c["value"] for c in offered] == ["E-1"]

    done = await world.alice.slash(channel, "backlog prioritize", story="form card", priority="critical")
    assert embed_of(done).title == "S-1 · Card form" and stories(repo)["S-1"]["priority"] == "critical"
    several = await world.alice.slash(channel, "backlog remove", story="page")
    assert reply(several).ephemeral and len(stories(repo)) == 3
    assert "'page' matches 2 stories: S-2 Login page; S-3 Cart page." in embed_of(several).description
    filtered = await world.alice.slash(channel, "backlog view", epic="checkout")
    assert embed_of(filtered).title == "Backlog of demo (E-1)"


# -- the backlog pager ---------------------------------------------------------------------------------------------

async def _backlog_of(orch, n: int) -> None:
    await orch.create_epic("demo", "Shop", by="t")
    for k in range(n):
        await orch.add_story("demo", "E-1", f"Story {k + 1}", by="t")


async def test_the_pager_works_after_a_restart(world, demo, orch, config):
    _repo, channel = demo
    await _backlog_of(orch, 23)
    message = reply(await world.alice.slash(channel, "backlog view", status="todo"))
    assert all(c.custom_id.startswith("backlog:") for c in message.message.components[0].children)

    await world.env.restart_bot(create_bot(config, orch))  # a new bot: no view of the old one is in memory
    clicked = await world.alice.click(message, label="Next")
    assert clicked.followups == []  # no error reply: the page was turned
    turned = await world.env.bot.get_channel(channel.id).fetch_message(message.id)
    assert turned.embeds[0].footer.text.startswith("page 2/3") and "S-11" in turned.embeds[0].description
    assert turned.embeds[0].title == "Backlog of demo (todo)"  # the filter came along in the custom_id
    assert [c.disabled for c in turned.components[0].children] == [False, False]


async def test_a_click_on_a_changed_backlog_shows_it_as_it_is_now_and_says_so(world, demo, orch):
    _repo, channel = demo
    await _backlog_of(orch, 12)
    message = reply(await world.alice.slash(channel, "backlog view"))
    await orch.remove_story("demo", "S-12", by="t")  # only one page left
    await orch.remove_story("demo", "S-11", by="t")

    await world.alice.click(message, label="Next")
    fetched = await world.env.bot.get_channel(channel.id).fetch_message(message.id)
    embed = fetched.embeds[0]
    assert embed.description.startswith("*The backlog changed since the page before")
    assert embed.footer.text.startswith("page 1/1 · 10 stories") and "S-11" not in embed.description
    assert fetched.components == []  # a single page: no buttons left to click

    await orch.add_story("demo", "E-1", "Story 13", by="t")
    second = reply(await world.alice.slash(channel, "backlog view"))
    await world.alice.click(second, label="Next")
    turned = (await world.env.bot.get_channel(channel.id).fetch_message(second.id)).embeds[0]
    assert turned.footer.text.startswith("page 2/2") and "changed" not in turned.description  # unchanged: no note
