"""The Celery runner with real parts: a real redis-server, real `orch worker` processes, real agents and git.

Two workers (concurrency 1 each) are shared by the tests of this module (a worker takes seconds to start);
each test uses a project name of its own, since attempt IDs (and so task IDs) are per project."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery import Celery

from orchestration.agents.celery_runner import AgentQueueUnreachable
from orchestration.config import Config, TicketSettings
from orchestration.errors import NotFound
from orchestration.service import Orchestrator
from tests.conftest import change_lines, git
from tests.orchestration.test_tickets import QUESTION

from .conftest import AGENT, PLANNER, TESTS, alive
from .test_clarity import STANDIN
from .test_sprint_run import runs, sprint_of

ROOT = Path(__file__).resolve().parents[3]
VISIBILITY_S = 6  # a dead worker's attempt goes to another worker after this (attempts here take ~1 s)
WORKERS = ("w1", "w2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A throw-away redis-server on a free loopback port; stop() and start() keep the port."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder, self.proc = _free_port(), folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                                      "--port", str(self.port), "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Workers:
    """`orch worker` processes, each in a session of its own (so a test can kill one with its pool)."""

    def __init__(self, config_file: Path, logs: Path, broker: str) -> None:
        self.config_file, self.logs, self.procs = config_file, logs, {}
        self.control = Celery(broker=broker, set_as_current=False)

    def start(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "orchestration.cli", "worker", "--config", str(self.config_file),
             "--concurrency", "1", "--name", f"{name}@%h"],
            cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("ORCH_")})

    def ensure(self) -> None:
        """Every worker running and answering (a test may have killed one)."""
        for name in WORKERS:
            if name not in self.procs or self.procs[name].poll() is not None:
                self.start(name)
        deadline = time.monotonic() + 30
        while True:
            answered = {next(iter(r)).split("@")[0] for r in self.control.control.ping(timeout=0.5)}
            if answered >= set(WORKERS):
                return
            assert time.monotonic() < deadline, f"workers did not start: see {self.logs}"

    def kill(self, name: str) -> None:
        """SIGKILL the worker and its pool, as a machine that is lost."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def running(self, pid: int) -> str:
        """The worker whose pool process started `pid`."""
        pool = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return next(n for n, p in self.procs.items() if os.getpgid(pool) == p.pid)

    def close(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = Redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def worker_pool(redis_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("workers")
    (home / "config.toml").write_text(
        f'[orchestrator]\ndata_dir = "{home / "data"}"\n\n'
        f'[agents]\nrunner = "celery"\nbroker_url = "{redis_server.url}"\nqueue = "agents-test"\n'
        f"visibility_timeout_s = {VISIBILITY_S}\ntimeout_s = 5\n")
    pool = Workers(home / "config.toml", home, redis_server.url)
    yield pool, home / "data"
    pool.close()


@pytest.fixture
def workers(worker_pool):
    pool, _ = worker_pool
    pool.ensure()
    return pool


@pytest.fixture
async def make_orch(tmp_path, projects_root, redis_server):
    made: list[Orchestrator] = []

    def make(*mode: str, **agents) -> Orchestrator:
        o = Orchestrator(Config.model_validate({
            "orchestrator": {"data_dir": str(tmp_path / "data"), "allowed_roots": [str(projects_root)],
                             "commit_author": "Orch Test <orch@test>", "commit_batch_ms": 20},
            "agents": {"command": [*AGENT, *mode], "test_command": TESTS, "timeout_s": 5, "max_attempts": 2,
                       "runner": "celery", "broker_url": redis_server.url, "queue": "agents-test", **agents}}))
        made.append(o)
        return o

    yield make
    for o in made:
        await o.close()


def agents_with(token: str) -> list[int]:
    """Processes whose command line holds `token` (our agents carry one of their own)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and token in (proc / "cmdline").read_text() and alive(int(proc.name)):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


async def wait_for(check, timeout_s: float = 15, what: str = "it") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        await asyncio.sleep(0.05)


async def runner_health(o: Orchestrator, expected: str) -> str:
    """Health's runner line once it holds `expected` (a worker's answer may come after health's short wait)."""
    for _ in range(5):
        health = (await o.health()).runner
        if expected in health:
            break
    assert expected in health
    return health


async def test_a_sprint_of_six_stories_runs_on_two_workers_each_outcome_applied_once(make_orch, make_repo, workers,
                                                                                      worker_pool):
    o = make_orch("done", max_parallel=4, max_parallel_per_project=4)
    repo = make_repo("celery-six")
    name = await sprint_of(o, repo, [f"Story {i}" for i in range(1, 7)])
    health = await runner_health(o, f"celery at {o.config.agents.broker_url}: 2 workers online")
    assert all(f"{w}@" in health for w in WORKERS) and "[agents-test] running 0" in health
    await o.agents.start()
    await o.agents.until_idle()
    await o.flush()

    assert (await o.state(name)).state.value == "SPRINT_REVIEW"
    for i in range(1, 7):
        attempts = runs(repo, f"S-{i}")["attempts"]
        assert [a["outcome"] for a in attempts] == ["done"] and attempts[0]["tests_failed"] == 0, attempts
    merges = git(repo, "log", "--merges", "--format=%s", "orch/sprint-001").splitlines()
    assert sorted(m.split()[1] for m in merges) == [f"S-{i}" for i in range(1, 7)]
    assert "\n".join(change_lines(repo, "main")).count("agent attempt 1: done") == 6  # applied once each
    files = set(git(repo, "ls-tree", "-r", "--name-only", "orch/sprint-001").split())
    assert {f"s_{i}.py" for i in range(1, 7)} <= files
    clones = {p.parent.parent.name.split("@")[0] for p in (worker_pool[1] / "worker").glob("*/repos/celery-six")}
    assert clones == set(WORKERS)  # both workers took attempts


async def test_a_worker_killed_mid_attempt_its_attempt_runs_again_on_the_other_applied_once(
        make_orch, make_repo, workers, tmp_path):
    marker = tmp_path / "first-run.pid"
    o = make_orch("once", str(marker))
    repo = make_repo("celery-kill")
    name = await sprint_of(o, repo, ["Cart"])
    await o.agents.start()
    await wait_for(lambda: marker.exists() and marker.read_text(), what="the first run")
    agent = int(marker.read_text())
    victim = workers.running(agent)
    workers.kill(victim)
    os.kill(agent, signal.SIGKILL)  # in a session of its own; a lost machine takes it too

    await o.agents.until_idle()
    await o.flush()
    attempts = runs(repo, "S-1")["attempts"]
    assert [a["outcome"] for a in attempts] == ["done"]  # one attempt, run twice, applied once
    assert (await o.state(name)).state.value == "SPRINT_REVIEW"
    assert len(git(repo, "log", "--merges", "--format=%s", "orch/sprint-001").splitlines()) == 1
    assert "\n".join(change_lines(repo, "main")).count("agent attempt 1: done") == 1


async def test_pause_revokes_the_running_attempt_and_leaves_no_agent_process(make_orch, make_repo, workers):
    token = f"celery-pause-{os.getpid()}-{time.monotonic_ns()}"
    o = make_orch("slow", "60", token, timeout_s=30)
    repo = make_repo("celery-pause")
    name = await sprint_of(o, repo, ["Cart"])
    await o.agents.start()
    await wait_for(lambda: agents_with(token), what="the agent's start")
    await wait_for(lambda: o.agents.running(name) and o.agents.running(name)[0].phase == "agent",
                   what="the phase reported by the worker")
    health = await runner_health(o, "[agents-test] running 1")
    assert "1/2 attempts in flight" in health

    await o.pause_sprint(name, by="alice")
    assert not o.agents.running(name)
    attempt = runs(repo, "S-1")["attempts"][0]
    assert attempt["outcome"] == "cancelled" and not attempt["counted"]
    await wait_for(lambda: not agents_with(token), timeout_s=10, what="the agent's end on its worker")
    assert (await o.view_backlog(name)).stories[0].status.value == "todo"


def score_where(o: Orchestrator) -> None:
    o.config.tickets = TicketSettings(scorer="command", scorer_command=[sys.executable, STANDIN, "where"],
                                      scorer_timeout_s=5)


async def test_a_plan_and_a_clarity_score_are_computed_on_a_worker(make_orch, make_repo, workers, worker_pool):
    o = make_orch("done", planner_command=[*PLANNER, "where"])
    score_where(o)
    repo = make_repo("celery-plan")
    name = repo.name
    await o.register_project(str(repo), by="ada")
    await o.create_epic(name, "Shop", by="ada")
    await o.plan_epic(name, "E-1", by="ada")
    view = await o.wait_plan(name, "E-1")
    assert view.plan.status.value == "proposed", view
    ran_in = Path(view.plan.plan.removeprefix("Planned in ").rstrip("."))
    assert ran_in.name == ".plan-E-1" and ran_in.is_relative_to(worker_pool[1] / "worker")  # a worker's checkout
    assert not ran_in.exists()  # removed after the run

    await o.open_ticket(name, QUESTION, by="po")
    replied = await o.reply_to_ticket(name, "TK-1", "bob", "PostgreSQL, because we already run it.")
    assert replied.score.scorer == "command" and replied.score.total == 50
    assert replied.follow_ups == [str(worker_pool[1])]  # the scorer ran in the worker's data folder


async def test_a_broker_that_is_down_is_a_clear_answer_and_the_sprint_goes_on_once_it_is_back(
        make_orch, make_repo, workers, redis_server):
    o = make_orch("done")
    score_where(o)
    repo = make_repo("celery-down")
    name = repo.name
    await o.register_project(str(repo), by="ada")
    await o.create_epic(name, "Shop", by="ada")
    await o.add_story(name, "E-1", "Cart", acceptance_criteria=["works"], by="ada")
    await o.plan_sprint(name, by="ada")
    await o.open_ticket(name, QUESTION, by="po")
    redis_server.stop()
    try:
        with pytest.raises(AgentQueueUnreachable, match=f"unreachable at redis://127.0.0.1:{redis_server.port}/0"):
            await o.start_sprint(name, by="ada")
        assert (await o.state(name)).state.value == "SPRINT_PLANNED"  # nothing changed
        with pytest.raises(AgentQueueUnreachable, match="unreachable at redis"):
            await o.plan_epic(name, "E-1", by="ada")
        with pytest.raises(NotFound):  # nothing was requested
            await o.plan_view(name, "E-1")
        replied = await o.reply_to_ticket(name, "TK-1", "bob", "PostgreSQL, because we already run it.")
        assert replied.score.scorer != "command" and replied.action == "resolved"  # the rule scorer decided
        await o.add_story(name, "E-1", "Receipt", by="ada")  # what needs no agent keeps working
        assert len((await o.view_backlog(name)).stories) == 2
        assert "celery: The agent queue is unreachable at redis://127.0.0.1" in (await o.health()).runner
    finally:
        redis_server.start()
    await o.start_sprint(name, by="ada")
    await o.agents.start()
    await o.agents.until_idle()
    assert (await o.state(name)).state.value == "SPRINT_REVIEW"
    assert [a["outcome"] for a in runs(repo, "S-1")["attempts"]] == ["done"]
