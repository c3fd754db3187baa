"""The neutral table of commands (orchestration/commands.py): every command a person runs has a name in each
front-end, and the CLI's names are commands the installed `orch` accepts."""
from __future__ import annotations

import argparse

from orchestration import state_machine as sm
from orchestration.cli import build_parser
from orchestration.commands import BY_KEY, CLI, COMMANDS, DISCORD, name, origin, spelled


def test_every_trigger_of_the_machine_has_a_name_in_both_front_ends():
    people = {t for t, _, _ in sm.TRANSITIONS} - sm.AUTOMATIC
    for trigger in people:
        assert BY_KEY[trigger].name(DISCORD) and BY_KEY[trigger].name(CLI), trigger
    assert name("block", CLI) == sm.AUTOMATIC_MEANING["block"]  # automatic changes read the same everywhere


def _cli_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[str]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word, sub in action.choices.items():
                found.add(" ".join((*prefix, word)))
                found |= _cli_commands(sub, (*prefix, word))
    return found


def test_every_cli_name_of_the_table_is_a_command_of_orch():
    known = _cli_commands(build_parser())
    for command in COMMANDS:
        spelled_name = command.name(CLI)
        if spelled_name:
            assert spelled_name.split(" --")[0] in known, command.key


def test_names_origins_and_hints_per_front_end():
    assert (name("add_story", DISCORD), name("add_story", CLI)) == ("/backlog add_story", "backlog add-story")
    assert (origin("epic", DISCORD), origin("epic", CLI)) == ("/epic create", "orch epic")
    assert origin("agent_run", CLI) == origin("agent_run", DISCORD) == "agent"
    hint = "Add stories with `backlog add_story`, then `sprint plan S-1`; `git log` is not ours."
    assert spelled(hint, CLI) == ("Add stories with `orch backlog add-story`, then `orch sprint plan S-1`; "
                                  "`git log` is not ours.")
    assert spelled(hint, DISCORD) == ("Add stories with `/backlog add_story`, then `/sprint plan S-1`; "
                                      "`git log` is not ours.")
    plan = "`plan start E-1` asks the planner for one."
    assert spelled(plan, DISCORD) == "`/plan E-1` asks the planner for one."
    assert spelled(plan, CLI) == "`orch plan start E-1` asks the planner for one."
