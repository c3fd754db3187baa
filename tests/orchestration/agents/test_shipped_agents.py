"""The agents shipped under agents/: the reference agent (no API key) and the Claude Code adapter, run as the
orchestrator runs them, the adapter against a stand-in `claude` (fixtures/bin/claude) first on PATH."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from orchestration.agents.attempt import run_attempt
from orchestration.agents.protocol import Previous
from orchestration.agents.runner import Outcome
from tests.conftest import git
from tests.orchestration.agents.conftest import FIXTURES, user_view

AGENTS = Path(__file__).resolve().parents[3] / "agents"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


async def test_the_reference_agent_works_test_first_and_the_tests_pass(repo, make_spec, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # passed through below: a faster pytest
    before = user_view(repo)
    spec = make_spec("-", story="S-3", title="Cart total!", tests=PYTEST, env=["PYTEST_DISABLE_PLUGIN_AUTOLOAD"])
    spec.command = [sys.executable, str(AGENTS / "reference_agent.py")]
    spec.input.story.criteria = ["an empty cart totals 0"]
    out = await run_attempt(spec)
    assert out.outcome is Outcome.done, (out.summary, out.output)
    assert (out.tests_passed, out.tests_failed) == (2, 0)  # counted from pytest's own summary line
    assert out.summary == "Cart total!: stories/s3_cart_total.py with its test tests/test_s3_cart_total.py (test first)"
    log = spec.log_path.read_text()
    assert log.index("wrote tests/test_s3_cart_total.py first") < log.index("red, as expected") < log.index(
        "wrote stories/s3_cart_total.py") < log.index("green")
    subjects = git(repo, "log", "--format=%s", "orch/sprint-001..orch/S-3").splitlines()
    assert subjects == ["S-3: Cart total!", "S-3: test for Cart total!"]  # the test came first
    assert user_view(repo) == before


async def test_the_reference_agent_asks_when_a_story_says_too_little(make_spec):
    spec = make_spec("-", story="S-4", title="Something", tests=None)
    spec.command = [sys.executable, str(AGENTS / "reference_agent.py")]
    out = await run_attempt(spec)
    assert out.outcome is Outcome.question and 'What should S-4 "Something" do?' in out.question


@pytest.fixture
def claude(monkeypatch, tmp_path):
    """The stand-in claude first on PATH; HOME (passed to agents) is where it records its calls."""
    monkeypatch.setenv("PATH", f"{FIXTURES / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path))
    return lambda: [json.loads(line) for line in (tmp_path / "claude-calls.jsonl").read_text().splitlines()]


async def test_the_claude_adapter_builds_the_prompt_and_maps_done(make_spec, claude):
    spec = make_spec("-", story="S-5", title="Cart total", attempt=2, answers=[
        {"ticket": "TK-2", "question": "Round?", "answer": "to cents"}])
    spec.command = [sys.executable, str(AGENTS / "claude_code.py")]
    spec.input.story.criteria = ["sums the prices"]
    spec.input.previous = [Previous(attempt=1, outcome="tests_failed", summary="oops", output="1 failed")]
    out = await run_attempt(spec)
    assert (out.outcome, out.summary, out.tests_passed) == (Outcome.done, "cart total with its test", 1)
    call, = claude()
    assert call["cwd"] == str(spec.workdir)
    args, prompt = call["args"], call["args"][1]
    assert args[0] == "-p" and args[2:] == ["--output-format", "json", "--permission-mode", "acceptEdits",
                                           "--allowedTools", "Bash,Read,Write,Edit,Glob,Grep"]
    for part in ("Do story S-5: Cart total.", "- sums the prices", "Round?", "to cents", "Attempt 1 ended with "
                 "tests_failed: oops", "1 failed", "test first", " ".join(spec.test_command), ".orch-state/",
                 "QUESTION: <your question>"):
        assert part in prompt
    log = spec.log_path.read_text()
    assert '"total_cost_usd": 0.0123' in log and "5f0c3a1e" in log


@pytest.mark.parametrize("title, outcome, fields", [
    ("ask about currency", Outcome.question, {"question": "Which currency should totals use?",
                                              "options": ["EUR", "USD"]}),
    ("hit the max turns", Outcome.failed, {"summary": "Claude Code stopped (error_max_turns):"}),
])
async def test_the_claude_adapter_maps_questions_and_errors(make_spec, claude, title, outcome, fields):
    spec = make_spec("-", title=title, tests=None)
    spec.command = [sys.executable, str(AGENTS / "claude_code.py"), "--model", "sonnet"]
    out = await run_attempt(spec)
    assert out.outcome is outcome
    assert {k: getattr(out, k) for k in fields} == fields
    assert claude()[0]["args"][2:] == ["--output-format", "json", "--model", "sonnet"]  # its own options


async def test_the_claude_adapter_without_claude_fails_clearly(make_spec, monkeypatch, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # git, but no claude
    spec = make_spec("-", tests=None)
    spec.command = [sys.executable, str(AGENTS / "claude_code.py")]
    out = await run_attempt(spec)
    assert out.outcome is Outcome.failed and out.summary.startswith("cannot start Claude Code (claude)")
