"""Agents run the sprint, seen from Discord: the bot runs the agent loop itself, each story run is one message in
the project's channel edited in place, the channel is told when the sprint is ready for review, an agent's
question becomes a ticket thread whose answer reruns the story; /story retry, /story log, /sprint status and
review. Real agent processes (tests/orchestration/agents/fixtures/agent.py), real git, SimCord's real dispatch."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot.client import create_bot
from bot.cogs.tickets import HANDOFF_EVERY_S
from orchestration.agents.scheduler import STORY_RUN, StoryProgress
from orchestration.config import Config
from orchestration.events import Event
from tests.bot.conftest import assert_within_limits, embed_of, field, reply
from tests.bot.test_tickets_bot import archived, bot_messages, story, ticket
from tests.orchestration.agents.conftest import AGENT, TESTS

ANSWER = "No: keep the title exactly as it is typed, because the tests compare it."


@pytest.fixture
def config(tmp_path, projects_root) -> Config:
    return Config.model_validate({
        "orchestrator": {"data_dir": str(tmp_path / "data"), "allowed_roots": [str(projects_root)],
                         "commit_author": "Orch Test <orch@test>", "commit_batch_ms": 20},
        "agents": {"command": [*AGENT, "done"], "test_command": TESTS, "timeout_s": 5, "max_attempts": 2},
    })


def agent_does(config: Config, *mode: str) -> None:
    """What the fixture agent does from the next attempt on (the scheduler reads the config at each launch)."""
    config.agents.command = [*AGENT, *mode]


async def start_sprint(world, channel, titles: list[str]) -> None:
    await world.alice.slash(channel, "epic create", title="Shop")
    for title in titles:
        await world.alice.slash(channel, "backlog add_story", epic="E-1", title=title, points=2)
    await world.alice.slash(channel, "sprint plan")
    await world.alice.slash(channel, "sprint start")


async def settled(world, orch) -> None:
    """The agents have no work left, and every step they took is shown in Discord."""
    await orch.agents.until_idle()
    await world.env.bot.story_runs.flush()


def progress_messages(channel) -> dict[str, object]:
    """Story -> its progress message (as Discord holds it now, edits included)."""
    found = {}
    for m in channel.history():
        if m.embeds and (m.embeds[0].author.name or "").startswith("Agent · "):
            assert m.embeds[0].title.split(" · ")[0] not in found, "a second message for one story run"
            found[m.embeds[0].title.split(" · ")[0]] = m
    return found


def requests_on(world, message_id: int, method: str) -> list:
    return [r for r in world.env.http_requests if r.method == method and r.path.endswith(f"/messages/{message_id}")]


def posts_in(world, channel) -> list:
    return [r for r in world.env.http_requests
            if r.method == "POST" and r.path == f"/channels/{channel.id}/messages"]


async def test_the_bot_runs_a_sprint_to_review_with_one_message_per_story_edited_in_place(world, demo, orch, config):
    repo, channel = demo
    assert orch.agents.running_here  # started by the bot itself

    await start_sprint(world, channel, ["Cart", "Checkout"])
    await settled(world, orch)

    assert (await orch.state("demo")).state.value == "SPRINT_REVIEW"
    runs = progress_messages(channel)
    assert sorted(runs) == ["S-1", "S-2"]
    for ident, message in runs.items():
        embed = message.embeds[0]
        assert embed.description.startswith("✅ Done in attempt 1")
        assert field(embed, "Tests") == "1 passed · 0 failed" and field(embed, "Branch") == f"`orch/{ident}`"
        assert "title() and its test" in field(embed, "Summary") and field(embed, "Duration").endswith("s")
        assert requests_on(world, message.id, "PATCH")  # edited in place: running -> testing -> done
        assert_within_limits(message)
    progress_posts = [r for r in posts_in(world, channel) if "Agent · " in json.dumps(r.json, ensure_ascii=False)]
    assert len(progress_posts) == 2  # one message per story run, never one per step
    sent = progress_posts + [r for m in runs.values() for r in requests_on(world, m.id, "PATCH")]
    assert all(r.json["allowed_mentions"]["parse"] == [] for r in sent)  # agent text is echoed: no pings

    [review] = [m for m in channel.history() if m.embeds and "ready for review" in m.embeds[0].title]
    assert review.embeds[0].title == "sprint-001 is ready for review: branch orch/sprint-001"
    commits = field(review.embeds[0], "Commits on orch/sprint-001")
    assert "Merge S-1 into orch/sprint-001" in commits and "Merge S-2 into orch/sprint-001" in commits
    assert review.id == channel.history()[-1].id  # after the last story's message
    shown = json.dumps([m.embeds[0].to_dict() for m in channel.history() if m.embeds])
    assert str(repo) not in shown and str(config.orchestrator.data_dir) not in shown  # no server paths


async def test_an_agents_question_becomes_a_thread_whose_clear_answer_reruns_the_story(world, demo, orch, config):
    repo, channel = demo
    agent_does(config, "question")
    await start_sprint(world, channel, ["Cart"])
    await settled(world, orch)

    [run] = progress_messages(channel).values()
    assert run.embeds[0].description.startswith("❓ Attempt 1: the agent asked a question")
    await world.env.advance_time(HANDOFF_EVERY_S)  # the hand-off posts tickets opened without Discord
    [thread] = channel.threads
    assert thread.name == "TK-1: Should the title be upper case?"

    await world.alice.send(thread, ANSWER)
    assert ticket(repo)["status"] == "resolved" and await archived(world, thread)
    await settled(world, orch)

    assert story(repo, "S-1")["status"] == "done"
    assert (await orch.state("demo")).state.value == "SPRINT_REVIEW"
    [again] = progress_messages(channel).values()
    assert again.id == run.id and again.embeds[0].description.startswith("✅ Done in attempt 2")
    assert [m for m in channel.history() if m.embeds and "ready for review" in m.embeds[0].title]


async def test_story_log_shows_the_attempts_and_retry_gives_a_blocked_story_back(world, demo, orch, config):
    repo, channel = demo
    agent_does(config, "crash")
    await start_sprint(world, channel, ["Cart", "Checkout"])
    await settled(world, orch)
    assert story(repo, "S-1")["status"] == "blocked_awaiting_feedback"
    assert progress_messages(channel)["S-1"].embeds[0].description.startswith("⛔ Blocked after 2 failed attempts")
    await world.env.advance_time(HANDOFF_EVERY_S)
    thread = next(t for t in channel.threads if "S-1 failed 2 agent attempts" in t.name)

    logged = await world.alice.slash(channel, "story log", story="S-1")
    embed = embed_of(logged)
    assert reply(logged).ephemeral and embed.title == "Agent log of S-1"
    assert [f.name for f in embed.fields] == ["Attempt 1 · crashed", "Attempt 2 · crashed"]
    assert "```" in embed.description and "RuntimeError: boom" in embed.description
    assert str(config.orchestrator.data_dir) not in json.dumps(embed.to_dict())  # the log file stays on the server
    assert_within_limits(reply(logged))

    agent_does(config, "done")  # the agent was fixed
    retried = await world.alice.slash(channel, "story retry", story="S-1")
    embed = embed_of(retried)
    assert embed.author.name == "Retried by the agents" and "→ ⬜ todo" in field(embed, "Status")
    assert "Closed: S-1 was retried as it is by alice" in bot_messages(world, thread)[-1].content
    await settled(world, orch)
    assert story(repo, "S-1")["status"] == "done"
    assert progress_messages(channel)["S-1"].embeds[0].description.startswith("✅ Done in attempt 3")

    again = await world.alice.slash(channel, "story retry", story="S-1")
    assert reply(again).ephemeral and "done already" in embed_of(again).description  # refused, nothing changed

    review = embed_of(await world.alice.slash(channel, "sprint review"))  # S-2 is still blocked: end it early
    assert field(review, "Sprint branch") == "`orch/sprint-001` · 2 commits"  # the story's work and its merge
    assert "Merge S-1 into orch/sprint-001" in field(review, "Commits on orch/sprint-001")


async def test_sprint_status_lists_the_running_agent_and_closing_the_bot_stops_it(world, demo, orch, config):
    repo, channel = demo
    agent_does(config, "slow", "30")
    await start_sprint(world, channel, ["Cart"])
    for _ in range(100):
        if orch.agents.running("demo"):
            break
        await asyncio.sleep(0.05)

    status = embed_of(await world.alice.slash(channel, "sprint status"))
    assert field(status, "Agents at work (1)").startswith("🤖 **S-1** · attempt 1 · ")
    assert field(status, "Sprint branch") == "`orch/sprint-001` · 0 commits"
    await world.env.bot.story_runs.flush()
    assert progress_messages(channel)["S-1"].embeds[0].description.startswith("🔄 Attempt 1 of 2 running")

    await world.env.bot.close()
    assert not orch.agents.running_here and not orch.agents.running()
    assert progress_messages(channel)["S-1"].embeds[0].description.startswith("⏸️ Attempt 1 stopped")
    assert story(repo, "S-1")["status"] == "todo"  # runs again when agents run again


async def test_when_another_process_runs_the_agents_the_bot_says_so_once_and_goes_on(world, demo, orch, config,
                                                                                       caplog):
    assert orch.agents.running_here
    restarted = create_bot(config)  # its own orchestrator: the agents' lock is held by the first bot's
    try:
        with caplog.at_level(logging.INFO, logger="bot"):
            await world.env.restart_bot(restarted)
        [warning] = [r for r in caplog.records if r.name == "bot" and r.levelname == "WARNING"]
        assert "Another process (the bot, or `orch run`) runs the agents already" in warning.getMessage()
        assert not restarted.orchestrator.agents.running_here
        answered = await world.alice.slash(demo[1], "state")
        assert embed_of(answered).title == "demo · IDLE"  # the bot runs on
    finally:
        await restarted.orchestrator.close()


async def test_a_burst_of_steps_is_coalesced_into_few_requests_showing_the_latest(world, demo, orch):
    _, channel = demo

    def step(phase: str, attempt: int) -> None:
        orch.events.publish(Event("demo", STORY_RUN, f"S-1: {phase}", StoryProgress(
            story="S-1", title="Cart", sprint="sprint-001", phase=phase, attempt=attempt, max_attempts=9)))

    for attempt in range(1, 21):
        step("running", attempt)
        step("testing", attempt)
    await world.env.bot.story_runs.flush()
    [message] = progress_messages(channel).values()
    assert message.embeds[0].description.startswith("🧪 Attempt 20: the agent is done, the tests run")
    assert len([r for r in posts_in(world, channel) if "S-1" in json.dumps(r.json)]) == 1
    assert not requests_on(world, message.id, "PATCH")  # 40 steps, one request: only the latest is shown

    step("retrying", 20)
    for _ in range(3):  # let its edit get under way, then more steps arrive while it is in flight
        await asyncio.sleep(0)
    for attempt in range(21, 31):
        step("running", attempt)
    step("stopped", 30)
    await world.env.bot.story_runs.flush()
    assert len(requests_on(world, message.id, "PATCH")) == 2  # the one under way, then only the latest
    assert progress_messages(channel)["S-1"].embeds[0].description.startswith("⏸️ Attempt 30 stopped")


def test_a_project_of_its_own_agent_is_enough_for_the_bot_to_run_agents():
    assert not Config().agents.configured
    assert Config.model_validate({"agents": {"projects": {"shop": {"command": ["my-agent"]}}}}).agents.configured
