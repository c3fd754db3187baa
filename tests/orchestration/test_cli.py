"""The `orch` command line, run in-process through `main(argv)` on real repos (and once as the installed script)."""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration.cli import main
from orchestration.models import Sprint, Status
from orchestration.store import ProjectStore
from tests.conftest import backlog_of, git


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
    for expected in ['orch(E-1): create epic "Checkout" (orch epic by alice)', "orch(E-2)",
                     *(f"orch(S-{n}, E-" for n in range(1, 6)),
                     "orch(sprint-001, S-1, S-2, S-5, S-4): plan sprint-001 with 4 stories, 13 points",
                     "start sprint-001", "orch(S-1): status in_progress -> done (orch story update by carol)",
                     "review sprint-001 (orch sprint review by bob)", "close sprint-001 with feedback; S-4 back to the backlog"]:
        assert expected in joined
    assert git(repo, "status", "--porcelain") == status_before
    assert git(repo, "diff", "--cached", "--name-only") == "staged.txt\n"
    touched = set(git(repo, "log", "--name-only", "--format=", "--author=Orch Test").split())
    assert touched and all(p.startswith(".orch-state/") for p in touched)

    # Every file validates against its model.
    state = repo / ".orch-state"
    backlog = backlog_of(repo)
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
    assert plan["state"] == "SPRINT_PLANNED" and "sprint start" in plan["allowed"]  # as typed here
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
        (["epic", " "], "title"),
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
    ["ticket"],
    ["ticket", "resolve", "TK-1"],
    ["backlog", "depend", "S-1"],
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
    assert backlog_of(one).epic("E-2").title == "Delta"


def test_author_defaults_to_the_os_user(orch_cli, make_repo):
    repo = make_repo("who")
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Mine"))
    assert orch_log(repo)[-1] == f'orch(E-1): create epic "Mine" (orch epic by {getpass.getuser()})'
    ok(orch_cli("--by", "dana", "epic", "Hers"))
    assert orch_log(repo)[-1].endswith("(orch epic by dana)")


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
    assert git(repo, "log", "-1", "--format=%s") == 'orch(E-1): create epic "Now" (orch epic by ' + getpass.getuser() + ")\n"
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


def test_health_fails_when_changes_waited_over_a_minute_and_says_what_to_run(orch_cli, make_repo):
    """The CLI sees the bot's stuck changes too: their queue on disk says how long they have waited."""
    repo = make_repo("stuck")
    ok(orch_cli("project", "register", str(repo)))
    (repo / ".git" / "index.lock").write_text("")  # a git killed mid-commit (not old enough to be removed)
    line = {"at": time.time() - 300, "line": 'orch(E-1): create epic "Lost?" (orch epic by alice)'}
    (repo / ".orch-state" / ".commit-queue").write_text(json.dumps(line) + "\n")

    code, out, _ = orch_cli("health")
    assert code == 1 and out.startswith("FAIL stuck"), out
    assert "1 change(s) waited 5 min for a commit: another git process holds index.lock" in out
    assert f"rm {repo}/.git/index.lock" in out


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
    assert git(repo, "log", "-1", "--format=%s") == 'orch(E-1): create epic "From a shell" (orch epic by eve)\n'
    done = run("sprint", "start")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "is not possible while the project is BACKLOG_READY" in done.stderr


# -- tickets, dependencies and the queue: what an agent process uses without Discord --------------------------

QUESTION = "Should we use PostgreSQL or MongoDB?"


def _sprint_of_two(orch_cli, make_repo, name: str = "desk") -> Path:
    repo = make_repo(name)
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Storage"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-1", "Sessions", "--points", "3"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-1", "Reports", "--points", "2"))
    ok(orch_cli("sprint", "plan", "S-1", "S-2"))
    ok(orch_cli("sprint", "start"))
    return repo


def _tickets(repo: Path) -> dict:
    return json.loads((repo / ".orch-state/tickets.json").read_text())


def _status_of(repo: Path, story: str) -> str:
    return backlog_of(repo).story(story).status.value


def test_a_ticket_from_open_to_a_scored_reply_to_reopen(orch_cli, make_repo):
    repo = _sprint_of_two(orch_cli, make_repo)

    out = ok(orch_cli("ticket", "open", QUESTION, "--story", "S-1", "--option", "PostgreSQL", "--option", "MongoDB",
                      "--context", "Sessions need a store.", "--by", "agent-7"))
    assert out.startswith(f'Opened TK-1: "{QUESTION}".\nS-1 waits for the answer.')
    assert "orch ticket reply TK-1" in out and "State: SPRINT_ACTIVE" in out
    stored = _tickets(repo)["tickets"][0]
    assert stored["options"] == ["PostgreSQL", "MongoDB"] and stored["created_by"] == "agent-7"
    assert stored["thread_id"] is None and _status_of(repo, "S-1") == "blocked_awaiting_feedback"
    assert 'orch(TK-1, S-1): open ticket "Should we use PostgreSQL or MongoDB?"; S-1 waits for the answer' \
        in orch_log(repo)[-1] and "by agent-7" in orch_log(repo)[-1]

    # An unclear reply: the ticket stays open and the output says what is missing.
    out = ok(orch_cli("ticket", "reply", "TK-1", "maybe mongo? not sure", "--by", "alice"))
    assert out.startswith("TK-1 stays open: the reply scored") and "(resolves at 85)" in out
    assert "  - " in out and "decide firmly" in out
    assert _status_of(repo, "S-1") == "blocked_awaiting_feedback"

    # A clear one resolves it, gives S-1 back and is committed as a reply by its author.
    out = ok(orch_cli("ticket", "reply", "TK-1", "PostgreSQL, because we already run it.", "--by", "alice"))
    assert out.startswith("TK-1 resolved by the reply of alice (clarity 100/100, resolves at 85).")
    assert "Decision: PostgreSQL, because we already run it." in out and "Unblocked: S-1." in out
    assert "Tickets resolved" not in out  # the headline says it once
    assert _status_of(repo, "S-1") == "todo"
    assert "with a reply scored 100; S-1 unblocked (orch ticket reply by alice)" in orch_log(repo)[-1]

    # A reply to a resolved ticket changes nothing and exits 1, so a script notices.
    before = (repo / ".orch-state/tickets.json").read_bytes()
    code, out, err = orch_cli("ticket", "reply", "TK-1", "MongoDB after all, since it is schemaless.")
    assert code == 1 and err == "" and "Nothing changed" in out and "TK-1 is resolved" in out
    assert "orch ticket reopen TK-1" in out
    assert (repo / ".orch-state/tickets.json").read_bytes() == before

    out = ok(orch_cli("ticket", "show", "tk-1"))
    assert out.startswith(f"TK-1 (resolved): {QUESTION}\nContext: Sessions need a store.")
    assert "Options: PostgreSQL | MongoDB" in out and 'Story: S-1 "Sessions" [todo]' in out
    assert "alice (" in out and "Resolution (resolved by alice): PostgreSQL" in out and "no thread" in out

    out = ok(orch_cli("ticket", "reopen", "TK-1", "--by", "bob"))
    assert out.startswith("Reopened TK-1") and "S-1 waits for the answer again." in out
    assert _status_of(repo, "S-1") == "blocked_awaiting_feedback"
    out = ok(orch_cli("ticket", "resolve", "TK-1", "MongoDB: the team decided.", "--by", "bob"))
    assert out.startswith("Resolved TK-1") and "Decision: MongoDB: the team decided." in out
    assert "Unblocked: S-1." in out and _tickets(repo)["tickets"][0]["resolved_by"] == "bob"
    ProjectStore(repo).validate_all()


def test_ticket_list_json_and_a_done_story_closing_its_ticket(orch_cli, make_repo):
    _sprint_of_two(orch_cli, make_repo)
    assert "none. Ask one: orch ticket open" in ok(orch_cli("ticket", "list"))
    ok(orch_cli("ticket", "open", "Which port: 8080 or 9000?", "--story", "S-2"))
    opened = as_json(orch_cli("--json", "ticket", "open", "What should the report be called?"))
    assert opened["action"] == "opened" and opened["ticket"]["id"] == "TK-2" and opened["ticket"]["story"] is None

    out = ok(orch_cli("ticket", "list"))
    assert "Tickets of desk: 2, 2 open in all." in out
    rows = out.splitlines()[1:4]
    assert rows[0].split()[:4] == ["ID", "STATUS", "STORY", "REPLIES"]
    assert rows[1].split()[:4] == ["TK-1", "open", "S-2", "0"] and rows[2].split()[:4] == ["TK-2", "open", "-", "0"]

    out = ok(orch_cli("story", "update", "S-2", "done"))  # finishing the story closes what still asked about it
    assert "Tickets closed (no longer needed): TK-1." in out
    assert "Tickets resolved" not in out  # ticket list says "closed": the same word
    listed = as_json(orch_cli("ticket", "list", "--status", "closed", "--json"))
    assert [t["id"] for t in listed["tickets"]] == ["TK-1"] and listed["open_count"] == 1
    assert listed["tickets"][0]["resolution"] == "S-2 was finished without an answer."
    reply = as_json(orch_cli("--json", "ticket", "reply", "TK-2", "Call it the weekly summary, since it is weekly."))
    assert reply["action"] == "resolved" and reply["score"]["total"] >= reply["threshold"]


def test_ticket_errors_are_one_line_and_change_nothing(orch_cli, make_repo):
    repo = _sprint_of_two(orch_cli, make_repo)
    ok(orch_cli("ticket", "open", QUESTION))
    before = (repo / ".orch-state/tickets.json").read_bytes()
    backlog = (repo / ".orch-state/backlog.json").read_bytes()
    commits = git(repo, "rev-list", "--count", "HEAD")
    for argv, expected in [
        (["ticket", "open", QUESTION, "--story", "S-9"], "there is no story 'S-9' in desk"),
        (["ticket", "open", "   "], "question"),
        (["ticket", "open", "Which?", *sum((["--option", f"o{i}"] for i in range(11)), [])], "at most 10 options"),
        (["ticket", "show", "TK-9"], "there is no ticket TK-9 in desk"),
        (["ticket", "resolve", "TK-1", "  "], "resolution is empty"),
        (["ticket", "reopen", "TK-1"], "TK-1 is open already"),
        (["ticket", "reply", "TK-4", "Yes."], "there is no ticket TK-4"),
        (["ticket", "list", "--status", "pending"], "'pending' is not a ticket status"),
        (["backlog", "depend", "S-1", "--on", "S-1"], "cannot depend on itself"),
        (["backlog", "depend", "S-1", "--on", "S-7"], "there is no story S-7"),
    ]:
        code, out, err = orch_cli(*argv)
        assert (code, out) == (1, ""), (argv, out, err)
        assert err.startswith("orch: error: ") and err.count("\n") == 1 and expected in err, err
    assert (repo / ".orch-state/tickets.json").read_bytes() == before
    assert (repo / ".orch-state/backlog.json").read_bytes() == backlog
    assert git(repo, "rev-list", "--count", "HEAD") == commits


def test_backlog_depend_and_the_queue(orch_cli, make_repo):
    repo = make_repo("line")
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Pipeline"))
    for title, priority in [("Fetch", "medium"), ("Parse", "medium"), ("Publish", "critical"), ("Docs", "low")]:
        ok(orch_cli("backlog", "add-story", "--epic", "E-1", title, "--priority", priority, "--points", "1"))

    out = ok(orch_cli("backlog", "depend", "S-3", "--on", "S-1,S-2"))
    assert out.startswith('S-3 "Publish" depends on S-1, S-2 (was nothing).')
    assert "depends on S-1, S-2 (was nothing)" in orch_log(repo)[-1]
    out = ok(orch_cli("backlog", "depend", "S-2", "--on", "S-1"))
    assert "depends on S-1 (was nothing)" in out
    code, _, err = orch_cli("backlog", "depend", "S-1", "--on", "S-3")
    assert code == 1 and "cycle: S-1 -> S-3 -> S-1" in err

    out = ok(orch_cli("queue"))
    assert out.startswith('Next in the backlog of line: S-1 "Fetch" (medium, 1 point).')
    assert "Waiting: S-2 waits for S-1." in out and "Waiting: S-3 waits for S-1, S-2." in out
    ready = [line.split()[0] for line in out.splitlines() if line.startswith("S-")]
    assert ready == ["S-1", "S-4"]  # the critical S-3 waits; among the ready, medium before low

    ok(orch_cli("story", "update", "S-1", "done"))
    view = as_json(orch_cli("--json", "queue"))
    assert view["next"]["id"] == "S-2" and view["waiting"] == {"S-3": ["S-2"]} and view["scope"] == "backlog"

    out = ok(orch_cli("backlog", "depend", "S-3", "--on", ""))  # clears: S-3 is ready, and critical
    assert 'S-3 "Publish" depends on nothing (was S-1, S-2).' in out and "Ready now" in out
    assert as_json(orch_cli("queue", "--json"))["next"]["id"] == "S-3"
    changed = as_json(orch_cli("--json", "backlog", "depend", "S-4", "--on", "S-2", "--on", "S-3"))
    assert changed["action"] == "dependencies" and changed["story"]["depends_on"] == ["S-2", "S-3"]

    ok(orch_cli("sprint", "plan", "S-2", "S-3", "S-4"))  # while a sprint is planned, its stories are the queue
    out = ok(orch_cli("queue"))
    assert out.startswith('Next in sprint-001 of line: S-3 "Publish"') and "Waiting: S-4 waits for S-2, S-3." in out


def test_project_option_before_or_after_the_command(orch_cli, make_repo):
    ok(orch_cli("project", "register", str(make_repo("one"))))
    ok(orch_cli("project", "register", str(make_repo("two"))))
    assert "E-1" in ok(orch_cli("-p", "two", "epic", "Before the command"))
    assert "E-2" in ok(orch_cli("epic", "After the command", "-p", "two"))
    assert "E-1" in ok(orch_cli("--project", "one", "epic", "In the other project"))
