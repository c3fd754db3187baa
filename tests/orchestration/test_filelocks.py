"""The cross-process lock (orchestration/filelocks.py): fair in the process, blocking across processes, with a
time-out the caller keeps, and re-entrant for work a holder runs in a worker thread. Real threads and processes."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from orchestration import filelocks

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""

TAKE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until it is free
print("taken", flush=True)
"""


def holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_waiter_gets_its_turn_before_the_holder_takes_the_lock_again(tmp_path):
    """What starved commits: a command that releases and at once takes the lock again must not overtake the
    commit waiting for it in the same process."""
    path = tmp_path / ".lock"
    order = []
    lock = filelocks._lock_of(path)
    with filelocks.hold(path, 1):
        def wait_in_turn():
            with filelocks.hold(path, 30):
                order.append("waiter")

        waiter = threading.Thread(target=wait_in_turn)
        waiter.start()
        while not lock.waiting:  # the waiter is queued
            threading.Event().wait(0.001)
    with filelocks.hold(path, 30):  # released, and asked for again at once
        order.append("again")
    waiter.join()
    assert order == ["waiter", "again"]


def test_a_lock_held_by_another_process_times_out_then_is_taken_once_it_is_free(tmp_path):
    path = tmp_path / ".lock"
    proc = holder(path)
    try:
        with pytest.raises(filelocks.Timeout):
            with filelocks.hold(path, 0.2):
                pass
        taken = []

        def wait():
            with filelocks.hold(path, 60):
                taken.append(True)

        waiting = threading.Thread(target=wait)
        waiting.start()
    finally:
        proc.stdin.close()
        proc.wait()
    waiting.join()
    assert taken == [True]


def test_a_wait_given_up_leaves_nothing_held_for_another_process(tmp_path):
    """The helper thread of a wait that timed out takes the lock once it is free and lets it go at once."""
    path = tmp_path / ".lock"
    proc = holder(path)
    try:
        with pytest.raises(filelocks.Timeout):
            with filelocks.hold(path, 0.1):
                pass
    finally:
        proc.stdin.close()
        proc.wait()
    other = subprocess.run([sys.executable, "-c", TAKE, str(path)], capture_output=True, text=True, timeout=60)
    assert other.stdout.strip() == "taken"


async def test_async_holder_runs_work_in_a_thread_that_holds_the_lock_too(tmp_path):
    path = tmp_path / ".lock"

    def work():
        with filelocks.hold(path, 0.5):  # held already by this context: no wait for itself
            return "done"

    async with filelocks.hold_async(path, 1):
        assert await asyncio.to_thread(work) == "done"
    with filelocks.hold(path, 0.5):  # and released afterwards
        pass


async def test_async_waiters_wait_on_the_loop_in_turn_and_a_time_out_is_kept(tmp_path):
    path = tmp_path / ".lock"
    order = []

    async def take(name, timeout):
        async with filelocks.hold_async(path, timeout):
            order.append(name)
            await asyncio.sleep(0)

    proc = holder(path)
    try:
        with pytest.raises(filelocks.Timeout):
            await take("too late", 0.1)
        waiting = [asyncio.create_task(take(n, 60)) for n in ("first", "second")]
        await asyncio.sleep(0.05)
        assert order == []
    finally:
        proc.stdin.close()
        proc.wait()
    await asyncio.gather(*waiting)
    assert order == ["first", "second"]
