"""One file per story: a one-story change writes (and commits) that story alone; today's format (every story in
backlog.json, schema_version 1) migrates at the first change; the old whole-backlog way stays correct."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestration.errors import InvalidInput
from orchestration.service import Orchestrator
from orchestration.unit_of_work import Change
from tests.conftest import backlog_json, git, story_file

V1_STATE = Path(__file__).parent / "data" / "v1-state"  # a .orch-state as this program wrote it before stories/


async def ready(orch: Orchestrator, project: str, stories: int = 3) -> Path:
    await orch.create_epic(project, "Checkout", by="alice")
    for n in range(stories):
        await orch.add_story(project, "E-1", f"Story {n + 1}", by="alice")
    await orch.flush()
    return orch.project(project).entry.path


async def test_a_one_story_change_writes_and_commits_that_story_alone(orch: Orchestrator, project: str):
    repo = await ready(orch, project)
    backlog_before = (repo / ".orch-state/backlog.json").read_bytes()
    await orch.prioritize_story(project, "S-2", "high", by="bob")
    await orch.flush()
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == [".orch-state/stories/S-2.json"]
    diff = git(repo, "show", "--format=", "HEAD")
    assert '-  "priority": "medium",' in diff and '+  "priority": "high",' in diff
    assert (repo / ".orch-state/backlog.json").read_bytes() == backlog_before
    added = await orch.add_story(project, "E-1", "Story 4", by="bob")
    await orch.flush()
    assert added.story.id == "S-4"
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == [".orch-state/stories/S-4.json"]


async def test_remove_story_removes_its_file_and_its_id_is_never_reused(orch: Orchestrator, project: str):
    repo = await ready(orch, project)
    await orch.remove_story(project, "S-3", by="bob")
    await orch.flush()
    assert not story_file(repo, "S-3").exists()
    assert sorted(git(repo, "show", "--name-only", "--format=", "HEAD").split()) == [
        ".orch-state/backlog.json", ".orch-state/stories/S-3.json"]  # the counter moves past it, in one write
    assert backlog_json(repo)["next_story"] == 4
    assert (await orch.add_story(project, "E-1", "After", by="bob")).story.id == "S-4"


async def test_today_format_migrates_at_the_first_change_in_one_commit(orch: Orchestrator, make_repo):
    repo = make_repo("legacy")
    shutil.copytree(V1_STATE, repo / ".orch-state")
    git(repo, "add", ".orch-state")
    git(repo, "commit", "-q", "-m", "state as the previous version wrote it")
    await orch.register_project(str(repo), by="admin")
    await orch.flush()

    page = await orch.view_backlog("legacy")  # read as it is: a read changes nothing
    assert [s.id for s in page.stories] == ["S-1", "S-2", "S-4"]
    assert not list((repo / ".orch-state/stories").glob("S-*"))  # registration added stories/.gitkeep alone
    assert git(repo, "status", "--porcelain") == ""

    added = await orch.add_story("legacy", "E-1", "Gift cards", depends_on=["S-2"], by="carol")
    assert added.story.id == "S-5"  # above the old counter
    await orch.flush()
    backlog = json.loads((repo / ".orch-state/backlog.json").read_text())
    assert backlog["schema_version"] == 2 and "stories" not in backlog and backlog["epics"][0]["id"] == "E-1"
    old = {s["id"]: s for s in json.loads((V1_STATE / "backlog.json").read_text())["stories"]}
    for ident, story in old.items():
        assert json.loads(story_file(repo, ident).read_text()) == {"schema_version": 1, **story}
    assert [s["id"] for s in backlog_json(repo)["stories"]] == ["S-1", "S-2", "S-4", "S-5"]
    message = git(repo, "log", "-1", "--format=%B")
    assert "move the stories of backlog.json to stories/, one file per story (3 stories" in message
    assert "add story" in message
    assert git(repo, "status", "--porcelain") == ""
    assert (await orch.health()).ok
    assert [s.id for s in (await orch.next_story("legacy")).ready] == ["S-1"]  # the dependency survived


async def test_a_failed_first_change_migrates_nothing(orch: Orchestrator, make_repo):
    repo = make_repo("legacy")
    shutil.copytree(V1_STATE, repo / ".orch-state")
    await orch.register_project(str(repo), by="admin")
    with pytest.raises(Exception):
        await orch.add_story("legacy", "E-9", "No such epic", by="carol")
    assert json.loads((repo / ".orch-state/backlog.json").read_text())["schema_version"] == 1
    assert not list((repo / ".orch-state/stories").glob("S-*"))


async def test_the_old_whole_backlog_way_stays_correct(orch: Orchestrator, project: str):
    repo = await ready(orch, project)

    def old_way(c: Change) -> list[str]:
        b = c.backlog  # a private copy of everything
        b.story("S-1").title = "Renamed the old way"
        b.epic("E-1").description = "Edited the old way"
        b.stories = [s for s in b.stories if s.id != "S-3"]
        c.touch_backlog()
        return []

    change_paths: list[list[str]] = []
    original = Change.write

    def spy(self: Change):
        warning = original(self)
        change_paths.append(self.written)
        return warning

    Change.write = spy
    try:
        await orch.change(project, "update_story", "dave", old_way)
    finally:
        Change.write = original
    assert sorted(change_paths[-1]) == ["backlog.json", "stories/S-1.json", "stories/S-3.json"]
    data = backlog_json(repo)
    assert [s["title"] for s in data["stories"]] == ["Renamed the old way", "Story 2"]
    assert data["epics"][0]["description"] == "Edited the old way"
    assert (await orch.view_backlog(project)).total == 2


async def test_a_writer_changing_shared_state_in_place_is_caught(orch: Orchestrator, project: str):
    """The tests' safety net (ORCH_CHECK_SHARED): c.story() is shared with readers; editing needs edit_story()."""
    repo = await ready(orch, project)

    def wrong(c: Change) -> None:
        c.story("S-1").title = "changed in place"

    with pytest.raises(AssertionError, match="changed in place: S-1"):
        await orch.change(project, "update_story", "eve", wrong)
    assert json.loads(story_file(repo, "S-1").read_text())["title"] == "Story 1"
    orch.project(project).store.invalidate()  # this test broke the shared state on purpose


async def test_a_symlinked_story_file_is_refused(orch: Orchestrator, project: str, tmp_path: Path):
    repo = await ready(orch, project)
    outside = tmp_path / "elsewhere.json"
    outside.write_text(story_file(repo, "S-2").read_text())
    story_file(repo, "S-2").unlink()
    story_file(repo, "S-2").symlink_to(outside)
    with pytest.raises(Exception, match="symlink"):
        await orch.view_backlog(project)
    assert (await orch.health()).projects[0].ok is False


async def test_a_story_id_is_never_a_path(orch: Orchestrator, project: str):
    await ready(orch, project)
    for wrong in ("../status", "S-1/../S-2", "../stories/S-2", "s-2/."):
        with pytest.raises(InvalidInput, match="there is no story"):
            await orch.prioritize_story(project, wrong, "high", by="mallory")
        with pytest.raises(InvalidInput, match="there is no story"):
            await orch.story_log(project, wrong)
