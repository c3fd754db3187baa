"""One attempt, end to end, in a prepared worktree: `await run_attempt(spec)` -> AttemptOutcome.

Used by the local runner, and callable as it is by a worker on another machine (issue 10). It never raises
for anything the agent does, and never writes .orch-state/: the outcome is data for the orchestrator.

1. Snapshot the user's repository (policy.snapshot).
2. Start the agent command (no shell) in the worktree, in a new session, with the allowlisted environment;
   write the JSON input to its stdin and close it. stdout and stderr are read at once (a full pipe would
   block the agent), streamed to the log file with secrets replaced by ***, and only their tail is kept.
   Past `timeout_s`, or when `cancel` is set, the whole process group gets SIGTERM, then SIGKILL after
   `grace_s`; when the agent exits, whatever it left running in its group is killed too.
3. Parse the reply (the last line of stdout). On "done": refuse .orch-state/ writes and secrets in the files,
   commit what the agent left uncommitted on its branch (the summary is the message; the bot's identity, no
   hooks), then run the test command in the worktree the same way; only a passing run is "done".
4. Check the policy (policy.check_attempt); a breach overrides any other outcome.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import policy
from .protocol import NotProtocol, parse_reply
from .runner import AttemptOutcome, AttemptSpec, Outcome
from .worktree import bot_env, commit_leftovers, run_git

log = logging.getLogger(__name__)

KEEP_STDOUT = 256 * 1024  # characters of stdout kept in memory (the reply is its last line)
KEEP_STDERR = 64 * 1024
LOG_MAX = 10 * 1024 * 1024  # bytes of output logged per attempt; the rest is read and dropped
TAIL = 4000  # characters of output in the outcome
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?)\b")


@dataclass
class ProcessResult:
    returncode: int | None
    stdout: str  # the scrubbed tail
    stderr: str
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None  # why it could not be started


class AttemptLog:
    """The attempt's log file: appended from the event loop through worker threads, capped at LOG_MAX.
    Output comes in scrubbed; our own notes are scrubbed here (a command line may hold a secret too)."""

    def __init__(self, path: Path, scrubber: policy.Scrubber) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._scrub = scrubber.scrub
        self._fh = open(path, "a", encoding="utf-8")
        self._size = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._size >= LOG_MAX or not text:
                return
            data = text[: LOG_MAX - self._size]
            self._size += len(data)
            self._fh.write(data)
            if self._size >= LOG_MAX:
                self._fh.write("\n[output beyond this point is not logged]\n")
            self._fh.flush()

    def note(self, text: str) -> None:
        """A line of our own (not counted against the cap)."""
        with self._lock:
            self._fh.write(f"\n# {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} {self._scrub(text)}\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


async def run_process(argv: list[str], *, cwd: Path, env: dict[str, str], stdin: bytes, timeout_s: float,
                      grace_s: float, secrets: list[str], log_to: AttemptLog | None,
                      cancel: asyncio.Event | None = None) -> ProcessResult:
    """Run one command as described in the module docstring; no process of its group outlives this call.
    Without `log_to` (a clarity scorer: its reply is all that matters) the output is not logged."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        return ProcessResult(None, "", "", error=f"cannot start {argv[0]}: {exc.strerror or exc}")
    pgid = proc.pid  # start_new_session: the agent leads a group of its own
    try:
        pumps = [asyncio.ensure_future(_pump(proc.stdout, policy.Scrubber(secrets), log_to, KEEP_STDOUT)),
                 asyncio.ensure_future(_pump(proc.stderr, policy.Scrubber(secrets), log_to, KEEP_STDERR))]
        feeder = asyncio.ensure_future(_feed(proc.stdin, stdin))
        waiter = asyncio.ensure_future(proc.wait())
        cancelled = asyncio.ensure_future(cancel.wait()) if cancel else None
        done, _ = await asyncio.wait([t for t in (waiter, cancelled) if t], timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        result = ProcessResult(None, "", "", timed_out=not done, cancelled=waiter not in done and bool(done))
        if waiter not in done:
            _signal_group(pgid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(waiter), grace_s)
            except asyncio.TimeoutError:
                _signal_group(pgid, signal.SIGKILL)
        _signal_group(pgid, signal.SIGKILL)  # what the agent left running (it may have exited already)
        await waiter
        # The pipes close once nothing holds them; a process that left the group could hold them forever.
        _, stuck = await asyncio.wait(pumps, timeout=grace_s + 1)
        for task in (*stuck, feeder, *([cancelled] if cancelled else [])):
            task.cancel()
        result.returncode = proc.returncode
        result.stdout = pumps[0].result() if pumps[0] not in stuck else ""
        result.stderr = pumps[1].result() if pumps[1] not in stuck else ""
        return result
    except BaseException:  # our own task cancelled (shutdown): take the group down with us
        _signal_group(pgid, signal.SIGKILL)
        raise


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group


async def _pump(stream: asyncio.StreamReader, scrubber: policy.Scrubber, log_to: AttemptLog | None,
                keep: int) -> str:
    """Read a stream to its end: scrubbed, logged whole lines at a time (stdout and stderr share the log), and
    its last `keep` characters returned."""
    tail = unlogged = ""
    while chunk := await stream.read(65536):
        text = scrubber.feed(chunk)
        tail = (tail + text)[-keep:]
        unlogged += text
        cut = unlogged.rfind("\n") + 1 if len(unlogged) < 65536 else len(unlogged)
        if cut:
            if log_to is not None:
                await asyncio.to_thread(log_to.write, unlogged[:cut])
            unlogged = unlogged[cut:]
    text = scrubber.end()
    if log_to is not None:
        await asyncio.to_thread(log_to.write, unlogged + text)
    return (tail + text)[-keep:]


async def _feed(stream: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stream.write(data)
        await stream.drain()
        stream.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent did not read its input: its reply will tell


def parse_test_counts(output: str) -> tuple[int | None, int | None]:
    """(passed, failed) from the last pytest-style summary line ("3 passed, 1 failed in 0.2s"); errors count
    as failed. (None, None) when the output has no such line."""
    for line in reversed(output.splitlines()):
        found = _COUNTS.findall(line)
        if found and " in " in line:
            counts = {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in found}
            return counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0)
    return None, None


def _tail(result: ProcessResult) -> str:
    """The end of what a process printed: stdout, then stderr (where a traceback would be)."""
    text = result.stdout if not result.stderr.strip() else f"{result.stdout.rstrip()}\n[stderr]\n{result.stderr}"
    return text.strip()[-TAIL:]


def _commit_message(story: str, summary: str, attempt: int) -> str:
    lines = summary.strip().splitlines() or [f"work of attempt {attempt}"]
    subject = f"{story}: {lines[0].strip()}"
    subject = subject if len(subject) <= 72 else subject[:71] + "…"
    body = "\n".join(lines[1:]).strip()
    return f"{subject}\n\n{body}" if body else subject


async def run_attempt(spec: AttemptSpec, *, cancel: asyncio.Event | None = None,
                      on_phase: Callable[[str], None] | None = None) -> AttemptOutcome:
    """Run one attempt and say what happened. Never raises for anything the agent does; an error of our own
    (git failing, the disk full) is reported as "crashed" with the reason, and logged."""
    started = time.monotonic()
    secrets = policy.secret_values()
    base = dict(attempt_id=spec.attempt_id, project=spec.project, story=spec.story, attempt=spec.input.attempt,
                branch=spec.branch, log_path=spec.log_path)
    log_to = None
    try:
        log_to = await asyncio.to_thread(AttemptLog, spec.log_path, policy.Scrubber(secrets))
        await asyncio.to_thread(log_to.note, f"attempt {spec.attempt_id}: {spec.story} attempt "
                                f"{spec.input.attempt} on {spec.branch} in {spec.workdir}: {spec.command}")
        fields = await _attempt(spec, secrets, log_to, cancel, on_phase or (lambda phase: None))
    except Exception as exc:  # ours, not the agent's: reported, never raised into the runner
        log.exception("attempt %s of %s/%s failed in the orchestrator", spec.attempt_id, spec.project, spec.story)
        fields = dict(outcome=Outcome.crashed, summary=f"the orchestrator could not run the attempt: {exc}")
    fields["summary"] = policy.Scrubber(secrets).scrub(fields.get("summary", ""))
    outcome = AttemptOutcome(**base, **fields, duration_s=round(time.monotonic() - started, 3))
    if log_to is not None:
        try:
            await asyncio.to_thread(log_to.note, f"outcome {outcome.outcome.value}: {outcome.summary}")
        finally:
            await asyncio.to_thread(log_to.close)
    return outcome


async def _attempt(spec: AttemptSpec, secrets: list[str], log_to: AttemptLog, cancel: asyncio.Event | None,
                   phase: Callable[[str], None]) -> dict:
    git_env = bot_env(spec.author_name, spec.author_email)
    env = policy.agent_env(spec.env, policy.task_vars(spec.input))
    run = dict(cwd=spec.workdir, env=env, timeout_s=spec.timeout_s, grace_s=spec.grace_s, secrets=secrets,
               log_to=log_to, cancel=cancel)
    phase("starting")
    before = await asyncio.to_thread(policy.snapshot, spec.repo, git_env)
    phase("agent")
    agent = await run_process(spec.command, stdin=spec.input.to_stdin(), **run)
    fields: dict = dict(output=_tail(agent))
    if agent.error:
        return dict(fields, outcome=Outcome.crashed, summary=agent.error)  # nothing ran: nothing to check
    if agent.cancelled:
        fields.update(outcome=Outcome.cancelled, summary="stopped by the orchestrator")
    elif agent.timed_out:
        fields.update(outcome=Outcome.timeout, summary=f"the agent ran longer than {spec.timeout_s:g} s and was stopped")
    elif agent.returncode != 0:
        how = f"was killed by signal {-agent.returncode}" if agent.returncode < 0 else f"exited with status {agent.returncode}"
        fields.update(outcome=Outcome.crashed, summary=f"the agent {how}")
    else:
        try:
            reply = parse_reply(agent.stdout)
        except NotProtocol as exc:
            fields.update(outcome=Outcome.not_protocol, summary=exc.reason)
        else:
            fields.update(summary=reply.summary, question=reply.question, options=reply.options,
                          tests_added=reply.tests_added, outcome=Outcome(reply.status))
            if reply.status == "done":
                fields.update(await _finish_done(spec, reply.summary, secrets, git_env, run, log_to, phase))
    phase("checking")
    breach = await asyncio.to_thread(policy.check_attempt, spec.repo, before, workdir=spec.workdir,
                                     branch=spec.branch, base=spec.base, secrets=secrets, env=git_env)
    if breach:
        fields.update(outcome=Outcome.policy, summary=f"policy: {breach}")
    tip = await asyncio.to_thread(run_git, spec.workdir, "rev-parse", "--verify", "--quiet", "HEAD",
                                  env=git_env, check=False)
    fields["commit"] = tip.stdout.strip() or None
    return fields


async def _finish_done(spec: AttemptSpec, summary: str, secrets: list[str], git_env: dict[str, str], run: dict,
                       log_to: AttemptLog, phase: Callable[[str], None]) -> dict:
    """After a "done": commit the agent's leftovers, then run the test command."""
    breach = await asyncio.to_thread(policy.check_worktree, spec.workdir, spec.base, secrets, git_env)
    if breach:  # never commit it
        return dict(outcome=Outcome.policy, summary=f"policy: {breach}")
    message = policy.Scrubber(secrets).scrub(_commit_message(spec.story, summary, spec.input.attempt))
    await asyncio.to_thread(commit_leftovers, spec.workdir, message, git_env)
    if not spec.test_command:
        return {}
    phase("testing")
    await asyncio.to_thread(log_to.note, f"tests: {spec.test_command}")
    tests = await run_process(spec.test_command, stdin=b"", **run)
    passed, failed = parse_test_counts(tests.stdout + "\n" + tests.stderr)
    fields = dict(output=_tail(tests), tests_passed=passed, tests_failed=failed)
    if tests.cancelled:
        return dict(fields, outcome=Outcome.cancelled, summary="stopped by the orchestrator while testing")
    if tests.error or tests.timed_out or tests.returncode != 0:
        why = (tests.error or (f"ran longer than {spec.timeout_s:g} s" if tests.timed_out
                               else f"exited with status {tests.returncode}"))
        counts = f" ({failed} failed, {passed} passed)" if failed is not None else ""
        return dict(fields, outcome=Outcome.tests_failed, summary=f"the test command {why}{counts}")
    return fields
