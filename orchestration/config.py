"""Configuration: a TOML file validated with pydantic, overridden by ORCH_* environment variables.

The config path comes from --config, else ORCH_CONFIG, else ./config.toml. Secrets (the Discord token) are
never read from the file: only from the environment, by the front-end that needs them.

`[agents]` configures the coding agents (orchestration/agents/); `config.agents.for_project(name)` gives one
project's settings with its `[agents.projects.<name>]` overrides applied.
"""
from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .models import SLUG


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built when first used (see models.Model)


class OrchestratorSettings(_Section):
    data_dir: Path = Path("./data")
    allowed_roots: list[Path] = Field(default_factory=list)
    commit_author: str = "Orch Bot <orch-bot@localhost>"
    commit_batch_ms: int = Field(250, ge=0, le=60_000)
    sprint_days: int = Field(14, ge=1, le=90)
    stale_lock_s: int = Field(600, ge=1)

    @field_validator("commit_author")
    @classmethod
    def _name_and_email(cls, value: str) -> str:
        if "<" not in value or not value.rstrip().endswith(">"):
            raise ValueError('must look like "Name <email>"')
        return value

    @property
    def author_name(self) -> str:
        return self.commit_author.split("<", 1)[0].strip() or "orch-bot"

    @property
    def author_email(self) -> str:
        return self.commit_author.split("<", 1)[1].rstrip().rstrip(">").strip()


class DiscordSettings(_Section):
    guild_id: int | None = None
    channel_category: str = "Projects"
    channel_prefix: str = "proj-"
    admin_role: str | None = None
    member_role: str | None = None


class TicketSettings(_Section):
    resolve_threshold: int = Field(85, ge=0, le=100)
    # Who scores a reply: the built-in rules, or `scorer_command` speaking the protocol's "clarity" role (a
    # language model); a command that fails or times out falls back to the rules.
    scorer: Literal["rule", "command"] = "rule"
    scorer_command: list[str] = Field(default_factory=list)
    scorer_timeout_s: float = Field(30, gt=0, le=600)

    @field_validator("scorer_command")
    @classmethod
    def _command_argv(cls, value: list[str]) -> list[str]:
        return _argv(value)

    @model_validator(mode="after")
    def _command_when_asked(self) -> "TicketSettings":
        if self.scorer == "command" and not self.scorer_command:
            raise ValueError('scorer = "command" needs a scorer_command (an argument list)')
        return self


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names that hold a secret: refused as config keys, and their values are scrubbed from agent output.
SECRET_NAME = re.compile(r"token|secret|password|passwd|api_?key|credential|private_key", re.IGNORECASE)
BOT_SECRETS = ("DISCORD_TOKEN",)  # the bot's own secrets: never passed to an agent, whatever `env` says


def _argv(value: list[str] | None) -> list[str] | None:
    if value is not None and any(not arg for arg in value):
        raise ValueError("an argument list holds no empty strings")
    return value


def _env_names(value: list[str] | None) -> list[str] | None:
    for name in value or ():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if name in BOT_SECRETS:
            raise ValueError(f"{name} is the bot's own secret and is never passed to an agent")
    return value


class AgentOverrides(_Section):
    """`[agents.projects.<name>]`: the keys of [agents] that may differ per project (unset: the global value).
    max_parallel is left out on purpose: it is the limit across all projects."""
    command: list[str] | None = None
    test_command: list[str] | None = None
    planner_command: list[str] | None = None
    max_parallel_per_project: int | None = Field(None, ge=1, le=64)
    timeout_s: int | None = Field(None, ge=1, le=7 * 86_400)
    max_attempts: int | None = Field(None, ge=1, le=100)
    env: list[str] | None = None
    repo_url: str | None = None  # where Celery workers clone it from (default: the repository's path); not in for_project

    _check_argv = field_validator("command", "test_command", "planner_command")(_argv)
    _check_env = field_validator("env")(_env_names)


class AgentSettings(_Section):
    command: list[str] = Field(default_factory=list)  # empty: no agent, people move stories by hand
    test_command: list[str] = Field(default_factory=list)  # empty: the agent's "done" is taken as it is
    planner_command: list[str] = Field(default_factory=list)  # the "plan" agent; empty: `command`
    max_parallel: int = Field(2, ge=1, le=64)
    max_parallel_per_project: int = Field(2, ge=1, le=64)
    timeout_s: int = Field(1800, ge=1, le=7 * 86_400)
    max_attempts: int = Field(3, ge=1, le=100)
    env: list[str] = Field(default_factory=list)  # names of variables passed through to the agent
    projects: dict[str, AgentOverrides] = Field(default_factory=dict)
    # Where attempts run: "local" (subprocesses of the bot) or "celery" (`orch worker`s, through a broker).
    runner: Literal["local", "celery"] = "local"
    broker_url: str = ""  # with a password: from ORCH_BROKER_URL only
    result_backend: str = ""  # empty: the broker
    queue: str = Field("orch-agents", min_length=1)
    visibility_timeout_s: int | None = Field(None, ge=1)  # unset: above the longest attempt's time limit

    _check_argv = field_validator("command", "test_command", "planner_command")(_argv)
    _check_env = field_validator("env")(_env_names)

    @model_validator(mode="after")
    def _celery_needs_a_broker(self) -> "AgentSettings":
        if self.runner == "celery" and not self.broker_url:
            raise ValueError('runner = "celery" needs broker_url (or ORCH_BROKER_URL), e.g. redis://127.0.0.1:6379/0')
        return self

    @field_validator("projects")
    @classmethod
    def _project_names(cls, value: dict[str, AgentOverrides]) -> dict[str, AgentOverrides]:
        for name in value:
            if not SLUG.match(name):
                raise ValueError(f"{name!r} is not a project name (lowercase letters, digits and -)")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.command)

    @property
    def configured(self) -> bool:
        """Some project has an agent (a planner counts): [agents] command, or a project's own."""
        return bool(self.command or self.planner_command) or any(p.command or p.planner_command
                                                                 for p in self.projects.values())

    def for_project(self, name: str) -> "AgentSettings":
        """The settings one project runs with: its overrides on top of [agents] (an override replaces the
        whole value, lists included). The result has no `projects` of its own."""
        override = self.projects.get(name)
        changes = override.model_dump(exclude_none=True, exclude={"repo_url"}) if override else {}
        return self.model_copy(update={**changes, "projects": {}})


class Config(_Section):
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    tickets: TicketSettings = Field(default_factory=TicketSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    _file: Path | None = PrivateAttr(None)  # the file it was read from (None: there was none, defaults apply)
    _looked_for: Path | None = PrivateAttr(None)

    def where_to_set(self, key: str) -> str:
        """Where a person sets `key`: the file the settings were read from, or, when there was none, which file
        was looked for and how to name another."""
        if self._file is not None:
            return f"Set {key} in {self._file}."
        if self._looked_for is not None:
            return (f"No config file was read: there is none at {self._looked_for} (orch reads --config PATH, else "
                    f"$ORCH_CONFIG, else ./config.toml). Create one with {key} (see config.example.toml), or set "
                    f"ORCH_{key.upper()}.")
        return f"Set {key} in the config."


# ORCH_<KEY> overrides [section] key; key names are unique across sections, so the section is implied.
# List keys: how the variable's text becomes a list.
_LIST_KEYS = {
    "allowed_roots": lambda raw: [p for p in raw.split(os.pathsep) if p],
    "command": shlex.split,  # ORCH_COMMAND="python agents/reference_agent.py"
    "test_command": shlex.split,
    "planner_command": shlex.split,
    "scorer_command": shlex.split,
    "env": lambda raw: raw.replace(",", " ").split(),
}
_NO_ENV_OVERRIDE = {"projects"}  # a table, set in the file only


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    overrides: dict[str, dict[str, Any]] = {}
    for section_name, field in Config.model_fields.items():
        for key in field.annotation.model_fields:  # type: ignore[union-attr]
            raw = env.get(f"ORCH_{key.upper()}")
            if raw is None or key in _NO_ENV_OVERRIDE:
                continue
            value: Any = raw
            if key in _LIST_KEYS:
                try:
                    value = _LIST_KEYS[key](raw)
                except ValueError as exc:  # shlex: an unclosed quote
                    raise ConfigError(f"ORCH_{key.upper()}: {exc}") from None
            elif raw == "":
                value = None
            overrides.setdefault(section_name, {})[key] = value
    return overrides


def config_path(cli_value: str | os.PathLike[str] | None, env: Mapping[str, str] = os.environ) -> Path:
    if cli_value:
        return Path(cli_value)
    if env.get("ORCH_CONFIG"):
        return Path(env["ORCH_CONFIG"])
    return Path("config.toml")


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] = os.environ) -> Config:
    """Read and validate the config. A missing file at the default path means "all defaults"."""
    file = config_path(path, env)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read ({exc.strerror or exc})") from None
        _refuse_secrets(file, data)
    elif path is not None or env.get("ORCH_CONFIG"):
        raise ConfigError(f"{file}: config file not found")
    from_env: dict[tuple[str, str], str] = {}
    for section, values in _env_overrides(env).items():
        if not isinstance(data.setdefault(section, {}), dict):
            raise ConfigError(f"{file}: [{section}] must be a table of keys")
        data[section].update(values)
        from_env.update({(section, key): f"ORCH_{key.upper()}" for key in values})
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(err, from_env) for err in exc.errors(include_url=False))
        raise ConfigError(f"{file}: {problems}.", "config.example.toml lists every key with its meaning.") from None
    # Relative paths are relative to the config file, so the bot behaves the same from any directory.
    base = file.parent.resolve()
    config._file, config._looked_for = (file.resolve() if file.exists() else None), file.resolve()
    o = config.orchestrator
    o.data_dir = (base / o.data_dir.expanduser()).resolve()
    o.allowed_roots = [(base / r.expanduser()).resolve() for r in o.allowed_roots]
    a = config.agents
    a.command = _paths_from(base, a.command)
    a.planner_command = _paths_from(base, a.planner_command)
    config.tickets.scorer_command = _paths_from(base, config.tickets.scorer_command)
    for override in a.projects.values():
        if override.command:
            override.command = _paths_from(base, override.command)
        if override.planner_command:
            override.planner_command = _paths_from(base, override.planner_command)
    return config


def _paths_from(base: Path, argv: list[str]) -> list[str]:
    """An agent runs in a story's worktree, so a relative path in its command that names a file next to the
    config file ("agents/reference_agent.py") is made absolute, like every other path here. Anything else
    ("python", "-m", "src/**", a URL) stays as it is; "~/" is expanded."""
    out = []
    for arg in argv:
        path = Path(arg).expanduser() if arg.startswith("~/") else Path(arg)
        if arg.startswith("~/") or (not path.is_absolute() and "/" in arg and (base / path).exists()):
            arg = str(base / path)
        out.append(arg)
    return out


def _refuse_secrets(file: Path, data: Mapping[str, Any], where: str = "") -> None:
    for key, value in data.items():
        name = f"{where}{key}"
        if where != "agents.projects." and SECRET_NAME.search(key):  # a project name is not a key
            raise ConfigError(f"{file}: {name}: secrets are never read from the config file.",
                              "Remove the key and set the DISCORD_TOKEN environment variable instead.")
        if isinstance(value, str) and has_password(value):
            raise ConfigError(f"{file}: {name}: a URL with a password is never read from the config file.",
                              f"Set ORCH_{key.upper()} in the environment instead." if key in _BROKER_KEYS
                              else "Leave the password out: an SSH key or a git credential helper gives access.")
        if isinstance(value, dict):
            _refuse_secrets(file, value, f"{name}.")


_BROKER_KEYS = ("broker_url", "result_backend")


def has_password(url: str) -> bool:
    try:
        return "://" in url and urlsplit(url).password is not None
    except ValueError:
        return False


def without_password(url: str) -> str:
    """A URL as it may be shown or logged: its password replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:" if parts.username else ":"
        return parts._replace(netloc=f"{user}***@{netloc}").geturl()
    except ValueError:
        return "(an unreadable URL)"


def _describe(err: Any, from_env: Mapping[tuple[str, str], str]) -> str:
    """One problem as a person reads it: the key (and the variable it came from), the value, what is wrong."""
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    source = from_env.get(loc[:2]) if len(loc) >= 2 else None
    shown = f" (from {source})" if source else ""
    value = err.get("input")
    if not isinstance(value, (dict, list)) and value is not None:
        text = repr(value)
        shown += f" = {text if len(text) <= 60 else text[:57] + '...'}"
    return f"{key}{shown}: {err['msg'].removeprefix('Value error, ')}"
