"""Agents' progress in a project's channel: one message per story run, edited in place as it goes.

The scheduler publishes a "story_run" event at each step of a story (orchestration/agents/scheduler.py,
StoryProgress). Each (project, sprint, story) gets one message: posted at its first step, edited at the next
ones, whatever the attempt. Edits are coalesced: one request in flight per message, and only the latest step
waits behind it (an older waiting step is replaced), so a burst of steps costs at most two requests and nothing
queues up. The message IDs live in memory: after a restart of the bot a story's next step starts a new message.

When a story's "done" leaves its project in SPRINT_REVIEW (the agents finished the sprint, no command did),
the channel is told once that the sprint is ready for review, with its branch and commits.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import discord

from orchestration.errors import OrchError
from orchestration.events import Event

from . import render

if TYPE_CHECKING:
    from orchestration.agents.scheduler import StoryProgress

    from .client import OrchBot

log = logging.getLogger("bot.progress")

Key = tuple[str, str, str]  # project, sprint, story


class StoryRunMessages:
    def __init__(self, bot: OrchBot) -> None:
        self.bot = bot
        self._messages: dict[Key, int] = {}  # the message showing each story run
        self._latest: dict[Key, tuple[StoryProgress, float | None]] = {}  # the step waiting to be shown, and since when
        self._running_since: dict[Key, float] = {}  # when the running attempt started (epoch seconds)
        self._tasks: dict[Key, asyncio.Task] = {}  # the one task showing a story's steps, while it has some

    def update(self, event: Event) -> None:
        """Take a "story_run" event (on the event loop, quick): show it soon, replacing a step not shown yet."""
        p = event.detail
        key = (event.project, p.sprint, p.story)
        if p.phase == "running":
            self._running_since[key] = time.time()
        elif p.phase != "testing":  # the attempt is over
            self._running_since.pop(key, None)
        since = self._running_since.get(key)
        self._latest[key] = (p, since)
        if key not in self._tasks:
            self._tasks[key] = asyncio.get_running_loop().create_task(self._drain(key), name=f"progress {key}")

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait (up to `timeout`) until every step taken so far is shown: before the bot closes."""
        if tasks := list(self._tasks.values()):
            await asyncio.wait(tasks, timeout=timeout)

    async def _drain(self, key: Key) -> None:
        try:
            while (latest := self._latest.pop(key, None)) is not None:
                try:
                    await self._show(key, *latest)
                except Exception:  # one failed step must not stop the later ones
                    log.exception("progress of %s not shown", "/".join(key))
        finally:
            self._tasks.pop(key, None)  # no await since the last pop: a new step finds no task and starts one

    async def _show(self, key: Key, progress: StoryProgress, since: float | None) -> None:
        project = key[0]
        try:
            channel, hidden = await self.bot.project_channel(project)
            embed = render.story_run(project, progress, since, hidden)
            message_id = self._messages.get(key)
            if message_id is not None:
                try:
                    await channel.get_partial_message(message_id).edit(embed=embed,
                                                                       allowed_mentions=render.NO_MENTIONS)
                except discord.NotFound:  # deleted by someone: the run gets a new message
                    message_id = None
            if message_id is None:
                message = await channel.send(embed=embed, allowed_mentions=render.NO_MENTIONS)
                self._messages[key] = message.id
        except (discord.HTTPException, LookupError, OrchError) as exc:
            log.warning("progress of project=%s story=%s not shown: %s", project, progress.story, exc)
            return
        if progress.sprint_to_review:  # said by the orchestrator for the step that moved the sprint to review
            await self._announce_review(project, progress.sprint, channel, hidden)

    async def _announce_review(self, project: str, sprint: str, channel: discord.abc.Messageable,
                               hidden: list[Path]) -> None:
        """Tell the channel that the agents finished the sprint: its branch is ready to be merged."""
        try:
            view = await self.bot.orchestrator.sprint_status(project)
            await channel.send(embed=render.review_ready(view, hidden), allowed_mentions=render.NO_MENTIONS)
        except (discord.HTTPException, OrchError) as exc:
            log.warning("project=%s %s: review announcement not posted: %s", project, sprint, exc)
