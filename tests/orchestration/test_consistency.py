"""Consistency across the state files: the commands keep it in every state; hand edits that break it are found."""
from __future__ import annotations

import json

import pytest

from orchestration import consistency
from orchestration.models import State
from orchestration.service import Orchestrator
from tests.conftest import story_file
from tests.orchestration.test_state_machine import reach


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
async def test_commands_leave_consistent_files_in_every_state(orch: Orchestrator, project: str, state: State):
    await reach(orch, project, state)
    await orch.open_ticket(project, "Cash or card?", story="S-3", by="agent")
    assert consistency.problems(orch.project(project).store) == []
    assert (await orch.health()).ok


def edit_json(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


BREAKS = {
    "story in a sprint with no file": (lambda d: d["stories"][2].update(sprint="sprint-009"),
                                       "S-3 is in sprint-009, which has no file"),
    "state and sprint disagree": (lambda d: d["status"].update(state="SPRINT_ACTIVE"),
                                  "the state is SPRINT_ACTIVE, but sprint-001 is planned"),
    "idle with a current sprint": (lambda d: d["status"].update(state="IDLE"),
                                   "the state is IDLE, yet sprint-001 is still current"),
    "ID counter behind": (lambda d: d["backlog"].update(next_epic=1), "a new epic would reuse an ID"),
    "missing epic": (lambda d: d["stories"][0].update(epic="E-7"), "S-1 belongs to E-7"),
    "dependency cycle": (lambda d: (d["stories"][0].update(depends_on=["S-2"]),
                                    d["stories"][1].update(depends_on=["S-1"])), "dependency cycle"),
    "sprint lists a story that left it": (lambda d: d["stories"][0].update(sprint=None),
                                          "sprint-001 lists S-1, but S-1 says it is in no sprint"),
}


@pytest.mark.parametrize("case", list(BREAKS))
async def test_hand_edits_that_break_consistency_are_reported(orch: Orchestrator, project: str, case: str):
    await reach(orch, project, State.SPRINT_PLANNED)
    folder = orch.project(project).store.dir
    files = {"backlog": folder / "backlog.json", "status": folder / "status.json"}
    data = {k: json.loads(p.read_text()) for k, p in files.items()}
    stories = [story_file(folder, f"S-{n}") for n in (1, 2, 3)]
    data["stories"] = [json.loads(p.read_text()) for p in stories]
    change, expected = BREAKS[case]
    change(data)
    for k, p in files.items():
        p.write_text(json.dumps(data[k]))
    for story, p in zip(data["stories"], stories):
        p.write_text(json.dumps(story))  # in place, as an editor may: health still reads what the files hold
    found = consistency.problems(orch.project(project).store)
    assert any(expected in p for p in found), found
    health = await orch.health()
    assert not health.ok and any(expected in p for p in health.projects[0].problems)


async def test_an_open_ticket_whose_story_does_not_wait_is_reported(orch: Orchestrator, project: str):
    await reach(orch, project, State.BACKLOG_READY)
    await orch.open_ticket(project, "Cash or card?", story="S-1", by="agent")
    edit_json(story_file(orch.project(project).store.dir, "S-1"), lambda d: d.update(status="todo"))
    assert consistency.problems(orch.project(project).store) == ["TK-1 is open, but S-1 is todo, not waiting for it"]


async def test_a_gitignore_missing_the_working_files_is_reported(orch: Orchestrator, project: str):
    ignore = orch.project(project).store.dir / ".gitignore"
    ignore.write_text(".lock\n")
    assert consistency.problems(orch.project(project).store) == [
        ".orch-state/.gitignore lacks *.tmp, .commit-queue: the bot's working files would be committed"]
