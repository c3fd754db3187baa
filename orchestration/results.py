"""What the orchestrator's commands return: plain typed data that any front-end can render."""
from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from .agents.records import AttemptRecord
from .models import BurndownPoint, Epic, Sprint, State, Story, Transition


class Result(BaseModel):
    project: str
    state: State
    allowed: list[str] = Field(default_factory=list, description="commands the machine accepts now")
    next_step: str = ""
    warning: str | None = Field(None, description="the change was made, but this went wrong after it: say so "
                                                  "beside the success (\"saved; but ...\"), never as a failure")


class Cascade(BaseModel):
    """What a change set off besides itself."""

    state_change: tuple[State, State] | None = None
    stories_unblocked: list[str] = Field(default_factory=list)
    stories_ready: list[str] = Field(default_factory=list, description="stories whose dependencies are now all done")
    tickets_resolved: list[str] = Field(default_factory=list)
    sprint_to_review: bool = False

    def __bool__(self) -> bool:
        return bool(self.state_change or self.stories_unblocked or self.stories_ready or self.tickets_resolved)


class ProjectInfo(BaseModel):
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


class Unregistered(BaseModel):
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


class AgentRun(BaseModel):
    story: str
    attempt: int
    phase: str  # starting, agent, testing, checking
    elapsed_s: float


class StoryLog(BaseModel):
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


class StateView(Result):
    current_sprint: str | None
    epics: int
    stories_by_status: dict[str, int]
    blocked_in_sprint: list[str]
    history: list[Transition]


class ProjectHealth(BaseModel):
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


class Health(BaseModel):
    ok: bool
    projects: list[ProjectHealth]
    runner: str = ""  # where agent attempts run and how that is now (local: running/limit; celery: broker, workers)
