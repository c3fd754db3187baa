"""`orch`: the orchestrator from a terminal, for when Discord is not at hand.

A thin front-end, like the bot: each invocation parses its arguments, calls ONE Orchestrator method (the same
ones the bot calls), prints the typed result (readable text, or JSON with --json) and closes the orchestrator,
so that the git commit has landed when the process exits. `orch run` alone stays: it runs the agents in the
foreground, printing their progress as it goes, until Ctrl-C or (--until-idle) until no work is left.
Failures: an OrchError is one line on stderr and exit code 1; bad usage is argparse's message and exit code 2;
a traceback never reaches the user. What it prints goes through `printable`: no terminal escape reaches the
terminal, even one a hand edit put in a file.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import logging
import os
import re
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from pydantic import BaseModel, ConfigDict

from .commands import CLI, name as command_name, names as command_names, spelled
from .config import load_config
from .errors import CommandNotAllowed, ConfigError, InvalidInput, OrchError
from .events import Event
from .inputs import id_list
from .models import Sprint, SprintStatus, State, Story, StoryStatus, printable
from .queue import QueueView
from .results import (
    BacklogPage, Cascade, EpicCreated, EpicEdited, EpicList, FieldChange, Health, HistoryEntry, ProjectHistory,
    ProjectInfo, Registered, Restored, Result, SprintPlanned, SprintView, StateView, StoryChanged, StoryDetail,
    StoryEdited, StoryLog, StoryRef, Unregistered,
)
from .service import Orchestrator
from .tickets import ReplyOutcome, Ticket, TicketList, TicketView
from .wording import plural

if TYPE_CHECKING:  # the agents' modules are imported by the commands that use them: the others start faster
    from .agents.planning import PlanView
    from .agents.records import AttemptRecord
    from .agents.scheduler import StoryProgress

Handler = Callable[[Orchestrator, argparse.Namespace], Awaitable[Any]]

# Options that may stand before or after the subcommand (`orch --json state` and `orch state --json`) are
# declared with default=SUPPRESS on every level, so a subcommand never overwrites what an outer level parsed;
# their defaults are filled in once, here.
LATE_DEFAULTS: dict[str, Any] = {"config": None, "json": False, "by": None, "verbose": False, "project": None,
                                 "epic": None, "status": None, "page": 1}


# -- commands: one Orchestrator call each ------------------------------------------------------------------------

async def _project_register(o: Orchestrator, a: argparse.Namespace) -> Registered:
    return await o.register_project(a.path, a.name, by=a.by)


async def _project_list(o: Orchestrator, a: argparse.Namespace) -> list[ProjectInfo]:
    return await o.list_projects()


async def _project_unregister(o: Orchestrator, a: argparse.Namespace) -> Unregistered:
    return await o.unregister_project(a.name, by=a.by)


async def _epic(o: Orchestrator, a: argparse.Namespace) -> EpicCreated:
    return await o.create_epic(project_of(o, a), a.title, a.description, by=a.by)


async def _epic_list(o: Orchestrator, a: argparse.Namespace) -> EpicList:
    return await o.list_epics(project_of(o, a))


async def _epic_edit(o: Orchestrator, a: argparse.Namespace) -> EpicEdited:
    return await o.edit_epic(project_of(o, a), a.epic, title=a.title, description=a.description, by=a.by)


async def _project_history(o: Orchestrator, a: argparse.Namespace) -> ProjectHistory:
    return await o.project_history(project_of(o, a), page=a.page)


async def _project_restore(o: Orchestrator, a: argparse.Namespace) -> Restored:
    return await o.restore_project(project_of(o, a), a.commit, by=a.by)


async def _plan_start(o: Orchestrator, a: argparse.Namespace) -> PlanView:
    name = project_of(o, a)
    view = await o.plan_epic(name, a.epic, by=a.by, run=a.wait)
    return await o.wait_plan(name, view.epic) if a.wait else view


async def _plan_changes(o: Orchestrator, a: argparse.Namespace) -> PlanView:
    name = project_of(o, a)
    view = await o.request_plan_changes(name, a.epic, a.feedback, by=a.by, run=a.wait)
    return await o.wait_plan(name, view.epic) if a.wait else view


async def _plan_show(o: Orchestrator, a: argparse.Namespace) -> PlanView:
    return await o.plan_view(project_of(o, a), a.epic)


async def _plan_approve(o: Orchestrator, a: argparse.Namespace) -> PlanView:
    return await o.approve_plan(project_of(o, a), a.epic, id_list(*a.items) or "all", by=a.by)


async def _plan_reject(o: Orchestrator, a: argparse.Namespace) -> PlanView:
    return await o.reject_plan(project_of(o, a), a.epic, by=a.by)


async def _backlog_view(o: Orchestrator, a: argparse.Namespace) -> BacklogPage:
    return await o.view_backlog(project_of(o, a), epic=a.epic, status=a.status, page=a.page)


async def _backlog_add_story(o: Orchestrator, a: argparse.Namespace) -> StoryChanged:
    depends = id_list(*a.depends_on)
    return await o.add_story(project_of(o, a), a.epic, a.title, description=a.description, points=a.points,
                             priority=a.priority, acceptance_criteria=a.criteria, depends_on=depends, by=a.by)


async def _backlog_prioritize(o: Orchestrator, a: argparse.Namespace) -> StoryChanged:
    return await o.prioritize_story(project_of(o, a), a.story, a.priority, by=a.by)


async def _backlog_remove(o: Orchestrator, a: argparse.Namespace) -> StoryChanged:
    return await o.remove_story(project_of(o, a), a.story, by=a.by)


async def _backlog_depend(o: Orchestrator, a: argparse.Namespace) -> StoryChanged:
    depends = id_list(*a.on)  # --on "" leaves nothing: no dependencies
    return await o.set_dependencies(project_of(o, a), a.story, depends, by=a.by)


async def _queue(o: Orchestrator, a: argparse.Namespace) -> QueueView:
    return await o.next_story(project_of(o, a))


async def _story_update(o: Orchestrator, a: argparse.Namespace) -> StoryChanged:
    return await o.update_story(project_of(o, a), a.story, a.new_status, by=a.by)


async def _story_show(o: Orchestrator, a: argparse.Namespace) -> StoryDetail:
    return await o.story_detail(project_of(o, a), a.story, history=a.history)


async def _story_edit(o: Orchestrator, a: argparse.Namespace) -> StoryEdited:
    fields: dict[str, Any] = {k: v for k in ("title", "description", "epic") if (v := getattr(a, k)) is not None}
    if a.points is not None:
        fields["points"] = None if a.points == "none" else a.points
    if a.criteria or a.no_criteria:
        fields["acceptance_criteria"] = a.criteria or []
    if not fields:
        raise InvalidInput("story edit", "nothing to change was given.",
                           "Give --title, --description, --points, --epic or --criteria (see orch story edit -h).")
    return await o.edit_story(project_of(o, a), a.story, by=a.by, **fields)


async def _story_retry(o: Orchestrator, a: argparse.Namespace) -> StoryChanged:
    return await o.retry_story(project_of(o, a), a.story, by=a.by)


async def _story_log(o: Orchestrator, a: argparse.Namespace) -> StoryLog:
    return await o.story_log(project_of(o, a), a.story, lines=a.lines)


async def _sprint_plan(o: Orchestrator, a: argparse.Namespace) -> SprintView:
    stories = id_list(*a.stories)
    return await o.plan_sprint(project_of(o, a), stories or None, goal=a.goal, capacity=a.capacity, by=a.by)


def _sprint_step(method: str) -> Handler:
    async def run(o: Orchestrator, a: argparse.Namespace) -> SprintView:
        return await getattr(o, method)(project_of(o, a), by=a.by)
    return run


async def _sprint_status(o: Orchestrator, a: argparse.Namespace) -> SprintView:
    return await o.sprint_status(project_of(o, a))


async def _feedback(o: Orchestrator, a: argparse.Namespace) -> SprintView:
    return await o.feedback(project_of(o, a), a.text, by=a.by, changes_requested=a.changes_requested)


async def _ticket_open(o: Orchestrator, a: argparse.Namespace) -> TicketView:
    return await o.open_ticket(project_of(o, a), a.question, story=a.story, context=a.context, options=a.option,
                               by=a.by)


async def _ticket_list(o: Orchestrator, a: argparse.Namespace) -> TicketList:
    return await o.list_tickets(project_of(o, a), a.status)


async def _ticket_show(o: Orchestrator, a: argparse.Namespace) -> TicketView:
    return await o.show_ticket(project_of(o, a), a.ticket)


async def _ticket_resolve(o: Orchestrator, a: argparse.Namespace) -> TicketView:
    return await o.resolve_ticket(project_of(o, a), a.ticket, a.resolution, by=a.by)


async def _ticket_reopen(o: Orchestrator, a: argparse.Namespace) -> TicketView:
    return await o.reopen_ticket(project_of(o, a), a.ticket, by=a.by)


async def _ticket_reply(o: Orchestrator, a: argparse.Namespace) -> ReplyOutcome:
    # As if `--by` had written `text` in the ticket's thread: scored, and resolving the ticket if clear enough.
    return await o.reply_to_ticket(project_of(o, a), a.ticket, a.by, a.text)


async def _state(o: Orchestrator, a: argparse.Namespace) -> StateView:
    return await o.state(project_of(o, a))


async def _health(o: Orchestrator, a: argparse.Namespace) -> Health:
    return await o.health()


class RunReport(BaseModel):
    """How `orch run` ended (the last line it prints; its progress lines come before)."""
    model_config = ConfigDict(defer_build=True)  # built when first used (see models.Model)
    kind: str = "finished"
    reason: str  # "idle": no story was left for an agent (--until-idle); "stopped": SIGINT or SIGTERM
    stopped_attempts: int  # running attempts stopped on the way out (their stories went back to todo)
    projects: dict[str, State | None]  # the projects with an agent, and their state at the end


async def _run_agents(o: Orchestrator, a: argparse.Namespace) -> RunReport:
    """Run the agents in the foreground, as the bot does, printing a line per step of each story's run."""
    from .agents.scheduler import STORY_RUN
    names = [e.name for e in await o.project_entries() if o.config.agents.for_project(e.name).enabled]
    if not names:
        raise ConfigError("No registered project has an agent configured, so there is nothing to run.",
                          "Set [agents] command in the config (see docs/agents.md), and register a project.")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # both close cleanly: agents stopped, their stories back to todo
        loop.add_signal_handler(sig, stop.set)
    printer = ThreadPoolExecutor(1)  # in order, and off the event loop: a reader that lags (| less) blocks no agent
    try:
        o.subscribe(lambda e: printer.submit(_out, _progress_json(e) if a.json else _progress_line(e))
                    if e.kind == STORY_RUN else None)
        await o.start()  # commit what a crash left
        await o.agents.start()  # Busy if another process runs the agents
        until = "until no story is left for them" if a.until_idle else "until Ctrl-C (or SIGTERM)"
        printer.submit(_out, json.dumps({"kind": "started", "projects": names}) if a.json
                       else f"Running the agents of {', '.join(names)} {until}.")
        waits = [asyncio.create_task(stop.wait())]
        if a.until_idle:
            waits.append(asyncio.create_task(o.agents.until_idle()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        running = o.agents.runner.running_count()
        await o.agents.close()  # stops what still runs; its outcome ("cancelled") is applied
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(printer.shutdown)  # every line printed before the last one
    states = {p.name: p.state for p in await o.list_projects() if p.name in names}
    return RunReport(reason="stopped" if stop.is_set() else "idle", stopped_attempts=running, projects=states)


def project_of(o: Orchestrator, a: argparse.Namespace, cwd: Path | None = None) -> str:
    """--project, else the registered project whose repo holds the current directory, else the only one."""
    if a.project:
        return a.project
    entries = o.registry.all()
    here = (cwd or Path.cwd()).resolve()
    inside = [e for e in entries if e.path == here or e.path in here.parents]
    if inside:
        return max(inside, key=lambda e: len(e.path.parts)).name  # the innermost, for nested repos
    if len(entries) == 1:
        return entries[0].name
    if not entries:
        raise InvalidInput("project", "no project is registered yet.", "Register one: orch project register PATH")
    names = ", ".join(e.name for e in entries)
    raise InvalidInput("project", "which project? Several are registered and this folder is in none of them.",
                       f"Add --project NAME (one of: {names}), or run orch inside a project's repository.")


# -- the parser ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    S = argparse.SUPPRESS
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=S,
                        help="config file (default: $ORCH_CONFIG, else ./config.toml)")
    common.add_argument("--json", action="store_true", default=S, help="print the result as JSON, for scripts")
    common.add_argument("--by", metavar="NAME", default=S, help="who to record as the author (default: your user name)")
    common.add_argument("-v", "--verbose", action="store_true", default=S, help="log what happens on stderr")
    scoped = argparse.ArgumentParser(add_help=False)
    scoped.add_argument("-p", "--project", metavar="NAME", default=S,
                        help="the project (default: the one whose repository you are in, or the only one)")
    view = argparse.ArgumentParser(add_help=False)
    view.add_argument("--epic", metavar="E-N", default=S, help="only this epic's stories")
    view.add_argument("--status", metavar="STATUS", default=S, help="only stories with this status")
    view.add_argument("--page", metavar="N", type=int, default=S, help="page number (10 stories a page)")

    parser = _Parser(
        prog="orch", parents=[common, scoped],
        description="Drive the Scrum workflow of registered project repositories from a terminal "
                    "(the same commands as the Discord bot).",
        epilog="Example: orch epic \"Checkout\" --project shop; orch backlog; orch sprint plan --capacity 10")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(group: Any, name: str, handler: Handler, help: str, *parents: argparse.ArgumentParser,
                **kw: Any) -> argparse.ArgumentParser:
        sub = group.add_parser(name, help=help, description=help, parents=[common, *parents], **kw)
        sub.set_defaults(handler=handler)
        return sub

    project = commands.add_parser("project", help="register, list and unregister project repositories")
    project_cmds = project.add_subparsers(dest="project_command", metavar="ACTION", required=True)
    p = command(project_cmds, "register", _project_register, "register a git repository as a project")
    p.add_argument("path", metavar="PATH", help="the repository's top folder (inside an allowed root)")
    p.add_argument("--name", help="the project's name (default: the folder's name)")
    command(project_cmds, "list", _project_list, "list the registered projects")
    p = command(project_cmds, "unregister", _project_unregister, "forget a project (its files stay)")
    p.add_argument("name", metavar="NAME")
    p = command(project_cmds, "history", _project_history, "the project's latest changes from git: who, what, when",
                scoped)
    p.add_argument("--page", metavar="N", type=_positive, default=1, help="page number (10 changes a page)")
    p = command(project_cmds, "restore", _project_restore, "bring .orch-state back to a commit's content, as a new "
                "commit (history is kept)", scoped)
    p.add_argument("commit", metavar="SHA", help="a commit of the branch's history (`orch project history`)")

    # `orch epic TITLE` (from before epics had actions) still creates one: see _epic_shorthand.
    epic = commands.add_parser("epic", help="create, list and edit epics")
    epic_cmds = epic.add_subparsers(dest="epic_command", metavar="ACTION", required=True)
    p = command(epic_cmds, "add", _epic, "create an epic (`orch epic TITLE` does too)", scoped)
    p.add_argument("title", metavar="TITLE")
    p.add_argument("--description", "-d", default="")
    command(epic_cmds, "list", _epic_list, "the epics, with their stories by status and their points", scoped)
    p = command(epic_cmds, "edit", _epic_edit, "change an epic's title or description", scoped)
    p.add_argument("epic", metavar="E-N")
    p.add_argument("--title", metavar="TEXT")
    p.add_argument("--description", "-d", metavar="TEXT")

    plan = commands.add_parser("plan", help="plan an epic with the planning agent, then approve its stories")
    plan_cmds = plan.add_subparsers(dest="plan_command", metavar="ACTION", required=True)
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument("--wait", action="store_true",
                      help="run the planner here and print its proposals (default: the process that runs the "
                           "agents, the bot or `orch run`, takes the request)")
    p = command(plan_cmds, "start", _plan_start, "ask the planner to break an epic into proposed stories", scoped,
                wait)
    p.add_argument("epic", metavar="E-N")
    p = command(plan_cmds, "show", _plan_show, "an epic's latest plan and its proposals", scoped)
    p.add_argument("epic", metavar="E-N", nargs="?", help="default: the latest plan waiting for a decision")
    p = command(plan_cmds, "approve", _plan_approve, "turn proposals into stories (the rest are rejected)", scoped)
    p.add_argument("epic", metavar="E-N")
    p.add_argument("items", metavar="P-1,P-3|all", nargs="*", help="the proposals to approve (default: all)")
    p = command(plan_cmds, "reject", _plan_reject, "reject every proposal of an epic's plan", scoped)
    p.add_argument("epic", metavar="E-N")
    p = command(plan_cmds, "request-changes", _plan_changes, "plan again with feedback (the old proposals are "
                "superseded)", scoped, wait, aliases=["request_changes"])
    p.add_argument("epic", metavar="E-N")
    p.add_argument("feedback", metavar="TEXT", help="what the planner should change")

    backlog = command(commands, "backlog", _backlog_view, "view and shape the backlog (default: view)", scoped, view)
    backlog_cmds = backlog.add_subparsers(dest="backlog_command", metavar="ACTION")
    command(backlog_cmds, "view", _backlog_view, "list the stories, by priority", scoped, view)
    p = command(backlog_cmds, "add-story", _backlog_add_story, "add a story to an epic", scoped,
                aliases=["add_story"])
    p.add_argument("--epic", metavar="E-N", required=True, help="the epic the story belongs to")
    p.add_argument("title", metavar="TITLE")
    p.add_argument("--points", type=int, help="estimate in story points (0 to 100)")
    p.add_argument("--priority", default="medium", help="critical, high, medium (default) or low")
    p.add_argument("--description", "-d", default="")
    p.add_argument("--depends-on", metavar="S-1,S-2", action="append", default=[],
                   help="stories that must be done first (comma-separated, or repeat the option)")
    p.add_argument("--criteria", metavar="TEXT", action="append", default=[],
                   help="an acceptance criterion (repeat the option for several)")
    p = command(backlog_cmds, "prioritize", _backlog_prioritize, "change a story's priority", scoped)
    p.add_argument("story", metavar="S-N")
    p.add_argument("priority", metavar="PRIORITY", help="critical, high, medium or low")
    p = command(backlog_cmds, "remove", _backlog_remove, "remove a story", scoped)
    p.add_argument("story", metavar="S-N")
    p = command(backlog_cmds, "depend", _backlog_depend, "set the stories a story waits for (replaces them)", scoped)
    p.add_argument("story", metavar="S-N")
    p.add_argument("--on", metavar="S-1,S-2", action="append", required=True,
                   help='the stories that must be done first (comma-separated, or repeat); --on "" clears them')
    command(commands, "queue", _queue, "the next story to work on, and what is ready or waits", scoped)

    story = commands.add_parser("story", help="work a story")
    story_cmds = story.add_subparsers(dest="story_command", metavar="ACTION", required=True)
    p = command(story_cmds, "update", _story_update, "set a story's status", scoped)
    p.add_argument("story", metavar="S-N")
    p.add_argument("new_status", metavar="STATUS", help="todo, in_progress, done or blocked")
    p = command(story_cmds, "show", _story_show, "a story with its criteria, dependencies, tickets, attempts and "
                "history", scoped)
    p.add_argument("story", metavar="S-N")
    p.add_argument("--history", metavar="N", type=int, default=10, help="commits of its history to show (default 10)")
    p = command(story_cmds, "edit", _story_edit, "change a story's title, description, points, epic or acceptance "
                "criteria (only the options given)", scoped)
    p.add_argument("story", metavar="S-N")
    p.add_argument("--title", metavar="TEXT")
    p.add_argument("--description", "-d", metavar="TEXT")
    p.add_argument("--points", metavar="N|none", type=_points_arg, help="estimate in points (0 to 100), or none")
    p.add_argument("--epic", metavar="E-N", help="move it to another epic")
    p.add_argument("--criteria", metavar="TEXT", action="append",
                   help="an acceptance criterion; repeat for several (they replace the story's criteria)")
    p.add_argument("--no-criteria", action="store_true", help="remove every acceptance criterion")
    p = command(story_cmds, "retry", _story_retry,
                "give a blocked or failed story back to the agents with a fresh count of attempts", scoped)
    p.add_argument("story", metavar="S-N")
    p = command(story_cmds, "log", _story_log, "a story's agent attempts and the end of the latest one's output",
                scoped)
    p.add_argument("story", metavar="S-N")
    p.add_argument("--lines", "-n", metavar="N", type=_positive, default=40,
                   help="lines of the output to show (default 40)")

    sprint = commands.add_parser("sprint", help="plan and run sprints")
    sprint_cmds = sprint.add_subparsers(dest="sprint_command", metavar="ACTION", required=True)
    p = command(sprint_cmds, "plan", _sprint_plan,
                "plan the next sprint: the stories given, or a pick by priority up to the capacity", scoped)
    p.add_argument("stories", metavar="S-N", nargs="*", help="stories to include (default: an automatic pick)")
    p.add_argument("--goal", help="the sprint's goal (a re-plan keeps it unless given; --goal \"\" clears it)")
    p.add_argument("--capacity", metavar="POINTS", type=int,
                   help="points for the automatic pick (default 20; a re-plan without stories nor capacity keeps "
                        "its stories)")
    command(sprint_cmds, "start", _sprint_step("start_sprint"), "start the planned sprint", scoped)
    command(sprint_cmds, "status", _sprint_status, "progress of the current (or last) sprint", scoped)
    command(sprint_cmds, "pause", _sprint_step("pause_sprint"), "pause the active sprint", scoped)
    command(sprint_cmds, "resume", _sprint_step("resume_sprint"), "resume the paused sprint", scoped)
    command(sprint_cmds, "review", _sprint_step("review_sprint"), "end the sprint and open its review", scoped)

    ticket = commands.add_parser("ticket", help="questions for people that hold up the work")
    ticket_cmds = ticket.add_subparsers(dest="ticket_command", metavar="ACTION", required=True)
    p = command(ticket_cmds, "open", _ticket_open, "ask a question; a linked story waits for the answer", scoped)
    p.add_argument("question", metavar="QUESTION", help="the question (name the choices: 'A or B?')")
    p.add_argument("--story", metavar="S-N", help="the story it holds up")
    p.add_argument("--option", metavar="TEXT", action="append", default=[],
                   help="a choice (repeat the option for several)")
    p.add_argument("--context", metavar="TEXT", default="", help="what whoever answers should know")
    p = command(ticket_cmds, "list", _ticket_list, "the tickets, open ones first", scoped)
    p.add_argument("--status", metavar="STATUS", default=S, help="only tickets that are open, resolved or closed")
    p = command(ticket_cmds, "show", _ticket_show, "a ticket with its replies and resolution", scoped)
    p.add_argument("ticket", metavar="TK-N")
    p = command(ticket_cmds, "resolve", _ticket_resolve, "decide a ticket yourself; its story goes on", scoped)
    p.add_argument("ticket", metavar="TK-N")
    p.add_argument("resolution", metavar="RESOLUTION")
    p = command(ticket_cmds, "reopen", _ticket_reopen, "open a resolved or closed ticket again", scoped)
    p.add_argument("ticket", metavar="TK-N")
    p = command(ticket_cmds, "reply", _ticket_reply,
                "answer a ticket as if in its thread: scored; a clear answer resolves it", scoped)
    p.add_argument("ticket", metavar="TK-N")
    p.add_argument("text", metavar="TEXT")

    p = command(commands, "feedback", _feedback, "close the review with a retrospective", scoped)
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--changes-requested", action="store_true",
                   help="send the project back to the backlog instead of closing the cycle")
    command(commands, "state", _state, "the project's state, counts and recent history", scoped)
    command(commands, "health", _health, "check every registered project")
    p = command(commands, "run", _run_agents,
                "run the agents in the foreground, without Discord (the bot runs them itself; not both at once)")
    p.add_argument("--until-idle", action="store_true",
                   help="return once no story is left for an agent (default: run until Ctrl-C or SIGTERM)")
    _add_worker_command(commands)
    return parser


def _points_arg(text: str) -> int | str:
    if text.strip().lower() in ("none", "-", ""):
        return "none"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of points (or none)") from None


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 10000")
    return int(text)


# -- rendering -----------------------------------------------------------------------------------------------

def to_json(result: Any) -> str:
    if isinstance(result, RunReport):  # the last of `orch run --json`'s lines: one object a line
        return result.model_dump_json()
    if isinstance(result, Result):  # the commands and hints as typed here, not the core's names
        data = result.model_dump(mode="json")
        data.update(allowed=command_names(result.allowed, CLI), next_step=spelled(result.next_step, CLI))
        return json.dumps(data, indent=2, ensure_ascii=False)
    if isinstance(result, BaseModel):
        return result.model_dump_json(indent=2)
    return json.dumps([r.model_dump(mode="json") for r in result], indent=2)


def error_json(exc: BaseException | str, code: int) -> str:
    """A failure as `--json` prints it on stdout: {"error": kind, "message", "hint", "code": the exit code}, and
    for a command refused in this state, the state and the commands allowed in it."""
    if isinstance(exc, str):  # bad usage: argparse's message
        data: dict[str, Any] = {"error": "usage", "message": exc, "hint": "orch --help lists the commands."}
    elif isinstance(exc, OrchError):
        # The error's type, in snake case (CommandNotAllowed -> command_not_allowed); a plain OrchError: refused.
        kind = "refused" if type(exc) is OrchError else re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
        data = {"error": kind, "message": spelled(exc.message, CLI), "hint": spelled(exc.hint or "", CLI) or None}
        if isinstance(exc, CommandNotAllowed):
            data.update(message=_not_allowed(exc), state=exc.state, command=command_name(exc.command, CLI),
                        allowed=command_names(exc.allowed, CLI))
        elif isinstance(exc, InvalidInput):
            data["field"] = exc.field
    else:
        data = {"error": "unexpected", "message": _unexpected(exc), "hint": None}
    data["code"] = code
    return json.dumps(data, indent=2, ensure_ascii=False)


def render(result: Any) -> str:
    """A result as lines a person reads in a terminal."""
    if isinstance(result, list):
        return _render_projects(result)
    fn = _RENDERERS.get(type(result).__name__)
    lines = fn(result) if fn else [repr(result)]  # every result type has a renderer
    if isinstance(result, Result):
        lines += _footer(result)
    return "\n".join(lines)


def _footer(r: Result) -> list[str]:
    saved_but = [f"Saved, but {spelled(r.warning, CLI)}"] if r.warning else []
    return [*saved_but, f"State: {r.state.value}. Allowed now: {_commands(r.allowed)}.",
            f"Next: {spelled(r.next_step, CLI)}"]


def _commands(triggers: list[str]) -> str:
    return ", ".join(command_names(triggers, CLI)) or "none"


def error_line(exc: Exception) -> str:
    """The one line a failed command prints: what went wrong, what is allowed, what to do."""
    if not isinstance(exc, OrchError):  # a bug or an OS problem
        return "orch: error: " + _unexpected(exc)
    if isinstance(exc, CommandNotAllowed):
        text = f"{_not_allowed(exc)} Allowed now: {_commands(exc.allowed)}. {exc.hint or ''}"
    else:
        text = str(exc)
    return "orch: error: " + one_line(spelled(text, CLI))


def _not_allowed(exc: CommandNotAllowed) -> str:
    return f'"{command_name(exc.command, CLI)}" is not possible while the project is {exc.state}.'


def _unexpected(exc: BaseException) -> str:
    return f"unexpected {type(exc).__name__}: {one_line(str(exc))}"


def _render_projects(infos: list[ProjectInfo]) -> str:
    if not infos:
        return "No project is registered. Register one: orch project register PATH"
    rows = [("NAME", "STATE", "PATH")] + [(i.name, i.state.value if i.state else "(unreadable)", str(i.path))
                                           for i in infos]
    return _table(rows)


def _registered(r: Registered) -> list[str]:
    lines = [f'Registered project "{r.project}" at {r.info.path}.']
    if r.adopted:
        lines.append("Adopted its existing .orch-state/ (nothing overwritten)."
                     + (f' Its files named it "{r.renamed_from}": they name it "{r.project}" now.'
                        if r.renamed_from else ""))
    if r.created_files:
        lines.append("Created: " + ", ".join(r.created_files))
    return lines


def _unregistered(r: Unregistered) -> list[str]:
    return [f'Unregistered project "{r.name}". Its repository and .orch-state/ at {r.path} are left as they were.']


def _epic_created(r: EpicCreated) -> list[str]:
    return [f'Created epic {r.epic.id} "{r.epic.title}" in {r.project}.']


def _plan_view(r: PlanView) -> list[str]:
    v = r.plan
    lines = [f'Plan of {r.epic} "{r.epic_title}", version {v.version}: {v.status.value}.']
    if r.action == "requested" and v.status.value == "requested":
        lines.append(f"The planner runs when the process that runs the agents takes it; `orch plan show {r.epic}` "
                     "shows it then (or ask with --wait).")
    if v.status.value == "waiting":
        lines.append(f"The planner asked a question: {', '.join(v.tickets)} (`orch ticket show`); planning goes on "
                     "once it is answered.")
    if v.summary:
        lines.append(f"Failed: {v.summary}")
    if v.plan:
        lines += ["", v.plan.strip(), ""]
    for p in v.proposals:
        deps = f", after {', '.join(p.depends_on)}" if p.depends_on else ""
        became = f" -> {p.story}" if p.story else ""
        points = plural(p.points, "point") if p.points is not None else "? points"
        phase = f" · {p.phase}" if p.phase else ""
        lines.append(f"  {p.key} [{p.status.value}{became}] {p.title} ({p.priority.value}, {points}{deps}){phase}")
    if r.created:
        lines.append("Stories: " + ", ".join(f"{k} -> {s}" for k, s in r.created.items()) + ".")
    if r.dropped:
        lines.append("Dependencies dropped (on proposals not approved): " + ", ".join(r.dropped) + ".")
    if v.status.value == "proposed":
        lines.append(f"Decide: orch plan approve {r.epic} [P-1,P-2|all], orch plan reject {r.epic}, or "
                     f'orch plan request-changes {r.epic} "..."')
    return lines


def _story_changed(r: StoryChanged) -> list[str]:
    s = r.story
    if r.action == "added":
        extra = f", depends on {', '.join(s.depends_on)}" if s.depends_on else ""
        lines = [f'Added {s.id} "{s.title}" to {s.epic} ({s.priority.value}, {_points(s)}{extra}).']
    elif r.action == "reprioritized":
        lines = [f'{s.id} "{s.title}": priority {r.previous} -> {s.priority.value}.']
    elif r.action == "removed":
        lines = [f'Removed {s.id} "{s.title}".']
    elif r.action == "dependencies":
        now = ", ".join(s.depends_on) or "nothing"
        lines = [f'{s.id} "{s.title}" depends on {now} (was {r.previous or "nothing"}).']
    elif r.action == "retried":
        lines = [f'{s.id} "{s.title}" goes back to the agents with a fresh count of attempts ({r.previous} -> '
                 f'{s.status.value}). The process that runs the agents (the bot, or `orch run`) takes it up.']
    else:
        lines = [f'{s.id} "{s.title}": {r.previous} -> {s.status.value}.']
    return lines + _cascade(r.cascade)


def _cascade(c: Cascade) -> list[str]:
    lines = _moved(c.state_change) + _listed(
        ("Ready now (their dependencies are done)", c.stories_ready), ("Unblocked", c.stories_unblocked),
        ("Tickets resolved", c.tickets_resolved), ("Tickets closed (no longer needed)", c.tickets_closed))
    if c.sprint_to_review:
        lines.append("Every story of the sprint is done: the sprint is in review. Close it with: orch feedback TEXT")
    return lines


def _moved(change: tuple[State, State] | None) -> list[str]:
    return [f"The project moved from {change[0].value} to {change[1].value}."] if change else []


def _listed(*labelled: tuple[str, list[str]]) -> list[str]:
    """A line "Label: ID, ID." for each label that has IDs."""
    return [f"{label}: {', '.join(ids)}." for label, ids in labelled if ids]


def _backlog(r: BacklogPage) -> list[str]:
    filters = ", ".join(f for f in (r.epic_filter and f"epic {r.epic_filter}",
                                    r.status_filter and f"status {r.status_filter}") if f)
    head = f"Backlog of {r.project}: {plural(r.total, 'story')}"
    lines = [head + (f" ({filters})" if filters else "") + (f", page {r.page} of {r.pages}" if r.pages > 1 else "")]
    if r.epics:
        lines.append("Epics: " + "; ".join(f'{e.id} "{e.title}"' for e in r.epics))
    if r.stories:
        lines.append(_table([("ID", "PRIORITY", "STATUS", "POINTS", "EPIC", "TITLE")] + [
            (s.id, s.priority.value, s.status.value, str(s.points) if s.points is not None else "-", s.epic,
             s.title + (f"  [{s.sprint}]" if s.sprint else "")
             + (f"  (after {', '.join(s.depends_on)})" if s.depends_on else ""))
            for s in r.stories]))
    if r.page < r.pages:
        lines.append(f"More: orch backlog --page {r.page + 1}")
    return lines


_MARK = {StoryStatus.done: "[x]", StoryStatus.in_progress: "[~]", StoryStatus.todo: "[ ]"}


def _sprint(r: SprintView) -> list[str]:
    sp: Sprint = r.sprint
    lines = [f"{sp.id} ({sp.status.value})" + (f": {sp.goal}" if sp.goal else "")]
    lines.append(f"Progress: {r.done_stories}/{plural(r.total_stories, 'story')}, "
                 f"{r.done_points}/{plural(r.total_points, 'point')} done.")
    for s in r.stories:
        attempt = r.latest_attempts.get(s.id)
        lines.append(f"  {_MARK.get(s.status, '[!]')} {s.id:<6} {s.status.value:<12} {_points(s):>9}  {s.title}"
                     + (f"  ({_attempt_text(attempt)})" if attempt else ""))
    if r.blocked:
        lines.append(f"Blocked: {', '.join(r.blocked)}.")
    if r.agents:
        lines.append("Agents running here: " + "; ".join(
            f"{a.story} attempt {a.attempt} ({a.phase}, {a.elapsed_s:.0f} s)" for a in r.agents) + ".")
    if r.branch:
        lines.append(f"Sprint branch {r.branch}: {plural(len(r.commits), 'commit')} since the sprint began"
                     + (" (merge it, or open a pull request from it)" if sp.status is SprintStatus.review else "")
                     + (":" if r.commits else "."))
        lines += [f"  {c}" for c in r.commits]
    if r.burndown:
        lines.append("Burndown: " + "; ".join(
            f"{p.day}: {plural(p.remaining_points, 'point')}, {plural(p.remaining_stories, 'story')}"
            for p in r.burndown))
    if sp.retrospective:
        rt = sp.retrospective
        lines.append(f"Retrospective by {rt.by}{' (changes requested)' if rt.changes_requested else ''}: "
                     + " ".join(rt.text.split()))
    return lines + _cascade(r.cascade)


def _sprint_planned(r: SprintPlanned) -> list[str]:
    sp = r.sprint
    if r.unchanged:
        head = [f"Nothing changed: {sp.id} already has these stories, goal and capacity; nothing was committed."]
    elif r.replanned:
        moves = [f"{', '.join(r.joined)} joined"] * bool(r.joined) + \
            [f"{', '.join(r.left)} left (back to the backlog)"] * bool(r.left)
        head = [f"Re-planned {sp.id}: " + ("; ".join(moves) if moves else "the same stories") + "."]
    else:
        head = [f"Planned {sp.id}."]
    return head + _sprint(r)


def _attempt_text(a: AttemptRecord) -> str:
    """An attempt in a few words: "attempt 2: tests_failed (1 passed, 1 failed), 3.2 s"."""
    if a.outcome is None:
        return f"attempt {a.attempt}: started {a.started_at:%Y-%m-%d %H:%M} UTC, not finished"
    tests = (f" ({a.tests_passed or 0} passed, {a.tests_failed or 0} failed)"
             if a.tests_passed is not None or a.tests_failed is not None else "")
    took = f", {a.duration_s:.1f} s" if a.duration_s is not None else ""
    return f"attempt {a.attempt}: {a.outcome}{tests}{took}"


def _story_detail(r: StoryDetail) -> list[str]:
    s = r.story
    epic = f' in {s.epic} "{r.epic.title}"' if r.epic else f" in {s.epic}"
    lines = [f'{s.id} "{s.title}" ({s.status.value}, {s.priority.value}, {_points(s)}){epic}',
             f"Sprint: {s.sprint} ({r.sprint_status or 'gone'})" if s.sprint else "Sprint: none"]
    if s.description:
        lines += ["Description:", *(f"  {line}" for line in s.description.splitlines())]
    if s.acceptance_criteria:
        lines += ["Acceptance criteria:", *(f"  - {one_line(c)}" for c in s.acceptance_criteria)]
    else:
        lines.append("Acceptance criteria: none")
    lines.append("Depends on: " + (_refs(r.depends_on) or "nothing"))
    if r.dependants:
        lines.append("Waited for by: " + _refs(r.dependants))
    lines += [f"Ticket {t.id} ({t.status}): {_cut(one_line(t.question), 120)}" for t in r.tickets]
    if r.last_attempt is not None:
        lines.append(f"Agent attempts: {r.attempts}; the last, {_attempt_text(r.last_attempt)} (`orch story log "
                     f"{s.id}`)")
    lines.append(f"Created by {s.created_by} at {s.created_at:%Y-%m-%d %H:%M}, updated {s.updated_at:%Y-%m-%d %H:%M}.")
    if r.history:
        lines.append("History (newest first):")
        lines += _history_lines(r.history)
    return lines


def _refs(refs: list[StoryRef]) -> str:
    return ", ".join(f'{d.id} "{_cut(one_line(d.title), 60)}" [{d.status}]' for d in refs)


def _history_lines(entries: list[HistoryEntry]) -> list[str]:
    lines = []
    for e in entries:
        lines.append(f"  {e.sha[:10]} {e.at:%Y-%m-%d %H:%M} {', '.join(e.who)}: {_cut(one_line(e.lines[0]), 160)}")
        lines += [f"{'':>30}{_cut(one_line(line), 160)}" for line in e.lines[1:]]
    return lines


def _field_changes(changes: list[FieldChange]) -> list[str]:
    lines = []
    for c in changes:
        if "\n" in c.before + c.after or len(c.before + c.after) > 100:
            lines += [f"  {c.field.replace('_', ' ')}: was", *_indented(c.before), "  now", *_indented(c.after)]
        else:
            lines.append(f"  {c.field.replace('_', ' ')}: {c.before or '(empty)'} -> {c.after or '(empty)'}")
    return lines


def _indented(text: str) -> list[str]:
    return [f"    {line}" for line in (text or "(empty)").splitlines()]


def _edited(r: StoryEdited | EpicEdited) -> list[str]:
    item = r.story if isinstance(r, StoryEdited) else r.epic
    if not r.changes:
        return [f'Nothing changed: {item.id} "{item.title}" has those values already.']
    return [f'Edited {item.id} "{item.title}":', *_field_changes(r.changes)]


def _epic_list_view(r: EpicList) -> list[str]:
    if not r.epics:
        return [f'No epics in {r.project} yet. Create one: orch epic "title"']
    rows = [("ID", "STORIES", "DONE", "POINTS", "TITLE")] + [
        (e.epic.id, str(e.stories), str(e.by_status.get("done", 0)), f"{e.done_points}/{e.points}", e.epic.title)
        for e in r.epics]
    return [f"Epics of {r.project}: {len(r.epics)}", _table(rows)]


def _project_history_view(r: ProjectHistory) -> list[str]:
    if not r.entries:
        return [f"No changes of {r.project} in git" + (" on this page." if r.page > 1 else " yet.")]
    lines = [f"Changes of {r.project}, newest first" + (f" (page {r.page})" if r.page > 1 else "") + ":"]
    lines += _history_lines(r.entries)
    if r.has_more:
        lines.append(f"More: orch project history --page {r.page + 1}")
    lines.append("Go back to one: orch project restore SHA")
    return lines


def _restored(r: Restored) -> list[str]:
    short = r.commit[:10]
    if not r.restored:
        return [f"Nothing changed: .orch-state of {r.project} holds the content of {short} already."]
    lines = [f'Restored .orch-state of {r.project} to {short} "{_cut(one_line(r.subject), 80)}", as a new commit '
             f"({plural(r.files_written, 'file')} written, {r.files_removed} removed)."]
    lines += _listed(*r.items_changed())
    if r.sprint:
        lines.append(f"Current sprint: {r.sprint[0] or 'none'} -> {r.sprint[1] or 'none'}.")
    lines += _moved(r.state_change)
    if r.previous:
        lines.append(f"Undo: orch project restore {r.previous[:10]}")
    return lines


def _story_log_view(r: StoryLog) -> list[str]:
    if not r.attempts:
        return [f"{r.story} of {r.project}: no agent attempt yet."]
    lines = [f"{r.story} of {r.project}: {plural(len(r.attempts), 'agent attempt')}."]
    for a in r.attempts:
        lines.append(f"  {_attempt_text(a)}" + (f": {_cut(one_line(a.summary), 160)}" if a.summary else ""))
        if a.question:
            lines.append(f"    asked: {_cut(one_line(a.question), 160)}")
    if r.log_tail:
        lines.append(f"The end of attempt {r.attempts[-1].attempt}'s output ({r.log_file}):")
        lines += [f"  {line}" for line in r.log_tail.splitlines()]
    elif r.log_file:
        lines.append(f"No output of attempt {r.attempts[-1].attempt} here ({r.log_file}): the agents ran on "
                     "another machine, or the attempt printed nothing.")
    return lines


_RUN_PHASE = {"running": "attempt {a} of {m} running", "testing": "attempt {a} of {m}: the agent is done, testing",
              "done": "done", "retrying": "attempt {a} of {m} failed; it runs again",
              "waiting": "the agent asked a question; the story waits for its ticket's answer",
              "blocked": "blocked after {m} failed attempts: a ticket holds it",
              "stopped": "attempt {a} stopped; the story is back to todo",
              "recorded": "attempt {a} recorded (the story was moved meanwhile)"}


def _progress_line(e: Event) -> str:
    """One step of a story's run: '14:02:07 shop S-1 "Cart": done (3.1 s; tests 2 passed, 0 failed): summary'."""
    p: StoryProgress = e.detail
    text = _RUN_PHASE.get(p.phase, p.phase).format(a=p.attempt, m=p.max_attempts)
    facts = [f"{p.duration_s:.1f} s"] if p.duration_s is not None else []
    if p.tests_passed is not None or p.tests_failed is not None:
        facts.append(f"tests {p.tests_passed or 0} passed, {p.tests_failed or 0} failed")
    if facts:
        text += f" ({'; '.join(facts)})"
    if p.summary:
        text += f": {_cut(one_line(p.summary), 200)}"
    return f"{datetime.now():%H:%M:%S} {e.project} {p.story} {_quote(p.title)}: {text}"


def _progress_json(e: Event) -> str:
    return json.dumps({"kind": e.kind, "at": datetime.now().astimezone().isoformat(timespec="seconds"),
                       "project": e.project, **dataclasses.asdict(e.detail)})


def _run_report(r: RunReport) -> list[str]:
    if r.reason == "idle":
        lines = ["No story is left for the agents now."]
    elif r.stopped_attempts:
        lines = [f"Stopped: {plural(r.stopped_attempts, 'running attempt')} stopped, their stories back to todo "
                 "(not counted as failures)."]
    else:
        lines = ["Stopped; no agent was running."]
    return lines + [f"{name}: {state.value if state else '(unreadable)'}" for name, state in r.projects.items()]


def _state_view(r: StateView) -> list[str]:
    lines = [f"Project {r.project}: {r.state.value}"
             + (f", current sprint {r.current_sprint}" if r.current_sprint else ", no current sprint")]
    counts = ", ".join(f"{n} {status}" for status, n in r.stories_by_status.items() if n) or "none"
    lines.append(f"Epics: {r.epics}. Stories: {counts}.")
    if r.blocked_in_sprint:
        lines.append(f"Blocked in the sprint: {', '.join(r.blocked_in_sprint)}.")
    if r.history:
        lines.append("Recent changes:")
        lines += [f"  {t.at:%Y-%m-%d %H:%M} {command_name(t.command, CLI)}: {t.source.value} -> "
                  f"{t.dest.value} by {t.by}"
                  for t in r.history]
    return lines


def _render_health(r: Health) -> list[str]:
    agents = [f"Agents: {r.runner}"] if r.runner else []
    if not r.projects:
        return ["No project is registered.", *agents]
    lines = []
    for p in r.projects:
        state = p.state.value if p.state else "?"
        waiting = p.pending_commit_lines
        pending = f", {plural(waiting, 'change')} waiting to be committed" if waiting else ""
        verdict = "FAIL" if not p.ok else "WARN" if p.warnings else "OK  "
        lines.append(f"{verdict} {p.name} ({state}) {p.path}{pending}")
        lines += [f"     - {problem}" for problem in p.problems + p.warnings]
    return lines + agents


def _queue_view(r: QueueView) -> list[str]:
    where = "the backlog" if r.scope == "backlog" else r.scope
    if r.next is None:
        lines = [f"Nothing is ready in {where} of {r.project}."]
    else:
        n = r.next
        lines = [f'Next in {where} of {r.project}: {n.id} "{n.title}" ({n.priority.value}, {_points(n)}).']
    if r.ready:
        lines.append("Ready, in order:")
        lines.append(_table([("ID", "PRIORITY", "POINTS", "TITLE")] + [
            (s.id, s.priority.value, str(s.points) if s.points is not None else "-", s.title) for s in r.ready]))
    lines += [f"Waiting: {sid} waits for {', '.join(deps)}." for sid, deps in r.waiting.items()]
    if r.in_progress:
        lines.append(f"In progress: {', '.join(r.in_progress)}.")
    if r.blocked:
        lines.append(f"Blocked: {', '.join(r.blocked)}.")
    return lines


_TICKET_HEAD = {"opened": "Opened", "resolved": "Resolved", "reopened": "Reopened", "thread": "Thread set for"}


def _ticket_view(r: TicketView) -> list[str]:
    t = r.ticket
    if r.action == "shown":
        return _ticket_detail(r)
    lines = [f"{_TICKET_HEAD.get(r.action, r.action)} {t.id}: {_quote(t.question)}."]
    if r.action == "opened" and t.story:
        lines.append(f"{t.story} waits for the answer.")
    if r.action == "resolved":
        lines.append(f"Decision: {one_line(t.resolution or '')}")
    if r.action == "reopened" and r.story is not None and r.story.status is StoryStatus.blocked_awaiting_feedback:
        lines.append(f"{r.story.id} waits for the answer again.")
    lines += _cascade(_others(r.cascade, t))
    if r.action in ("opened", "reopened"):
        lines.append(f'Answer it: orch ticket reply {t.id} "..." (scored), or orch ticket resolve {t.id} "..."')
    return lines


def _ticket_detail(r: TicketView) -> list[str]:
    t = r.ticket
    lines = [f"{t.id} ({t.status.value}): {one_line(t.question)}"]
    if t.context:
        lines.append(f"Context: {one_line(t.context)}")
    if t.options:
        lines.append("Options: " + " | ".join(t.options))
    if t.story:
        s = r.story
        lines.append(f'Story: {s.id} "{s.title}" [{s.status.value}]' if s else f"Story: {t.story} (not in the backlog)")
    lines.append(f"Opened by {t.created_by} at {t.created_at:%Y-%m-%d %H:%M}"
                 + (f"; thread {t.thread_id}" if t.thread_id else "; no thread"))
    if t.replies:
        lines.append("Replies:")
        lines += [f"  {x.author}" + (f" ({x.score.total}/100)" if x.score else "") + f": {one_line(x.text)}"
                  for x in t.replies]
    if t.resolution:
        lines.append(f"Resolution ({t.status.value} by {t.resolved_by}): {one_line(t.resolution)}")
    return lines


def _reply_outcome(r: ReplyOutcome) -> list[str]:
    t = r.ticket
    if r.action == "ignored":
        hint = f" `orch ticket reopen {t.id}` opens it again." if not t.is_open else ""
        return [f"Nothing changed: the reply was not taken ({r.reason}).{hint}"]
    if r.action == "resolved":
        lines = [f"{t.id} resolved by the reply of {t.resolved_by} (clarity {r.score.total}/100, "
                 f"resolves at {r.threshold}).", f"Decision: {one_line(t.resolution or '')}"]
        return lines + _cascade(_others(r.cascade, t))
    s = r.score
    lines = [f"{t.id} stays open: the reply scored {s.total}/100 (resolves at {r.threshold}); completeness "
             f"{s.completeness}, consistency {s.consistency}, actionability {s.actionability}."]
    if r.follow_ups:
        lines.append("To resolve it, the answer should say:")
        lines += [f"  - {q}" for q in r.follow_ups]
    lines.append(f'Reply again (orch ticket reply {t.id} "..."), or decide: orch ticket resolve {t.id} "..."')
    return lines


def _render_ticket_list(r: TicketList) -> list[str]:
    head = f"Tickets of {r.project}" + (f" ({r.status_filter})" if r.status_filter else "")
    if not r.tickets:
        return [f"{head}: none. Ask one: orch ticket open \"question\" [--story S-N]"]
    lines = [f"{head}: {len(r.tickets)}, {r.open_count} open in all."]
    lines.append(_table([("ID", "STATUS", "STORY", "REPLIES", "QUESTION")] + [
        (t.id, t.status.value, t.story or "-", str(len(t.replies)), _cut(one_line(t.question), 80))
        for t in r.tickets]))
    return lines


def _others(c: Cascade, t: Ticket) -> Cascade:
    """The cascade without the ticket itself (the headline already says it was resolved)."""
    return c.model_copy(update={"tickets_resolved": [i for i in c.tickets_resolved if i != t.id]})


def _quote(text: str) -> str:
    return '"' + _cut(one_line(text), 100) + '"'


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _points(s: Story) -> str:
    return "unpointed" if s.points is None else plural(s.points, "point")




def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)


# By the result's class name: a plan's view (PlanView) lives with the agents' modules, which only `plan` imports.
_RENDERERS: dict[str, Callable[[Any], list[str]]] = {kind.__name__: fn for kind, fn in [
    (Registered, _registered), (Unregistered, _unregistered), (EpicCreated, _epic_created),
    (StoryChanged, _story_changed), (BacklogPage, _backlog), (SprintPlanned, _sprint_planned), (SprintView, _sprint),
    (StateView, _state_view),
    (Health, _render_health), (QueueView, _queue_view), (TicketView, _ticket_view),
    (ReplyOutcome, _reply_outcome), (TicketList, _render_ticket_list), (StoryLog, _story_log_view),
    (RunReport, _run_report), (StoryDetail, _story_detail), (StoryEdited, _edited),
    (EpicEdited, _edited), (EpicList, _epic_list_view), (ProjectHistory, _project_history_view),
    (Restored, _restored),
]} | {"PlanView": _plan_view}


# -- running -------------------------------------------------------------------------------------------------

class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _out(text: str) -> None:
    """Print to stdout, escaping what is not printable; a reader that left (`orch backlog | head -3`) is no
    failure of the command."""
    try:
        print(printable(text), flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _run(args: argparse.Namespace) -> Any:
    config = load_config(args.config)
    orch = Orchestrator(config, front_end=CLI)
    try:
        return await args.handler(orch, args)
    finally:
        await orch.close()  # commits what the command changed, before the process exits
        for root, outcome in orch.git.last_outcome.items():
            if outcome not in ("committed", "nothing"):
                print(printable(f"orch: note: the change is saved in {root}/.orch-state but not committed yet "
                                f"({outcome}). The next orch command that changes this project, or the bot, commits "
                                "it."), file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose bad-usage message becomes JSON on stdout when --json was asked for."""

    json_errors = False

    def error(self, message: str):  # type: ignore[override]
        if _Parser.json_errors:
            _out(error_json(f"{self.prog}: {message}", 2))
            raise SystemExit(2)
        super().error(message)


# What the top level's options that take a value are (to find the command among the arguments).
_VALUED = {"--config", "--by", "-p", "--project"}
_EPIC_ACTIONS = {"add", "list", "edit", "-h", "--help"}


def _epic_shorthand(argv: Sequence[str]) -> list[str]:
    """`orch epic TITLE [-d TEXT]`, the command from before epics had actions, is `orch epic add TITLE`: argparse
    cannot offer a positional beside subcommands, so the action is put in before parsing."""
    argv, i = list(argv), 0
    while i < len(argv):
        if argv[i] in _VALUED:
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            if argv[i] == "epic" and (i + 1 == len(argv) or argv[i + 1] not in _EPIC_ACTIONS):
                argv.insert(i + 1, "add")
            break
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    _Parser.json_errors = "--json" in argv
    try:
        args = parser.parse_args(_epic_shorthand(argv))
    except SystemExit as exc:  # --help (0) or bad usage (2): argparse has printed why
        return int(exc.code or 0)
    for key, value in LATE_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    args.by = args.by or _user_name()
    if args.command == "worker":
        return _worker(args)

    logger = logging.getLogger("orchestration")
    handler: logging.Handler = logging.StreamHandler(sys.stderr) if args.verbose else logging.NullHandler()
    handler.setFormatter(_PrintableFormatter("orch: %(levelname)s %(name)s: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)  # without -v, the library's log lines stay out of the user's terminal
    if args.verbose:
        logger.setLevel(logging.INFO)
    try:
        result = asyncio.run(_run(args))
        _out(to_json(result) if args.json else render(result))
        return 1 if _failed(result) else 0
    except KeyboardInterrupt:
        print("orch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an OrchError, or a bug or an OS problem: still one line, never a traceback
        return _fail(args, exc)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    """A failure: one line on stderr, or with --json one JSON object on stdout (for scripts, which read stdout)."""
    if args.json:
        _out(error_json(exc, 1))
    else:
        print(printable(error_line(exc)), file=sys.stderr)
    return 1


def _failed(result: Any) -> bool:
    """Results that are printed but still mean "nothing done": exit code 1, for scripts."""
    if isinstance(result, Health):
        return not result.ok
    return isinstance(result, ReplyOutcome) and result.action == "ignored"


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in the environment nor in the password database
        return "unknown"


# -- orch worker: a Celery worker for agent attempts (runner = "celery"), not an Orchestrator command ----------

def _add_worker_command(commands: Any) -> None:
    about = "run agent attempts sent by the bot through the Celery broker (until stopped)"
    p = commands.add_parser("worker", help=about, description=about)
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                   help="config file (default: $ORCH_CONFIG, else ./config.toml)")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at DEBUG level")
    p.add_argument("--concurrency", metavar="N", type=int, help="attempts at once (default: the CPU count)")
    p.add_argument("--queues", metavar="Q1,Q2", action="append", default=[],
                   help="the queues to take attempts from (default: [agents] queue)")
    p.add_argument("--name", metavar="NAME", help="the worker's node name, unique per worker (default: celery@HOST)")


def _worker(args: argparse.Namespace) -> int:
    from .agents.worker import run_worker  # Celery is imported only here
    logging.getLogger("orchestration").setLevel(logging.INFO)
    try:
        run_worker(load_config(args.config), args.concurrency, id_list(*args.queues), args.name, args.verbose)
        return 0
    except OrchError as exc:
        return _fail(args, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
