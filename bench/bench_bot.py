"""Benchmark of the Discord front-end on this machine (not a test): `python -m bench --bot [--stories N]`
(or `python bench/bench_bot.py [N]`).

Runs the real bot over the real orchestrator and a real temporary git repo holding N stories (default 1,000),
driven through discord.py's real dispatch by SimCord (offline). Each figure is the bot's own measure of a
command, the `latency_ms` of its log line: from the callback's start to its last reply, so an upper bound of the
time to the first response (Discord wants one within 3 s). The git commit that follows a change is not in it: it
runs after the reply, batched (SimCord's actors wait for it, so their wall time would count it). Autocomplete
has no log line; its figure is wall time. Prints a markdown table.
"""
from __future__ import annotations

import asyncio
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import discord  # noqa: E402
import simcord  # noqa: E402

from bot.client import create_bot  # noqa: E402
from orchestration.config import Config  # noqa: E402
from orchestration.service import Orchestrator  # noqa: E402

RUNS = 20


class Latencies(logging.Handler):
    """Collects the latency_ms of the bot's per-command log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if m := re.search(r"latency_ms=(\d+)", record.getMessage()):
            self.values.append(int(m.group(1)) / 1000)

    def take(self) -> list[float]:
        values, self.values = self.values, []
        return values


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(len(ordered) * 0.95) - 1)]
    return f"{statistics.median(ordered) * 1000:.1f} / {p95 * 1000:.1f} / {ordered[-1] * 1000:.1f} ms"


async def timed(call) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def logged(latencies: Latencies, call) -> list[float]:
    await call()
    return latencies.take()


async def bench(n: int, work: Path) -> list[tuple[str, str]]:
    repo = work / "projects" / "shop"
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    config = Config.model_validate({"orchestrator": {"data_dir": str(work / "data"),
                                                     "allowed_roots": [str(work / "projects")]}})
    orch = Orchestrator(config)
    bot = create_bot(config, orch)
    rows: list[tuple[str, str]] = []
    latencies = Latencies()
    logging.getLogger("bot.commands").addHandler(latencies)
    logging.getLogger("bot.commands").setLevel(logging.INFO)
    async with simcord.run(bot) as env:
        guild = env.create_guild("Team")
        general = guild.create_text_channel("general")
        admins = guild.create_role("admins", permissions=discord.Permissions(manage_guild=True))
        ada = guild.add_member(env.create_user("ada"), roles=[admins])
        rows.append(("/project register", summary(await logged(
            latencies, lambda: ada.slash(general, "project register", path=str(repo))))))
        channel = next(c for c in guild.channels.values() if c.name == "proj-shop")

        await orch.create_epic("shop", "Bulk", by="bench")
        for i in range(n):  # straight through the orchestrator: the backlog is the setting, not the measure
            await orch.add_story("shop", "E-1", f"Story {i}", points=1 + i % 5,
                                 priority=("critical", "high", "medium", "low")[i % 4], by="bench")
        await orch.flush()

        async def series(label: str, make_call, wall: bool = False) -> None:
            samples = []
            for i in range(RUNS):
                samples += [await timed(make_call(i))] if wall else await logged(latencies, make_call(i))
            rows.append((label, summary(samples)))

        await series("/epic create", lambda i: lambda: ada.slash(channel, "epic create", title=f"Epic {i}"))
        await series("/backlog add_story", lambda i: lambda: ada.slash(
            channel, "backlog add_story", epic="E-1", title=f"Bench story {i}", points=2, priority="high"))
        await series("/backlog view", lambda i: lambda: ada.slash(channel, "backlog view"))
        await series("autocomplete story (all stories)", lambda i: lambda: ada.autocomplete(
            channel, "backlog prioritize", "story", "Story 99"), wall=True)
        await series("/state", lambda i: lambda: ada.slash(channel, "state"))
        rows.append(("/sprint plan (automatic pick)", summary(await logged(
            latencies, lambda: ada.slash(channel, "sprint plan", goal="Bench")))))
        rows.append(("/sprint start", summary(await logged(latencies, lambda: ada.slash(channel, "sprint start")))))
        sprint_stories = (await orch.sprint_status("shop")).sprint.stories
        await series("/story update", lambda i: lambda: ada.slash(
            channel, "story update", story=sprint_stories[0], status=("in_progress", "todo")[i % 2]))
        await series("/sprint status (with chart)", lambda i: lambda: ada.slash(channel, "sprint status"))
        await orch.flush()
    return rows


def main(n: int | None = None) -> None:
    n = n if n is not None else int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        rows = asyncio.run(bench(n, Path(tmp)))
    print(f"Bot benchmark: backlog of {n:,} stories, {RUNS} runs a command, SimCord (offline), this machine\n")
    print("| slash command | p50 / p95 / max |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
