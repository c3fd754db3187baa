"""What .orch-state/ keeps of agent work: one file a story, `runs/S-<n>.json`, with every attempt at it.

A file a story (not one for all), so the commit of an attempt shows that story's lines alone. An attempt is
recorded when it starts (outcome None: running) and completed when its outcome is applied; a record still
running when the agents start again was interrupted by a stop of the process that ran it, and is closed as
"interrupted" (not a failure) before the story runs again. The attempt ID (`S-3#2`) is never reused, so an
outcome is applied at most once, and never over a newer attempt.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..models import STORY_ID, Model, VersionedFile, printable, utcnow

if TYPE_CHECKING:
    from ..unit_of_work import Change

RUNS_DIR = "runs"
OUTPUT_KEEP = 2000  # characters of an attempt's output tail kept in its record (for the next attempt's input)
SUMMARY_KEEP = 1000
INTERRUPTED = "interrupted"  # the process running the attempt stopped; not one of the runner's outcomes


def runs_path(story_id: str) -> str:
    return f"{RUNS_DIR}/{story_id}.json"


def runs_of(c: Change, story_id: str) -> StoryRuns:
    """The story's attempts as the change sees them (here, not in sprint_work: `sprint status` reads them)."""
    return c.file(runs_path(story_id), StoryRuns) or StoryRuns(story=story_id)


def stored_ids(c: Change, folder: str, pattern: str) -> list[str]:
    """The IDs (file stems) of the state files in `folder` matching `pattern` (S-*.json), sorted."""
    path = c.store.path(folder)
    return sorted(p.stem for p in path.glob(pattern)) if path.is_dir() else []


def attempt_id(story_id: str, number: int) -> str:
    return f"{story_id}#{number}"


def runner_id(project: str, record_id: str) -> str:
    """The ID a runner knows an attempt by: unique across projects (one runner serves them all)."""
    return f"{project}/{record_id}"


def record_id(runner_attempt_id: str) -> str:
    return runner_attempt_id.rpartition("/")[2]


class AttemptRecord(Model):
    id: str
    attempt: int = Field(ge=1)
    sprint: str
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    outcome: str | None = None  # None while it runs; then a runner Outcome's value, or "interrupted"
    counted: bool = False  # a failed attempt that counts towards max_attempts
    summary: str = ""
    question: str = ""
    tests_passed: int | None = None
    tests_failed: int | None = None
    duration_s: float | None = None
    branch: str = ""
    commit: str | None = None
    output: str = ""  # the tail of its output, secrets scrubbed (the runner does that)


class StoryRuns(VersionedFile):
    story: str = Field(pattern=STORY_ID.pattern)
    attempts: list[AttemptRecord] = Field(default_factory=list)
    failures: int = Field(0, ge=0)  # failed attempts since the story was last queued afresh (retry, a ticket)
    fresh: bool = False  # the next attempt starts over on the current sprint branch (after a conflict or breach)

    @property
    def running(self) -> AttemptRecord | None:
        last = self.last
        return last if last is not None and last.outcome is None else None

    @property
    def last(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None


def kept(text: str, limit: int, end: Literal["head", "tail"] = "head") -> str:
    """Agent text as a record keeps it: printable (a terminal escape is shown as \\u001b, never stored raw)
    and cut to `limit` characters (its start, or for output its end)."""
    text = printable(text or "")
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if end == "head" else "…" + text[-(limit - 1):]
