"""Nothing slow on the event loop: disk, git and file locks go through worker threads, so the gateway's
heartbeats and the auto-defer watchdog (bot/handling.py) are never held up by our own code.

The bot runs a representative set of commands with asyncio's debug mode on, which logs every callback that
takes longer than `slow_callback_duration` ("Executing <...> took N seconds"); the test fails on any such
callback that our own code made slow.

What makes a callback slow by our own doing: waiting for the disk, git or a lock, or computing for long. On a
fast disk a wait is a few milliseconds, too little to tell from a busy machine; so while the commands run, the
test folder's disk is slow for the loop's thread only (every open, listing, rename or removal under it, and
every process started, costs SLOW_IO_S there, as on a busy network disk): any such work on the loop makes its
callback slow every time, while worker threads keep their speed. What makes a callback slow without our doing,
and is kept out: modules imported on first use (a first pass of the same commands loads them), the collector
walking the test process's whole heap (gc.freeze), and a loaded machine giving the loop's thread no CPU for a
while: a callback asyncio reports counts as ours only if its own cost, the thread's CPU time plus the disk
waits, reaches the limit too.
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
from dataclasses import dataclass, field
from pathlib import Path

from bot.cogs.tickets import HANDOFF_EVERY_S
from tests.bot.conftest import register, reply
from tests.conftest import git

SLOW_CALLBACK_S = 0.1
SLOW_IO_S = 0.15  # above SLOW_CALLBACK_S: one disk access on the loop is enough to be caught
_PATH_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.rmdir", "os.mkdir",
                          "os.truncate", "os.utime", "os.chmod", "shutil.rmtree"})
_OURS = tuple(str(Path(__file__).parents[2] / package) for package in ("orchestration", "bot"))
_run_handle = asyncio.Handle._run


@dataclass
class Watch:
    """What happened on the loop's thread while `watching` was on."""

    thread: int
    folder: str
    disk: list[str] = field(default_factory=list)  # each disk access or process start, with the code that did it
    waited: float = 0.0  # what the slow disk made the loop wait, in all
    cost: float = 0.0  # the callback that just ran: its CPU time plus its disk waits
    slow: list[str] = field(default_factory=list)  # slow callbacks that cost that much: ours
    busy: list[str] = field(default_factory=list)  # slow callbacks that did not: the machine was busy


_watch: Watch | None = None


def _audit(event: str, args: tuple) -> None:
    w = _watch
    if w is None or threading.get_ident() != w.thread:
        return
    if event == "subprocess.Popen" or (
            event in _PATH_EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike))
            and os.fsdecode(args[0]).startswith(w.folder)):
        w.disk.append(f"{event} {Path(os.fsdecode(args[0])).name} by {_our_caller()}")
        time.sleep(SLOW_IO_S)
        w.waited += SLOW_IO_S


def _our_caller() -> str:
    """Where our code did it: its innermost three frames, e.g. "registry.py:43 _load < service.py:95 ..."."""
    ours = []
    frame = sys._getframe(2)
    while frame is not None and len(ours) < 3:
        if frame.f_code.co_filename.startswith(_OURS):
            ours.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(ours) or "?"


def _run_measured(handle: asyncio.Handle) -> None:
    w = _watch
    if w is None:
        return _run_handle(handle)
    cpu, waited = time.thread_time(), w.waited
    try:
        return _run_handle(handle)
    finally:
        w.cost = time.thread_time() - cpu + w.waited - waited


class _SlowCallbacks(logging.Handler):
    """Sorts asyncio's 'Executing <...> took N seconds' warnings: logged right after the callback ran."""

    def emit(self, record: logging.LogRecord) -> None:
        w = _watch
        if w is not None and record.getMessage().startswith("Executing "):
            (w.slow if w.cost >= SLOW_CALLBACK_S else w.busy).append(f"{record.getMessage()} (own {w.cost:.3f} s)")


@contextmanager
def watching(folder: Path):
    """asyncio's debug mode on the running loop, with `folder` slow for the loop's thread (see above)."""
    global _watch
    if not getattr(sys, "_orch_slow_disk_hook", False):  # an audit hook stays for the process's life: add it once
        sys.addaudithook(_audit)
        sys._orch_slow_disk_hook = True
    loop = asyncio.get_running_loop()
    handler = _SlowCallbacks(logging.WARNING)
    logging.getLogger("asyncio").addHandler(handler)
    asyncio.Handle._run = _run_measured
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_S
    gc.collect()
    gc.freeze()  # a full collection over the test process's heap could take 100 ms by itself
    _watch = Watch(threading.get_ident(), str(folder))
    try:
        yield _watch
    finally:
        _watch = None
        gc.unfreeze()
        loop.set_debug(False)
        asyncio.Handle._run = _run_handle
        logging.getLogger("asyncio").removeHandler(handler)


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
        ("epic create", {"title": "Checkout"}),
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
    answers.append(said(await world.admin.slash(world.general, "project list")))
    answers.append(said(await alice.slash(world.general, "health")))
    choices = await alice.autocomplete(channel, "story update", "story", "card")
    answers.append(choices[0]["name"])
    answers.append((await world.admin.autocomplete(world.general, "project unregister", "name", ""))[0]["name"])
    answers.append(said(await alice.slash(channel, "story show", story="S-2")))  # reads git too
    answers.append(said(await alice.slash(channel, "epic list")))
    answers.append(said(await world.admin.slash(channel, "project history")))
    await orch.flush()
    first = (await orch.project_history(repo.name, per_page=100)).entries[-1].sha  # the registration's commit
    answers.append(said(await world.admin.slash(channel, "project restore", commit=first)))  # git, files, the machine
    return answers


async def test_no_callback_blocks_the_event_loop(world, orch, make_repo, tmp_path):
    await run_commands(world, orch, make_repo("warm-up"))  # loads every module the commands use
    repo = make_repo("shop")

    with watching(tmp_path) as watch:
        answers = await run_commands(world, orch, repo)

    assert watch.slow == [], "\n".join(watch.slow + watch.disk)
    assert [re.sub(r"<#\d+>", "#thread", a) for a in answers] == [
        "Registered shop", "E-1 · Checkout", "S-1 · Card form", "S-2 · Receipt",
        "sprint-001 · planned · First payment", "sprint-001 · active · First payment",
        "sprint-001 · active · First payment", "TK-1 opened: answer in #thread. S-2 waits for the answer.",
        "Backlog of shop", "shop · SPRINT_ACTIVE", "TK-2: Which currency first?", "Projects (2)", "Healthy",
        "S-1 · Card form [todo]", "warm-up", "S-2 · Receipt", "Epics of shop (1)", "History of shop",
        f"Restored shop to {git(repo, 'log', '--reverse', '--format=%H', '--', '.orch-state').split()[0][:10]}"]


async def test_the_watch_tells_our_slow_callbacks_from_a_busy_machine(tmp_path):
    """The instrument itself: a file read and a long computation on the loop are ours; a callback that only
    waited for the CPU (a sleep outside the test folder stands for that) is the machine's."""
    (tmp_path / "notes.txt").write_text("x")

    def read_a_file() -> None:
        (tmp_path / "notes.txt").read_text()

    def compute() -> None:
        end = time.thread_time() + 1.2 * SLOW_CALLBACK_S
        while time.thread_time() < end:
            pass

    def wait_for_the_cpu() -> None:
        time.sleep(1.2 * SLOW_CALLBACK_S)

    with watching(tmp_path) as watch:
        for callback in (read_a_file, compute, wait_for_the_cpu):
            asyncio.get_running_loop().call_soon(callback)
        await asyncio.sleep(0)

    def names(messages: list[str]) -> list[str]:
        return [re.search(r"\.(\w+)\(\) at ", m).group(1) for m in messages]

    assert names(watch.slow) == ["read_a_file", "compute"] and names(watch.busy) == ["wait_for_the_cpu"]
    assert len(watch.disk) == 1 and watch.disk[0].startswith("open notes.txt")
