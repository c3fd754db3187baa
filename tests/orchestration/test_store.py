"""The state files: corrupt input is refused with the way back, never overwritten; writes stay inside."""
from __future__ import annotations

import os

import pytest

from orchestration import consistency
from orchestration.errors import InvalidInput, StateCorrupt, UnsafePath
from orchestration.service import Orchestrator
from orchestration.store import ProjectStore
from tests.conftest import story_file


async def test_corrupt_backlog_refuses_with_line_and_recovery(orch: Orchestrator, project: str):
    store = orch.project(project).store
    backlog = store.dir / "backlog.json"
    broken = '{\n  "schema_version": 1,\n  "project": "demo",\n  "epics": [,]\n}\n'
    backlog.write_text(broken)
    with pytest.raises(StateCorrupt) as err:
        await orch.create_epic(project, "Anything", by="a")
    assert err.value.file == ".orch-state/backlog.json" and err.value.line == 4
    assert "git checkout -- .orch-state/backlog.json" in err.value.how_to_recover
    assert backlog.read_text() == broken  # never overwritten
    assert '"state": "IDLE"' in (store.dir / "status.json").read_text()  # status untouched


async def test_schema_invalid_value_names_field_and_value(orch: Orchestrator, project: str):
    await orch.create_epic(project, "E", by="a")
    await orch.add_story(project, "E-1", "S", by="a")
    path = story_file(orch.project(project).store.dir, "S-1")
    path.write_text(path.read_text().replace('"priority": "medium"', '"priority": "urgent"'))
    with pytest.raises(StateCorrupt) as err:
        await orch.view_backlog(project)
    assert err.value.file == ".orch-state/stories/S-1.json" and "field priority" in err.value.message and '"urgent"' in err.value.message


async def test_newer_schema_version_is_refused(orch: Orchestrator, project: str):
    path = orch.project(project).store.dir / "status.json"
    path.write_text(path.read_text().replace('"schema_version": 1', '"schema_version": 9'))
    with pytest.raises(StateCorrupt, match="newer than this program"):
        await orch.state(project)


async def test_hand_edit_is_seen_by_next_command(orch: Orchestrator, project: str):
    await orch.create_epic(project, "Original", by="a")
    path = orch.project(project).store.dir / "backlog.json"
    path.write_text(path.read_text().replace("Original", "Edited by hand"))
    page = await orch.view_backlog(project)
    assert page.epics[0].title == "Edited by hand"


async def test_failed_command_changes_nothing(orch: Orchestrator, project: str):
    await orch.create_epic(project, "E", by="a")
    await orch.flush()  # its commit empties the commit queue: done now, not while the files are compared
    folder = orch.project(project).store.dir
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for bad in [lambda: orch.add_story(project, "E-9", "x", by="a"),
                lambda: orch.add_story(project, "E-1", "", by="a"),
                lambda: orch.add_story(project, "E-1", "x" * 201, by="a"),
                lambda: orch.add_story(project, "E-1", "x", points=-1, by="a"),
                lambda: orch.add_story(project, "E-1", "x", priority="urgent", by="a"),
                lambda: orch.add_story(project, "E-1", "x", depends_on=["S-7"], by="a"),
                lambda: orch.create_epic(project, "ok", description="d" * 5000, by="a")]:
        with pytest.raises(InvalidInput):
            await bad()
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == {p: b for p, b in before.items() if p.name != ".lock"}
    assert not list(folder.rglob("*.tmp"))


def test_paths_cannot_leave_the_state_folder(make_repo):
    (make_repo("x") / ".orch-state").mkdir(parents=True)
    store = ProjectStore(make_repo("y"))
    with pytest.raises(UnsafePath):
        store.path("../README.md")


async def test_in_place_edit_with_same_size_and_mtime_is_seen(orch: Orchestrator, project: str):
    """A script that rewrites a file in place within one clock tick keeps inode, size and mtime: still seen."""
    await orch.create_epic(project, "Alpha", by="a")
    path = orch.project(project).store.dir / "backlog.json"
    st = path.stat()
    with open(path, "r+b") as fh:
        data = fh.read()
        fh.seek(0)
        fh.write(data.replace(b"Alpha", b"Omega"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert (await orch.view_backlog(project)).epics[0].title == "Omega"


async def test_state_folder_swapped_for_a_symlink_later_is_refused(orch: Orchestrator, project: str, tmp_path):
    """The bot runs for weeks: .orch-state replaced by a symlink after registration must not lead writes out."""
    import shutil

    await orch.create_epic(project, "E", by="a")
    folder = orch.project(project).store.dir
    outside = tmp_path / "outside"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside)
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    with pytest.raises(UnsafePath, match="symlink"):
        await orch.create_epic(project, "Another", by="a")
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before


async def test_next_sprint_number_counts_numbers_and_ignores_stray_files(orch: Orchestrator, project: str):
    """sprint-1000 sorts before sprint-999 as text, and a copy someone left beside the sprints is not one."""
    from orchestration.models import Sprint, SprintStatus
    from orchestration.store import dump

    await orch.create_epic(project, "E", by="a")
    await orch.add_story(project, "E-1", "S", by="a")
    sprints = orch.project(project).store.dir / "sprints"
    for ident in ("sprint-999", "sprint-1000"):
        (sprints / f"{ident}.json").write_bytes(dump(Sprint(id=ident, status=SprintStatus.closed)))
    kept = (sprints / "sprint-1000.json").read_bytes()
    (sprints / "sprint-1000 copy.json").write_bytes(kept)
    view = await orch.plan_sprint(project, ["S-1"], by="a")
    assert view.sprint.id == "sprint-1001"
    assert (sprints / "sprint-1000.json").read_bytes() == kept


async def test_a_write_interrupted_between_two_renames_is_finished_before_anything_reads(orch: Orchestrator,
                                                                                        project: str):
    """/sprint plan writes backlog.json, the sprint file and status.json. Here the second rename fails (its
    target is in the way), as a crash there would leave it: the next reader finishes the write, whole."""
    await orch.create_epic(project, "E", by="a")
    await orch.add_story(project, "E-1", "S", by="a")
    store = orch.project(project).store
    obstacle = store.dir / "sprints" / "sprint-001.json"
    obstacle.mkdir()
    assert (await orch.plan_sprint(project, goal="g", by="a")).warning  # decided: made, said with a warning
    assert (store.dir / ".journal.tmp").exists()
    assert '"sprint": "sprint-001"' in story_file(store.dir, "S-1").read_text()  # half written
    assert '"state": "BACKLOG_READY"' in (store.dir / "status.json").read_text()
    obstacle.rmdir()  # the crash is over

    view = await orch.state(project)
    assert view.state.value == "SPRINT_PLANNED" and view.current_sprint == "sprint-001"
    assert (store.dir / "sprints" / "sprint-001.json").is_file()
    assert not list(store.dir.rglob("*.tmp"))
    assert consistency.problems(store) == []


async def test_temp_files_of_a_write_that_never_decided_are_swept(orch: Orchestrator, project: str):
    store = orch.project(project).store
    orphan = store.dir / ".backlog.json.abc123.tmp"
    orphan.write_text("{half")
    await orch.create_epic(project, "E", by="a")
    assert not orphan.exists()


async def test_refusals_name_what_would_do(orch: Orchestrator, project: str):
    await orch.create_epic(project, "E", by="a")
    await orch.add_story(project, "E-1", "First", by="a")
    await orch.add_story(project, "E-1", "Second", depends_on=["S-1"], by="a")
    with pytest.raises(InvalidInput) as err:
        await orch.remove_story(project, "S-1", by="a")
    assert err.value.message == "story: S-2 depends on S-1."
    with pytest.raises(InvalidInput) as err:
        await orch.update_story(project, "S-1", "sleeping", by="a")
    assert err.value.hint == "Use one of: todo, in_progress, done, blocked."  # what a person may set
    with pytest.raises(InvalidInput, match="set by opening a ticket"):
        await orch.update_story(project, "S-1", "blocked_awaiting_feedback", by="a")
