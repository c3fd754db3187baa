"""Shared fixtures: real git repositories in a temp folder, a real config, a real Orchestrator."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from orchestration.config import Config
from orchestration.models import Backlog, Story
from orchestration.service import Orchestrator
from orchestration.store import CHECK_SHARED_ENV

# Every write checks that no writer changed the saved objects readers share (store.SavedBacklog.check_unchanged).
os.environ.setdefault(CHECK_SHARED_ENV, "1")

GIT_ID = ["-c", "user.name=Dev", "-c", "user.email=dev@example.com", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` as a developer would; returns stdout."""
    return subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def change_lines(repo: Path, *rev: str) -> list[str]:
    """Each change the commits of the log hold, newest first: a batched commit's bullets (its subject only sums
    them up), or a one-line commit's message."""
    lines = []
    for commit in git(repo, "log", "--format=%s%x1f%b%x1e", *rev).split("\x1e"):
        subject, _, body = commit.strip("\n").partition("\x1f")
        bullets = [line[2:] for line in body.splitlines() if line.startswith("- ")]
        lines += bullets or ([subject] if subject else [])
    return lines


def backlog_json(repo: Path) -> dict:
    """backlog.json with every story (each in its own file, .orch-state/stories/S-<n>.json) under "stories", in
    ID order: the whole backlog as tests look at it. `repo` may be the repository or its .orch-state."""
    state = repo if repo.name == ".orch-state" else repo / ".orch-state"
    data = json.loads((state / "backlog.json").read_text())
    files = sorted((state / "stories").glob("S-*.json"), key=lambda p: int(p.stem[2:]))
    data["stories"] = [{k: v for k, v in json.loads(p.read_text()).items() if k != "schema_version"}
                       for p in files]
    return data


def backlog_of(repo: Path) -> Backlog:
    data = backlog_json(repo)
    stories = data.pop("stories")
    return Backlog.model_validate(data).model_copy(update={"stories": [Story(**s) for s in stories]})


def story_file(repo: Path, ident: str) -> Path:
    state = repo if repo.name == ".orch-state" else repo / ".orch-state"
    return state / "stories" / f"{ident}.json"


@pytest.fixture
def projects_root(tmp_path: Path) -> Path:
    root = tmp_path / "projects"
    root.mkdir()
    return root


@pytest.fixture
def make_repo(projects_root: Path):
    """make_repo("name", commit=True) -> Path of a fresh git work tree inside the allowed root."""

    def make(name: str = "demo", commit: bool = True) -> Path:
        repo = projects_root / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        if commit:
            (repo / "README.md").write_text(f"# {name}\n")
            git(repo, "add", "README.md")
            git(repo, "commit", "-q", "-m", "initial commit")
        return repo

    return make


@pytest.fixture
def config(tmp_path: Path, projects_root: Path) -> Config:
    return Config.model_validate({
        "orchestrator": {"data_dir": str(tmp_path / "data"), "allowed_roots": [str(projects_root)],
                         "commit_author": "Orch Test <orch@test>", "commit_batch_ms": 20},
    })


@pytest.fixture
def cfg(tmp_path: Path, projects_root: Path) -> Path:
    """The same configuration as `config`, as a config.toml for the `orch` command."""
    file = tmp_path / "config.toml"
    file.write_text(f'[orchestrator]\ndata_dir = "data"\nallowed_roots = ["{projects_root}"]\n'
                    'commit_author = "Orch Test <orch@test>"\ncommit_batch_ms = 20\n', encoding="utf-8")
    return file


@pytest.fixture
async def orch(config: Config):
    o = Orchestrator(config)
    yield o
    await o.close()


@pytest.fixture
async def project(orch: Orchestrator, make_repo) -> str:
    """A registered project named "demo"; returns its name."""
    await orch.register_project(str(make_repo("demo")), by="admin")
    await orch.flush()
    return "demo"
