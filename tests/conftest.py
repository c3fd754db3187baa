"""Shared fixtures: real git repositories in a temp folder, a real config, a real Orchestrator."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from orchestration.config import Config
from orchestration.service import Orchestrator

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
