"""One attempt end to end with real agent processes (fixtures/agent.py) in real git worktrees."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from orchestration.agents.attempt import run_attempt, parse_test_counts
from orchestration.agents.runner import Outcome
from tests.conftest import git
from tests.orchestration.agents.conftest import TOKEN, alive, user_view


async def test_done_commits_the_work_and_runs_the_tests(repo, make_spec):
    before = user_view(repo)
    spec = make_spec("done")
    out = await run_attempt(spec)
    assert out.outcome is Outcome.done, out.summary
    assert (out.tests_passed, out.tests_failed, out.tests_added) == (1, 0, ["tests/test_s_1.py"])
    assert "1 passed" in out.output and out.summary == "Cart total: title() and its test"
    assert out.commit == git(repo, "rev-parse", "orch/S-1").strip()
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", "orch/S-1").strip() == (
        "Orch Test <orch@test>|S-1: Cart total: title() and its test")
    assert git(repo, "show", "--name-only", "--format=", "orch/S-1").split() == ["s_1.py", "tests/test_s_1.py"]
    assert all("__pycache__" in line for line in git(spec.workdir, "status", "--porcelain").splitlines())
    log = spec.log_path.read_text()
    assert "wrote tests/test_s_1.py, then s_1.py" in log and "outcome done" in log
    assert user_view(repo) == before
    assert (out.attempt_id, out.story, out.attempt, out.branch) == (spec.attempt_id, "S-1", 1, "orch/S-1")
    assert 0 < out.duration_s < 5


async def test_failing_tests_are_reported_with_their_counts_and_output(make_spec):
    out = await run_attempt(make_spec("fail_tests"))
    assert out.outcome is Outcome.tests_failed
    assert (out.tests_passed, out.tests_failed) == (0, 1)
    assert out.summary == "the test command exited with status 1 (1 failed, 0 passed)"
    assert "AssertionError" in out.output and "1 failed" in out.output


async def test_without_a_test_command_done_is_taken_as_it_is(make_spec):
    out = await run_attempt(make_spec("fail_tests", tests=None))
    assert out.outcome is Outcome.done and out.tests_passed is None and out.commit


@pytest.mark.parametrize("mode, outcome, summary, output", [
    ("crash", Outcome.crashed, "the agent exited with status 3", "RuntimeError: boom"),
    ("garbage", Outcome.not_protocol, "the last line of stdout is not JSON: {not json", "I did a lot"),
])
async def test_a_crash_or_garbage_is_a_failed_attempt(repo, make_spec, mode, outcome, summary, output):
    before = user_view(repo)
    out = await run_attempt(make_spec(mode))
    assert (out.outcome, out.summary) == (outcome, summary)
    assert output in out.output and out.outcome.counts_as_failure
    assert user_view(repo) == before


async def test_an_agent_that_cannot_start_crashed(make_spec):
    spec = make_spec("done")
    spec.command = ["/no/such/agent"]
    out = await run_attempt(spec)
    assert out.outcome is Outcome.crashed and out.summary.startswith("cannot start /no/such/agent")


async def test_a_hung_agent_is_killed_with_its_whole_process_group(make_spec, tmp_path):
    pids = tmp_path / "pids"
    started = time.monotonic()
    out = await run_attempt(make_spec("hang", str(pids), timeout_s=1))
    assert out.outcome is Outcome.timeout and out.summary == "the agent ran longer than 1 s and was stopped"
    assert 1 <= time.monotonic() - started < 4  # SIGTERM is ignored: SIGKILL after the grace period
    assert "thinking hard" in out.output
    agent, child = map(int, pids.read_text().split())
    assert not alive(agent) and not alive(child)


async def test_cancel_stops_the_agent_and_is_not_a_failure(make_spec, tmp_path):
    pids = tmp_path / "pids"
    cancel = asyncio.Event()
    task = asyncio.ensure_future(run_attempt(make_spec("hang", str(pids), timeout_s=30), cancel=cancel))
    while not pids.exists():
        await asyncio.sleep(0.02)
    cancel.set()
    out = await asyncio.wait_for(task, 5)
    assert out.outcome is Outcome.cancelled and not out.outcome.counts_as_failure
    assert not any(alive(int(p)) for p in pids.read_text().split())


async def test_a_question_comes_back_with_its_options(make_spec):
    out = await run_attempt(make_spec("question"))
    assert (out.outcome, out.question, out.options) == (Outcome.question, "Should the title be upper case?",
                                                        ["yes", "no"])
    answered = await run_attempt(make_spec("question", attempt=2, answers=[
        {"ticket": "TK-1", "question": out.question, "answer": "no"}]))
    assert answered.outcome is Outcome.done


async def test_writing_orch_state_is_refused_and_never_committed(repo, make_spec):
    before = user_view(repo)
    spec = make_spec("orch_state")
    out = await run_attempt(spec)
    assert out.outcome is Outcome.policy
    assert out.summary == "policy: the agent wrote .orch-state/ (.orch-state/status.json), which only the orchestrator writes"
    assert git(repo, "rev-parse", "orch/S-1") == git(repo, "rev-parse", "orch/sprint-001")  # nothing committed
    assert user_view(repo) == before


async def test_committing_orch_state_on_the_branch_is_refused_too(make_spec):
    spec = make_spec("done", tests=None)
    (spec.workdir / ".orch-state" / "backlog.json").write_text("{}\n")
    git(spec.workdir, "add", ".orch-state")
    git(spec.workdir, "commit", "-qm", "agent commits state")
    out = await run_attempt(spec)
    assert out.outcome is Outcome.policy and "branch changes .orch-state/ (.orch-state/backlog.json)" in out.summary


async def test_moving_the_users_branch_is_refused_and_put_back(repo, make_spec):
    before = git(repo, "rev-parse", "main")
    out = await run_attempt(make_spec("move_branch"))
    assert (out.outcome, out.summary) == (Outcome.policy, "policy: main was moved onto the story's commits "
                                                          "(put back where it was)")
    assert git(repo, "rev-parse", "main") == before


async def test_writing_into_the_users_working_tree_is_refused(repo, make_spec):
    out = await run_attempt(make_spec("write_outside"))
    assert out.outcome is Outcome.policy
    assert out.summary == "policy: files in the project's working tree changed (agent-was-here.txt)"


@pytest.mark.parametrize("action, reason", [
    ("stage", "the project's index changed (notes.txt)"),
    ("hook", "the repository's git config or hooks changed"),
    ("checkout", "the checked-out HEAD of the project changed (main -> agent-branch)"),
])
async def test_meddling_with_the_users_repository_is_refused(make_spec, action, reason):
    out = await run_attempt(make_spec("meddle", action, tests=None))
    assert (out.outcome, out.summary) == (Outcome.policy, f"policy: {reason}")


async def test_the_orchestrators_own_state_commits_meanwhile_are_no_breach(repo, make_spec):
    """While an attempt runs, the orchestrator commits .orch-state on the user's branch (gitlog)."""
    spec = make_spec("slow", "0.3", tests=None)
    task = asyncio.ensure_future(run_attempt(spec))
    await asyncio.sleep(0.15)
    (repo / ".orch-state" / "status.json").write_text('{"state": "SPRINT_ACTIVE", "n": 2}\n')
    git(repo, "commit", "-q", "--only", "-m", "orch: state", "--", ".orch-state")
    out = await task
    assert out.outcome is Outcome.done, out.summary


async def test_the_token_never_reaches_the_agent_the_log_the_outcome_or_git(repo, make_spec):
    show = await run_attempt(make_spec("show_env", tests=None))
    names = set(json.loads(show.summary))
    assert "DISCORD_TOKEN" not in names
    assert names <= {"PATH", "HOME", "LANG", "LC_CTYPE", "ORCH_PROJECT", "ORCH_SPRINT", "ORCH_STORY", "ORCH_ATTEMPT",
                     "ORCH_WORKDIR", "ORCH_BRANCH", "ORCH_ROLE", "PWD"}  # LC_CTYPE, PWD: set by python/the OS
    assert show.options == ["S-1", str(make_spec("done", story="S-1").workdir)]

    printed = make_spec("print_token", TOKEN, story="S-2")
    out = await run_attempt(printed)
    assert out.outcome is Outcome.done and out.summary == "done; by the way the token is ***"
    leaked = make_spec("leak_token", TOKEN, story="S-3")
    stored = await run_attempt(leaked)
    assert (stored.outcome, stored.summary) == (Outcome.policy, "policy: the story's files hold a secret of the bot (config.py)")
    for outcome, spec in ((out, printed), (stored, leaked)):
        assert TOKEN not in outcome.model_dump_json()
        log = spec.log_path.read_text()
        assert TOKEN not in log and ("the token is ***" in log or "stored ***" in log)
    history = git(repo, "log", "--all", "-p", "--format=%an %s %b")
    assert TOKEN not in history and "the token is ***" in history


async def test_a_secret_the_agent_committed_itself_is_refused(make_spec):
    spec = make_spec("done", tests=None)
    (spec.workdir / "key.txt").write_text(f"{TOKEN}\n")
    git(spec.workdir, "add", "key.txt")
    git(spec.workdir, "commit", "-qm", "oops")
    (spec.workdir / "key.txt").unlink()
    git(spec.workdir, "commit", "-qam", "remove it again")
    out = await run_attempt(spec)
    assert (out.outcome, out.summary) == (Outcome.policy, "policy: the story's commits hold a secret of the bot (key.txt)")


def test_counts_come_from_the_last_pytest_summary_line():
    assert parse_test_counts("== 3 passed, 1 failed, 2 errors in 0.51s ==") == (3, 3)
    assert parse_test_counts("x\n5 passed in 0.1s\n") == (5, 0)
    assert parse_test_counts("1 failed in 0.1s\nrerun\n2 passed in 0.1s") == (2, 0)
    assert parse_test_counts("Ran 4 tests\nOK") == (None, None)


async def test_an_error_of_our_own_is_an_outcome_not_an_exception(make_spec, tmp_path):
    spec = make_spec("done")
    (tmp_path / "not-a-folder").write_text("")
    spec.log_path = tmp_path / "not-a-folder" / "a.log"  # the log cannot be written
    out = await run_attempt(spec)
    assert out.outcome is Outcome.crashed and out.summary.startswith("the orchestrator could not run the attempt")
