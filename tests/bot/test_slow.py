"""Discord's 3-second rule: a command still working after DEFER_AFTER_S is deferred, whatever holds it up.

SimCord runs the bot's timers on a virtual clock that only moves between operations, so these tests set the
watchdog's delay to 0: they check what happens when it fires, with a real lock really holding the command up.
"""
from __future__ import annotations

import threading
import time

from filelock import FileLock

from bot import handling
from tests.bot.conftest import deferrals, embed_of, load, reply

HOLD_S = 0.5


def hold_project_lock(repo, seconds: float) -> threading.Thread:
    """Another process (the CLI) holding the project's file lock for a while."""
    locked = threading.Event()

    def hold() -> None:
        with FileLock(str(repo / ".orch-state" / ".lock")):
            locked.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    locked.wait()
    return thread


async def test_a_slow_command_is_deferred_then_answered(world, demo, monkeypatch):
    repo, channel = demo
    monkeypatch.setattr(handling, "DEFER_AFTER_S", 0)
    holder = hold_project_lock(repo, HOLD_S)
    started = time.perf_counter()

    result = await world.alice.slash(channel, "epic create", title="Patience")

    holder.join()
    assert time.perf_counter() - started >= HOLD_S - 0.1
    assert deferrals(world.env) == [64, 0]  # register's (private), then the watchdog's (public)
    assert embed_of(result).title == "E-1 · Patience" and not reply(result).ephemeral
    assert load(repo, "backlog.json")["epics"][0]["title"] == "Patience"


async def test_a_refusal_after_a_public_deferral_is_still_private(world, demo, monkeypatch):
    repo, channel = demo
    monkeypatch.setattr(handling, "DEFER_AFTER_S", 0)
    holder = hold_project_lock(repo, HOLD_S)

    result = await world.alice.slash(channel, "sprint start")

    holder.join()
    assert deferrals(world.env)[-1] == 0
    private = [m for m in result.followups if m.ephemeral]
    assert private and private[0].embeds[0].title == "Not possible now"
    assert result.response is None  # the public "thinking…" message was removed
