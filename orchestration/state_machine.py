"""The project workflow as one `transitions` Machine; every project is a model added to it.

The machine is the single source of truth for "may this command run now?": the allowed list in errors and
in `state` views is read from it, never from a second table.
"""
from __future__ import annotations

from transitions import Machine, MachineError

from .errors import CommandNotAllowed
from .models import State

S = State
_ANY = list(State)
_NOT_IN_REVIEW = [s for s in State if s is not S.SPRINT_REVIEW]

# (trigger, sources, dest). "=" keeps the state (a reflexive transition, recorded in the history all the same).
TRANSITIONS: list[tuple[str, list[State] | State, State | str]] = [
    ("epic", S.IDLE, S.BACKLOG_READY),
    ("epic", [s for s in State if s is not S.IDLE], "="),
    ("add_story", S.IDLE, S.BACKLOG_READY),
    ("add_story", [s for s in State if s is not S.IDLE], "="),
    ("prioritize", _ANY, "="),
    ("remove_story", _ANY, "="),
    ("update_story", _NOT_IN_REVIEW, "="),
    ("plan", [S.IDLE, S.BACKLOG_READY], S.SPRINT_PLANNED),
    ("plan", S.SPRINT_PLANNED, "="),  # re-plan before the start
    ("start", S.SPRINT_PLANNED, S.SPRINT_ACTIVE),
    ("pause", [S.SPRINT_ACTIVE, S.BLOCKED], S.SPRINT_PAUSED),
    ("resume", S.SPRINT_PAUSED, S.SPRINT_ACTIVE),
    ("review", [S.SPRINT_ACTIVE, S.SPRINT_PAUSED, S.BLOCKED], S.SPRINT_REVIEW),
    ("feedback", S.SPRINT_REVIEW, S.IDLE),
    ("request_changes", S.SPRINT_REVIEW, S.BACKLOG_READY),
    # Fired by the orchestrator itself, never typed by a person:
    ("block", S.SPRINT_ACTIVE, S.BLOCKED),  # every unfinished story of the sprint is blocked
    ("unblock", S.BLOCKED, S.SPRINT_ACTIVE),  # some story of the sprint can be worked again
]
AUTOMATIC = frozenset({"block", "unblock"})
# How the automatic changes read in a project's history, in any front-end.
AUTOMATIC_MEANING = {"block": "blocked (every open story of the sprint)", "unblock": "unblocked (a story can be worked)"}

# What a person would most likely do next, per state (shown as a hint beside a refusal).
NEXT_STEP: dict[State, str] = {
    S.IDLE: "Add work with `epic`, or plan the stories left in the backlog with `sprint plan`.",
    S.BACKLOG_READY: "Shape the backlog, then `sprint plan`.",
    S.SPRINT_PLANNED: "Start the sprint with `sprint start` (or `sprint plan` again to change it).",
    S.SPRINT_ACTIVE: "Work the stories (`story update`); `sprint status` shows progress.",
    S.SPRINT_PAUSED: "Continue with `sprint resume`, or end early with `sprint review`.",
    S.SPRINT_REVIEW: "Close the sprint with `feedback`.",
    S.BLOCKED: "Every open story of the sprint is blocked: answer its tickets or unblock a story.",
}


class ProjectModel:
    """Holds one project's state for the machine. Kept bare on purpose: a trigger named like an attribute
    of the model would silently not be bound."""

    def __init__(self, name: str, state: State) -> None:
        self.name = name
        self.state = state


def _build_machine() -> Machine:
    machine = Machine(model=None, states=list(State), initial=S.IDLE, auto_transitions=False, send_event=False)
    for trigger, sources, dest in TRANSITIONS:
        machine.add_transition(trigger, sources, dest)
    return machine


MACHINE = _build_machine()


def new_model(name: str, state: State) -> ProjectModel:
    model = ProjectModel(name, state)
    MACHINE.add_model(model, initial=state)
    return model


def forget_model(model: ProjectModel) -> None:
    MACHINE.remove_model(model)


def allowed_commands(state: State, *, include_automatic: bool = False) -> list[str]:
    """The triggers the machine accepts in `state`, in definition order."""
    names = MACHINE.get_triggers(state)
    return [n for n in dict.fromkeys(names) if include_automatic or n not in AUTOMATIC]


def check(model: ProjectModel, command: str) -> None:
    """Raise CommandNotAllowed unless the machine accepts `command` in the model's current state."""
    if command not in MACHINE.get_triggers(model.state):
        raise CommandNotAllowed(model.state.value, command, allowed_commands(model.state), NEXT_STEP[model.state])


def fire(model: ProjectModel, command: str) -> tuple[State, State]:
    """Run `command` on the model; returns (source, dest)."""
    check(model, command)
    source = model.state
    try:
        model.trigger(command)
    except MachineError:  # pragma: no cover - check() above makes this unreachable
        raise CommandNotAllowed(source.value, command, allowed_commands(source), NEXT_STEP[source]) from None
    return source, model.state
