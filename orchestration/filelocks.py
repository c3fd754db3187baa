"""A cross-process file lock whose waits block (never poll) and are fair within the process.

- Across processes: `fcntl.flock` on the lock file. It is held per open file, so it is taken by whichever
  thread or coroutine this process hands it to, and the kernel drops it when a process dies.
- Within the process: waiters queue in arrival order (FIFO) for the one holder per lock file, and a release
  hands the lock straight to the next waiter. No waiter can be overtaken forever, so a commit that waits
  behind back-to-back commands gets its turn after the command in progress; and the process never waits for a
  lock that only it holds (as separate `filelock.FileLock` objects of one process did: each polled the other's
  flock every 50 ms and could lose every time).
- A wait for another process is a blocking `flock` in a helper thread; the caller waits for that thread with
  its own time-out. A caller that gives up leaves the helper to release the lock as soon as it gets it.
- `hold` (threads) and `hold_async` (coroutines, waiting on the event loop) take the same lock. A holder's
  context (see contextvars) holds it re-entrantly: `asyncio.to_thread` copies the context into the worker, so
  work a coroutine runs there while it holds the lock does not wait for itself.
"""
from __future__ import annotations

import asyncio
import contextvars
import fcntl
import os
import threading
import time
from collections import deque
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator


class Timeout(Exception):
    """The lock was not free within the time-out."""


class _Ticket:
    """One claim on a lock: its place in the queue, then, once granted, the holder's flock descriptor."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.granted = False  # this process's turn (the flock is taken afterwards)
        self.active = True  # cleared at release: a copied context no longer holds it


class _Lock:
    """The in-process queue of one lock file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.mutex = threading.Lock()
        self.holder: _Ticket | None = None
        self.waiting: deque[_Ticket] = deque()

    def enqueue(self, wake: Callable[[], None]) -> _Ticket:
        ticket = _Ticket(wake)
        with self.mutex:
            if self.holder is None and not self.waiting:
                self.holder, ticket.granted = ticket, True
            else:
                self.waiting.append(ticket)
        return ticket

    def leave(self, ticket: _Ticket) -> None:
        """Give up a place in the queue or the turn, handing the turn to the next waiter."""
        with self.mutex:
            if self.holder is ticket:
                self.holder = None
                if self.waiting:
                    self.holder = self.waiting.popleft()
                    self.holder.granted = True
                    self.holder.wake()
            elif ticket in self.waiting:
                self.waiting.remove(ticket)


_locks: dict[str, _Lock] = {}
_locks_mutex = threading.Lock()
_held: contextvars.ContextVar[dict[str, _Ticket]] = contextvars.ContextVar("orch_held_locks", default={})


def _lock_of(path: Path) -> _Lock:
    key = os.path.abspath(path)
    with _locks_mutex:
        lock = _locks.get(key)
        if lock is None:
            lock = _locks[key] = _Lock(key)
        return lock


def _held_here(lock: _Lock) -> bool:
    ticket = _held.get().get(lock.path)
    return ticket is not None and ticket.active


def _open_locked(path: str) -> tuple[int, bool]:
    """(descriptor of `path`, whether the flock was free and is now ours)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, True
    except BlockingIOError:
        return fd, False
    except BaseException:
        os.close(fd)
        raise


class _Wait:
    """A blocking flock in a helper thread (another process holds the lock). `done()` is called once it is
    taken or failed; a caller that gives up abandons it and the helper lets the lock go when it gets it."""

    def __init__(self, fd: int, done: Callable[[], None]) -> None:
        self.fd, self.done, self.error = fd, done, None
        self.finished = self.abandoned = False
        self.guard = threading.Lock()
        threading.Thread(target=self._run, name="orch-flock-wait", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.error = exc
        with self.guard:
            self.finished = True
            if self.abandoned:
                os.close(self.fd)
                return
        self.done()

    def result(self, path: str) -> int:
        """The descriptor, now locked; or Timeout if it is not taken yet (then abandoned)."""
        if not self.abandon(keep=True):
            raise Timeout(path)
        if self.error is not None:
            os.close(self.fd)
            raise self.error
        return self.fd

    def abandon(self, keep: bool = False) -> bool:
        """Give up unless the helper is done (then, with `keep`, the caller takes the descriptor; else it is
        closed now). Returns whether the helper was done."""
        with self.guard:
            if not self.finished:
                self.abandoned = True
                return False
        if not keep:
            os.close(self.fd)
        return True


@contextmanager
def _holding(lock: _Lock, ticket: _Ticket, fd: int) -> Iterator[None]:
    """The granted, flocked `ticket` held by this context until the block ends, then released."""
    token = _held.set({**_held.get(), lock.path: ticket})
    try:
        yield
    finally:
        _held.reset(token)
        ticket.active = False
        try:
            os.close(fd)  # drops the flock (the only descriptor of this open file)
        finally:
            lock.leave(ticket)


@contextmanager
def hold(path: Path, timeout: float) -> Iterator[None]:
    """Hold the lock of `path` (created if missing) in this thread; raises Timeout after `timeout` seconds."""
    lock = _lock_of(path)
    if _held_here(lock):
        yield
        return
    event = threading.Event()
    ticket = lock.enqueue(event.set)
    deadline = _now() + timeout
    try:
        if not ticket.granted and not event.wait(max(0.0, deadline - _now())):
            raise Timeout(str(path))
        fd, taken = _open_locked(lock.path)
        if not taken:
            taken_event = threading.Event()
            wait = _Wait(fd, taken_event.set)
            taken_event.wait(max(0.0, deadline - _now()))
            fd = wait.result(str(path))
    except BaseException:
        lock.leave(ticket)
        raise
    with _holding(lock, ticket, fd):
        yield


@asynccontextmanager
async def hold_async(path: Path, timeout: float) -> AsyncIterator[None]:
    """`hold` for a coroutine: every wait is on the event loop (a wait for another process in a helper thread),
    never in a shared worker thread. Work this coroutine passes to `asyncio.to_thread` meanwhile holds it too."""
    lock = _lock_of(path)
    if _held_here(lock):
        yield
        return
    loop = asyncio.get_running_loop()
    turn = loop.create_future()

    def wake() -> None:
        loop.call_soon_threadsafe(lambda: turn.done() or turn.set_result(None))

    ticket = lock.enqueue(wake)
    deadline = _now() + timeout
    try:
        if not ticket.granted:
            try:
                await asyncio.wait_for(asyncio.shield(turn), max(0.0, deadline - _now()))
            except asyncio.TimeoutError:
                raise Timeout(str(path)) from None
        fd, taken = await asyncio.to_thread(_open_locked, lock.path)  # the loop never touches the disk
        if not taken:
            flocked = loop.create_future()
            wait = _Wait(fd, lambda: loop.call_soon_threadsafe(lambda: flocked.done() or flocked.set_result(None)))
            try:
                await asyncio.wait_for(flocked, max(0.0, deadline - _now()))
            except asyncio.TimeoutError:
                pass
            except BaseException:  # cancelled: the helper must not keep the lock for nobody
                wait.abandon()
                raise
            fd = wait.result(str(path))
    except BaseException:
        lock.leave(ticket)
        raise
    with _holding(lock, ticket, fd):
        yield


_now = time.monotonic
