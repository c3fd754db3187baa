"""pydantic models of every .orch-state file. Each file carries `schema_version`; `migrate` upgrades old ones."""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from functools import partial
from typing import Annotated, Any, ClassVar, Iterable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

EPIC_ID = re.compile(r"^E-[1-9][0-9]*$")
STORY_ID = re.compile(r"^S-[1-9][0-9]*$")
SPRINT_ID = re.compile(r"^sprint-[0-9]{3,}$")


def id_number(id_: str) -> int:
    """The number in an ID (S-12, E-3, sprint-004): what IDs are ordered by."""
    return int(id_.rpartition("-")[2])
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

TITLE_MAX = 200
TEXT_MAX = 4000
CRITERIA_MAX = 20  # acceptance criteria of one story
CRITERION_MAX = 2 * TITLE_MAX  # characters of one criterion, like a sprint goal
GOAL_MAX = 2 * TITLE_MAX  # characters of a sprint's goal
POINTS_MAX = 100  # a story's estimate, 0 to this

# Control characters (terminal escapes among them: C0, DEL, C1) and lone surrogates (no encoding holds them; Python
# turns invalid UTF-8 in a command line into them) are refused in every text a person or agent gives, so none
# reaches a file, a commit or a terminal. Multi-line text keeps newline and tab.
UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_NOT_IN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def plain_text(value: Any, multi_line: bool = True) -> Any:
    """`value` if it holds only printable text (Windows line ends become newlines); else a ValueError. Runs before
    pydantic's own checks, which would refuse a surrogate with a less helpful message. Not text: pydantic's turn."""
    if not isinstance(value, str):
        return value
    if multi_line:
        value = value.replace("\r\n", "\n")
    found = (UNPRINTABLE if multi_line else _NOT_IN_LINE).search(value)
    if found:
        raise ValueError(f"must not contain control characters or bytes that are not UTF-8 text (found "
                         f"U+{ord(found.group()):04X} at character {found.start() + 1})")
    return value


def printable(text: str) -> str:
    """Text for a terminal or a record: a control character (a terminal escape) or a lone surrogate, which input
    never lets in but a hand-edited file, a path or an agent's output may hold, is shown as \\u001b."""
    return UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


Text = Annotated[str, BeforeValidator(plain_text)]  # descriptions, criteria, answers; titles (then made one line)
Line = Annotated[str, BeforeValidator(partial(plain_text, multi_line=False))]  # names: who did it


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Priority(str, Enum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]  # a dict look-up: sorting 1,000 stories calls this often


_PRIORITY_RANK = {p: i for i, p in enumerate(Priority)}


class StoryStatus(str, Enum):
    todo = "todo"  # ready to be worked
    in_progress = "in_progress"
    blocked = "blocked"  # set by a person
    blocked_awaiting_feedback = "blocked_awaiting_feedback"  # held by an open ticket
    done = "done"

    @property
    def is_blocked(self) -> bool:
        return self in (StoryStatus.blocked, StoryStatus.blocked_awaiting_feedback)


class State(str, Enum):
    IDLE = "IDLE"
    BACKLOG_READY = "BACKLOG_READY"
    SPRINT_PLANNED = "SPRINT_PLANNED"
    SPRINT_ACTIVE = "SPRINT_ACTIVE"
    SPRINT_PAUSED = "SPRINT_PAUSED"
    SPRINT_REVIEW = "SPRINT_REVIEW"
    BLOCKED = "BLOCKED"


class SprintStatus(str, Enum):
    planned = "planned"
    active = "active"
    paused = "paused"
    review = "review"
    closed = "closed"


class Model(BaseModel):
    # defer_build: a model's validator is built when first used, so a process pays only for the models it uses
    # (`orch state` starts faster).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class VersionedFile(Model):
    """A whole .orch-state file. Bump SCHEMA_VERSION and extend `migrate` when the shape changes."""

    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: int = 1

    @classmethod
    def migrate(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Upgrade raw data of an older schema_version to the current one (none exist yet)."""
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > cls.SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r} is newer than this program understands ({cls.SCHEMA_VERSION})")
        return data


def _clean_title(value: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise ValueError("must not be empty")
    if len(value) > TITLE_MAX:
        raise ValueError(f"must be at most {TITLE_MAX} characters (got {len(value)})")
    return value


def next_number(counter: int, ids: Iterable[str]) -> int:
    """The number of a new epic, story, ticket or sprint: the file's counter, but above every ID that exists, whatever
    a hand edit (or the restore of an older file) left in the counter. IDs end in their number: E-3, sprint-003."""
    return max([counter, *(int(i.rsplit("-", 1)[1]) + 1 for i in ids)])


class Epic(Model):
    id: str = Field(pattern=EPIC_ID.pattern)
    title: Text
    description: Text = Field("", max_length=TEXT_MAX)
    created_at: datetime = Field(default_factory=utcnow)
    created_by: Line = "unknown"

    _title = field_validator("title")(_clean_title)


class Story(Model):
    id: str = Field(pattern=STORY_ID.pattern)
    epic: str = Field(pattern=EPIC_ID.pattern)
    title: Text
    description: Text = Field("", max_length=TEXT_MAX)
    acceptance_criteria: list[Text] = Field(default_factory=list)
    points: int | None = Field(None, ge=0, le=POINTS_MAX)
    priority: Priority = Priority.medium
    status: StoryStatus = StoryStatus.todo
    sprint: str | None = Field(None, pattern=SPRINT_ID.pattern)
    depends_on: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    created_by: Line = "unknown"

    _title = field_validator("title")(_clean_title)

    @field_validator("acceptance_criteria")
    @classmethod
    def _criteria(cls, value: list[str]) -> list[str]:
        if len(value) > CRITERIA_MAX:
            raise ValueError(f"at most {CRITERIA_MAX} criteria (got {len(value)})")
        for n, criterion in enumerate(value, start=1):
            if len(criterion) > CRITERION_MAX:
                raise ValueError(f"criterion {n} must be at most {CRITERION_MAX} characters (got {len(criterion)})")
        return value

    @field_validator("depends_on")
    @classmethod
    def _story_ids(cls, value: list[str]) -> list[str]:
        for ident in value:
            if not STORY_ID.match(ident):
                raise ValueError(f"{ident!r} is not a story ID like S-3")
        return value


class StoryFile(Story, VersionedFile):
    """A story as its own file, .orch-state/stories/S-<n>.json (schema_version first, then the story)."""


class Backlog(VersionedFile):
    """backlog.json: the project, its counters and epics. Since schema_version 2 each story is a file of its own
    (stories/S-<n>.json, a StoryFile), so a one-story change writes that story alone; `stories` is never
    written here. In memory, a Backlog from `Change.backlog` holds every story in `stories` (the old way of
    working on the whole backlog at once: see unit_of_work.py)."""

    SCHEMA_VERSION: ClassVar[int] = 2
    schema_version: int = 2
    project: str
    next_epic: int = Field(1, ge=1)
    next_story: int = Field(1, ge=1)
    epics: list[Epic] = Field(default_factory=list)
    stories: list[Story] = Field(default_factory=list, exclude=True)  # version 1 files only; never written

    @classmethod
    def migrate(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Version 1 held every story: parsed as it is, and the store moves them to stories/ at the next
        change (see ProjectStore.saved_backlog). A version 2 file holding stories was edited by hand wrongly."""
        data = super().migrate(data)
        if data.get("schema_version", 1) >= 2 and "stories" in data:
            raise ValueError("holds \"stories\", but since schema_version 2 each story is a file of its own in "
                             "stories/ (S-<n>.json)")
        return data

    def epic(self, ident: str) -> Epic | None:
        return next((e for e in self.epics if e.id == ident.upper()), None)

    def story(self, ident: str) -> Story | None:
        return next((s for s in self.stories if s.id == ident.upper()), None)


class BurndownPoint(Model):
    day: date
    remaining_points: int
    remaining_stories: int


class Retrospective(Model):
    text: Text = Field(max_length=TEXT_MAX)
    by: Line
    at: datetime = Field(default_factory=utcnow)
    changes_requested: bool = False


class Sprint(VersionedFile):
    id: str = Field(pattern=SPRINT_ID.pattern)
    goal: Text = Field("", max_length=GOAL_MAX)
    stories: list[str] = Field(default_factory=list)
    status: SprintStatus = SprintStatus.planned
    capacity: int | None = None
    length_days: int = Field(14, ge=1, le=90)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    base_commit: str | None = None  # what was checked out at /sprint start: agents' sprint branch starts there
    burndown: list[BurndownPoint] = Field(default_factory=list)
    retrospective: Retrospective | None = None

    @property
    def number(self) -> int:
        return id_number(self.id)

    @property
    def planned_end(self) -> date | None:
        """The last day of the sprint as planned (None before it starts)."""
        return self.started_at.date() + timedelta(days=self.length_days - 1) if self.started_at else None


def sprint_id(number: int) -> str:
    return f"sprint-{number:03d}"


class Transition(Model):
    command: str
    source: State
    dest: State
    by: Line
    at: datetime = Field(default_factory=utcnow)


class Status(VersionedFile):
    project: str
    state: State = State.IDLE
    current_sprint: str | None = Field(None, pattern=SPRINT_ID.pattern)
    history: list[Transition] = Field(default_factory=list)
