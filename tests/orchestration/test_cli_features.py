"""`orch story show|edit`, `orch epic add|list|edit` (and the old `orch epic TITLE`), `orch project history|restore`,
through the CLI's `main(argv)` on real repositories, and restore once through the installed script."""
from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from pathlib import Path


from tests.conftest import git
from tests.orchestration import test_cli
from tests.orchestration.test_cli import as_json, ok


orch_cli = test_cli.orch_cli  # the fixture: `orch` run in-process with this test's config


def commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def shop(orch_cli, make_repo, name: str = "shop") -> Path:
    """Two epics; S-1 with criteria, S-2 waiting for S-1; a ticket about S-1."""
    repo = make_repo(name)
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Checkout", "-d", "Buying things", "--by", "alice"))
    ok(orch_cli("epic", "add", "Accounts", "--by", "alice"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-1", "Cart", "--points", "3", "-d", "Lists what you buy",
                "--criteria", "shows each item", "--criteria", "shows the total", "--by", "alice"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-1", "Pay", "--points", "5", "--depends-on", "S-1"))
    ok(orch_cli("ticket", "open", "Which currencies?", "--story", "S-1"))
    return repo


def test_story_show_has_criteria_dependencies_tickets_and_history(orch_cli, make_repo):
    shop(orch_cli, make_repo)
    out = ok(orch_cli("story", "show", "S-1"))
    assert 'S-1 "Cart" (blocked_awaiting_feedback, medium, 3 points) in E-1 "Checkout"' in out
    assert "Lists what you buy" in out
    assert "Acceptance criteria:\n  - shows each item\n  - shows the total" in out
    assert 'Waited for by: S-2 "Pay" [todo]' in out
    assert "Ticket TK-1 (open): Which currencies?" in out
    assert 'alice: orch(S-1, E-1): add story "Cart" [medium]' in out  # its history, from git
    assert 'Depends on: S-1 "Cart" [blocked_awaiting_feedback]' in ok(orch_cli("story", "show", "S-2"))

    shown = as_json(orch_cli("story", "show", "s-1", "--json"))
    assert shown["story"]["acceptance_criteria"] == ["shows each item", "shows the total"]
    assert [t["id"] for t in shown["tickets"]] == ["TK-1"] and shown["dependants"][0]["id"] == "S-2"
    assert all("S-1" in line for e in shown["history"] for line in e["lines"])
    code, _, err = orch_cli("story", "show", "S-9")
    assert code == 1 and "no story 'S-9'" in err


def test_a_story_history_names_that_story_only(orch_cli, make_repo):
    """S-1's history holds no commit of S-10 or S-11 alone, though their IDs begin with S-1."""
    repo = make_repo("many")
    ok(orch_cli("project", "register", str(repo)))
    ok(orch_cli("epic", "Many"))
    for n in range(1, 12):
        ok(orch_cli("backlog", "add-story", "--epic", "E-1", f"Story {n}"))
    ok(orch_cli("story", "edit", "S-11", "--points", "2"))
    history = as_json(orch_cli("story", "show", "S-1", "--json"))["history"]
    assert [line for e in history for line in e["lines"]] == [
        f'orch(S-1, E-1): add story "Story 1" [medium] (orch backlog add-story by {getpass.getuser()})']
    assert len(as_json(orch_cli("story", "show", "S-11", "--json", "--history", "1"))["history"]) == 1


def test_story_edit_changes_only_the_given_fields_in_one_commit(orch_cli, make_repo):
    repo = shop(orch_cli, make_repo)
    out = ok(orch_cli("story", "edit", "S-1", "--title", "Cart page", "--points", "none", "--epic", "e-2",
                      "--criteria", "lists items", "--by", "bob"))
    assert 'Edited S-1 "Cart page":' in out and "points: 3 -> none" in out and "epic: E-1 -> E-2" in out
    assert git(repo, "log", "-1", "--format=%B").strip() == (
        'orch(S-1, E-2): edit title "Cart" -> "Cart page"; points 3 -> none; epic E-1 -> E-2; acceptance criteria '
        "(orch story edit by bob)")
    story = as_json(orch_cli("story", "show", "S-1", "--json"))["story"]
    assert (story["title"], story["points"], story["epic"], story["acceptance_criteria"]) == (
        "Cart page", None, "E-2", ["lists items"])
    assert story["description"] == "Lists what you buy" and story["priority"] == "medium"  # not given: kept

    before = commits(repo)
    out = ok(orch_cli("story", "edit", "S-1", "--title", "Cart page", "--epic", "E-2"))
    assert out.startswith('Nothing changed: S-1 "Cart page" has those values already.')
    assert commits(repo) == before and git(repo, "status", "--porcelain") == ""

    for argv, said in [(["--points", "500"], "points"), (["--epic", "E-7"], "no epic 'E-7'"),
                       (["--title", " "], "title"), ([], "nothing to change")]:
        code, _, err = orch_cli("story", "edit", "S-1", *argv)
        assert code == 1 and said in err, (argv, err)
    assert commits(repo) == before
    assert as_json(orch_cli("story", "edit", "S-1", "--no-criteria", "--json"))["story"]["acceptance_criteria"] == []


def test_epic_add_list_edit_and_the_old_epic_command(orch_cli, make_repo):
    repo = shop(orch_cli, make_repo)
    assert "Created epic E-3" in ok(orch_cli("-p", "shop", "--by", "dana", "epic", "Search", "-d", "Find things"))
    assert "Created epic E-4" in ok(orch_cli("epic", "add", "list"))  # a title that is an action's name, with add
    ok(orch_cli("story", "update", "S-1", "done"))
    out = ok(orch_cli("epic", "list"))
    assert "E-1  2        1     3/8     Checkout" in out and "E-2  0        0     0/0     Accounts" in out
    listed = as_json(orch_cli("epic", "list", "--json"))["epics"]
    assert listed[0]["by_status"] == {"done": 1, "todo": 1} and listed[0]["points"] == 8

    out = ok(orch_cli("epic", "edit", "E-1", "--title", "Check out", "-d", "Buying, paying"))
    assert "title: Checkout -> Check out" in out and "description: Buying things -> Buying, paying" in out
    assert git(repo, "log", "-1", "--format=%s").startswith('orch(E-1): edit epic title "Checkout" -> "Check out"; '
                                                            "description")
    before = commits(repo)
    assert "Nothing changed" in ok(orch_cli("epic", "edit", "E-1", "--title", "Check out"))
    code, _, err = orch_cli("epic", "edit", "E-9", "--title", "X")
    assert code == 1 and "no epic 'E-9'" in err and commits(repo) == before


def test_project_history_pages_newest_first(orch_cli, make_repo):
    repo = shop(orch_cli, make_repo)
    for n in range(6):
        ok(orch_cli("backlog", "prioritize", "S-2", ["high", "low"][n % 2], "--by", "carol"))
    out = ok(orch_cli("project", "history"))
    lines = out.splitlines()
    assert lines[0] == "Changes of shop, newest first:"
    assert "carol: orch(S-2): priority high -> low (orch backlog prioritize by carol)" in lines[1]
    assert "More: orch project history --page 2" in out
    page2 = as_json(orch_cli("project", "history", "--page", "2", "--json"))
    assert page2["has_more"] is False and page2["page"] == 2
    assert "initialise .orch-state" in page2["entries"][-1]["lines"][0]
    assert len(page2["entries"]) + 10 == int(git(repo, "rev-list", "--count", "HEAD", "--", ".orch-state"))


def _sha_of(orch_cli, text: str) -> str:
    """The commit whose history line holds `text` (from `orch project history --json`)."""
    entries = as_json(orch_cli("project", "history", "--json"))["entries"]
    return next(e["sha"] for e in entries if any(text in line for line in e["lines"]))


def test_restore_brings_the_state_back_as_a_new_commit_and_says_what_changed(orch_cli, make_repo):
    repo = shop(orch_cli, make_repo)
    (repo / "mine.txt").write_text("staged work\n")  # the developer's own work: untouched
    git(repo, "add", "mine.txt")
    (repo / "README.md").write_text("# edited, not staged\n")
    ours = git(repo, "status", "--porcelain", "--", ".", ":!.orch-state")
    target = _sha_of(orch_cli, "Which currencies?")
    ok(orch_cli("story", "edit", "S-1", "--title", "Basket"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-2", "Sign-up"))
    ok(orch_cli("sprint", "plan", "S-3", "S-1"))
    assert (repo / ".orch-state/sprints/sprint-001.json").exists()
    history_before = git(repo, "rev-list", "HEAD")

    out = ok(orch_cli("project", "restore", target[:8], "--by", "ada"))
    assert f"Restored .orch-state of shop to {target[:10]}" in out
    assert "Stories gone: S-3." in out and "Stories changed: S-1." in out
    assert "Current sprint: sprint-001 -> none." in out and "from SPRINT_PLANNED to BACKLOG_READY" in out
    assert git(repo, "rev-parse", "HEAD:.orch-state") == git(repo, "rev-parse", f"{target}:.orch-state")
    assert git(repo, "rev-list", "HEAD~1") == history_before  # a new commit on top: nothing rewritten
    assert git(repo, "log", "-1", "--format=%s").startswith(f"orch(shop): restore .orch-state to {target[:10]}: ")
    assert not (repo / ".orch-state/sprints/sprint-001.json").exists()
    assert git(repo, "status", "--porcelain", "--", ".orch-state") == ""
    assert git(repo, "status", "--porcelain", "--", ".", ":!.orch-state") == ours
    assert 'S-1 "Cart"' in ok(orch_cli("story", "show", "S-1"))
    assert "Project shop: BACKLOG_READY" in ok(orch_cli("state"))
    ok(orch_cli("sprint", "plan", "S-1"))  # the workflow goes on from the restored state

    restored = _sha_of(orch_cli, "restore .orch-state")
    again = as_json(orch_cli("project", "restore", restored, "--json"))  # back to the restore's own content
    assert again["restored"] is True and again["sprint"] == ["sprint-001", None]


def test_restore_refuses_what_is_not_a_state_of_this_branch_and_changes_nothing(orch_cli, make_repo):
    repo = shop(orch_cli, make_repo)
    first = git(repo, "rev-list", "--max-parents=0", "HEAD").strip()
    git(repo, "checkout", "-q", "-b", "elsewhere")
    (repo / "other.txt").write_text("x\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-q", "-m", "another branch")
    elsewhere = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    # A commit whose state does not load: a hand edit that broke backlog.json, mended by the next commit.
    backlog = repo / ".orch-state/backlog.json"
    good = backlog.read_text()
    backlog.write_text("{ broken")
    git(repo, "commit", "-q", "-am", "oops")
    broken = git(repo, "rev-parse", "HEAD").strip()
    backlog.write_text(good)
    git(repo, "commit", "-q", "-am", "mend")
    head, files = git(repo, "rev-parse", "HEAD"), git(repo, "ls-files", "-s", ".orch-state")

    for commit, said in [("HEAD~1", "not a commit ID"), ("-1", "not a commit ID"), ("abcdef123", "no commit"),
                         (elsewhere, "not in the history of the checked-out branch"),
                         (first, "holds no .orch-state/"), (broken, "does not load")]:
        code, out, err = orch_cli("project", "restore", commit)
        assert code == 1 and out == "" and said in err, (commit, err)
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "ls-files", "-s", ".orch-state") == files
    assert git(repo, "status", "--porcelain") == ""

    current = git(repo, "rev-parse", "HEAD").strip()
    assert "Nothing changed: .orch-state of shop holds the content" in ok(orch_cli("project", "restore", current))
    assert git(repo, "rev-parse", "HEAD") == head


def test_restore_commits_a_hand_edit_first_so_nothing_is_lost(orch_cli, make_repo):
    repo = shop(orch_cli, make_repo)
    target = _sha_of(orch_cli, "create epic")
    (repo / ".orch-state/architecture.md").write_text("# Notes made by hand\n")
    ok(orch_cli("project", "restore", target))
    assert "Notes made by hand" in git(repo, "show", "HEAD~1:.orch-state/architecture.md")  # kept in history
    assert (repo / ".orch-state/architecture.md").read_text() == git(repo, "show",
                                                                     f"{target}:.orch-state/architecture.md")


def test_restore_with_the_installed_script(cfg, make_repo, tmp_path):
    script = Path(sys.executable).with_name("orch")
    repo = make_repo("real")
    env = {**os.environ, "ORCH_CONFIG": str(cfg)}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *argv], env=env, cwd=repo, capture_output=True, text=True, timeout=60)

    assert run("project", "register", str(repo)).returncode == 0
    assert run("epic", "One").returncode == 0
    one = git(repo, "rev-parse", "HEAD").strip()
    assert run("epic", "Two").returncode == 0
    done = run("project", "restore", one[:7], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["epics_removed"] == ["E-2"]
    assert "E-2" not in run("epic", "list").stdout
