"""The work queue: next story, dependencies (refusing cycles and missing stories), and cascades."""
from __future__ import annotations

import pytest

from orchestration.errors import InvalidInput
from orchestration.models import State, StoryStatus
from orchestration.queue import dependency_problems, find_cycle
from orchestration.service import Orchestrator


async def stories(orch: Orchestrator, project: str, *specs: tuple[str, str]) -> list[str]:
    """Add stories (title, priority) to epic E-1; returns their IDs in order."""
    if not (await orch.view_backlog(project)).epics:
        await orch.create_epic(project, "Work", by="po")
    return [(await orch.add_story(project, "E-1", t, points=1, priority=p, by="po")).story.id for t, p in specs]


async def test_next_story_is_by_priority_then_satisfied_dependencies_then_age(orch, project):
    s1, s2, s3, s4 = await stories(orch, project, ("old medium", "medium"), ("critical", "critical"),
                                   ("high", "high"), ("younger high", "high"))
    view = await orch.next_story(project)
    assert view.scope == "backlog" and view.next.id == s2
    assert [s.id for s in view.ready] == [s2, s3, s4, s1]  # priority, then age among equals

    await orch.set_dependencies(project, s2, [s1], by="po")  # the critical one now waits for a medium one
    view = await orch.next_story(project)
    assert view.next.id == s3 and view.waiting == {s2: [s1]}
    assert [s.id for s in view.ready] == [s3, s4, s1]


async def test_in_a_sprint_the_queue_is_the_sprints_stories(orch, project):
    s1, s2, s3 = await stories(orch, project, ("a", "low"), ("b", "high"), ("c", "critical"))
    await orch.plan_sprint(project, stories=[s1, s2], by="po")
    await orch.start_sprint(project, by="po")
    await orch.update_story(project, s2, "in_progress", by="dev")
    view = await orch.next_story(project)
    assert view.scope == "sprint-001" and view.next.id == s1 and view.in_progress == [s2]
    await orch.update_story(project, s1, "blocked", by="dev")
    view = await orch.next_story(project)
    assert view.next is None and view.blocked == [s1]


async def test_finishing_a_story_makes_its_dependants_ready(orch, project):
    s1, s2, s3 = await stories(orch, project, ("base", "low"), ("on top", "high"), ("also on top", "high"))
    await orch.set_dependencies(project, s2, [s1], by="po")
    await orch.set_dependencies(project, s3, [s1], by="po")
    await orch.update_story(project, s1, "in_progress", by="dev")
    done = await orch.update_story(project, s1, "done", by="dev")
    assert done.cascade.stories_ready == [s2, s3]
    assert (await orch.next_story(project)).next.id == s2


async def test_dropping_the_last_unmet_dependency_reports_the_story_ready(orch, project):
    s1, s2 = await stories(orch, project, ("a", "low"), ("b", "high"))
    await orch.set_dependencies(project, s2, [s1], by="po")
    changed = await orch.set_dependencies(project, s2, [], by="po")
    assert changed.cascade.stories_ready == [s2] and changed.previous == s1 and changed.story.depends_on == []


async def test_cycles_and_missing_stories_are_refused_and_nothing_changes(orch, project):
    s1, s2, s3 = await stories(orch, project, ("a", "low"), ("b", "low"), ("c", "low"))
    await orch.set_dependencies(project, s2, [s1], by="po")
    await orch.set_dependencies(project, s3, [s2], by="po")
    backlog = orch.project(project).entry.path / ".orch-state" / "backlog.json"
    before = backlog.read_bytes()
    with pytest.raises(InvalidInput, match=f"cycle: {s1} -> {s3} -> {s2} -> {s1}"):
        await orch.set_dependencies(project, s1, [s3], by="po")
    with pytest.raises(InvalidInput, match="cannot depend on itself"):
        await orch.set_dependencies(project, s1, [s1], by="po")
    with pytest.raises(InvalidInput, match="no story S-99"):
        await orch.set_dependencies(project, s1, ["S-99"], by="po")
    with pytest.raises(InvalidInput, match="no story 'S-42'"):
        await orch.set_dependencies(project, "S-42", [s1], by="po")
    assert backlog.read_bytes() == before
    assert dependency_problems(orch.project(project).store.backlog()) == []


def test_find_cycle_and_consistency_check_on_a_hand_edited_backlog():
    from orchestration.models import Backlog, Story

    b = Backlog(project="x", stories=[Story(id="S-1", epic="E-1", title="a", depends_on=["S-2"]),
                                      Story(id="S-2", epic="E-1", title="b", depends_on=["S-1"]),
                                      Story(id="S-3", epic="E-1", title="c", depends_on=["S-9"])])
    assert find_cycle(b, "S-1", ["S-2"]) == ["S-1", "S-2", "S-1"]
    assert find_cycle(b, "S-3", []) is None
    problems = dependency_problems(b)
    assert "S-3 depends on S-9, which does not exist" in problems
    assert sum(p.startswith("dependency cycle") for p in problems) == 1


async def test_the_last_blocked_story_blocks_the_project_and_an_answer_unblocks_it(orch, project):
    s1, s2 = await stories(orch, project, ("a", "high"), ("b", "high"))
    await orch.plan_sprint(project, stories=[s1, s2], by="po")
    await orch.start_sprint(project, by="po")
    await orch.update_story(project, s1, "blocked", by="dev")
    assert (await orch.state(project)).state is State.SPRINT_ACTIVE  # s2 can still be worked
    opened = await orch.open_ticket(project, "Should we use PostgreSQL or MongoDB?", story=s2, by="dev")
    assert opened.state is State.BLOCKED and (await orch.next_story(project)).next is None
    answered = await orch.reply_to_ticket(project, "TK-1", "po", "Postgres, because we run it already.")
    assert answered.cascade.state_change == (State.BLOCKED, State.SPRINT_ACTIVE)
    assert answered.cascade.stories_unblocked == [s2] and answered.story.status is StoryStatus.todo
    assert (await orch.next_story(project)).next.id == s2
