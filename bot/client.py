"""The Discord client: loads one cog per command group, starts the orchestrator and, when an agent is configured,
the agent loop (bot/progress.py shows their work), syncs the command tree only when it changed, and answers any
unexpected error with a friendly message (the traceback goes to the log).
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import pkgutil
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from orchestration.agents.planner import PLAN_READY
from orchestration.agents.scheduler import STORY_RUN
from orchestration.commands import DISCORD
from orchestration.config import Config
from orchestration.errors import Busy, OrchError
from orchestration.events import Event
from orchestration.service import Orchestrator
from orchestration.store import atomic_write

from . import cogs, render
from .handling import send
from .metrics import Metrics
from .progress import StoryRunMessages

log = logging.getLogger("bot")

TREE_HASH_FILE = "command-tree.sha256"


def intents() -> discord.Intents:
    result = discord.Intents.default()
    result.message_content = True  # thread replies (tickets) are read as messages
    return result


class OrchTree(app_commands.CommandTree):
    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """With `[discord] guild_id` set, the bot serves that server alone: a command (or an autocomplete) from
        any other is refused before it runs, e.g. through commands synced globally by an earlier start."""
        pinned = self.client.config.discord.guild_id
        if pinned is None or interaction.guild_id == pinned:
            return True
        log.warning("interaction from server %s refused: the bot serves server %s only", interaction.guild_id, pinned)
        if interaction.type is discord.InteractionType.autocomplete:
            await interaction.response.autocomplete([])
        else:
            await send(interaction, embed=render.error_embed(OrchError(
                "This bot only serves its own Discord server; nothing was done here.",
                "Invite a bot of your own to manage your projects.")), ephemeral=True)
        return False

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Anything that is not an OrchError (those are answered in bot/handling.py): log it, apologise."""
        original = getattr(error, "original", error)
        name = interaction.command.qualified_name if interaction.command else "?"
        log.error("command %s failed: %r", name, original, exc_info=original)
        try:
            await send(interaction, embed=render.crash_embed(), ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about the failure of %s", name)


class OrchBot(commands.Bot):
    def __init__(self, config: Config, orchestrator: Orchestrator, *, owns_orchestrator: bool = False) -> None:
        # Slash commands only: no prefix, so no message is ever taken for a command (with one, a mention of the
        # bot was an unknown command, logged as an error with its traceback).
        super().__init__(command_prefix=(), intents=intents(), tree_cls=OrchTree,
                         allowed_mentions=render.NO_MENTIONS, help_command=None)
        self.config = config
        self.orchestrator = orchestrator
        self._owns_orchestrator = owns_orchestrator
        self.synced: bool | None = None  # whether the last start-up synced the tree (None: not started)
        self.metrics = Metrics()  # per command and project since start, fed by @handled, shown by /health
        self._posts: set[asyncio.Task] = set()
        self.story_runs = StoryRunMessages(self)
        self._runs_agents = False  # whether this bot started the agent loop (and so stops it)

    async def setup_hook(self) -> None:
        # Every module of bot/cogs is a command group (or a feature such as tickets); `_`-modules are helpers.
        for module in sorted(m.name for m in pkgutil.iter_modules(cogs.__path__) if not m.name.startswith("_")):
            await self.load_extension(f"{cogs.__name__}.{module}")
        self.orchestrator.subscribe(self._on_event)  # before start(): recovery's trouble is told too
        outcomes = await self.orchestrator.start()
        for name, outcome in outcomes.items():
            log.info("start-up project=%s recovery=%s", name, json.dumps(outcome))
        if self.config.agents.configured:
            await self._start_agents()
        await self.sync_tree_if_changed()

    async def _start_agents(self) -> None:
        """Run the agent loop here, unless another process (`orch run`, another bot) runs it already. The loop
        and its attempts are the orchestrator's, outliving any Discord handler: they start in a context of
        their own, carrying none of the handler's context variables (test harnesses such as SimCord use those
        to tell the bot's short-lived work, on a virtual clock, from the rest)."""
        try:
            await contextvars.Context().run(asyncio.ensure_future, self.orchestrator.agents.start())
        except Busy as exc:
            log.warning("agents are not run by this bot: %s %s", exc.message, exc.hint or "")
            return
        self._runs_agents = True
        log.info("agents run by this bot")

    # -- the configured server only --------------------------------------------------------------------------
    async def on_ready(self) -> None:
        await self._leave_other_guilds(self.guilds)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self._leave_other_guilds([guild])

    # A server joined with `unavailable: false` in its GUILD_CREATE reaches discord.py as "available", not "join".
    on_guild_available = on_guild_join

    async def _leave_other_guilds(self, guilds: list[discord.Guild]) -> None:
        """With `[discord] guild_id` set, leave any other server the bot is in or is invited to; but never
        while the configured one is missing: a mistyped guild_id must not make it leave the server it is for."""
        pinned = self.config.discord.guild_id
        if pinned is None:
            return
        if self.get_guild(pinned) is None:
            log.error("[discord] guild_id %s is no server the bot is in; check it. Other servers are not left.",
                      pinned)
            return
        for guild in guilds:
            if guild.id == pinned:
                continue
            try:
                await guild.leave()
                log.warning("left server %s (%s): the bot serves server %s only ([discord] guild_id)",
                            guild.id, guild.name, pinned)
            except discord.HTTPException as exc:  # its interactions are refused anyway (OrchTree)
                log.warning("could not leave server %s (%s): %s", guild.id, guild.name, exc)

    # -- what the orchestrator tells ------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if event.kind == STORY_RUN:  # one message per story run, edited in place
            self.story_runs.update(event)
            return
        task = asyncio.get_running_loop().create_task(self._post_event(event))
        self._posts.add(task)  # keep a reference until it ends (the loop only holds weak ones)
        task.add_done_callback(self._posts.discard)

    async def _post_event(self, event: Event) -> None:
        """Post an event in its project's channel (the channel of a project with none: nowhere, logged)."""
        if event.kind == PLAN_READY:  # the proposals, with the buttons to decide on them
            from .cogs.planning import post_plan
            try:
                await post_plan(self, event.detail)
            except (OrchError, discord.HTTPException, LookupError) as exc:
                log.warning("plan of %s in project=%s not posted: %s", event.detail.epic, event.project, exc)
            return
        try:
            channel, _ = await self.project_channel(event.project)
            await channel.send(embed=render.event_embed(event), allowed_mentions=render.NO_MENTIONS)
        except (OrchError, discord.HTTPException, LookupError) as exc:
            log.warning("event %s of project=%s not posted: %s", event.kind, event.project, exc)

    def server_paths(self, repo: Path | None) -> list[Path]:
        """The folders never shown to people who are not admins of the project's server: the project's repository
        and the bot's data folder (agents' text and error messages may name them)."""
        return [p for p in (repo, self.config.orchestrator.data_dir) if p]

    async def posts_done(self, timeout: float = 5.0) -> None:
        """Wait (up to `timeout`) until the events told so far are posted."""
        if self._posts:
            await asyncio.wait(list(self._posts), timeout=timeout)

    async def project_channel(self, project: str) -> tuple[discord.abc.Messageable, list[Path]]:
        """Where the bot posts for a project unasked: its channel, and the folders never shown there (server_paths).
        LookupError if it has no channel, ProjectNotFound if it is gone (HTTPException if Discord says so)."""
        entry = await self.orchestrator.entry(project)
        channel_id = entry.channel_id
        channel = (self.get_channel(channel_id) or await self.fetch_channel(channel_id)) if channel_id else None
        if channel is None:
            raise LookupError("the project has no channel")
        return channel, self.server_paths(entry.path)

    # -- command tree ---------------------------------------------------------------------------------------
    def _scope(self) -> discord.Object | None:
        guild_id = self.config.discord.guild_id
        return discord.Object(guild_id) if guild_id else None

    def tree_fingerprint(self) -> str:
        """A hash of what a sync would send: the commands' JSON, the scope and the application."""
        scope = self._scope()
        payload = sorted((c.to_dict(self.tree) for c in self.tree.get_commands(guild=scope)),
                         key=lambda c: (c.get("type", 1), c["name"]))
        key = {"application": self.application_id, "guild": scope.id if scope else None, "commands": payload}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    async def sync_tree_if_changed(self) -> bool:
        """Sync to guild_id (instant) or globally, only when the tree differs from the last sync: Discord
        rate-limits syncs, and a sync on every start is what gets bots throttled."""
        scope = self._scope()
        if scope is not None:
            self.tree.copy_global_to(guild=scope)
        fingerprint = self.tree_fingerprint()
        data_dir = self.config.orchestrator.data_dir
        hash_file = data_dir / TREE_HASH_FILE
        previous = hash_file.read_text().strip() if hash_file.exists() else None
        if previous == fingerprint:
            log.info("command tree unchanged; no sync")
            self.synced = False
            return False
        try:
            synced = await self.tree.sync(guild=scope)
        except discord.HTTPException as exc:  # the commands synced last time still work; the next start retries
            log.warning("command tree not synced (%s %s): was the bot invited with the applications.commands "
                        "scope? Commands from the last sync stay in use; the next start tries again.",
                        exc.status, exc.text or "")
            self.synced = False
            return False
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(hash_file, (fingerprint + "\n").encode())
        log.info("command tree synced: %d commands to %s", len(synced), f"guild {scope.id}" if scope else "all guilds")
        self.synced = True
        return True

    async def close(self) -> None:
        if self._runs_agents:  # stopped first, so their last step ("stopped") still reaches the channels
            await self.orchestrator.agents.close()
            self._runs_agents = False
            await self.story_runs.flush()
        await super().close()
        if self._owns_orchestrator:
            await self.orchestrator.close()


def create_bot(config: Config, orchestrator: Orchestrator | None = None) -> OrchBot:
    """The bot for `config`; with no orchestrator given it makes (and later closes) its own."""
    if orchestrator is None:
        return OrchBot(config, Orchestrator(config, front_end=DISCORD), owns_orchestrator=True)
    return OrchBot(config, orchestrator)
