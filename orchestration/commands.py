"""The commands, once, in neutral terms; each front-end's names are derived from this table.

A command has a core name (`key`: a state-machine trigger, or the `command` a Change is made with) and its words
(`("backlog", "add_story")`). From the words come the slash command (`/backlog add_story`) and the CLI's
spelling (`backlog add-story`, typed as `orch backlog add-story`). Where a front-end's command is shaped
differently, the entry says so (`slash=` or `cli=`); a command only one front-end has leaves the other `None`.

The core writes command names in backticks in its messages and hints, as words (`backlog add_story`); each
front-end spells them its own way with `spelled(text, front_end)`. Commit lines record where a change came from
with `origin(key, front_end)`: `(/epic by alice)` from Discord, `(orch epic by root)` from the CLI.

To add a command: one `Command(...)` line in COMMANDS below (with `slash=`/`cli=` only where the front-end's
name is not derived from the words), and tests/orchestration/test_commands.py checks that both front-ends
really have it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .state_machine import AUTOMATIC_MEANING

DISCORD = "discord"
CLI = "cli"
FRONT_ENDS = (DISCORD, CLI)
_UNSET = "\0"


@dataclass(frozen=True)
class Command:
    key: str  # the core's name
    words: tuple[str, ...] = ()  # the command as a person says it, the same in every front-end where possible
    slash: str | None = _UNSET  # Discord's name, when not "/" + the words (None: Discord has no such command)
    cli: str | None = _UNSET  # the CLI's name, when not the words with "-" for "_" (None: the CLI has none)
    actor: str | None = None  # not a front-end's command (the agents, the planner): how its changes are labelled

    def name(self, front_end: str) -> str | None:
        """The command as `front_end` spells it (`/backlog add_story`, `backlog add-story`), or None."""
        given = self.slash if front_end == DISCORD else self.cli
        if given != _UNSET:
            return given
        if not self.words:
            return None
        if front_end == DISCORD:
            return "/" + " ".join(self.words)
        return " ".join(w.replace("_", "-") for w in self.words)


COMMANDS: tuple[Command, ...] = (
    Command("register", ("project", "register")),
    Command("list_projects", ("project", "list")),
    Command("unregister", ("project", "unregister")),
    Command("history", ("project", "history")),
    Command("restore", ("project", "restore")),
    Command("epic", ("epic",), slash="/epic create"),
    Command("list_epics", ("epic", "list")),
    Command("edit_epic", ("epic", "edit")),
    Command("plan_epic", ("plan", "start"), slash="/plan"),
    Command("plan_changes", ("plan", "request_changes"), slash="/request_changes"),
    Command("approve_plan", ("plan", "approve"), slash="/approve"),
    Command("reject_plan", ("plan", "reject"), slash="the plan's Reject button"),
    Command("view_backlog", ("backlog", "view")),
    Command("add_story", ("backlog", "add_story")),
    Command("prioritize", ("backlog", "prioritize")),
    Command("remove_story", ("backlog", "remove")),
    Command("set_dependencies", ("backlog", "depend")),
    Command("next_story", ("backlog", "next"), cli="queue"),
    Command("update_story", ("story", "update")),
    Command("retry", ("story", "retry")),
    Command("story_log", ("story", "log")),
    Command("show_story", ("story", "show")),
    Command("edit_story", ("story", "edit")),
    Command("plan", ("sprint", "plan")),
    Command("start", ("sprint", "start")),
    Command("sprint_status", ("sprint", "status")),
    Command("pause", ("sprint", "pause")),
    Command("resume", ("sprint", "resume")),
    Command("review", ("sprint", "review")),
    Command("feedback", ("feedback",)),
    Command("request_changes", ("feedback", "changes_requested"), slash="/feedback changes_requested:True",
            cli="feedback --changes-requested"),
    Command("open_ticket", ("ticket", "open")),
    Command("set_ticket_thread", ("ticket", "open")),  # the bot gives a ticket opened elsewhere its thread
    Command("reply_ticket", ("ticket", "reply"), slash="reply"),  # in Discord: a reply in the ticket's thread
    Command("resolve_ticket", ("ticket", "resolve")),
    Command("reopen_ticket", ("ticket", "reopen")),
    Command("list_tickets", ("ticket", "list")),
    Command("show_ticket", ("ticket", "show")),
    Command("state", ("state",)),
    Command("health", ("health",)),
    Command("agent_run", actor="agent"),
    Command("planner", actor="planner"),
)
BY_KEY = {c.key: c for c in COMMANDS}


def name(key: str, front_end: str) -> str:
    """How `front_end` names the command `key` (the key itself for what the table does not know)."""
    command = BY_KEY.get(key)
    if command is None:
        return AUTOMATIC_MEANING.get(key, key)
    return command.name(front_end) or command.actor or " ".join(command.words) or key


def names(keys: list[str], front_end: str) -> list[str]:
    return [name(k, front_end) for k in keys]


# A commit line ends with where its change came from and who made it: `(/epic by alice)`, `(orch epic by root)`.
SIGNED = re.compile(r"\s*\(([^()]*) by ([^()]*)\)\s*$")


def signed(text: str, key: str, front_end: str, by: str) -> str:
    """A commit line's `text` with its origin and author (SIGNED reads them back)."""
    return f"{text} ({origin(key, front_end)} by {by})"


def origin(key: str, front_end: str) -> str:
    """Where a change came from, for its commit line: `/epic`, `orch epic`, `agent`."""
    command = BY_KEY.get(key)
    if command is not None and command.actor:
        return command.actor
    spelled_name = name(key, front_end)
    return f"orch {spelled_name}" if front_end == CLI and command is not None else spelled_name


_BY_WORDS = {" ".join(c.words): c for c in reversed(COMMANDS) if c.words}  # the first entry wins
# A command's words in backticks, and what follows them inside (`sprint plan S-1`), longest words first.
_BACKTICKED = re.compile(r"`(" + "|".join(sorted(map(re.escape, _BY_WORDS), key=len, reverse=True))
                         + r")((?: [^`]*)?)`")


def spelled(text: str, front_end: str) -> str:
    """The command names the core wrote in backticks (`backlog add_story E-1`), as `front_end` spells them:
    `/backlog add_story E-1` in Discord, `orch backlog add-story E-1` in a terminal."""
    def one(m: re.Match[str]) -> str:
        command = _BY_WORDS[m.group(1)]
        spelled_name = command.name(front_end)
        if spelled_name is None:
            return m.group(0)
        return f"`{'orch ' if front_end == CLI else ''}{spelled_name}{m.group(2)}`"

    return _BACKTICKED.sub(one, text or "")
