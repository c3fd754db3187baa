"""Agent tests: a real project repository, real agent processes (fixtures/agent.py), real git worktrees."""
from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import pytest

from orchestration.agents.protocol import CodeInput, Story
from orchestration.agents.runner import AttemptSpec
from orchestration.agents.worktree import Worktrees
from tests.conftest import git

FIXTURES = Path(__file__).parent / "fixtures"
AGENT = [sys.executable, str(FIXTURES / "agent.py")]
TESTS = [sys.executable, str(FIXTURES / "run_tests.py")]
PLANNER = [sys.executable, str(FIXTURES / "planner.py")]
TOKEN = "MTIzNDU2Nzg5.GhIjKl.super-secret-token-value"
_ids = itertools.count(1)


def user_view(repo: Path) -> tuple:
    """Everything of the user's checkout that agent work must leave alone: HEAD, branch tip, status, index."""
    return (git(repo, "symbolic-ref", "HEAD"), git(repo, "rev-parse", "HEAD"),
            git(repo, "status", "--porcelain", "--untracked-files=all"),
            hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone
    except FileNotFoundError:
        return False


@pytest.fixture
def repo(make_repo) -> Path:
    """A project with .orch-state committed, and the user's own work in progress: a staged, a modified and an
    untracked file, which nothing here may touch."""
    root = make_repo("shop")
    (root / ".orch-state").mkdir()
    (root / ".orch-state" / "status.json").write_text('{"state": "SPRINT_ACTIVE"}\n')
    (root / "app.py").write_text("print('v1')\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "project")
    (root / "app.py").write_text("print('v2, not committed')\n")
    (root / "staged.txt").write_text("staged\n")
    git(root, "add", "staged.txt")
    (root / "notes.txt").write_text("untracked\n")
    return root


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def trees(repo, data_dir) -> Worktrees:
    return Worktrees(repo, data_dir, "shop", "Orch Test", "orch@test")


@pytest.fixture
def sprint(trees) -> str:
    return trees.make_sprint_branch("sprint-001")


@pytest.fixture
def make_spec(repo, trees, sprint, data_dir, monkeypatch):
    """make_spec("mode", *args, story="S-1", ...) -> an AttemptSpec of fixtures/agent.py in a prepared worktree.
    DISCORD_TOKEN is set in the bot's (this process's) environment, as in production."""
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)

    def make(mode: str, *args: str, story: str = "S-1", title: str = "Cart total", attempt: int = 1,
             tests: list[str] | None = TESTS, timeout_s: float = 5, fresh: bool = False, **fields) -> AttemptSpec:
        workdir = trees.prepare_story(story, sprint, fresh=fresh)
        attempt_id = f"A-{next(_ids)}"
        task = CodeInput(project="shop", sprint="sprint-001", story=Story(id=story, title=title), attempt=attempt,
                         workdir=str(workdir), branch=f"orch/{story}", test_command=tests or [],
                         answers=fields.pop("answers", []))
        return AttemptSpec(attempt_id=attempt_id, project="shop", story=story, command=[*AGENT, mode, *args],
                           input=task, repo=repo, workdir=workdir, branch=f"orch/{story}", base=sprint,
                           test_command=tests or [], timeout_s=timeout_s, log_path=data_dir / "logs" / f"{attempt_id}.log",
                           author_name="Orch Test", author_email="orch@test", grace_s=0.5, **fields)

    return make
