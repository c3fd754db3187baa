"""The store's cost per command against the floor W (one atomic write of a 1 KB file), through the public API.

    python bench/store_speed.py [--sizes 100,1000,10000] [--runs 200] [--dir FOLDER]

Commits are kept out (a commit window of a minute): this measures the store alone. The backlog is seeded by
writing story files directly (as a checkout would), then read once by the orchestrator.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import tempfile
import time
from pathlib import Path

from orchestration.config import Config
from orchestration.models import Priority, StoryFile
from orchestration.service import Orchestrator
from orchestration.store import atomic_write, dump


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


def floor_w(folder: Path, runs: int) -> float:
    target = folder / "w.json"
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        atomic_write(target, b"x" * 1024)
        times.append(time.perf_counter() - t)
    target.unlink()
    return pct(times, 50)


async def timed(calls, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        await calls(i)
        times.append(time.perf_counter() - t)
    return times


async def one_size(n: int, runs: int, root: Path) -> list[tuple[str, list[float]]]:
    repo = root / f"p{n}"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    config = Config.model_validate({"orchestrator": {"data_dir": str(root / f"data{n}"), "allowed_roots": [str(root)],
                                                     "commit_batch_ms": 60_000}})
    orch = Orchestrator(config)
    try:
        await orch.register_project(str(repo), "p")
        await orch.create_epic("p", "Load")
        stories = repo / ".orch-state" / "stories"
        prios = list(Priority)
        for i in range(1, n + 1):  # seeded as files, as a checkout would bring them
            story = StoryFile(id=f"S-{i}", epic="E-1", title=f"Story {i}", points=random.randint(1, 5),
                              priority=random.choice(prios), description="As a user I want " + "x" * 200)
            (stories / f"S-{i}.json").write_bytes(dump(story))
        await orch.add_story("p", "E-1", "warm-up")  # loads the backlog once
        await orch.view_backlog("p")
        results = [
            ("add_story", await timed(lambda i: orch.add_story("p", "E-1", f"new {i}", points=2), runs)),
            ("prioritize", await timed(lambda i: orch.prioritize_story(
                "p", f"S-{random.randint(1, n)}", random.choice(prios)), runs)),
            ("update_story", await timed(lambda i: orch.update_story(
                "p", f"S-{random.randint(1, n)}", random.choice(["todo", "blocked"])), runs)),
            ("view_backlog p1", await timed(lambda i: orch.view_backlog("p"), runs)),
        ]
        await orch.update_story("p", "S-1", "todo")
        first = await timed(lambda i: orch.plan_sprint("p", capacity=40), 1)
        results.append(("plan_sprint (first)", first))
        results.append(("plan_sprint (re-plan)", await timed(lambda i: orch.plan_sprint("p", capacity=40),
                                                             max(20, runs // 10))))
        return results
    finally:
        await orch.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where the repositories go (default: the system's temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir, ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        print(f"{'stories':>8} {'command':<22} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'p50/W':>6}")
        for n in (int(s) for s in args.sizes.split(",")):
            results = await one_size(n, args.runs, root)
            w = floor_w(root, args.runs)  # right after: the disk's speed varies with what else runs
            print(f"{n:>8} {'W (atomic write, 1 KB)':<22} {w:7.2f}")
            for name, times in results:
                print(f"{n:>8} {name:<22} {pct(times, 50):7.2f} {pct(times, 99):7.2f} {max(times) * 1000:7.2f} "
                      f"{pct(times, 50) / w:6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
