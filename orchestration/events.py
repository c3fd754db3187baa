"""What the orchestrator tells the front-ends without being asked: events, published on the event loop to every
subscriber (the bot posts them to the project's channel). No front-end import here: a subscriber is any callable.

Kinds: "commits_stuck" (the text says why, and the fix), "commits_resumed", and "story_run" (an agent's
progress on a story, see agents/scheduler.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    project: str
    kind: str
    text: str
    detail: Any = None  # what a front-end needs to show it (agents.scheduler.StoryProgress for "story_run")


class Events:
    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """`callback(event)` runs on the event loop: keep it quick (schedule slow work as a task)."""
        self._subscribers.append(callback)

    def publish(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # one subscriber's bug must not keep the event from the others
                log.exception("a subscriber failed on event %s of %s", event.kind, event.project)
