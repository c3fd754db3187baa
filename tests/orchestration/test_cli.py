"""The `orch` command line, run in-process through `main(argv)` on real repos (and once as the installed script)."""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.models import Backlog, Sprint, Status
from orchestration.store import ProjectStore
from tests.conftest import git


@pytest.fixture
def cfg(tmp_path: Path, projects_root: Path) -> Path:
    file = tmp_path / "config.toml"
    file.write_text(f'[orchestrator]\ndata_dir = "data"\nallowed_roots = ["{projects_root}"]\n'
                    'commit_author = "Orch Test <orch@test>"\ncommit_batch_ms = 20\n', encoding="utf-8")
    return file


@pytest.fixture
def orch_cli(cfg: Path, capsys):
    """orch_cli("epic", "Title") -> (exit code, stdout, stderr), with this test's config."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--config", str(cfg), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    assert err == ""
    return out


def as_json(result: tuple[int, str, str]):
    return json.loads(ok(result))


def orch_log(repo: Path) -> list[str]:
    """Subjects and bodies of the commits that touched .orch-state, oldest first."""
    out = git(repo, "log", "--reverse", "--format=%B%x00", "--", ".orch-state")
    return [c.strip() for c in out.split("\x00") if c.strip()]


def test_scripted_scenario(orch_cli, make_repo):
    repo = make_repo("shop")
    # The developer's own work in progress: one staged file, one modified file. Nothing may touch them.
    (repo / "staged.txt").write_text("mine\n")
    git(repo, "add", "staged.txt")
    (repo / "README.md").write_text("# shop, edited\n")
    status_before = git(repo, "status", "--porcelain")

    out = ok(orch_cli("project", "register", str(repo), "--by", "admin"))
    assert 'Registered project "shop"' in out and "State: IDLE" in out

    assert "Created epic E-1" in ok(orch_cli("epic", "Checkout", "--by", "alice"))
    assert "Created epic E-2" in ok(orch_cli("epic", "Accounts", "-d", "Sign-up and login", "--by", "alice"))
    stories = [("E-1", "Cart page", "3", "high"), ("E-1", "Payment", "5", "critical"), ("E-1", "Receipt", "2", "low"),
               ("E-2", "Sign-up", "3", "medium"), ("E-2", "Login", "2", "high")]
    for n, (epic, title, points, priority) in enumerate(stories, start=1):
        extra = ["--depends-on", "S-1"] if title == "Payment" else []
        out = ok(orch_cli("backlog", "add-story", "--epic", epic, title, "--points", points, "--priority", priority,
                          "--criteria", f"{title} works", *extra, "--by", "alice"))
        assert f'Added S-{n} "{title}" to {epic}' in out

    out = ok(orch_cli("backlog"))
    assert "Backlog of shop: 5 stories" in out
    assert out.index("S-2") < out.index("S-1") < out.index("S-4") < out.index("S-3")  # by priority

    out = ok(orch_cli("sprint", "plan", "S-1", "S-2", "S-5", "S-4", "--goal", "Buy and log in", "--by", "bob"))
    assert "sprint-001 (planned): Buy and log in" in out and "Progress: 0/4 stories, 0/13 points done." in out
    assert "State: SPRINT_PLANNED" in out
    assert "sprint-001 (active)" in ok(orch_cli("sprint", "start", "--by", "bob"))

    ok(orch_cli("story", "update", "S-1", "in_progress", "--by", "carol"))
    out = ok(orch_cli("story", "update", "S-1", "done", "--by", "carol"))
    assert "S-1" in out and "in_progress -> done" in out and "Ready now" in out and "S-2" in out
    ok(orch_cli("story", "update", "S-2", "done", "--by", "carol"))
    ok(orch_cli("story", "update", "S-5", "done", "--by", "carol"))
    out = ok(orch_cli("sprint", "status"))
    assert "Progress: 3/4 stories, 10/13 points done." in out and "[x] S-1" in out and "[ ] S-4" in out

    out = ok(orch_cli("sprint", "review", "--by", "bob"))  # ends early: S-4 is not done
    assert "sprint-001 (review)" in out and "State: SPRINT_REVIEW" in out
    out = ok(orch_cli("feedback", "Good pace; sign-up slipped.", "--by", "bob"))
    assert "sprint-001 (closed)" in out and "Retrospective by bob" in out and "State: IDLE" in out

    out = ok(orch_cli("state"))
    assert "Project shop: IDLE" in out and "Stories: 2 todo, 3 done." in out
    assert "feedback: SPRINT_REVIEW -> IDLE by bob" in out

    # Every change is in git, with its IDs and who did it; the developer's files are as they were.
    log = orch_log(repo)
    assert log[0].startswith("orch(shop): initialise .orch-state")
    joined = "\n".join(log)
    for expected in ['orch(E-1): create epic "Checkout" (/epic by alice)', "orch(E-2)",
                     *(f"orch(S-{n}, E-" for n in range(1, 6)),
                     "orch(sprint-001, S-1, S-2, S-5, S-4): plan sprint-001 with 4 stories, 13 points",
                     "start sprint-001", "orch(S-1): status in_progress -> done (/story update by carol)",
                     "review sprint-001 (/sprint review by bob)", "close sprint-001 with feedback; S-4 back to the backlog"]:
        assert expected in joined
    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "diff", "--cached", "--name-only") == "staged.txt\n"
    touched = set(git(repo, "log", "--name-only", "--format=", "--author=Orch Test").split())
    assert touched and all(p.startswith(".orch-state/") for p in touched)

    # Every file validates against its model.
    state = repo / ".orch-state"
    backlog = Backlog.model_validate_json((state / "backlog.json").read_text())
    assert [s.status.value for s in backlog.stories] == ["done", "done", "todo", "todo", "done"]
    assert backlog.story("S-4").sprint is None  # back in the backlog
    sprint = Sprint.model_validate_json((state / "sprints" / "sprint-001.json").read_text())
    assert sprint.retrospective.text == "Good pace; sign-up slipped." and sprint.retrospective.by == "bob"
    assert Status.model_validate_json((state / "status.json").read_text()).state.value == "IDLE"
    ProjectStore(repo).validate_all()


def test_json_output_parses_and_carries_the_ids(orch_cli, make_repo):
    repo = make_repo("api")
    registered = as_json(orch_cli("--json", "project", "register", str(repo), "--name", "api"))
    assert registered["info"]["name"] == "api" and registered["state"] == "IDLE"
    assert ".orch-state/backlog.json" in registered["created_files"]
    assert as_json(orch_cli("epic", "Public API", "--json"))["epic"]["id"] == "E-1"
    story = as_json(orch_cli("backlog", "add-story", "--epic", "E-1", "List items", "--points", "2", "--json"))
    assert story["story"]["id"] == "S-1" and story["story"]["points"] == 2 and story["action"] == "added"
    second = as_json(orch_cli("--json", "backlog", "add-story", "--epic", "e-1", "Get item", "--depends-on", "S-1"))
    assert second["story"]["depends_on"] == ["S-1"]
    page = as_json(orch_cli("--json", "backlog", "view", "--epic", "E-1"))
    assert [s["id"] for s in page["stories"]] == ["S-1", "S-2"] and page["epic_filter"] == "E-1"
    plan = as_json(orch_cli("--json", "sprint", "plan", "--capacity", "10"))
    assert plan["sprint"]["id"] == "sprint-001" and plan["sprint"]["stories"] == ["S-1", "S-2"]
    assert plan["state"] == "SPRINT_PLANNED" and "start" in plan["allowed"]
    listed = as_json(orch_cli("--json", "project", "list"))
    assert [(p["name"], p["state"]) for p in listed] == [("api", "SPRINT_PLANNED")]
    state = as_json(orch_cli("state", "--json"))
    assert state["current_sprint"] == "sprint-001" and state["history"][-1]["command"] == "plan"
    health = as_json(orch_cli("health", "--json"))
    assert health["ok"] is True and health["projects"][0]["name"] == "api"


def test_an_error_is_one_line_on_stderr_exit_1_and_changes_nothing(orch_cli, make_repo):
    repo = make_repo("demo")
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "First"))
    backlog_before = (repo / ".orch-state" / "backlog.json").read_bytes()
    commits_before = git(repo, "rev-list", "--count", "HEAD")

    code, out, err = orch_cli("sprint", "start")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("orch: error: ")
    assert '"sprint start" is not possible while the project is BACKLOG_READY' in err
    assert "Allowed now: epic, backlog add-story, backlog prioritize, backlog remove, story update, sprint plan." in err

    for argv, expected in [
        (["backlog", "prioritize", "S-9", "high"], "there is no story 'S-9' in demo"),
        (["backlog", "add-story", "--epic", "E-1", "Thing", "--priority", "urgent"], "'urgent' is not a priority"),
        (["backlog", "add-story", "--epic", "E-7", "Thing"], "there is no epic 'E-7'"),
        (["epic", " ", "--json"], "title"),
        (["state", "--project", "nope"], 'No project "nope" here.'),
        (["project", "register", str(repo.parent)], "is not the top folder of a git repository"),
        (["project", "register", str(repo)], 'already registered as "demo"'),
    ]:
        code, out, err = orch_cli(*argv)
        assert (code, out) == (1, ""), argv
        assert err.startswith("orch: error: ") and err.count("\n") == 1 and expected in err, err
        assert "Traceback" not in err
    assert (repo / ".orch-state" / "backlog.json").read_bytes() == backlog_before
    assert git(repo, "rev-list", "--count", "HEAD") == commits_before


def test_a_config_problem_is_one_line_too(tmp_path, capsys):
    bad = tmp_path / "config.toml"
    bad.write_text('[discord]\ntoken = "MTIz.secret"\n')
    assert main(["--config", str(bad), "project", "list"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "DISCORD_TOKEN" in err and "MTIz" not in err
    assert main(["--config", str(tmp_path / "missing.toml"), "state"]) == 1
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],
    ["backlog", "add-story", "No epic given"],
    ["backlog", "add-story", "--epic", "E-1", "T", "--points", "three"],
    ["sprint"],
    ["sprint", "begin"],
    ["backlog", "--page", "x"],
])
def test_bad_usage_exits_2_with_argparse_message(orch_cli, argv):
    code, out, err = orch_cli(*argv)
    assert code == 2 and out == ""
    assert "usage: orch" in err and "error:" in err and "Traceback" not in err


def test_help_exits_0(orch_cli):
    code, out, _ = orch_cli("backlog", "add-story", "--help")
    assert code == 0 and "--depends-on" in out and "--criteria" in out


def test_the_project_is_found_from_the_folder_or_when_it_is_the_only_one(orch_cli, make_repo, monkeypatch, tmp_path):
    one, two = make_repo("one"), make_repo("two")
    ok(orch_cli("project", "register", str(one)))
    # Only one project: no --project needed, from anywhere.
    monkeypatch.chdir(tmp_path)
    assert "in one." in ok(orch_cli("epic", "Alpha"))
    ok(orch_cli("project", "register", str(two)))

    code, _, err = orch_cli("epic", "Beta")
    assert code == 1 and "which project?" in err and "one, two" in err and "--project NAME" in err

    (two / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(two / "src" / "deep")
    assert "Created epic E-1" in ok(orch_cli("epic", "Beta")) and "in two." in ok(orch_cli("epic", "Gamma"))
    assert "Created epic E-2" in ok(orch_cli("epic", "Delta", "--project", "one"))  # --project wins
    assert Backlog.model_validate_json((one / ".orch-state/backlog.json").read_text()).epic("E-2").title == "Delta"


def test_author_defaults_to_the_os_user(orch_cli, make_repo):
    repo = make_repo("who")
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Mine"))
    assert orch_log(repo)[-1] == f'orch(E-1): create epic "Mine" (/epic by {getpass.getuser()})'
    ok(orch_cli("--by", "dana", "epic", "Hers"))
    assert orch_log(repo)[-1].endswith("(/epic by dana)")


def test_backlog_pages_and_filters(orch_cli, make_repo):
    ok(orch_cli("project", "register", str(make_repo("big"))))
    ok(orch_cli("epic", "Everything"))
    for n in range(1, 12):
        ok(orch_cli("backlog", "add-story", "--epic", "E-1", f"Story {n}", "--priority", "high" if n == 11 else "low"))
    out = ok(orch_cli("backlog"))
    assert "11 stories, page 1 of 2" in out and "More: orch backlog --page 2" in out
    assert out.index("S-11") < out.index("S-1 ")  # high before low
    out = ok(orch_cli("backlog", "--page", "2"))
    assert "page 2 of 2" in out and "S-10" in out and "S-9" not in out
    ok(orch_cli("story", "update", "S-3", "blocked"))
    out = ok(orch_cli("backlog", "view", "--status", "blocked"))
    assert "1 story (status blocked)" in out and "S-3" in out and "S-4" not in out
    out = ok(orch_cli("backlog", "prioritize", "S-3", "critical"))
    assert "priority low -> critical" in out
    out = ok(orch_cli("backlog", "remove", "S-3"))
    assert 'Removed S-3 "Story 3"' in out
    assert "10 stories" in ok(orch_cli("backlog"))


def test_pause_resume_and_changes_requested(orch_cli, make_repo):
    ok(orch_cli("project", "register", str(make_repo("loop"))))
    ok(orch_cli("epic", "E"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-1", "A", "--points", "1"))
    ok(orch_cli("sprint", "plan"))
    ok(orch_cli("sprint", "start"))
    assert "State: SPRINT_PAUSED" in ok(orch_cli("sprint", "pause"))
    assert "State: SPRINT_ACTIVE" in ok(orch_cli("sprint", "resume"))
    ok(orch_cli("sprint", "review"))
    out = ok(orch_cli("feedback", "Redo it", "--changes-requested"))
    assert "(changes requested)" in out and "State: BACKLOG_READY" in out


def test_the_commit_has_landed_when_the_command_returns(orch_cli, make_repo):
    repo = make_repo("fast")
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Now"))
    assert git(repo, "log", "-1", "--format=%s") == 'orch(E-1): create epic "Now" (/epic by ' + getpass.getuser() + ")\n"
    assert git(repo, "status", "--porcelain", "--", ".orch-state") == ""


def test_a_deferred_commit_is_reported_and_made_by_the_next_command(orch_cli, make_repo):
    repo = make_repo("later")
    ok(orch_cli("project", "register", str(repo)))
    git(repo, "checkout", "-q", "--detach")
    code, out, err = orch_cli("epic", "While detached")
    assert code == 0 and "Created epic E-1" in out
    assert "not committed yet" in err and "HEAD is detached" in err
    assert "E-1" in (repo / ".orch-state/backlog.json").read_text()  # safe on disk
    git(repo, "checkout", "-q", "main")
    ok(orch_cli("epic", "Back on main"))
    assert git(repo, "status", "--porcelain", "--", ".orch-state") == ""
    assert '"E-1"' in git(repo, "show", "HEAD:.orch-state/backlog.json")


def test_health_fails_for_a_damaged_project_and_unregister_keeps_files(orch_cli, make_repo):
    repo = make_repo("sick")
    ok(orch_cli("project", "register", str(repo)))
    assert ok(orch_cli("health")).startswith("OK   sick (IDLE)")
    (repo / ".orch-state/backlog.json").write_text("{ not json")
    code, out, _ = orch_cli("health")
    assert code == 1 and out.startswith("FAIL sick") and "backlog.json" in out and "git checkout --" in out
    code, _, err = orch_cli("epic", "Anything")
    assert code == 1 and "backlog.json" in err and "damaged" in err
    assert (repo / ".orch-state/backlog.json").read_text() == "{ not json"  # never overwritten
    out = ok(orch_cli("project", "unregister", "sick"))
    assert 'Unregistered project "sick"' in out and (repo / ".orch-state").is_dir()
    assert "No project is registered" in ok(orch_cli("project", "list"))


def test_the_installed_console_script(cfg, make_repo, tmp_path):
    """The `orch` script pyproject installs: exit codes, JSON, one-line errors, and the commit in git on exit."""
    script = Path(sys.executable).with_name("orch")
    assert script.exists(), "pip install -e . installs the orch console script"
    repo = make_repo("real")
    env = {**os.environ, "ORCH_CONFIG": str(cfg)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    done = run("project", "register", str(repo))
    assert done.returncode == 0, done.stderr
    done = run("--json", "epic", "From a shell", "--by", "eve")
    assert done.returncode == 0 and json.loads(done.stdout)["epic"]["id"] == "E-1"
    assert git(repo, "log", "-1", "--format=%s") == 'orch(E-1): create epic "From a shell" (/epic by eve)\n'
    done = run("sprint", "start")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "is not possible while the project is BACKLOG_READY" in done.stderr
