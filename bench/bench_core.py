"""Benchmark of the orchestration core on this machine (not a test): `python bench/bench_core.py [N]`.

Drives the real Orchestrator over a real temporary git repo: register, add N stories (default 1,000), view the
backlog, plan a sprint by automatic pick, update stories, and counts the commits the batching made. Prints a
markdown table. Design targets: 1,000+ tasks, sub-second commands, under 50 MB resident memory.
"""
from __future__ import annotations

import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestration.config import Config  # noqa: E402
from orchestration.models import Backlog  # noqa: E402
from orchestration.service import Orchestrator  # noqa: E402
from orchestration.store import atomic_write, dump  # noqa: E402

GIT = ["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
PRIORITIES = ["critical", "high", "medium", "low"]


def rss_mb() -> float:
    """Peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_now_mb() -> float:
    """Resident memory now (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def commits(repo: Path) -> int:
    return int(subprocess.run(GIT + ["rev-list", "--count", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def pct(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100)[p - 1] if len(samples) > 1 else samples[0]


async def timed(coro) -> tuple[float, object]:
    start = time.perf_counter()
    result = await coro
    return time.perf_counter() - start, result


async def bench(n: int, work: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    repo = work / "projects" / "bench"
    repo.mkdir(parents=True)
    subprocess.run(GIT + ["init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("# bench\n")
    subprocess.run(GIT + ["add", "README.md"], cwd=repo, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", "initial"], cwd=repo, check=True)
    config = Config.model_validate({"orchestrator": {
        "data_dir": str(work / "data"), "allowed_roots": [str(work / "projects")],
        "commit_author": "Orch Bench <bench@localhost>", "commit_batch_ms": 250}})
    rss_start = rss_mb()

    orch = Orchestrator(config)
    t, _ = await timed(orch.register_project(str(repo), by="bench"))
    rows.append(("register a project", ms(t)))
    for e in range(10):
        await orch.create_epic("bench", f"Epic {e}", by="bench")
    await orch.flush()
    commits_before = commits(repo)

    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(n):
        t, _ = await timed(orch.add_story("bench", f"E-{i % 10 + 1}", f"Story number {i} with a realistic title",
                                          description="As a user I want something so that I get value. " * 3,
                                          points=i % 8 + 1, priority=PRIORITIES[i % 4],
                                          acceptance_criteria=["Given a thing", "When I act", "Then it works"],
                                          by="bench"))
        latencies.append(t)
    total = time.perf_counter() - started
    await orch.flush()
    rss_stories = (rss_now_mb(), rss_mb())
    made = commits(repo) - commits_before
    rows.append((f"add {n:,} stories: total", f"{total:.2f} s ({n / total:.0f} commands/s)"))
    rows.append(("add_story latency p50 / p95 / max",
                 f"{ms(pct(latencies, 50))} / {ms(pct(latencies, 95))} / {ms(max(latencies))}"))
    first, last = latencies[: n // 10], latencies[-(n // 10):]
    rows.append(("add_story mean, first 10% / last 10%", f"{ms(statistics.mean(first))} / {ms(statistics.mean(last))}"))
    rows.append((f"commits for {n:,} commands (batch 250 ms)", f"{made} ({n / made:.0f} changes per commit)"))

    backlog_file = repo / ".orch-state" / "backlog.json"
    rows.append(("backlog.json size", f"{backlog_file.stat().st_size / 1024:.0f} KiB"))

    t, page = await timed(orch.view_backlog("bench", page=1))
    rows.append((f"view_backlog page 1 of {page.pages} (cached)", ms(t)))
    cold = Orchestrator(config)
    t, _ = await timed(cold.view_backlog("bench", page=1))
    rows.append(("view_backlog page 1 (cold: parse the file)", ms(t)))
    await cold.close()

    t, sprint = await timed(orch.plan_sprint("bench", capacity=40, by="bench"))
    rows.append((f"plan_sprint auto pick ({len(sprint.stories)} stories, 40 points)", ms(t)))
    await orch.start_sprint("bench", by="bench")
    updates: list[float] = []
    for status in ("in_progress", "todo", "in_progress"):
        for story in sprint.stories:
            t, _ = await timed(orch.update_story("bench", story.id, status, by="bench"))
            updates.append(t)
    rows.append((f"update_story latency p50 / p95 ({len(updates)} calls)",
                 f"{ms(pct(updates, 50))} / {ms(pct(updates, 95))}"))

    started = time.perf_counter()
    await orch.flush()
    rows.append(("final flush (commit what is queued)", ms(time.perf_counter() - started)))
    await orch.close()

    # Where the time of one write goes, for the 1,000-story backlog.
    backlog = Backlog.model_validate_json(backlog_file.read_bytes())
    reps = 20
    started = time.perf_counter()
    for _ in range(reps):
        data = dump(backlog)
    rows.append(("  part: serialise backlog (model_dump_json)", ms((time.perf_counter() - started) / reps)))
    started = time.perf_counter()
    for _ in range(reps):
        Backlog.model_validate_json(data)
    rows.append(("  part: parse + validate backlog", ms((time.perf_counter() - started) / reps)))
    scratch = work / "scratch.json"
    started = time.perf_counter()
    for _ in range(reps):
        atomic_write(scratch, data)
    rows.append(("  part: atomic write (temp, fsync, rename, fsync dir)", ms((time.perf_counter() - started) / reps)))

    rows.append(("RSS after imports (Python, pydantic, GitPython, transitions)", f"{rss_start:.1f} MB"))
    rows.append((f"RSS after {n:,} stories: now / peak", f"{rss_stories[0]:.1f} MB / {rss_stories[1]:.1f} MB"))
    rows.append(("peak RSS at the end (with a 2nd, cold Orchestrator and the parts above)", f"{rss_mb():.1f} MB"))
    return rows


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp:
        rows = asyncio.run(bench(n, Path(tmp)))
    print(f"Core benchmark: {n:,} stories, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| measure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
