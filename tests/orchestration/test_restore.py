"""Restore in a running orchestrator: the state machine takes the restored state; the write of a restore (files
written and removed) is one change that a failure half way through never leaves half done."""
from __future__ import annotations

import pytest

from orchestration.errors import CommandNotAllowed, OrchError
from orchestration.service import Orchestrator
from tests.conftest import git


async def test_the_state_machine_takes_the_restored_state(orch: Orchestrator, project: str):
    repo = orch.project(project).entry.path
    await orch.create_epic(project, "Shop", by="a")
    await orch.add_story(project, "E-1", "Cart", by="a")
    await orch.flush()
    before_sprint = git(repo, "rev-parse", "HEAD").strip()
    await orch.plan_sprint(project, by="a")
    await orch.start_sprint(project, by="a")
    with pytest.raises(CommandNotAllowed):
        await orch.plan_sprint(project, by="a")

    result = await orch.restore_project(project, before_sprint, by="ada")
    assert orch.project(project).model.state.value == "BACKLOG_READY" == result.state.value
    view = await orch.plan_sprint(project, goal="again", by="a")  # allowed again, at once, in this process
    assert view.sprint.id == "sprint-001" and view.stories[0].status.value == "todo"
    await orch.flush()
    assert f"orch({project}): restore .orch-state to {before_sprint[:10]}: " in git(repo, "log", "-2", "--format=%B")


async def test_a_restore_that_fails_half_way_is_finished_by_the_next_command(orch: Orchestrator, project: str):
    """A folder in the way of a file the restore writes: the change is decided (its journal is on disk), so it
    is reported as made; once the folder is gone, the next command finishes it, removals included."""
    repo = orch.project(project).entry.path
    await orch.create_epic(project, "Shop", by="a")
    await orch.add_story(project, "E-1", "Cart", by="a")
    await orch.flush()
    backlog_only = git(repo, "rev-parse", "HEAD").strip()
    await orch.plan_sprint(project, by="a")
    await orch.flush()
    target = git(repo, "rev-parse", "HEAD").strip()  # with sprints/sprint-001.json
    await orch.restore_project(project, backlog_only, by="ada")
    await orch.flush()
    folder = repo / ".orch-state"
    (folder / "notes.md").write_text("a file the target commit does not have\n")
    obstacle = folder / "sprints/sprint-001.json"
    obstacle.mkdir()
    (obstacle / "in-the-way.tmp").write_text("x")  # ignored by git, as the orchestrator's temp files are

    result = await orch.restore_project(project, target, by="ada")
    assert result.warning and "not fully on disk" in result.warning
    with pytest.raises(OrchError, match="earlier change.*not fully on disk"):
        await orch.add_story(project, "E-1", "Another", by="a")  # the next command finishes it first, and cannot yet
    (obstacle / "in-the-way.tmp").unlink()
    obstacle.rmdir()
    state = await orch.state(project)
    assert state.state.value == "SPRINT_PLANNED" and state.current_sprint == "sprint-001"
    assert not (folder / "notes.md").exists() and obstacle.is_file()
    assert not list(folder.rglob("*.tmp"))
    await orch.flush()
    assert git(repo, "rev-parse", "HEAD:.orch-state") == git(repo, "rev-parse", f"{target}:.orch-state")
    assert "notes.md" in git(repo, "log", "--format=", "--name-only", "HEAD~1")  # the hand edit, kept in history


async def test_a_commit_without_the_state_gitignore_keeps_the_working_files_out_of_git(orch: Orchestrator,
                                                                                       project: str):
    repo = orch.project(project).entry.path
    await orch.create_epic(project, "Shop", by="a")
    await orch.flush()
    git(repo, "rm", "-q", ".orch-state/.gitignore")
    git(repo, "commit", "-q", "-m", "no gitignore")
    bare = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "HEAD~1", "--", ".orch-state/.gitignore")
    git(repo, "commit", "-q", "-m", "gitignore back")
    await orch.create_epic(project, "Search", by="a")

    result = await orch.restore_project(project, bare, by="ada")
    await orch.flush()
    assert result.epics_removed == ["E-2"] and (repo / ".orch-state/.gitignore").exists()
    tracked = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "--", ".orch-state").split()
    assert ".orch-state/.gitignore" in tracked
    assert not {".orch-state/.lock", ".orch-state/.commit-queue"} & set(tracked)
