"""What the orchestrator's commands return: plain typed data that any front-end can render."""
from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .agents.records import AttemptRecord
from .models import BurndownPoint, Epic, Sprint, State, Story, Transition


class _Data(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built when first used (see models.Model)


class Result(_Data):
    project: str
    state: State
    allowed: list[str] = Field(default_factory=list, description="commands the machine accepts now")
    next_step: str = ""
    warning: str | None = Field(None, description="the change was made, but this went wrong after it: say so "
                                                  "beside the success (\"saved; but ...\"), never as a failure")


class Cascade(_Data):
    """What a change set off besides itself."""

    state_change: tuple[State, State] | None = None
    stories_unblocked: list[str] = Field(default_factory=list)
    stories_ready: list[str] = Field(default_factory=list, description="stories whose dependencies are now all done")
    tickets_resolved: list[str] = Field(default_factory=list, description="decided: status resolved")
    tickets_closed: list[str] = Field(default_factory=list, description="no longer needed (their story was done or "
                                      "retried): status closed")
    sprint_to_review: bool = False

    def __bool__(self) -> bool:
        return bool(self.state_change or self.stories_unblocked or self.stories_ready or self.tickets_resolved
                    or self.tickets_closed)


class ProjectInfo(_Data):
    name: str
    path: Path
    state: State | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    created_at: datetime


class Registered(Result):
    info: ProjectInfo
    created_files: list[str]
    adopted: bool
    renamed_from: str | None = Field(None, description="the name its adopted files had (they have this one now)")


class Unregistered(_Data):
    name: str
    path: Path
    channel_id: int | None


class EpicCreated(Result):
    epic: Epic


class StoryChanged(Result):
    action: str  # added | reprioritized | removed | status
    story: Story
    previous: str | None = None
    cascade: Cascade = Field(default_factory=Cascade)


class BacklogPage(Result):
    epics: list[Epic]
    stories: list[Story]
    page: int
    pages: int
    total: int
    epic_filter: str | None = None
    status_filter: str | None = None
    stamp: str = Field("", description="a fingerprint of what the pages show (the epics, the filtered stories in "
                       "order): a page turned after it changed says so")


class AgentRun(_Data):
    story: str
    attempt: int
    phase: str  # starting, agent, testing, checking
    elapsed_s: float


class StoryLog(_Data):
    project: str
    story: str
    attempts: list[AttemptRecord]
    log_tail: str = ""  # the end of the latest attempt's full output
    log_file: Path | None = None  # on the machine that runs the agents


class SprintView(Result):
    sprint: Sprint
    stories: list[Story]
    done_stories: int
    total_stories: int
    done_points: int
    total_points: int
    blocked: list[str]
    burndown: list[BurndownPoint]
    days: list[date] = Field(default_factory=list, description="the sprint's calendar: start to planned end "
                             "(or to today / the real end, if later)")
    elapsed_days: int = Field(0, description="how many of `days` have passed (up to today or the real end)")
    cascade: Cascade = Field(default_factory=Cascade)
    agents: list[AgentRun] = Field(default_factory=list, description="the agents working on its stories now")
    branch: str | None = Field(None, description="the sprint branch agents merged their stories into, if any")
    commits: list[str] = Field(default_factory=list, description="its commits since the sprint began: 'sha subject'")
    latest_attempts: dict[str, AttemptRecord] = Field(default_factory=dict, description="story -> its latest agent "
                                                      "attempt, as .orch-state/runs/ records it (any process's)")


class SprintPlanned(SprintView):
    """What `sprint plan` did; again before the start (`replanned`), which stories joined and left, or that nothing
    changed (`unchanged`: nothing was written or committed)."""

    replanned: bool = False
    unchanged: bool = False
    joined: list[str] = Field(default_factory=list)
    left: list[str] = Field(default_factory=list)


class StateView(Result):
    current_sprint: str | None
    epics: int
    stories_by_status: dict[str, int]
    blocked_in_sprint: list[str]
    history: list[Transition]


class ProjectHealth(_Data):
    name: str
    path: Path
    ok: bool
    state: State | None = None
    problems: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="not failures, but not as they should stay: "
                                "uncommitted hand edits")
    pending_commit_lines: int = 0
    last_commit: str | None = None
    transitions_last_7_days: int = Field(0, description="state changes in status.json's history over the last 7 days")


class Health(_Data):
    ok: bool
    projects: list[ProjectHealth]
    runner: str = ""  # where agent attempts run and how that is now (local: running/limit; celery: broker, workers)


# -- seeing and editing stories and epics; a project's history and its restore -------------------------------

class StoryRef(_Data):
    """Another story, as a story's detail names it."""
    id: str
    title: str
    status: str


class TicketRef(_Data):
    id: str
    status: str
    question: str


class HistoryEntry(_Data):
    """One commit of .orch-state: who (the names its lines record), what (its lines), when."""
    sha: str
    at: datetime
    who: list[str] = Field(default_factory=list)
    subject: str
    lines: list[str] = Field(default_factory=list, description="what it did, one line per change (the subject "
                             "alone for a one-change commit)")


class StoryDetail(Result):
    story: Story
    epic: Epic | None = None
    depends_on: list[StoryRef] = Field(default_factory=list)
    dependants: list[StoryRef] = Field(default_factory=list, description="the stories that wait for this one")
    tickets: list[TicketRef] = Field(default_factory=list)
    sprint_status: str | None = None
    attempts: int = 0
    last_attempt: AttemptRecord | None = None
    history: list[HistoryEntry] = Field(default_factory=list, description="the latest commits naming the story")


class FieldChange(_Data):
    field: str
    before: str
    after: str


class StoryEdited(Result):
    story: Story
    changes: list[FieldChange] = Field(default_factory=list, description="empty: nothing changed, nothing saved")


class EpicSummary(_Data):
    epic: Epic
    stories: int
    by_status: dict[str, int]
    points: int
    done_points: int


class EpicList(Result):
    epics: list[EpicSummary]


class EpicEdited(Result):
    epic: Epic
    changes: list[FieldChange] = Field(default_factory=list, description="empty: nothing changed, nothing saved")


class ProjectHistory(_Data):
    project: str
    entries: list[HistoryEntry]
    page: int
    has_more: bool


class Restored(Result):
    commit: str = Field(description="the commit whose .orch-state was brought back (full sha)")
    subject: str = ""
    previous: str | None = Field(None, description="the commit that holds the state as it was before: restoring "
                                 "it undoes this restore")
    restored: bool = Field(True, description="False: .orch-state held that content already; nothing changed")
    stories_added: list[str] = Field(default_factory=list)
    stories_removed: list[str] = Field(default_factory=list)
    stories_changed: list[str] = Field(default_factory=list)
    epics_added: list[str] = Field(default_factory=list)
    epics_removed: list[str] = Field(default_factory=list)
    epics_changed: list[str] = Field(default_factory=list)
    sprint: tuple[str | None, str | None] | None = Field(None, description="the current sprint before and after, "
                                                         "if it changed")
    state_change: tuple[State, State] | None = None
    files_written: int = 0
    files_removed: int = 0

    def items_changed(self) -> list[tuple[str, list[str]]]:
        """The stories and epics it changed, labelled ("Stories back", IDs), as every front-end names them."""
        return [(label, ids) for label, ids in (
            ("Stories back", self.stories_added), ("Stories gone", self.stories_removed),
            ("Stories changed", self.stories_changed), ("Epics back", self.epics_added),
            ("Epics gone", self.epics_removed), ("Epics changed", self.epics_changed)) if ids]
