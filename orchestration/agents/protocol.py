"""The agent protocol, version 1: the JSON an agent reads on stdin and the JSON line it answers with.

The orchestrator starts the agent command in the story's worktree, writes one `CodeInput` (as JSON) to its
stdin and closes it. The agent's stdout ends with one line holding a `Reply`; earlier lines are its log.
`parse_reply(stdout)` returns that reply or raises `NotProtocol` with the reason a person reads.

Roles: "code" (CodeInput: do a story), "plan" (PlanInput: break an epic into proposed stories, answered with
`plan` and `stories`) and "clarity" (`ClarityInput` -> `ClarityReply`: how clear is a reply to a ticket's
question; clarity.py runs it). Each input model has its `role` literal. The code and plan reply stays
one model (a role adds optional fields); the clarity reply is scores, not a status. docs/agents.md documents
the code and plan roles with complete examples, docs/tickets.md the clarity role.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROTOCOL_VERSION = 1
Status = Literal["done", "question", "failed"]
STATUSES = ("done", "question", "failed")
REPLY_LINE_MAX = 64 * 1024  # a longer last line is not a reply (and would not fit in a record anyway)
M = TypeVar("M", bound=BaseModel)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_stdin(self) -> bytes:
        """The model as the one JSON line written to a protocol process's stdin."""
        return (self.model_dump_json() + "\n").encode()


class Epic(_In):
    id: str
    title: str


class Story(_In):
    id: str
    title: str
    description: str = ""
    criteria: list[str] = Field(default_factory=list)
    points: int | None = None
    priority: str | None = None
    epic: Epic | None = None


class Context(_In):
    architecture: str = ""  # the project's .orch-state/architecture.md
    best_practices: str = ""  # and best-practices.md


class Previous(_In):
    """An earlier attempt at the same story, so the agent can do better this time."""
    attempt: int
    outcome: str  # an AttemptOutcome's outcome: tests_failed, crashed, timeout, policy, ...
    summary: str = ""
    output: str = ""  # the tail of its output (the test run's when tests failed)


class Answer(_In):
    """A question this story's agent asked, answered through its ticket."""
    ticket: str
    question: str
    answer: str


class CodeInput(_In):
    """What a "code" agent reads on stdin: do this story in `workdir`, on `branch`, test first."""
    protocol: Literal[1] = PROTOCOL_VERSION
    role: Literal["code"] = "code"
    project: str
    sprint: str
    story: Story
    attempt: int = Field(ge=1)
    workdir: str
    branch: str
    test_command: list[str] = Field(default_factory=list)
    context: Context = Field(default_factory=Context)
    previous: list[Previous] = Field(default_factory=list)
    answers: list[Answer] = Field(default_factory=list)


class EpicBrief(_In):
    id: str
    title: str
    description: str = ""


class BacklogItem(_In):
    id: str
    title: str
    status: str


class PlanInput(_In):
    """What a "plan" agent reads on stdin: break `epic` into stories, in a read-only checkout (`workdir`)."""
    protocol: Literal[1] = PROTOCOL_VERSION
    role: Literal["plan"] = "plan"
    project: str
    epic: EpicBrief
    workdir: str = ""
    feedback: str = ""  # what people asked to change (request changes), or empty
    previous_plan: str = ""  # the plan they asked to change, markdown
    context: Context = Field(default_factory=Context)
    backlog: list[BacklogItem] = Field(default_factory=list)
    answers: list[Answer] = Field(default_factory=list)  # its earlier questions, answered through tickets


class ProposedStory(BaseModel):
    """One story of a plan's reply. `key` names it within the plan (P-1); `depends_on` names other keys."""
    model_config = ConfigDict(extra="ignore")
    key: str = Field(pattern=r"^P-[0-9]{1,4}$")
    title: str = Field(min_length=1)
    description: str = ""
    criteria: list[str] = Field(default_factory=list)
    points: int | None = Field(None, ge=0, le=100)
    priority: Literal["critical", "high", "medium", "low"] = "medium"
    phase: str = ""
    depends_on: list[str] = Field(default_factory=list)


class Reply(BaseModel):
    """The last line of an agent's stdout. Unknown keys are ignored, so an agent may add its own (cost, ...)."""
    model_config = ConfigDict(extra="ignore")
    status: Status
    summary: str = ""
    question: str = ""
    options: list[str] = Field(default_factory=list)
    tests_added: list[str] = Field(default_factory=list)
    plan: str = ""  # role "plan": the plan as markdown
    stories: list[ProposedStory] = Field(default_factory=list)  # role "plan": the proposed stories

    @model_validator(mode="after")
    def _a_question_asks_something(self) -> Reply:
        if self.status == "question" and not self.question.strip():
            raise ValueError('a "question" reply needs a non-empty "question"')
        return self


class Said(_In):
    """One message of a ticket's thread."""
    author: str
    text: str


class ClarityInput(_In):
    """What a "clarity" scorer reads on stdin: how clear is `reply` as an answer to `question`? `thread` holds
    the earlier replies in the ticket's thread, oldest first, so an answer over several messages is read whole."""
    protocol: Literal[1] = PROTOCOL_VERSION
    role: Literal["clarity"] = "clarity"
    question: str
    options: list[str] = Field(default_factory=list)
    reply: str
    thread: list[Said] = Field(default_factory=list)


Part = Annotated[int, Field(ge=0, le=100, strict=True)]  # an integer: true or 87.5 is a mistake, not a score


class ClarityReply(BaseModel):
    """The last line of a clarity scorer's stdout: three parts of 0 to 100 (the total is their mean, as with the
    rule scorer) and the follow-up questions to ask when the reply is not clear enough. Unknown keys are ignored."""
    model_config = ConfigDict(extra="ignore")
    completeness: Part
    consistency: Part
    actionability: Part
    missing: list[str] = Field(default_factory=list)


class NotProtocol(ValueError):
    """The agent's stdout does not end with a protocol reply; `reason` says why, for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_reply(stdout: str) -> Reply:
    """The reply on the last non-empty line of `stdout`, or NotProtocol saying why there is none."""
    data = _last_object(stdout)
    if data.get("status") not in STATUSES:
        raise NotProtocol(f"unknown status {_excerpt(json.dumps(data.get('status')))} "
                          f"(expected one of {', '.join(STATUSES)})")
    return _validated(Reply, data)


def _last_object(stdout: str) -> dict:
    """The JSON object on the last non-empty line of `stdout`."""
    lines = stdout.rstrip().splitlines()
    if not lines:
        raise NotProtocol("the agent printed nothing on stdout (the last line must be the JSON reply)")
    last = lines[-1].strip()
    if len(last) > REPLY_LINE_MAX:
        raise NotProtocol(f"the last line of stdout is {len(last)} characters long, more than a reply may be")
    try:
        data = json.loads(last)
    except ValueError:
        raise NotProtocol(f"the last line of stdout is not JSON: {_excerpt(last)}") from None
    if not isinstance(data, dict):
        raise NotProtocol(f"the last line of stdout is JSON but not an object: {_excerpt(last)}")
    return data


def _validated(model: type[M], data: dict) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise NotProtocol(f"the reply is not valid: {where + ': ' if where else ''}"
                          f"{err['msg'].removeprefix('Value error, ')}") from None


def parse_clarity(stdout: str) -> ClarityReply:
    """The clarity reply on the last non-empty line of `stdout`, or NotProtocol saying why there is none."""
    return _validated(ClarityReply, _last_object(stdout))


def _excerpt(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
