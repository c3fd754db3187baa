"""`orch run` and the agent commands, run as the installed `orch` command in subprocesses: a whole sprint from
the CLI alone, a machine crash in the middle of a run, two `orch run` at once, and the reference agent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.cli import main
from tests.conftest import change_lines, git, story_file
from tests.orchestration.agents.conftest import AGENT, TESTS, alive

ORCH = Path(sys.executable).with_name("orch")
REFERENCE_AGENT = Path(__file__).resolve().parents[2] / "agents" / "reference_agent.py"


@pytest.fixture
def make_cfg(tmp_path: Path, projects_root: Path):
    """make_cfg("name", command, **agents) -> a config file whose [agents] runs `command` (all share data_dir)."""

    def make(name: str, command: list[str], **agents) -> Path:
        settings = {"command": command, "test_command": TESTS, "timeout_s": 30, "max_attempts": 2, **agents}
        file = tmp_path / f"{name}.toml"
        file.write_text("\n".join([
            "[orchestrator]", 'data_dir = "data"', f"allowed_roots = {json.dumps([str(projects_root)])}",
            'commit_author = "Orch Test <orch@test>"', "commit_batch_ms = 20", "[agents]",
            *(f"{key} = {json.dumps(value)}" for key, value in settings.items())]) + "\n", encoding="utf-8")
        return file

    return make


def orch(cfg: Path, *argv: str, ok: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    done = subprocess.run([str(ORCH), "--config", str(cfg), *argv], capture_output=True, text=True, timeout=timeout)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def start_run(cfg: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([str(ORCH), "--config", str(cfg), "run", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path) -> list[int]:
    """The pids a hanging fixture agent wrote: it is running."""
    for _ in range(300):
        if path.exists() and path.read_text():
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError("the agent never started")


def sprint_of(cfg: Path, repo: Path, *stories: list[str]) -> None:
    """Register `repo`, one epic, a story for each argument list (default one, "Cart"), plan them all and start
    the sprint: in this process (quicker), through the CLI's `main` all the same."""
    for argv in (["project", "register", str(repo)], ["epic", "Shop"],
                 *(["backlog", "add-story", "--epic", "E-1", *s] for s in stories or [["Cart", "--criteria", "lists"]]),
                 ["sprint", "plan", *(f"S-{n}" for n in range(1, len(stories or [1]) + 1))], ["sprint", "start"]):
        assert main(["--config", str(cfg), *argv]) == 0, argv


def runs(repo: Path, story: str) -> list[dict]:
    return json.loads((repo / ".orch-state" / "runs" / f"{story}.json").read_text())["attempts"]


def merges(repo: Path) -> list[str]:
    return git(repo, "log", "--merges", "--format=%s", "orch/sprint-001").splitlines()


def test_a_whole_sprint_from_the_cli_alone(make_cfg, make_repo):
    cfg = make_cfg("done", [*AGENT, "done"])
    repo = make_repo("shop")
    orch(cfg, "project", "register", str(repo))
    orch(cfg, "epic", "Checkout")
    orch(cfg, "backlog", "add-story", "--epic", "E-1", "Cart", "--criteria", "lists the items")
    orch(cfg, "backlog", "add-story", "--epic", "E-1", "Payment", "--depends-on", "S-1", "--priority", "high")
    orch(cfg, "sprint", "plan", "S-1", "S-2")
    orch(cfg, "sprint", "start")

    done = orch(cfg, "run", "--until-idle")
    lines = done.stdout.splitlines()
    assert lines[0] == "Running the agents of shop until no story is left for them."
    steps = [line.split(" ", 2)[2] for line in lines[1:-2]]  # without the time and the project
    assert steps[:2] == ['S-1 "Cart": attempt 1 of 2 running', 'S-1 "Cart": attempt 1 of 2: the agent is done, testing']
    assert steps[2].startswith('S-1 "Cart": done (') and " s; tests 1 passed, 0 failed): Cart: title()" in steps[2]
    assert steps[3] == 'S-2 "Payment": attempt 1 of 2 running'  # S-2 waited for S-1, though of higher priority
    assert steps[-1].startswith('S-2 "Payment": done (')
    assert lines[-2:] == ["No story is left for the agents now.", "shop: SPRINT_REVIEW"]
    assert [m.split()[1] for m in merges(repo)] == ["S-2", "S-1"]

    status = orch(cfg, "sprint", "status").stdout
    assert "[x] S-1    done" in status and "(attempt 1: done (1 passed, 0 failed), " in status
    assert "Sprint branch orch/sprint-001: 4 commits since the sprint began (merge it, or open a pull request from " \
        "it):" in status and "Merge S-1 into orch/sprint-001 (agent attempt 1)" in status
    assert "Agents running here" not in status  # they ran in the `orch run` process
    log = orch(cfg, "story", "log", "S-1").stdout
    assert log.startswith("S-1 of shop: 1 agent attempt.\n  attempt 1: done (1 passed, 0 failed), ")
    assert "wrote tests/test_s_1.py, then s_1.py" in log and "S-1/S-1#1.log):" in log
    data = json.loads(orch(cfg, "--json", "story", "log", "S-1").stdout)
    assert data["attempts"][0]["outcome"] == "done" and data["attempts"][0]["branch"] == "orch/S-1"

    view = json.loads(orch(cfg, "--json", "sprint", "status").stdout)  # in review: every story is done
    assert view["branch"] == "orch/sprint-001" and len([c for c in view["commits"] if "Merge" in c]) == 2
    assert view["latest_attempts"]["S-2"]["outcome"] == "done" and view["agents"] == []
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main\n" and git(repo, "status", "--porcelain") == ""


def test_run_json_lines_and_a_retried_story(make_cfg, make_repo):
    cfg = make_cfg("crash", [*AGENT, "crash"], max_attempts=1)
    repo = make_repo("shop")
    sprint_of(cfg, repo)
    done = orch(cfg, "--json", "run", "--until-idle")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0] == {"kind": "started", "projects": ["shop"]}
    assert [(e["kind"], e["story"], e["phase"]) for e in events[1:-1]] == [("story_run", "S-1", "running"),
                                                                            ("story_run", "S-1", "blocked")]
    assert "exited with status 3" in events[2]["summary"] and events[2]["attempt"] == 1
    assert events[-1] == {"kind": "finished", "reason": "idle", "stopped_attempts": 0,
                          "projects": {"shop": "BLOCKED"}}

    status = orch(cfg, "sprint", "status").stdout
    assert "(attempt 1: crashed, " in status
    retried = orch(cfg, "story", "retry", "S-1").stdout
    assert 'S-1 "Cart" goes back to the agents with a fresh count of attempts (blocked_awaiting_feedback -> todo).' \
        in retried and "Tickets closed (no longer needed): TK-1." in retried
    again = orch(cfg, "story", "retry", "S-1", ok=False)
    assert again.returncode == 1 and "neither blocked nor failed" in again.stderr and again.stdout == ""

    orch(make_cfg("done", [*AGENT, "done"]), "run", "--until-idle")
    assert [a["outcome"] for a in runs(repo, "S-1")] == ["crashed", "done"]


def test_a_crash_mid_run_is_redone_once_by_the_next_run(make_cfg, make_repo, tmp_path):
    pids = tmp_path / "pids.txt"
    hang = make_cfg("hang", [*AGENT, "hang", str(pids)])
    repo = make_repo("shop")
    sprint_of(hang, repo)
    first = start_run(hang)
    agent, child = wait_for(pids)
    # The machine goes down: the orchestrator and the agent's process group die at once, nothing is cleaned up.
    first.kill()
    os.killpg(agent, signal.SIGKILL)
    first.communicate(timeout=10)
    for _ in range(100):
        if not alive(agent) and not alive(child):
            break
        time.sleep(0.05)
    assert [a["outcome"] for a in runs(repo, "S-1")] == [None]  # recorded as running when it started

    done = orch(make_cfg("done", [*AGENT, "done"]), "run", "--until-idle")
    assert "shop: SPRINT_REVIEW" in done.stdout
    attempts = runs(repo, "S-1")
    assert [a["outcome"] for a in attempts] == ["interrupted", "done"] and not attempts[0]["counted"]
    assert len(merges(repo)) == 1
    log = "\n".join(change_lines(repo, "main"))
    assert log.count("agent attempt 1 interrupted by a restart") == 1 and log.count("attempt 2: done") == 1
    assert git(repo, "status", "--porcelain", ".orch-state") == ""  # every change committed


def test_one_orch_run_at_a_time_and_sigterm_stops_cleanly(make_cfg, make_repo, tmp_path):
    pid_file = tmp_path / "pid.txt"
    hang = make_cfg("wait", [*AGENT, "wait", str(pid_file)])
    repo = make_repo("shop")
    sprint_of(hang, repo)
    first = start_run(hang)
    agent, = wait_for(pid_file)

    second = orch(hang, "run", "--until-idle", ok=False)
    assert second.returncode == 1 and second.stdout == ""
    assert second.stderr == ("orch: error: Another process (the bot, or `orch run`) runs the agents already. "
                             "Stop it first, or let it do the work.\n")

    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert out.splitlines()[-2:] == ["Stopped: 1 running attempt stopped, their stories back to todo (not counted "
                                     "as failures).", "shop: SPRINT_ACTIVE"]
    assert "S-1 \"Cart\": attempt 1 stopped; the story is back to todo" in out
    assert not alive(agent)
    attempt, = runs(repo, "S-1")
    assert attempt["outcome"] == "cancelled" and not attempt["counted"]
    assert '"status": "todo"' in story_file(repo, "S-1").read_text()
    assert git(repo, "status", "--porcelain", ".orch-state") == ""
    review = orch(hang, "sprint", "review").stdout  # ends it early, naming the branch for a person to merge
    assert "Sprint branch orch/sprint-001: 0 commits since the sprint began (merge it, or open a pull request " \
           "from it)." in review and "(attempt 1: cancelled, " in review


def test_run_without_an_agent_says_so(make_cfg, make_repo, capsys):
    cfg = make_cfg("none", [])
    sprint_of(cfg, make_repo("shop"))
    done = orch(cfg, "run", "--until-idle", ok=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("orch: error: No registered project has an agent configured")
    capsys.readouterr()
    assert main(["--config", str(cfg), "story", "log", "S-1"]) == 0
    assert capsys.readouterr().out == "S-1 of shop: no agent attempt yet.\n"
    assert main(["--config", str(cfg), "story", "log", "S-1", "--lines", "0"]) == 2  # bad usage
    assert "is not a number from 1 to 10000" in capsys.readouterr().err


def test_the_reference_agent_runs_a_small_sprint(make_cfg, make_repo):
    """The newcomer's path of docs/agents.md: the reference agent, pytest as the project's test command."""
    cfg = make_cfg("reference", [sys.executable, str(REFERENCE_AGENT)],
                   test_command=[sys.executable, "-m", "pytest", "-q"], env=["PYTEST_DISABLE_PLUGIN_AUTOLOAD"])
    repo = make_repo("shop")
    sprint_of(cfg, repo, ["Cart total", "--criteria", "an empty cart totals 0"],
              ["Receipt", "--criteria", "shows the total", "--depends-on", "S-1"])
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # a quicker pytest, passed on by `env`
    done = subprocess.run([str(ORCH), "--config", str(cfg), "run", "--until-idle"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tests 2 passed, 0 failed): Cart total: stories/s1_cart_total.py with its test" in done.stdout
    assert done.stdout.endswith("shop: SPRINT_REVIEW\n")
    files = git(repo, "ls-tree", "-r", "--name-only", "orch/sprint-001").split()
    assert {"stories/s1_cart_total.py", "tests/test_s1_cart_total.py", "stories/s2_receipt.py"} <= set(files)
    assert not any("__pycache__" in f or ".pytest_cache" in f for f in files)
    log = orch(cfg, "story", "log", "S-2").stdout
    assert "red, as expected" in log and "green" in log
