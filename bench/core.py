"""The benchmark's phases: floors, one project at N stories, throughput, memory and CLI start (see __main__)."""
from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.config import load_config
from orchestration.service import Orchestrator
from orchestration.store import atomic_write

from .probes import (
    GIT, ROOT, CommitWatch, commit_count, git, git_children, git_dir_bytes, pct, peak_rss_mb, story_lags,
)

PRIORITIES = ["critical", "high", "medium", "low"]
DESCRIPTION = "As a user I want something so that I get value. " * 3
CRITERIA = ["Given a thing", "When I act", "Then it works"]
BY = "bench"
# What any command of a CLI built on asyncio and pydantic models costs at least (pydantic builds its first
# validator: its schema machinery and plugin look-up).
PYDANTIC_FLOOR = "import asyncio, pydantic\nclass M(pydantic.BaseModel):\n    x: int\nM(x=1)"


@dataclass
class Row:
    """One line of the table: samples (seconds) give p50/p95/p99/max; else `value` is shown as is."""
    measure: str
    samples: list[float] = field(default_factory=list)
    value: str = ""
    floor: str = ""  # the floor's name, e.g. "W 1KB"
    floor_s: float | None = None
    target: str = ""  # issue 11's target for this row, with ✓ or ✗

    def cells(self) -> dict[str, object]:
        cells: dict[str, object] = {"measure": self.measure, "n": "", "p50": self.value, "p95": "", "p99": "",
                                    "max": "", "floor": self.floor, "ratio": "", "target": self.target}
        if self.samples:
            p50 = pct(self.samples, 50)
            cells.update(n=len(self.samples), p50=ms(p50), p95=ms(pct(self.samples, 95)),
                         p99=ms(pct(self.samples, 99)), max=ms(max(self.samples)),
                         ratio=f"{p50 / self.floor_s:.1f}×" if self.floor_s else "")
        return cells


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


def size(n: float) -> str:
    return f"{n:,.0f} bytes" if n < 10_000 else f"{n / 1024:,.1f} KB"


def env() -> dict[str, str]:
    """The environment of the benchmark's subprocesses: they import this checkout's orchestration."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}


def lag_target(lags: list[float]) -> tuple[str, bool]:
    return "p99 ≤ 1 s", pct(lags, 99) <= 1.0


def cpu_s() -> tuple[float, float]:
    """CPU seconds (user + system) so far: of this process, and of its children that ended (git)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def write_config(work: Path, name: str, batch_ms: int) -> Path:
    path = work / f"{name}.toml"
    path.write_text(f'[orchestrator]\ndata_dir = "{work / name}"\nallowed_roots = ["{work / "projects"}"]\n'
                    f'commit_author = "Orch Bench <bench@localhost>"\ncommit_batch_ms = {batch_ms}\n')
    return path


def new_repo(work: Path, name: str) -> Path:
    repo = work / "projects" / name
    repo.mkdir(parents=True)
    subprocess.run(GIT + ["init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text(f"# {name}\n")
    git(repo, "add", "README.md")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


async def timed(samples: list[float], call) -> object:
    start = time.perf_counter()
    result = await call
    samples.append(time.perf_counter() - start)
    return result


async def add_stories(orch: Orchestrator, project: str, count: int, samples: list[float],
                      replies: dict[int, float], epics: int = 10) -> None:
    """`count` add_story calls back to back; `replies` gets story number -> time.monotonic() of its reply."""
    for i in range(count):
        changed = await timed(samples, orch.add_story(
            project, f"E-{i % epics + 1}", f"Story number {i} with a realistic title", description=DESCRIPTION,
            points=i % 8 + 1, priority=PRIORITIES[i % 4], acceptance_criteria=CRITERIA, by=BY))
        replies[int(changed.story.id[2:])] = time.monotonic()


class Bench:
    def __init__(self, work: Path, stories: int, projects: int, per_project: int, reads: int, idle: int,
                 batch_ms: int, cli_runs: int) -> None:
        self.work, self.n, self.p, self.m, self.r, self.idle = work, stories, projects, per_project, reads, idle
        self.batch_ms, self.cli_runs = batch_ms, cli_runs
        self.config_file = write_config(work, "data", batch_ms)
        self.rows: list[Row] = []
        self.notes: dict[str, object] = {}
        self.floors: dict[str, float] = {}

    def row(self, measure: str, samples: list[float] | None = None, value: str = "", floor: str = "",
            target: tuple[str, bool] | None = None) -> None:
        """`target`: (issue 11's target for the row, whether this run meets it)."""
        goal = f"{target[0]} {'✓' if target[1] else '✗'}" if target else ""
        self.rows.append(Row(measure, samples or [], value, floor, self.floors.get(floor), goal))

    def git_children_row(self, measure: str, count: int) -> None:
        self.row(measure, value=str(count), target=("0", count == 0))

    def one_story(self, samples: list[float]) -> tuple[str, bool]:
        """The target of a one-story change: p50 ≤ 2 × W 1KB and p99 ≤ 15 ms."""
        met = pct(samples, 50) <= 2 * self.floors["W 1KB"] and pct(samples, 99) <= 0.015
        return "p50 ≤ 2× W, p99 ≤ 15 ms", met

    def run(self) -> None:
        self.floor_rows(1024)
        asyncio.run(self.drive())
        self.memory()
        self.cli_start()

    async def drive(self) -> None:
        orch = Orchestrator(load_config(self.config_file))
        try:
            await self.one_project(orch)
            await self.throughput(orch)
        finally:
            await orch.close()

    # -- floors ------------------------------------------------------------------------------------------
    def floor_rows(self, size: int, label: str = "1KB") -> None:
        """W: one atomic write of a file of `size` bytes; F: W + git add + git commit of it; R: read + parse."""
        repo = new_repo(self.work, f"floor-{label}")
        target = repo / "state.json"
        w, f, r = [], [], []
        for i in range(30):
            data = json.dumps({"n": i, "pad": "x" * max(0, size - 30)}).encode()
            start = time.perf_counter()
            atomic_write(target, data)
            w.append(time.perf_counter() - start)
            git(repo, "add", "state.json")
            git(repo, "commit", "-q", "-m", f"floor {i}")
            f.append(time.perf_counter() - start)
            start = time.perf_counter()
            json.loads(target.read_bytes())
            r.append(time.perf_counter() - start)
        self.floors[f"W {label}"], self.floors[f"F {label}"] = pct(w, 50), pct(f, 50)
        self.row(f"floor W {label}: atomic write of {size:,} bytes", w)
        self.row(f"floor F {label}: W + git add + git commit", f)
        if label == "1KB":
            self.floors["R 1KB"] = pct(r, 50)
            self.row("floor R 1KB: read + json.loads of 1 KB", r)

    # -- one project at N stories ------------------------------------------------------------------------
    async def one_project(self, orch: Orchestrator) -> None:
        repo = new_repo(self.work, "bench")
        register: list[float] = []
        await timed(register, orch.register_project(str(repo), by=BY))
        self.row("register_project", register)
        epics: list[float] = []
        for e in range(20):
            await timed(epics, orch.create_epic("bench", f"Epic {e}", description="An epic.", by=BY))
        await orch.flush()

        size0, commits0 = git_dir_bytes(repo), commit_count(repo)
        adds: list[float] = []
        replies: dict[int, float] = {}
        watch = CommitWatch([repo], self.work / "watch-one.txt")
        start = time.perf_counter()
        await add_stories(orch, "bench", self.n, adds, replies)
        took = time.perf_counter() - start
        await orch.flush()
        seen = watch.stop()
        lags = story_lags(repo, replies, seen[repo])
        commits = commit_count(repo) - commits0
        growth = (git_dir_bytes(repo) - size0) / self.n
        first = min(100, self.n)
        self.row("epic (create_epic)", epics, floor="W 1KB")
        self.row(f"add_story, all {self.n:,} (0 to {self.n:,} stories)", adds, floor="W 1KB",
                 target=self.one_story(adds))
        self.row(f"add_story, first {first} (≤ {first} stories)", adds[:first], floor="W 1KB")
        self.row(f"add_story, last {first} (≈ {self.n:,} stories)", adds[-first:], floor="W 1KB",
                 target=("p50 ≤ 1.5× first (at 10,000)", pct(adds[-first:], 50) <= 1.5 * pct(adds[:first], 50)))
        self.row(f"add_story back to back: throughput, one project from 0 to {self.n:,}",
                 value=f"{self.n / took:.0f} cmd/s")
        self.row("add_story back to back: commits per command", value=f"{commits / self.n:.3f} ({commits} commits)",
                 target=("≤ 0.2", commits / self.n <= 0.2))
        self.row("add_story back to back: commit lag", lags, floor="F 1KB", target=lag_target(lags))
        self.row("add_story: repository growth per command (after git gc)", value=size(growth),
                 target=("≤ 4 KB", growth <= 4096))

        rng = random.Random(7)
        page = await orch.view_backlog("bench")
        views: list[float] = []
        for _ in range(self.r):
            await timed(views, orch.view_backlog("bench", page=rng.randint(1, page.pages)))
        self.row("view_backlog, a page of 10", views, floor="R 1KB",
                 target=("p50 ≤ 2× R", pct(views, 50) <= 2 * self.floors["R 1KB"]))
        states: list[float] = []
        for _ in range(self.r):
            await timed(states, orch.state("bench"))
        self.row("state", states, floor="R 1KB")

        size0, commits0 = git_dir_bytes(repo), commit_count(repo)
        prios: list[float] = []
        for i in range(self.r):
            await timed(prios, orch.prioritize_story("bench", f"S-{rng.randint(1, self.n)}", PRIORITIES[i % 4],
                                                     by=BY))
        await orch.flush()
        self.row(f"prioritize_story (at {self.n:,} stories)", prios, floor="W 1KB", target=self.one_story(prios))
        per = (commit_count(repo) - commits0) / self.r
        self.row("prioritize_story: commits per command", value=f"{per:.3f}", target=("≤ 0.2", per <= 0.2))
        growth = (git_dir_bytes(repo) - size0) / self.r
        self.row("prioritize_story: repository growth per command (after git gc)", value=size(growth),
                 target=("≤ 4 KB", growth <= 4096))

        plans: list[float] = []
        for _ in range(10):  # the first plans, the others re-plan (the same command, the same work)
            sprint = await timed(plans, orch.plan_sprint("bench", capacity=40, goal="Bench", by=BY))
        self.row("plan_sprint (automatic pick, 40 points)", plans, floor="W 1KB",
                 target=("p50 ≤ 20 ms (at 10,000)", pct(plans, 50) <= 0.020))
        starts: list[float] = []
        await timed(starts, orch.start_sprint("bench", by=BY))
        self.row("start_sprint", starts, floor="W 1KB")
        updates: list[float] = []
        for i in range(self.r):
            story = sprint.sprint.stories[i % len(sprint.sprint.stories)]
            status = "in_progress" if (i // len(sprint.sprint.stories)) % 2 == 0 else "todo"
            await timed(updates, orch.update_story("bench", story, status, by=BY))
        self.row("update_story (a sprint's story)", updates, floor="W 1KB", target=self.one_story(updates))
        views = []
        for _ in range(min(self.r, 50)):
            await timed(views, orch.sprint_status("bench"))
        self.row("sprint_status", views, floor="R 1KB")
        ends: list[float] = []
        await timed(ends, orch.review_sprint("bench", by=BY))
        await timed(ends, orch.feedback("bench", "Went well.", by=BY))
        self.row("review_sprint + feedback", ends, floor="W 1KB")
        await orch.flush()
        await asyncio.sleep(1)
        self.git_children_row("live git child processes, idle after the commands", git_children())

        backlog = repo / ".orch-state" / "backlog.json"
        self.notes["backlog.json bytes"] = backlog.stat().st_size
        self.notes["state_bytes"] = sum(p.stat().st_size for p in (repo / ".orch-state").rglob("*") if p.is_file())
        self.floor_rows(backlog.stat().st_size, "backlog.json")

    # -- throughput: one project, then P at once ----------------------------------------------------------
    async def throughput(self, orch: Orchestrator) -> None:
        names = [f"t{i}" for i in range(self.p + 1)]
        repos = {name: new_repo(self.work, name) for name in names}
        for name, repo in repos.items():
            await orch.register_project(str(repo), name=name, by=BY)
            for e in range(10):
                await orch.create_epic(name, f"Epic {e}", by=BY)
        await orch.flush()
        commits0 = sum(commit_count(r) for r in repos.values())

        async def drive(group: list[str]) -> tuple[float, list[float], list[float], str]:
            watch = CommitWatch([repos[n] for n in group], self.work / f"watch-{group[0]}.txt")
            samples: list[float] = []
            replies = {name: {} for name in group}
            cpu0 = cpu_s()
            start = time.perf_counter()
            await asyncio.gather(*(add_stories(orch, name, self.m, samples, replies[name]) for name in group))
            took = time.perf_counter() - start
            await orch.flush()
            own, git_s = (a - b for a, b in zip(cpu_s(), cpu0))  # before the poller ends: not its CPU
            seen = watch.stop()
            lags = [lag for name in group for lag in story_lags(repos[name], replies[name], seen[repos[name]])]
            count = len(group) * self.m
            cpu = f"{own / count * 1000:.1f} ms in the process + {git_s / count * 1000:.1f} ms in git processes"
            return count / took, samples, lags, cpu

        one, one_samples, one_lags, one_cpu = await drive(names[:1])
        many, many_samples, many_lags, many_cpu = await drive(names[1:])
        commits = sum(commit_count(r) for r in repos.values()) - commits0
        self.row(f"throughput, 1 project ({self.m} add_story back to back)", value=f"{one:.0f} cmd/s")
        self.row(f"throughput, {self.p} projects at once ({self.m} add_story each, one process)",
                 value=f"{many:.0f} cmd/s ({many / one:.2f}× one)",
                 target=("≥ 500 cmd/s and ≥ one", many >= 500 and many >= one))
        self.row("CPU per command, 1 project (with its commits)", value=one_cpu)
        self.row(f"CPU per command, {self.p} projects at once (with their commits)", value=many_cpu)
        self.row(f"add_story latency, {self.p} projects at once", many_samples, floor="W 1KB")
        self.row("commit lag, 1 project", one_lags, floor="F 1KB", target=lag_target(one_lags))
        self.row(f"commit lag, {self.p} projects at once", many_lags, floor="F 1KB", target=lag_target(many_lags))
        per = commits / ((self.p + 1) * self.m)
        self.row("throughput runs: commits per command", value=f"{per:.3f} ({commits} commits)",
                 target=("≤ 0.2", per <= 0.2))
        self.cli_project = names[1]

    # -- memory, each in a process of its own -------------------------------------------------------------
    def memory(self) -> None:
        probe = self.probe("project", "--config", str(self.config_file), "--project", "bench")
        self.row(f"peak RSS, a process serving the project at {self.n:,} stories", value=f"{probe['rss_mb']:.1f} MB",
                 target=("≤ 70 MB (at 10,000)", probe["rss_mb"] <= 70))
        self.git_children_row("  live git children when idle (that process)", probe["git_children"])
        config = write_config(self.work, "idle", self.batch_ms)
        asyncio.run(self.register_idle(config))
        probe = self.probe("idle", "--config", str(config))
        self.row(f"peak RSS, {probe['projects']} registered projects, each used once, then idle",
                 value=f"{probe['rss_mb']:.1f} MB", target=("≤ 60 MB (at 200)", probe["rss_mb"] <= 60))
        self.git_children_row("  live git children when idle (that process)", probe["git_children"])
        base = self.probe("imports")
        self.row("peak RSS, after importing the orchestrator (no project)", value=f"{base['rss_mb']:.1f} MB")

    async def register_idle(self, config: Path) -> None:
        orch = Orchestrator(load_config(config))
        try:
            for i in range(self.idle):
                repo = self.work / "projects" / f"idle{i}"
                repo.mkdir(parents=True)
                subprocess.run(GIT + ["init", "-q", "-b", "main"], cwd=repo, check=True)
                await orch.register_project(str(repo), name=f"idle{i}", by=BY)
        finally:
            await orch.close()

    def probe(self, kind: str, *args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "bench", "--probe", kind, *args], capture_output=True,
                             text=True, check=True, env=env(), cwd=ROOT).stdout
        return json.loads(out.splitlines()[-1])

    # -- CLI start ---------------------------------------------------------------------------------------
    def cli_start(self) -> None:
        """Wall time of whole processes, median of `cli_runs` after a warm-up; with bytecode caching on, as an
        installed `orch` has it."""
        cli_env = {k: v for k, v in env().items() if k != "PYTHONDONTWRITEBYTECODE"}
        cli_env["ORCH_CONFIG"] = str(self.config_file)
        orch_main = "import sys; from orchestration.cli import main; sys.exit(main())"

        cpu: dict[str, list[float]] = {}

        def wall(*argv: str) -> list[float]:
            """Wall times; the CPU times (user + system, which other work on the machine moves less) go to `cpu`."""
            times, cpu[argv[-1]] = [], []
            for i in range(self.cli_runs + 1):
                cpu0, start = cpu_s()[1], time.perf_counter()
                subprocess.run([sys.executable, *argv], env=cli_env, cwd=self.work, check=True, capture_output=True)
                if i:  # the first run warms the caches (and writes the bytecode)
                    times.append(time.perf_counter() - start)
                    cpu[argv[-1]].append(cpu_s()[1] - cpu0)
            return times

        floor = wall("-c", "pass")
        self.floors["python"] = statistics.median(floor)
        self.row("CLI floor: python -c pass", floor)
        self.row("CLI floor: python, asyncio, pydantic and one model validated", wall("-c", PYDANTIC_FLOOR),
                 floor="python")
        self.row("CLI: python -c 'import orchestration.cli'", wall("-c", "import orchestration.cli"), floor="python")
        state = wall("-c", orch_main, "state", "-p", self.cli_project)
        self.row(f"CLI start: orch state ({self.m} stories)", state, floor="python",
                 target=("median ≤ 120 ms", statistics.median(state) <= 0.120))
        self.floors["python CPU"] = statistics.median(cpu["pass"])
        self.row("CLI CPU time (user + system): python -c pass", cpu["pass"])
        self.row("CLI CPU time: python, asyncio, pydantic and one model", cpu[PYDANTIC_FLOOR], floor="python CPU")
        self.row("CLI CPU time: orch state", cpu[self.cli_project], floor="python CPU")

def probe(kind: str, config: str | None, project: str | None) -> dict:
    """Run in a process of its own (`python -m bench --probe KIND`), so that its peak memory is its own."""
    if kind == "imports":
        return {"rss_mb": peak_rss_mb()}
    return asyncio.run(_probe(kind, load_config(config), project))


async def _probe(kind: str, config, project: str | None) -> dict:
    orch = Orchestrator(config)
    try:
        if kind == "project":  # what a process serving a big project does: reads, one-story changes, a plan
            page = await orch.view_backlog(project)
            await orch.state(project)
            for i in range(20):
                await orch.view_backlog(project, page=1 + i * 7 % page.pages)
                await orch.add_story(project, "E-1", f"Probe story {i}", points=3, by=BY)
                await orch.prioritize_story(project, f"S-{1 + i * 37 % page.total}", PRIORITIES[i % 4], by=BY)
            await orch.plan_sprint(project, capacity=40, by=BY)
            projects = 1
        else:  # every registered project used once, then nothing
            await orch.start()
            entries = await orch.list_projects()
            for entry in entries:
                await orch.state(entry.name)
            projects = len(entries)
        await orch.flush()
        await asyncio.sleep(1)
        return {"rss_mb": peak_rss_mb(), "git_children": git_children(), "projects": projects}
    finally:
        await orch.close()


def table(bench: Bench, meta: str) -> str:
    columns = ("measure", "n", "p50", "p95", "p99", "max", "floor", "ratio", "target")
    lines = [meta, "", "| measure | n | p50 | p95 | p99 | max | floor | p50 ÷ floor | target (issue 11) |",
             "|---|--:|--:|--:|--:|--:|---|--:|---|"]
    for row in bench.rows:
        c = row.cells()
        lines.append("| " + " | ".join(str(c[k]) for k in columns) + " |")
    return "\n".join(lines)
