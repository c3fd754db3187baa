"""Nothing slow on the event loop: disk, git and file locks go through worker threads, so the gateway's
heartbeats and the auto-defer watchdog (bot/handling.py) are never held up by our own code.

The bot runs a representative set of commands with asyncio's debug mode on, which logs every callback that
takes longer than `slow_callback_duration` ("Executing <...> took N seconds"); the test fails on any.

A callback is slow by our own doing when it waits for the disk, git or a lock. On a fast disk that wait is a
few milliseconds, too little to tell from a loaded machine. So while the commands run, the test folder's disk
is slow for the loop's thread only (`slow_disk`: every open, listing, rename or removal under it, and every
process started, costs SLOW_IO_S, as on a busy network disk): any such work on the loop makes its callback slow
every time, while worker threads keep their speed. What would make a callback slow without our doing is kept
out: a first pass of the same commands loads every module before measuring, and the collector does not walk
the test process's whole heap in the middle of a callback (gc.freeze).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from bot.cogs.tickets import HANDOFF_EVERY_S
from tests.bot.conftest import register, reply

SLOW_CALLBACK_S = 0.1
SLOW_IO_S = 0.15  # above SLOW_CALLBACK_S: one disk access on the loop is enough to be caught
_PATH_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
                          "os.truncate", "os.utime", "os.chmod", "shutil.rmtree"})
_OURS = tuple(str(Path(__file__).parents[2] / package) for package in ("orchestration", "bot"))
_slow: tuple[int, str, list[str]] | None = None  # (the loop's thread, the slow folder, what it slowed) while on


def _audit(event: str, args: tuple) -> None:
    if _slow is None or threading.get_ident() != _slow[0]:
        return
    if event == "subprocess.Popen" or (
            event in _PATH_EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike))
            and os.fsdecode(args[0]).startswith(_slow[1])):
        _slow[2].append(f"{event} {Path(os.fsdecode(args[0])).name} by {_our_caller()}")
        time.sleep(SLOW_IO_S)


def _our_caller() -> str:
    """Where our code did it: its innermost three frames, e.g. "registry.py:43 _load < service.py:95 ..."."""
    ours = []
    frame = sys._getframe(2)
    while frame is not None and len(ours) < 3:
        if frame.f_code.co_filename.startswith(_OURS):
            ours.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(ours) or "?"


@contextmanager
def slow_disk(folder: Path):
    """Disk access under `folder`, and starting a process, take SLOW_IO_S on the calling (the loop's) thread.
    Yields the list of what was slowed, with the line of our code that did it."""
    global _slow
    if not getattr(sys, "_orch_slow_disk_hook", False):  # an audit hook stays for the process's life: add it once
        sys.addaudithook(_audit)
        sys._orch_slow_disk_hook = True
    _slow = (threading.get_ident(), str(folder), [])
    try:
        yield _slow[2]
    finally:
        _slow = None


@contextmanager
def slow_callbacks_logged():
    """asyncio's debug mode on the running loop; yields the list of its 'Executing ... took' warnings."""
    loop = asyncio.get_running_loop()
    slow: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("Executing "):
                slow.append(record.getMessage())

    handler = Collect(logging.WARNING)
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    gc.collect()
    gc.freeze()  # a full collection over the test process's heap could take 100 ms by itself
    try:
        yield slow
    finally:
        gc.unfreeze()
        loop.set_debug(False)
        asyncio_log.removeHandler(handler)


def said(result) -> str:
    message = reply(result)
    return message.embeds[0].title if message.embeds else message.content


async def run_commands(world, orch, repo: Path) -> list[str]:
    """Register `repo` and take it through the everyday commands; returns what the bot answered to each."""
    alice = world.alice
    registered, channel = await register(world, repo)
    assert channel is not None, reply(registered).embeds[0].to_dict()
    answers = [said(registered)]
    for command, options in [
        ("epic", {"title": "Checkout"}),
        ("backlog add_story", {"epic": "E-1", "title": "Card form", "points": 3}),
        ("backlog add_story", {"epic": "E-1", "title": "Receipt", "points": 2}),
        ("sprint plan", {"goal": "First payment"}),
        ("sprint start", {}),
        ("sprint status", {}),
        ("ticket open", {"question": "Which card provider?", "story": "S-2"}),
        ("backlog view", {}),
        ("state", {}),
    ]:
        answers.append(said(await alice.slash(channel, command, **options)))
    thread = channel.threads[0]
    await alice.send(thread, "Stripe: it has the best API docs and we know it.")
    await orch.open_ticket(repo.name, "Which currency first?", by="agent")  # as an agent would: the hand-off posts it
    await world.env.advance_time(HANDOFF_EVERY_S)
    answers.append(channel.threads[-1].name)
    answers.append(said(await alice.slash(world.general, "project list")))
    answers.append(said(await alice.slash(world.general, "health")))
    choices = await alice.autocomplete(channel, "story update", "story", "card")
    answers.append(choices[0]["name"])
    answers.append((await world.admin.autocomplete(world.general, "project unregister", "name", ""))[0]["name"])
    return answers


async def test_no_callback_blocks_the_event_loop(world, orch, make_repo, tmp_path):
    await run_commands(world, orch, make_repo("warm-up"))  # loads every module the commands use
    repo = make_repo("shop")

    with slow_callbacks_logged() as slow, slow_disk(tmp_path) as on_the_loop:
        answers = await run_commands(world, orch, repo)

    assert slow == [], "\n".join(on_the_loop)
    assert [re.sub(r"<#\d+>", "#thread", a) for a in answers] == [
        "Registered shop", "E-1 · Checkout", "S-1 · Card form", "S-2 · Receipt",
        "sprint-001 · planned · First payment", "sprint-001 · active · First payment",
        "sprint-001 · active · First payment", "TK-1 opened: answer in #thread. S-2 waits for the answer.",
        "Backlog of shop", "shop · SPRINT_ACTIVE", "TK-2: Which currency first?", "Projects (2)", "Healthy", "S-1 · Card form [todo]", "warm-up"]
