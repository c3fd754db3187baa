"""Planning an epic from Discord: /epic plan:True posts the planner's proposals with Approve all / Reject all and a
menu to approve some (real component interactions through SimCord's dispatch), the buttons outlive a restart,
/request_changes supersedes a plan, a planner's question becomes a ticket thread whose answer resumes planning.
Real planner processes (tests/orchestration/agents/fixtures/planner.py), real git."""
from __future__ import annotations

import json

import discord
import pytest

from bot.client import create_bot
from bot.cogs.tickets import HANDOFF_EVERY_S
from orchestration.config import Config
from tests.bot.conftest import assert_within_limits, deferrals, embed_of, load, reply
from tests.orchestration.agents.conftest import AGENT, PLANNER


@pytest.fixture
def config(tmp_path, projects_root) -> Config:
    return Config.model_validate({
        "orchestrator": {"data_dir": str(tmp_path / "data"), "allowed_roots": [str(projects_root)],
                         "commit_author": "Orch Test <orch@test>", "commit_batch_ms": 20},
        "agents": {"command": [*AGENT, "done"], "planner_command": [*PLANNER, "plan"], "timeout_s": 5},
    })


async def posted(world, orch, epic: str = "E-1"):
    """Once the planner is done and its outcome is posted: the plan's latest version."""
    for _ in range(200):
        view = await orch.wait_plan("demo", epic)
        if not view.plan.status.in_progress:
            break
        await world.env.advance_time(0.05)
    await world.env.bot.posts_done()
    return view


def plan_messages(channel) -> list:
    """What the bot posted of planners' outcomes (not its replies to commands)."""
    return [m for m in channel.history() if m.embeds and (m.embeds[0].author.name or "").startswith("Planner ·")
            and m.interaction_metadata is None]


def stories(repo) -> dict[str, dict]:
    return {s["id"]: s for s in load(repo, "backlog.json")["stories"]}


async def test_epic_with_plan_posts_proposals_and_approve_all_fills_the_backlog(world, demo, orch):
    repo, channel = demo
    made = await world.alice.slash(channel, "epic create", title="Shop", plan=True)
    assert "The planner is at work" in embed_of(made).fields[-1].value
    await posted(world, orch)

    [message] = plan_messages(channel)
    embed = message.embeds[0]
    assert embed.title == "Plan for E-1 · Shop" and "Plan for Shop." in embed.description
    assert [f.name for f in embed.fields] == ["P-1 · Product list", "P-2 · Cart", "P-3 · Checkout"]
    assert "after P-2" in embed.fields[2].value and "☐ pays" in embed.fields[2].value
    assert_within_limits(message)
    sent = [r for r in world.env.http_requests if r.method == "POST" and r.path == f"/channels/{channel.id}/messages"]
    assert all(r.json["allowed_mentions"]["parse"] == [] for r in sent)

    before = len(deferrals(world.env))
    clicked = await world.alice.click(message, label="Approve all")
    assert len(deferrals(world.env)) == before + 1  # answered at once (Discord's 3 s), decided after
    assert "P-1 → **S-1**" in embed_of(clicked).description
    backlog = stories(repo)
    assert backlog["S-2"]["depends_on"] == ["S-1"] and backlog["S-3"]["depends_on"] == ["S-2"]
    assert backlog["S-2"]["acceptance_criteria"] == ["adds", "removes"]
    assert (await orch.state("demo")).state.value == "BACKLOG_READY"

    again = await world.alice.click(message, label="Approve all")  # a second click: who approved it, and when
    assert reply(again).ephemeral and "approved already, by alice on" in embed_of(again).description
    assert len(stories(repo)) == 3


async def test_select_some_rejects_the_rest_and_the_menu_works_after_a_restart(world, demo, orch, config):
    repo, channel = demo
    await world.alice.slash(channel, "epic create", title="Shop")
    planned = await world.alice.slash(channel, "plan", epic="E-1")
    assert "planner is at work" in embed_of(planned).description
    await posted(world, orch)
    [message] = plan_messages(channel)

    await world.env.restart_bot(create_bot(config, orch))  # a new bot instance: the menu still works
    chosen = await world.alice.select(message, ["P-1", "P-3"])
    embed = embed_of(chosen)
    assert "P-1 → **S-1**" in embed.description and "P-3 → **S-2**" in embed.description
    fields = {f.name: f.value for f in embed.fields}
    assert fields["Rejected"] == "P-2" and fields["Dependencies dropped (on stories not approved)"] == "P-3 -> P-2"
    assert stories(repo)["S-2"]["depends_on"] == []
    saved = load(repo, "plans/E-1.json")["versions"][0]
    assert [p["status"] for p in saved["proposals"]] == ["approved", "rejected", "approved"]


async def test_request_changes_supersedes_the_plan_and_its_old_buttons_are_refused(world, demo, orch):
    repo, channel = demo
    await world.alice.slash(channel, "epic create", title="Shop", plan=True)
    await posted(world, orch)
    [old] = plan_messages(channel)

    asked = await world.alice.slash(channel, "request_changes", description="Pay with PayPal")
    assert "planner is at work" in embed_of(asked).description
    await posted(world, orch)
    new = plan_messages(channel)[-1]
    assert new.id != old.id and new.embeds[0].fields[2].name == "P-3 · Checkout with PayPal"
    assert new.embeds[0].author.name.startswith("Planner · version 2")
    saved = load(repo, "plans/E-1.json")["versions"]
    assert saved[0]["status"] == "superseded" and saved[1]["status"] == "proposed"

    stale = await world.alice.click(old, label="Approve all")
    assert reply(stale).ephemeral and "superseded by version 2" in embed_of(stale).description
    assert stories(repo) == {}
    rejected = await world.alice.click(new, label="Reject all")
    assert "Every proposal was rejected by alice" in embed_of(rejected).description
    approved = await world.alice.slash(channel, "approve", items="all")  # no plan waits for a decision now
    assert reply(approved).ephemeral and "No proposed plan in demo" in embed_of(approved).description
    approved = await world.alice.slash(channel, "approve", items="all", epic="E-1")
    assert reply(approved).ephemeral and "rejected already, by alice" in embed_of(approved).description


async def test_a_planners_question_is_a_ticket_thread_and_the_answer_resumes_planning(world, demo, orch, config):
    repo, channel = demo
    config.agents.planner_command = [*PLANNER, "ask"]
    await world.alice.slash(channel, "epic create", title="Shop", plan=True)
    view = await posted(world, orch)
    assert view.plan.status.value == "waiting"
    assert "asked a question (TK-1)" in plan_messages(channel)[-1].embeds[0].description
    await world.env.advance_time(HANDOFF_EVERY_S)  # the ticket hand-off posts it with its thread
    [thread] = channel.threads
    assert thread.name == "TK-1: Which payment provider?"

    await world.alice.send(thread, "Stripe, because we already have an account there.")
    assert load(repo, "tickets.json")["tickets"][0]["status"] == "resolved"
    view = await posted(world, orch)  # the agent loop's round takes the plan up again
    assert view.plan.status.value == "proposed" and "Answers: Stripe" in view.plan.plan
    assert plan_messages(channel)[-1].embeds[0].fields[0].name == "P-1 · Product list"


async def test_a_planner_that_changes_files_is_refused_and_the_channel_is_told(world, demo, orch, config):
    repo, channel = demo
    config.agents.planner_command = [*PLANNER, "write"]
    await world.alice.slash(channel, "epic create", title="Shop", plan=True)
    await posted(world, orch)
    text = plan_messages(channel)[-1].embeds[0].description
    assert text.startswith("Planning failed: policy: it changed files in its read-only checkout (PLAN.md)")
    assert str(config.orchestrator.data_dir) not in text and not (repo / "PLAN.md").exists()


async def test_a_long_plan_is_paged_within_discords_limits(world, demo, orch, config):
    _, channel = demo
    config.agents.planner_command = [*PLANNER, "many", "30"]
    await world.alice.slash(channel, "epic create", title="Shop", plan=True)
    await posted(world, orch)
    pages = plan_messages(channel)
    assert len(pages) == 5 and [p.embeds[0].footer.text.split(" · ")[0] for p in pages] == [
        "Page 1 of 5", "Page 2 of 5", "Page 3 of 5", "Page 4 of 5", "Page 5 of 5"]  # 7 of these a page
    for page in pages:
        assert_within_limits(page)
    assert not pages[0].components and pages[-1].components  # the controls once, under the last page
    menu = next(c for row in pages[-1].components for c in row.children if isinstance(c, discord.SelectMenu))
    assert len(menu.options) == 25 and menu.max_values == 25
    assert sum(len(p.embeds[0].fields) for p in pages) == 30


async def test_long_proposals_take_more_pages_and_none_is_cut(world, demo, orch, config):
    _, channel = demo
    config.agents.planner_command = [*PLANNER, "many", "10", "5"]  # each proposal near a field's 1,024 characters
    await world.alice.slash(channel, "epic create", title="Shop", plan=True)
    await posted(world, orch)
    pages = plan_messages(channel)
    fields = [f for p in pages for f in p.embeds[0].fields]
    assert len(pages) == 2 and [f.name.split(" · ")[0] for f in fields] == [f"P-{n}" for n in range(1, 11)]
    for page in pages:
        assert_within_limits(page)


async def test_only_members_may_decide(world, demo, orch, config):
    _, channel = demo
    config.discord.member_role = "devs"
    devs = world.guild.create_role("devs")
    bob = world.guild.add_member(world.env.create_user("bob"), roles=[devs])  # alice has no role: no member now
    await bob.slash(channel, "epic create", title="Shop", plan=True)
    await posted(world, orch)
    [message] = plan_messages(channel)
    refused = await world.alice.click(message, label="Approve all")
    assert reply(refused).ephemeral and "devs" in json.dumps(embed_of(refused).to_dict())
    assert (await orch.plan_view("demo", "E-1")).plan.status.value == "proposed"
