"""Typed errors. Each carries the sentence a person should read; front-ends render them in one place."""
from __future__ import annotations


class OrchError(Exception):
    """Base of every error a front-end shows to a person. `message` says what went wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class ConfigError(OrchError):
    pass


class InvalidInput(OrchError):
    def __init__(self, field: str, reason: str, hint: str | None = None) -> None:
        # "points must be 0 or more." reads as a sentence; "story: there is no story 'S-9'." names the field.
        sentence = reason.startswith(("must ", "is ", "has "))
        super().__init__(f"{field} {reason}" + ("" if reason.endswith(".") else ".") if sentence
                         else f"{field}: {reason}", hint)
        self.field = field
        self.reason = reason


class NotFound(OrchError):
    def __init__(self, kind: str, ident: str, hint: str | None = None) -> None:
        super().__init__(f"No {kind} {ident!s} here.", hint)
        self.kind = kind
        self.ident = ident


class ProjectNotFound(NotFound):
    def __init__(self, name: str, hint: str | None = "`project list` shows the registered projects.") -> None:
        super().__init__("project", f'"{name}"', hint)
        self.name = name


class ProjectExists(OrchError):
    """The repository is registered already. Without a name: by another Discord server, whose project's name,
    path and channel are not for this one to see."""

    def __init__(self, name: str | None, path: str | None = None, channel_id: int | None = None) -> None:
        if name is None:
            super().__init__("This repository is already registered in another Discord server.",
                             "A repository belongs to one server; ask that server's admins to unregister it first.")
        else:
            where = f" Its channel is <#{channel_id}>." if channel_id else ""
            super().__init__(f'This repository is already registered as "{name}" ({path}).{where}')
        self.name = name
        self.path = path
        self.channel_id = channel_id


class CommandNotAllowed(OrchError):
    """The state machine refused a command. `allowed` is derived from the machine, never hand-written."""

    def __init__(self, state: str, command: str, allowed: list[str], hint: str | None = None) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none"
        super().__init__(f'"{command}" is not possible while the project is {state}. Allowed now: {allowed_text}.', hint)
        self.state = state
        self.command = command
        self.allowed = allowed


class StateCorrupt(OrchError):
    """A .orch-state file does not parse or does not validate. The file is never overwritten."""

    def __init__(self, file: str, line: int | None, problem: str, how_to_recover: str) -> None:
        where = f"{file}, line {line}" if line else file
        super().__init__(f"{where} is damaged: {problem}", how_to_recover)
        self.file = file
        self.line = line
        self.problem = problem
        self.how_to_recover = how_to_recover


class UnsafePath(OrchError):
    pass


class Busy(OrchError):
    """Another process holds the project's lock for longer than we wait."""


class StateLocked(Busy):
    """The project's file lock is held by another process right now (a caller may wait and try again)."""


class WriteFailed(OrchError):
    """The state files could not be written (disk full, a folder in the way, ...)."""
