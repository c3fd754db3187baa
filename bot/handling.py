"""What every slash command shares: replying, deferring, the log line, and turning OrchError into a reply.

`@handled` wraps each command callback. A typed OrchError is an expected outcome (a refusal), not a crash:
it becomes an ephemeral embed with the message, the state, the allowed commands and a hint. Any other
exception goes on to the tree's on_error (bot/client.py), which logs it and answers "something went wrong".
Either way, one structured log line per command: project, command, user, outcome, latency; and the same
command, project, outcome and latency go into the bot's metrics (bot/metrics.py), shown by /health.

Replies go through `send`, which knows whether the interaction was answered or deferred already. If a
command has not answered after DEFER_AFTER_S (a file lock held by the CLI, a slow disk), the interaction is
deferred so Discord's 3-second limit is met whatever happens.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import discord

from orchestration.errors import OrchError

from . import render
from .metrics import Metrics
from .permissions import is_admin

log = logging.getLogger("bot.commands")

DEFER_AFTER_S = 2.0
_BARE = re.compile(r"[\w.:@#/+-]+")


def _lock(interaction: discord.Interaction) -> asyncio.Lock:
    """Serialises the first response: a command's reply and the watchdog's deferral never race."""
    return interaction.extras.setdefault("reply_lock", asyncio.Lock())


async def defer(interaction: discord.Interaction, *, ephemeral: bool = False) -> None:
    async with _lock(interaction):
        if not interaction.response.is_done():
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
            interaction.extras["deferred_ephemeral"] = ephemeral


async def send(interaction: discord.Interaction, content: str | None = None, *, embed: discord.Embed | None = None,
               file: discord.File | None = None, view: discord.ui.View | None = None,
               ephemeral: bool = False) -> None:
    """Reply (or follow up after a deferral) with mentions off: replies echo user text."""
    kwargs: dict[str, Any] = {"allowed_mentions": render.NO_MENTIONS, "ephemeral": ephemeral}
    if content is not None:
        kwargs["content"] = render.cut(content, render.CONTENT_MAX)
    if embed is not None:
        kwargs["embed"] = render.fit(embed)
    if file is not None:
        kwargs["file"] = file
    if view is not None:
        kwargs["view"] = view
    async with _lock(interaction):
        if not interaction.response.is_done():
            await interaction.response.send_message(**kwargs)
            return
        if ephemeral and interaction.extras.get("deferred_ephemeral") is False:
            # The first follow-up would fill the public "thinking…" message, and be public too. So fill that
            # message with a placeholder, send the private reply as a message of its own, drop the placeholder.
            await interaction.edit_original_response(content="…", allowed_mentions=render.NO_MENTIONS)
            await interaction.followup.send(**kwargs)
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        else:
            await interaction.followup.send(**kwargs)
        interaction.extras["deferred_ephemeral"] = None  # the original response is filled now


async def send_modal(interaction: discord.Interaction, modal: discord.ui.Modal,
                     hint: str = "Run the command again.") -> None:
    """Open a form: Discord takes one only as the first answer, so a command that was slow (deferred) says so,
    with `hint` (what else the command offers)."""
    async with _lock(interaction):
        if interaction.response.is_done():
            raise OrchError("The form could not open: Discord takes one only as the first answer, within 3 seconds, "
                            "and the bot was slower this time.", hint)
        await interaction.response.send_modal(modal)


async def send_error(interaction: discord.Interaction, error: OrchError) -> None:
    await send(interaction, embed=render.error_embed(error, _hidden_paths(interaction)), ephemeral=True)


def _hidden_paths(interaction: discord.Interaction) -> list[Path]:
    """Server paths are for the admins of the project's server: anyone else reads an error without the
    project's repository folder (noted by routing) or the bot's data folder."""
    bot = interaction.client
    if is_admin(interaction, bot.config.discord):
        return []
    return bot.server_paths(interaction.extras.get("path"))


def _finished(interaction: discord.Interaction, outcome: str, started: float) -> None:
    """The command's one log line, and its count and latency in the bot's metrics (bot/metrics.py)."""
    latency_s = time.perf_counter() - started
    # A form's submit has no command: the form names it in extras.
    command = interaction.command.qualified_name if interaction.command else interaction.extras.get("command", "?")
    project = interaction.extras.get("project")
    fields = {
        "project": project or "-",
        "command": command,
        "user": interaction.user.name,
        "outcome": outcome,
        "latency_ms": round(latency_s * 1000),
    }
    # key=value, values quoted only when needed, so a log line stays one line and machine-readable.
    log.info(" ".join(f"{k}={v if _BARE.fullmatch(str(v)) else json.dumps(str(v))}" for k, v in fields.items()))
    metrics: Metrics | None = getattr(interaction.client, "metrics", None)
    if metrics is not None:
        metrics.record(command, project, outcome, latency_s)


async def _defer_when_slow(interaction: discord.Interaction) -> None:
    await asyncio.sleep(DEFER_AFTER_S)
    await defer(interaction)


def _resolved_signature(callback: Callable[..., Any]) -> inspect.Signature:
    """The callback's signature with string annotations (`from __future__ import annotations`) evaluated in
    the callback's own module: discord.py would otherwise evaluate them in this module's globals."""
    signature = inspect.signature(callback)
    params = []
    for param in signature.parameters.values():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, callback.__globals__)  # noqa: S307 - our own source code
            except NameError:
                pass
        params.append(param.replace(annotation=annotation))
    return signature.replace(parameters=params)


def handled(callback: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Decorate a command callback (under @app_commands.command). Its parameters stay visible to discord.py."""

    @functools.wraps(callback)
    async def wrapper(self: Any, interaction: discord.Interaction, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        watchdog = asyncio.create_task(_defer_when_slow(interaction))
        outcome = "ok"
        try:
            await callback(self, interaction, *args, **kwargs)
        except OrchError as error:
            outcome = f"refused:{type(error).__name__}"
            await send_error(interaction, error)
        except Exception:
            outcome = "error"
            raise  # to the tree's on_error: logged with its traceback, "something went wrong" for the user
        finally:
            watchdog.cancel()
            _finished(interaction, outcome, started)

    wrapper.__signature__ = _resolved_signature(callback)  # type: ignore[attr-defined]
    return wrapper
