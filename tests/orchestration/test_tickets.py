"""Tickets through the real Orchestrator: real repos, real files, real commits."""
from __future__ import annotations

import json

import pytest

from orchestration.errors import InvalidInput
from orchestration.models import State, StoryStatus
from orchestration.scoring import Score
from orchestration.service import Orchestrator
from orchestration.tickets import TicketFile, TicketStatus
from tests.conftest import git

CLEAR = "PostgreSQL, because we already run it in production."
QUESTION = "Should we use PostgreSQL or MongoDB?"


async def active_sprint(orch: Orchestrator, project: str, stories: int = 1) -> list[str]:
    """An active sprint holding `stories` new stories; returns their IDs."""
    await orch.create_epic(project, "Accounts", by="po")
    ids = [(await orch.add_story(project, "E-1", f"Story {i}", points=2, by="po")).story.id for i in range(stories)]
    await orch.plan_sprint(project, stories=ids, by="po")
    await orch.start_sprint(project, by="po")
    return ids


def tickets_file(orch: Orchestrator, project: str) -> dict:
    return json.loads((orch.project(project).entry.path / ".orch-state" / "tickets.json").read_text())


def story_status(orch: Orchestrator, project: str, story: str) -> StoryStatus:
    return orch.project(project).store.backlog().story(story).status


async def test_open_blocks_the_story_and_the_project_when_it_was_the_last_open_one(orch, project):
    [s1] = await active_sprint(orch, project)
    view = await orch.open_ticket(project, QUESTION, story=s1, context="Sessions need a store.", by="alice")
    assert view.ticket.id == "TK-1" and view.ticket.status is TicketStatus.open
    assert view.story.status is StoryStatus.blocked_awaiting_feedback
    assert view.state is State.BLOCKED and view.cascade.state_change == (State.SPRINT_ACTIVE, State.BLOCKED)
    state = await orch.state(project)
    assert state.blocked_in_sprint == [s1]
    assert (await orch.sprint_status(project)).blocked == [s1]
    data = tickets_file(orch, project)
    assert data["schema_version"] == 1 and data["next_ticket"] == 2 and data["tickets"][0]["story_was"] == "todo"
    await orch.flush()
    log = git(orch.project(project).entry.path, "log", "-1", "--format=%B")
    assert f'orch(TK-1, {s1}): open ticket "{QUESTION}"; {s1} waits for the answer' in log
    assert "(/ticket open by alice)" in log


async def test_a_clear_reply_resolves_gives_the_story_back_and_is_committed(orch, project):
    s1, s2 = await active_sprint(orch, project, stories=2)
    await orch.update_story(project, s1, "in_progress", by="dev")
    await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    await orch.open_ticket(project, "Which port should the API listen on?", story=s2, by="alice")
    assert (await orch.state(project)).state is State.BLOCKED

    outcome = await orch.reply_to_ticket(project, "TK-1", "bob", CLEAR)
    assert outcome.action == "resolved" and outcome.score.total >= 85
    assert outcome.ticket.status is TicketStatus.resolved and outcome.ticket.resolution == CLEAR
    assert outcome.ticket.resolved_by == "bob"
    assert outcome.story.status is StoryStatus.in_progress  # back to whoever was working on it
    assert outcome.cascade.tickets_resolved == ["TK-1"] and outcome.cascade.stories_unblocked == [s1]
    assert outcome.cascade.state_change == (State.BLOCKED, State.SPRINT_ACTIVE)
    assert outcome.state is State.SPRINT_ACTIVE

    await orch.flush()
    repo = orch.project(project).entry.path
    log = git(repo, "log", "--format=%B", "--", ".orch-state")
    assert f'orch(TK-1, {s1}): resolve ticket "{QUESTION}" with a reply scored 100; {s1} unblocked' in log
    assert "(reply by bob)" in log
    assert git(repo, "status", "--porcelain", "--", ".orch-state") == ""  # everything committed
    stored = TicketFile.model_validate(tickets_file(orch, project))
    assert stored.ticket("TK-1").replies[0].author == "bob" and stored.ticket("TK-1").replies[0].score.total == 100


async def test_an_unclear_reply_asks_for_more_and_keeps_the_story_blocked(orch, project):
    [s1] = await active_sprint(orch, project)
    await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    outcome = await orch.reply_to_ticket(project, "TK-1", "bob", "maybe mongo?")
    assert outcome.action == "unclear" and outcome.score.total < 85
    assert outcome.follow_ups and any("maybe" in f for f in outcome.follow_ups)
    assert outcome.ticket.status is TicketStatus.open and len(outcome.ticket.replies) == 1
    assert story_status(orch, project, s1) is StoryStatus.blocked_awaiting_feedback
    assert (await orch.state(project)).state is State.BLOCKED
    await orch.flush()
    log = git(orch.project(project).entry.path, "log", "-1", "--format=%B")
    assert "orch(TK-1): reply scored" in log and "(reply by bob)" in log


async def test_a_bot_reply_changes_nothing(orch, project):
    [s1] = await active_sprint(orch, project)
    await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    before = tickets_file(orch, project)
    outcome = await orch.reply_to_ticket(project, "TK-1", "helper-bot", CLEAR, is_bot=True)
    assert outcome.action == "ignored" and outcome.score is None
    assert tickets_file(orch, project) == before
    assert story_status(orch, project, s1) is StoryStatus.blocked_awaiting_feedback


async def test_a_reply_to_a_resolved_ticket_is_ignored(orch, project):
    await orch.create_epic(project, "E", by="po")
    await orch.open_ticket(project, QUESTION, by="alice")
    await orch.resolve_ticket(project, "TK-1", "Postgres", by="po")
    before = tickets_file(orch, project)
    outcome = await orch.reply_to_ticket(project, "tk-1", "bob", CLEAR)
    assert outcome.action == "ignored" and "resolved" in outcome.reason
    assert tickets_file(orch, project) == before


async def test_a_story_waits_until_its_last_ticket_is_answered(orch, project):
    s1, s2 = await active_sprint(orch, project, stories=2)
    await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    await orch.open_ticket(project, "Should sessions expire after 30 or 60 minutes?", story=s1, by="alice")
    first = await orch.reply_to_ticket(project, "TK-1", "bob", CLEAR)
    assert first.action == "resolved" and first.cascade.stories_unblocked == []
    assert story_status(orch, project, s1) is StoryStatus.blocked_awaiting_feedback
    second = await orch.reply_to_ticket(project, "TK-2", "bob", "60 minutes, since people leave tabs open.")
    assert second.action == "resolved" and second.cascade.stories_unblocked == [s1]
    assert story_status(orch, project, s1) is StoryStatus.todo


async def test_a_person_decides_and_can_reopen(orch, project):
    [s1] = await active_sprint(orch, project)
    await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    await orch.reply_to_ticket(project, "TK-1", "bob", "not sure")
    resolved = await orch.resolve_ticket(project, "1", "Postgres: the team knows it.", by="po")
    assert resolved.ticket.status is TicketStatus.resolved and resolved.ticket.resolved_by == "po"
    assert resolved.story.status is StoryStatus.todo and resolved.state is State.SPRINT_ACTIVE
    with pytest.raises(InvalidInput, match="resolved already"):
        await orch.resolve_ticket(project, "TK-1", "again", by="po")

    reopened = await orch.reopen_ticket(project, "TK-1", by="po")
    assert reopened.ticket.status is TicketStatus.open and reopened.ticket.resolution is None
    assert reopened.story.status is StoryStatus.blocked_awaiting_feedback and reopened.state is State.BLOCKED
    with pytest.raises(InvalidInput, match="open already"):
        await orch.reopen_ticket(project, "TK-1", by="po")
    await orch.flush()
    log = git(orch.project(project).entry.path, "log", "--format=%B")
    assert "(/ticket resolve by po)" in log and "(/ticket reopen by po)" in log


async def test_bad_input_is_refused_and_writes_nothing(orch, project):
    [s1] = await active_sprint(orch, project)
    await orch.update_story(project, s1, "done", by="dev")
    path = orch.project(project).entry.path / ".orch-state" / "tickets.json"
    with pytest.raises(InvalidInput, match="done already"):
        await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    with pytest.raises(InvalidInput, match="no story 'S-99'"):
        await orch.open_ticket(project, QUESTION, story="S-99", by="alice")
    with pytest.raises(InvalidInput, match="question"):
        await orch.open_ticket(project, "   ", by="alice")
    with pytest.raises(InvalidInput, match="question"):
        await orch.open_ticket(project, "x" * 1001, by="alice")
    assert not path.exists()
    await orch.open_ticket(project, QUESTION, by="alice")
    before = path.read_bytes()
    with pytest.raises(InvalidInput, match="no ticket TK-9"):
        await orch.resolve_ticket(project, "TK-9", "x", by="po")
    with pytest.raises(InvalidInput, match="resolution is empty"):
        await orch.resolve_ticket(project, "TK-1", "  ", by="po")
    with pytest.raises(InvalidInput, match="status"):
        await orch.list_tickets(project, status="pending")
    assert path.read_bytes() == before


async def test_tickets_open_in_any_state_and_list_open_first(orch, project):
    first = await orch.open_ticket(project, "Which license: MIT or Apache-2.0?", by="alice")
    assert first.state is State.IDLE and first.story is None  # not gated by the state machine
    await orch.open_ticket(project, "Should the repo be public?", by="alice")
    await orch.open_ticket(project, "Which CI: GitHub Actions or GitLab?", by="alice")
    await orch.resolve_ticket(project, "TK-1", "MIT", by="po")
    listing = await orch.list_tickets(project)
    assert [t.id for t in listing.tickets] == ["TK-2", "TK-3", "TK-1"] and listing.open_count == 2
    assert [t.id for t in (await orch.list_tickets(project, status="resolved")).tickets] == ["TK-1"]
    shown = await orch.show_ticket(project, "tk-3")
    assert shown.ticket.question.startswith("Which CI")
    assert (await orch.state(project)).state is State.IDLE


async def test_finishing_a_story_closes_its_open_tickets(orch, project):
    s1, s2 = await active_sprint(orch, project, stories=2)
    await orch.open_ticket(project, QUESTION, story=s1, by="alice")
    changed = await orch.update_story(project, s1, "done", by="dev")
    assert changed.cascade.tickets_closed == ["TK-1"] and not changed.cascade.tickets_resolved
    ticket = (await orch.show_ticket(project, "TK-1")).ticket
    assert ticket.status is TicketStatus.closed and s1 in ticket.resolution


async def test_the_threshold_comes_from_the_config_and_the_scorer_is_pluggable(orch, project):
    await orch.open_ticket(project, QUESTION, by="alice")
    orch.config.tickets.resolve_threshold = 95
    bare = await orch.reply_to_ticket(project, "TK-1", "bob", "Postgres")  # 90: clear, but no reason
    assert bare.action == "unclear" and bare.score.total == 90 and bare.threshold == 95

    class AlwaysClear:
        def score(self, question, options, reply, thread=()):
            return Score.of(100, 100, 100, [])

    orch.scorer = AlwaysClear()
    assert (await orch.reply_to_ticket(project, "TK-1", "bob", "hm")).action == "resolved"


async def test_thread_mapping_is_persisted_and_bound_to_the_project_channel(config, make_repo):
    orch = Orchestrator(config)
    await orch.register_project(str(make_repo("one")), by="admin", channel_id=111)
    await orch.register_project(str(make_repo("two")), by="admin", channel_id=222)
    await orch.open_ticket("one", QUESTION, by="alice")
    await orch.set_ticket_thread("one", "TK-1", 9001, by="alice")
    found = await orch.ticket_for_thread(9001)
    assert found and found[0] == "one" and found[1].id == "TK-1"
    await orch.close()

    again = Orchestrator(config)  # a restart: nothing cached
    try:
        found = await again.ticket_for_thread(9001, parent_channel_id=111)
        assert found and found[0] == "one" and found[1].thread_id == 9001
        assert await again.ticket_for_thread(9001, parent_channel_id=222) is None  # another project's channel
        assert await again.ticket_for_thread(424242) is None
        with pytest.raises(InvalidInput, match="already belongs to TK-1"):
            await again.open_ticket("one", "Another?", by="a") and await again.set_ticket_thread("one", "TK-2", 9001)
    finally:
        await again.close()


async def test_a_story_held_by_an_open_ticket_cannot_be_removed_and_one_answered_can(orch, project):
    """Removing a story must not leave a ticket asking about nothing (/health would report it forever)."""
    from orchestration import consistency

    await orch.create_epic(project, "Accounts", by="po")
    await orch.add_story(project, "E-1", "Sessions", by="po")
    await orch.open_ticket(project, QUESTION, story="S-1", by="agent")
    backlog = orch.project(project).store.dir / "backlog.json"
    before = backlog.read_bytes()
    with pytest.raises(InvalidInput, match="TK-1"):
        await orch.remove_story(project, "S-1", by="po")
    assert backlog.read_bytes() == before
    await orch.resolve_ticket(project, "TK-1", "PostgreSQL.", by="po")
    await orch.remove_story(project, "S-1", by="po")  # the answered ticket stays as history
    assert consistency.problems(orch.project(project).store) == []
    assert (await orch.health()).ok


async def test_an_answer_over_two_messages_resolves_with_the_conversation(orch, project):
    await orch.open_ticket(project, QUESTION, by="alice")
    orch.config.tickets.resolve_threshold = 95
    first = await orch.reply_to_ticket(project, "TK-1", "bob", "Postgres.")  # 90: no reason yet
    assert first.action == "unclear" and first.score.total == 90
    second = await orch.reply_to_ticket(project, "TK-1", "carol", "Because we already run it.")
    assert second.action == "resolved" and second.score.conversation and second.score.scorer == "rule"
    assert second.ticket.resolution == "bob: Postgres.\ncarol: Because we already run it."


async def test_scores_stored_before_the_scorer_was_recorded_still_load(orch, project):
    await orch.open_ticket(project, QUESTION, by="alice")
    await orch.reply_to_ticket(project, "TK-1", "bob", "maybe")
    file = orch.project(project).entry.path / ".orch-state" / "tickets.json"
    data = json.loads(file.read_text())
    for key in ("scorer", "conversation"):
        del data["tickets"][0]["replies"][0]["score"][key]
    file.write_text(json.dumps(data))
    shown = await orch.show_ticket(project, "TK-1")
    assert shown.ticket.replies[0].score.scorer == "rule" and not shown.ticket.replies[0].score.conversation
    assert (await orch.reply_to_ticket(project, "TK-1", "bob", CLEAR)).action == "resolved"
