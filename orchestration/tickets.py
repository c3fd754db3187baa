"""Tickets: a question a person must answer before the work it holds up can go on.

Stored in `.orch-state/tickets.json` (a `TicketFile`, with `schema_version` like every state file). Each
ticket keeps the Discord thread it is discussed in (`thread_id`): that is the persisted thread -> ticket
mapping, so a reply after a restart still finds its ticket. The commands are in ticket_service.py.
"""
from __future__ import annotations

import re
from datetime import datetime
from enum import Enum

from pydantic import Field, field_validator

from .models import EPIC_ID, STORY_ID, TEXT_MAX, Line, Model, Text, Story, StoryStatus, VersionedFile, utcnow
from .results import Cascade, Result
from .scoring import Score

TICKET_ID = re.compile(r"^TK-[1-9][0-9]*$")
QUESTION_MAX = 1000
OPTION_MAX = 100
OPTIONS_MAX = 10
THREAD_NAME_MAX = 100  # Discord's limit for a thread name


class TicketStatus(str, Enum):
    open = "open"
    resolved = "resolved"  # answered: by a clear reply, or decided by a person
    closed = "closed"  # no longer needed: its story was finished without an answer


class Reply(Model):
    author: Line
    text: Text = Field(max_length=TEXT_MAX)
    at: datetime = Field(default_factory=utcnow)
    score: Score | None = None


class Ticket(Model):
    id: str = Field(pattern=TICKET_ID.pattern)
    question: Text = Field(min_length=1, max_length=QUESTION_MAX)
    context: Text = Field("", max_length=TEXT_MAX)
    options: list[Text] = Field(default_factory=list, max_length=OPTIONS_MAX)
    story: str | None = Field(None, pattern=STORY_ID.pattern)
    # The story's status when the ticket took it; it returns to it when the ticket resolves (todo or in_progress).
    story_was: StoryStatus | None = None
    epic: str | None = Field(None, pattern=EPIC_ID.pattern)  # the epic whose planning asked it (no story then)
    status: TicketStatus = TicketStatus.open
    thread_id: int | None = None
    replies: list[Reply] = Field(default_factory=list)
    resolution: Text | None = Field(None, max_length=TEXT_MAX)
    resolved_by: Line | None = None
    resolved_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    created_by: Line = "unknown"

    @field_validator("question")
    @classmethod
    def _one_line_ish(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("options")
    @classmethod
    def _clean_options(cls, value: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(" ".join(o.split()) for o in value if o.strip()))
        for option in cleaned:
            if len(option) > OPTION_MAX:
                raise ValueError(f"each option must be at most {OPTION_MAX} characters")
        return cleaned

    @property
    def number(self) -> int:
        return int(self.id[3:])

    @property
    def is_open(self) -> bool:
        return self.status is TicketStatus.open

    @property
    def thread_name(self) -> str:
        """`TK-7: <question>`, cut to Discord's 100 characters."""
        head = f"{self.id}: "
        question = " ".join(self.question.split())
        room = THREAD_NAME_MAX - len(head)
        return head + (question if len(question) <= room else question[: room - 1].rstrip() + "…")


class TicketFile(VersionedFile):
    project: str
    next_ticket: int = Field(1, ge=1)
    tickets: list[Ticket] = Field(default_factory=list)

    def ticket(self, ident: str) -> Ticket | None:
        wanted = normalize_id(ident)
        return next((t for t in self.tickets if t.id == wanted), None)

    def by_thread(self, thread_id: int) -> Ticket | None:
        return next((t for t in self.tickets if t.thread_id == thread_id), None)

    def open_for_story(self, story: str) -> list[Ticket]:
        return [t for t in self.tickets if t.story == story and t.is_open]


def normalize_id(ident: str) -> str:
    """"TK-3", "tk-3" and "3" all name TK-3."""
    raw = (ident or "").strip().upper()
    return f"TK-{raw}" if raw.isdigit() else raw


# -- what the ticket commands return ---------------------------------------------------------------------
class TicketView(Result):
    action: str  # opened | thread | thread_kept (it had one already) | resolved | reopened | shown
    ticket: Ticket
    story: Story | None = None
    cascade: Cascade = Field(default_factory=Cascade)


class ReplyOutcome(Result):
    """What a reply in a ticket's thread did: resolved the ticket, asked for more, or nothing."""

    action: str  # resolved | unclear | ignored
    ticket: Ticket
    score: Score | None = None
    threshold: int
    follow_ups: list[str] = Field(default_factory=list)
    story: Story | None = None
    cascade: Cascade = Field(default_factory=Cascade)
    reason: str = ""  # why a reply was ignored


class TicketList(Result):
    tickets: list[Ticket]
    status_filter: str | None = None
    open_count: int = 0
