"""Registering projects: every way it can go wrong gets a clear error and changes nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestration.errors import InvalidInput, OrchError, ProjectExists, ProjectNotFound, StateCorrupt, UnsafePath
from orchestration.service import Orchestrator
from tests.conftest import git


def registry_bytes(orch: Orchestrator) -> bytes | None:
    return orch.registry.file.read_bytes() if orch.registry.file.exists() else None


async def test_register_creates_state_from_templates(orch: Orchestrator, make_repo):
    repo = make_repo("My_Repo")
    result = await orch.register_project(str(repo), by="admin")
    assert result.project == "my-repo" and not result.adopted
    state = repo / ".orch-state"
    for name in ["backlog.json", "status.json", "architecture.md", "best-practices.md", "sprints", ".gitignore"]:
        assert (state / name).exists(), name
    assert "my-repo" in (state / "architecture.md").read_text()
    assert "{{" not in (state / "best-practices.md").read_text()
    await orch.flush()
    assert "initialise .orch-state for project my-repo" in git(repo, "log", "-1", "--format=%s")
    assert [p.name for p in await orch.list_projects()] == ["my-repo"]
    # Survives a restart: a new Orchestrator over the same data_dir sees it.
    again = Orchestrator(orch.config)
    assert again.registry.get("my-repo").path == repo.resolve()
    await again.close()


async def test_existing_state_is_adopted_not_overwritten(orch: Orchestrator, make_repo, config):
    repo = make_repo("old")
    await orch.register_project(str(repo), by="admin")
    await orch.create_epic("old", "Keep me", by="a")
    await orch.unregister_project("old")
    backlog = (repo / ".orch-state" / "backlog.json").read_bytes()
    result = await orch.register_project(str(repo), by="admin")
    assert result.adopted
    assert (repo / ".orch-state" / "backlog.json").read_bytes() == backlog


@pytest.mark.parametrize("case", ["missing", "outside", "not-a-repo", "subfolder", "bare", "bad-name", "file",
                                  "ignored"])
async def test_bad_registrations_are_refused(orch: Orchestrator, make_repo, projects_root: Path, tmp_path, case):
    if case == "missing":
        path, name = projects_root / "nope", None
    elif case == "outside":
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        git(outside, "init", "-q")
        path, name = outside, None
    elif case == "not-a-repo":
        path, name = projects_root / "plain", None
        path.mkdir()
    elif case == "subfolder":
        path, name = make_repo("parent") / "src", None
        path.mkdir()
    elif case == "bare":
        path, name = projects_root / "bare.git", None
        git(projects_root, "init", "-q", "--bare", str(path))
    elif case == "ignored":
        path, name = make_repo("ignoring"), None
        (path / ".gitignore").write_text(".orch-state/\n")
    elif case == "bad-name":
        path, name = make_repo("fine"), "Bad Name!"
    else:
        path, name = projects_root / "a-file", None
        path.write_text("x")
    with pytest.raises(InvalidInput) as err:
        await orch.register_project(str(path), name, by="admin")
    assert err.value.field in ("path", "name") and err.value.message
    assert registry_bytes(orch) is None
    if path.is_dir():
        assert not (path / ".orch-state").exists()


async def test_symlink_escaping_the_allowed_root_is_refused(orch: Orchestrator, tmp_path, projects_root):
    outside = tmp_path / "secret"
    outside.mkdir()
    git(outside, "init", "-q")
    (projects_root / "link").symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside the allowed roots"):
        await orch.register_project(str(projects_root / "link"), by="admin")
    assert not (outside / ".orch-state").exists()


async def test_symlinked_state_folder_is_refused(orch: Orchestrator, make_repo, tmp_path):
    repo = make_repo("sly")
    target = tmp_path / "elsewhere-state"
    target.mkdir()
    os.symlink(target, repo / ".orch-state")
    with pytest.raises(UnsafePath, match="symlink"):
        await orch.register_project(str(repo), by="admin")
    assert list(target.iterdir()) == [] and registry_bytes(orch) is None


async def test_second_registration_says_where_the_first_is(orch: Orchestrator, make_repo):
    repo = make_repo("twice")
    await orch.register_project(str(repo), by="admin", channel_id=1234)
    before = registry_bytes(orch)
    with pytest.raises(ProjectExists) as err:
        await orch.register_project(str(repo), "other-name", by="admin")
    assert err.value.name == "twice" and "<#1234>" in err.value.message
    with pytest.raises(InvalidInput, match="already the name"):
        await orch.register_project(str(make_repo("three")), "twice", by="admin")
    assert registry_bytes(orch) == before


async def test_corrupt_existing_state_is_refused_and_kept(orch: Orchestrator, make_repo):
    repo = make_repo("broken")
    state = repo / ".orch-state"
    state.mkdir()
    (state / "status.json").write_text('{"schema_version": 1, "project": "broken", "state": "DANCING"}')
    (state / "backlog.json").write_text('{"schema_version": 1, "project": "broken"}')
    with pytest.raises(StateCorrupt) as err:
        await orch.register_project(str(repo), by="admin")
    assert "status.json" in err.value.message and "DANCING" in err.value.message
    assert "DANCING" in (state / "status.json").read_text()


@pytest.mark.parametrize("damaged", ["backlog.json", "tickets.json"])
async def test_damaged_partial_state_is_refused_before_anything_is_created(orch: Orchestrator, make_repo, damaged):
    """A failed registration changes nothing: no template files beside the damaged one, whichever file it is."""
    repo = make_repo("partial")
    state = repo / ".orch-state"
    state.mkdir()
    if damaged == "tickets.json":  # an otherwise complete folder, as another install of the bot left it
        (state / "status.json").write_text('{"schema_version": 1, "project": "partial"}')
        (state / "backlog.json").write_text('{"schema_version": 1, "project": "partial"}')
    (state / damaged).write_text("{not json")
    before = sorted(p.name for p in state.iterdir())
    with pytest.raises(StateCorrupt) as err:
        await orch.register_project(str(repo), by="admin")
    assert damaged in err.value.message
    assert sorted(p.name for p in state.iterdir()) == before and registry_bytes(orch) is None


async def test_unregister_keeps_files(orch: Orchestrator, project: str):
    path = orch.project(project).entry.path
    gone = await orch.unregister_project(project)
    assert gone.path == path and (path / ".orch-state" / "backlog.json").exists()
    with pytest.raises(ProjectNotFound):
        await orch.create_epic(project, "x", by="a")
    with pytest.raises(ProjectNotFound):
        await orch.unregister_project(project)


async def test_repository_moved_away_says_so(orch: Orchestrator, project: str, tmp_path):
    path = orch.project(project).entry.path
    await orch.flush()
    path.rename(tmp_path / "moved")
    with pytest.raises(OrchError, match="no longer at"):
        await orch.create_epic(project, "x", by="a")
    health = await orch.health()
    assert not health.ok and "no longer at" in health.projects[0].problems[0]


@pytest.mark.parametrize("content", ["[]", '"projects"', "{bad"])
async def test_damaged_registry_is_a_clear_error_and_kept(orch: Orchestrator, config, content):
    config.orchestrator.data_dir.mkdir(parents=True)
    orch.registry.file.write_text(content)
    with pytest.raises(StateCorrupt, match="registry.json"):
        await orch.list_projects()
    assert orch.registry.file.read_text() == content
