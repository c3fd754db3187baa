"""The package as a user installs it (a wheel, not an editable checkout) can register a project: its templates
ship inside it. Built from a copy of the source, installed into a fresh venv, run as the installed `orch`."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.conftest import git

ROOT = Path(__file__).resolve().parents[2]
STATE_FILES = {".gitignore", "architecture.md", "backlog.json", "best-practices.md", "sprints", "sprints/.gitkeep",
               "stories", "stories/.gitkeep",
               "status.json"}


def run(*argv: str | Path, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, **kw)
    assert done.returncode == 0, done.stderr
    return done


def test_the_installed_wheel_registers_a_project_and_a_failed_registration_leaves_nothing(tmp_path, make_repo,
                                                                                         projects_root):
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "tests", "bench", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
        source)
    [wheel] = (tmp_path / "dist").glob("orch_scrum_bot-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # The dependencies (discord.py, pydantic, ...) come from this environment, after the venv's own packages.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = run(python, "-c", "import orchestration; print(orchestration.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(site)), where

    config = tmp_path / "config.toml"
    config.write_text(f'[orchestrator]\ndata_dir = "{tmp_path / "data"}"\nallowed_roots = ["{projects_root}"]\n'
                      'commit_author = "Orch Test <orch@test>"\ncommit_batch_ms = 20\n', encoding="utf-8")
    orch = [venv / "bin" / "orch", "--config", config]

    repo = make_repo("shop")
    done = run(*orch, "project", "register", repo, cwd=tmp_path)
    assert 'Registered project "shop"' in done.stdout
    state = repo / ".orch-state"
    assert {p.relative_to(state).as_posix() for p in state.rglob("*")} - {".lock", ".commit-queue"} == STATE_FILES
    assert '"project": "shop"' in (state / "backlog.json").read_text()
    assert "initialise .orch-state for project shop" in git(repo, "log", "-1", "--format=%s")

    # A broken installation (a damaged template, then none): registration is refused and leaves nothing behind.
    templates = site / "orchestration" / "templates"
    other = make_repo("other")
    for damage, said in ((lambda: (templates / "backlog.json").write_text("{"), "backlog.json, line 1 is damaged"),
                         (lambda: shutil.rmtree(templates), "templates for a new .orch-state/ are missing")):
        damage()
        failed = subprocess.run([str(a) for a in (*orch, "project", "register", other)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert failed.returncode == 1 and said in failed.stderr, failed.stderr
        assert not (other / ".orch-state").exists()
    assert "other" not in run(*orch, "project", "list", cwd=tmp_path).stdout
