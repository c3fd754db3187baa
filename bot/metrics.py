"""The bot's own metrics since start: per command (count, outcomes, latency) and per project (commands, errors).

The design's "Monitoring and Observability": command latency and error rates. Fed by @handled (bot/handling.py)
once per command, shown by /health. Counters only grow by one per command, and each command keeps only its
last LATENCY_WINDOW latencies, so memory stays flat however long the bot runs. Labels are command names and
project names, never user text. (State transition frequency comes from status.json's history, via health.)
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

LATENCY_WINDOW = 500  # latencies kept per command for p50/p95
OUTCOMES = ("ok", "refused", "error")
PROJECTS_MAX = 200  # project labels kept; /project unregister notes a typed name, so keep them bounded too


@dataclass
class _Command:
    count: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


@dataclass(frozen=True)
class CommandStats:
    name: str
    count: int
    ok: int
    refused: int
    errors: int
    p50_ms: float
    p95_ms: float

    @property
    def error_rate(self) -> float:
        """Unexpected failures per command run (a refusal is an expected answer, not an error)."""
        return self.errors / self.count if self.count else 0.0


@dataclass(frozen=True)
class ProjectStats:
    commands: int = 0
    refused: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Snapshot:
    uptime_s: float
    commands: list[CommandStats]  # most used first
    projects: dict[str, ProjectStats]

    @property
    def total(self) -> int:
        return sum(c.count for c in self.commands)

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.commands)

    @property
    def refused(self) -> int:
        return sum(c.refused for c in self.commands)


def percentile(samples: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of `samples`; NaN when there are none."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Metrics:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._commands: dict[str, _Command] = {}
        self._projects: dict[str, dict[str, int]] = {}

    def record(self, command: str, project: str | None, outcome: str, latency_s: float) -> None:
        """One command run. `outcome` is ok, refused or error (anything after a ':' is ignored)."""
        kind = outcome.partition(":")[0]
        if kind not in OUTCOMES:
            kind = "error"
        stats = self._commands.setdefault(command, _Command())
        stats.count += 1
        stats.outcomes[kind] += 1
        stats.latencies_s.append(latency_s)
        if project and (project in self._projects or len(self._projects) < PROJECTS_MAX):
            counts = self._projects.setdefault(project, dict.fromkeys(OUTCOMES, 0))
            counts[kind] += 1

    def snapshot(self) -> Snapshot:
        commands = []
        for name, c in self._commands.items():
            window = list(c.latencies_s)
            commands.append(CommandStats(name=name, count=c.count, ok=c.outcomes["ok"], refused=c.outcomes["refused"],
                                         errors=c.outcomes["error"], p50_ms=percentile(window, 50) * 1000,
                                         p95_ms=percentile(window, 95) * 1000))
        commands.sort(key=lambda c: (-c.count, c.name))
        projects = {name: ProjectStats(commands=sum(n.values()), refused=n["refused"], errors=n["error"])
                    for name, n in self._projects.items()}
        return Snapshot(uptime_s=self._clock() - self._started, commands=commands, projects=projects)

    def window_size(self, command: str) -> int:
        """How many latencies are kept for `command` (at most LATENCY_WINDOW)."""
        c = self._commands.get(command)
        return len(c.latencies_s) if c else 0
