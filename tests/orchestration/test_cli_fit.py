"""Issue 12's "wrong or surprising" through the installed `orch` (subprocesses, real repos): re-planning, the
CLI's own names in hints, commit lines and --json, refusals as JSON, messages in plain words, and registering a
project again under another name."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git

ORCH = Path(sys.executable).with_name("orch")


@pytest.fixture
def orch(cfg: Path, tmp_path: Path):
    """orch("epic", "X", cwd=..., ok=True) -> CompletedProcess of the installed script, as user alice."""
    env = {**os.environ, "ORCH_CONFIG": str(cfg), "USER": "alice", "LOGNAME": "alice"}

    def run(*argv: str, ok: bool = True, cwd: Path = tmp_path, env_: dict | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([str(ORCH), *argv], capture_output=True, text=True, timeout=60, cwd=cwd,
                              env=env_ or env)
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    return run


def subjects(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s", "--", ".orch-state").splitlines()


def test_a_replan_keeps_what_is_not_given_names_who_left_and_joined_and_an_idle_one_writes_nothing(orch, make_repo):
    repo = make_repo("shop")
    orch("project", "register", str(repo))
    orch("epic", "Checkout")
    for title, points, priority in (("Cart", "3", "high"), ("Pay", "5", "medium"), ("Receipt", "8", "low")):
        orch("backlog", "add-story", "--epic", "E-1", title, "--points", points, "--priority", priority)
    out = orch("sprint", "plan", "--capacity", "10", "--goal", "Take money").stdout
    assert out.startswith("Planned sprint-001.\nsprint-001 (planned): Take money\nProgress: 0/2 stories")
    sprint_file = repo / ".orch-state" / "sprints" / "sprint-001.json"

    for again in (["sprint", "plan", "--capacity", "10"], ["sprint", "plan"], ["sprint", "plan", "S-1", "S-2"]):
        before, commits = sprint_file.read_bytes(), subjects(repo)
        out = orch(*again).stdout
        assert out.startswith("Nothing changed: sprint-001 already has these stories, goal and capacity; nothing "
                              "was committed.\nsprint-001 (planned): Take money"), again
        assert sprint_file.read_bytes() == before and subjects(repo) == commits  # no write, no commit

    out = orch("sprint", "plan", "--capacity", "16").stdout
    assert out.startswith("Re-planned sprint-001: S-3 joined.\nsprint-001 (planned): Take money")
    assert json.loads(sprint_file.read_text())["capacity"] == 16
    out = orch("sprint", "plan", "S-3", "--goal", "").stdout
    assert out.startswith("Re-planned sprint-001: S-1, S-2 left (back to the backlog).\nsprint-001 (planned)\n"
                          "Progress: 0/1 story, 0/8 points done.")
    assert subjects(repo)[:2] == [
        'orch(sprint-001, S-3): re-plan sprint-001 with 1 story, 8 points: S-1, S-2 left; goal "Take money" dropped '
        "(orch sprint plan by alice)",
        "orch(sprint-001, S-1, S-2, S-3): re-plan sprint-001 with 3 stories, 16 points: S-3 joined; capacity 16 "
        "(orch sprint plan by alice)"]


def test_the_cli_speaks_its_own_names_and_refuses_in_json_on_stdout(orch, make_repo):
    repo = make_repo("shop")
    orch("project", "register", str(repo))
    out = orch("epic", "Checkout").stdout
    assert "Allowed now: epic, backlog add-story, backlog prioritize, backlog remove, story update, sprint plan." in out
    assert out.endswith("Next: Shape the backlog, then `orch sprint plan`.\n")
    assert subjects(repo)[0] == 'orch(E-1): create epic "Checkout" (orch epic by alice)'

    done = orch("sprint", "plan", ok=False)
    assert done.returncode == 1 and "Add stories with `orch backlog add-story`." in done.stderr
    done = orch("--json", "sprint", "plan", ok=False)
    assert done.returncode == 1 and done.stderr == ""
    assert json.loads(done.stdout) == {
        "error": "invalid_input", "field": "stories", "code": 1,
        "message": "stories: there is no story ready to plan (todo or in progress, in no sprint, dependencies met).",
        "hint": "Add stories with `orch backlog add-story`."}
    refused = json.loads(orch("sprint", "start", "--json", ok=False).stdout)
    assert refused["error"] == "command_not_allowed" and refused["code"] == 1 and refused["state"] == "BACKLOG_READY"
    assert refused["command"] == "sprint start" and "backlog add-story" in refused["allowed"]
    assert refused["hint"] == "Shape the backlog, then `orch sprint plan`."
    done = orch("--json", "sprint", "begin", ok=False)
    assert done.returncode == 2 and json.loads(done.stdout)["error"] == "usage" and done.stderr == ""
    missing = json.loads(orch("--json", "state", "-p", "nope", ok=False).stdout)
    assert missing["error"] == "project_not_found" and missing["hint"] == "`orch project list` shows the registered projects."

    state = json.loads(orch("--json", "state").stdout)
    assert state["allowed"][:2] == ["epic", "backlog add-story"] and "`orch sprint plan`" in state["next_step"]


def test_messages_are_plain_words(orch, make_repo, tmp_path):
    repo = make_repo("shop")
    orch("project", "register", str(repo))
    orch("epic", "Checkout")
    done = orch("backlog", "add-story", "--epic", "E-1", "Cart", "--points", "-1", ok=False)
    assert done.stderr == "orch: error: points must be 0 or more.\n"
    done = orch("backlog", "add-story", "--epic", "E-1", "Cart", "--points", "1000", ok=False)
    assert done.stderr == "orch: error: points must be 100 or less.\n"
    assert "(medium, 1 point)" in orch("backlog", "add-story", "--epic", "E-1", "Cart", "--points", "1").stdout
    assert orch("backlog").stdout.startswith("Backlog of shop: 1 story\n")

    orch("sprint", "plan")
    orch("sprint", "start")
    orch("ticket", "open", "Card or cash?", "--story", "S-1")
    done = orch("story", "update", "S-1", "in_progress", ok=False)
    assert done.stderr == ("orch: error: status: S-1 waits for an answer to TK-1. A clear answer to it, or a "
                           'decision (`orch ticket resolve TK-1 "..."`), unblocks the story.\n')
    out = orch("story", "update", "S-1", "done").stdout
    assert "Tickets closed (no longer needed): TK-1." in out and "resolved" not in out
    assert orch("ticket", "list").stdout.splitlines()[2].split()[:2] == ["TK-1", "closed"]

    done = orch("project", "register", str(tmp_path / "nowhere"), ok=False)
    assert done.stderr == f"orch: error: path: {tmp_path / 'nowhere'} does not exist.\n"  # not "the bot's machine"
    bare = tmp_path / "bare"
    bare.mkdir()
    env = {**os.environ, "ORCH_DATA_DIR": str(tmp_path / "data2"), "USER": "alice"}
    env.pop("ORCH_CONFIG", None)
    done = orch("project", "register", str(repo), ok=False, cwd=bare, env_=env)
    assert "is outside the allowed roots (none configured). No config file was read: there is none at " \
           f"{bare / 'config.toml'} (orch reads --config PATH, else $ORCH_CONFIG, else ./config.toml)." in done.stderr


def test_registering_again_under_another_name_renames_the_files_and_health_sees_a_mismatch(orch, make_repo):
    repo = make_repo("shop")
    orch("project", "register", str(repo))
    orch("epic", "Checkout")
    orch("ticket", "open", "Card or cash?")
    orch("project", "unregister", "shop")
    out = orch("project", "register", str(repo), "--name", "store").stdout
    assert 'Its files named it "shop": they name it "store" now.' in out
    state = repo / ".orch-state"
    for rel in ("status.json", "backlog.json", "tickets.json"):
        assert json.loads((state / rel).read_text())["project"] == "store", rel
    assert 'orch(store): project "shop" is registered as "store" now; its files say so (orch project register by ' \
           'alice)' in git(repo, "log", "-1", "--format=%B")
    assert orch("health").stdout.startswith("OK   store")

    status = json.loads((state / "status.json").read_text())
    (state / "status.json").write_text(json.dumps({**status, "project": "elsewhere"}))  # a hand edit
    done = orch("health", ok=False)
    assert done.returncode == 1 and done.stdout.startswith("FAIL store")
    assert 'its files name the project "elsewhere" (.orch-state/status.json), the registry "store"' in done.stdout
