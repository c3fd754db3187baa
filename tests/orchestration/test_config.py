"""Config: defaults, file values, ORCH_* overrides, refusals that name the key, and the example file itself."""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest

from orchestration.config import AgentOverrides, Config, config_path, load_config
from orchestration.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def write(folder: Path, text: str, name: str = "config.toml") -> Path:
    file = folder / name
    file.write_text(text, encoding="utf-8")
    return file


def test_defaults_when_the_default_file_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    o = config.orchestrator
    assert o.data_dir == tmp_path.resolve() / "data"
    assert o.allowed_roots == []
    assert (o.author_name, o.author_email) == ("Orch Bot", "orch-bot@localhost")
    assert o.commit_batch_ms == 250
    d = config.discord
    assert (d.guild_id, d.channel_category, d.channel_prefix, d.admin_role, d.member_role) == (
        None, "Projects", "proj-", None, None)
    assert config.tickets.resolve_threshold == 85


def test_values_from_the_file(tmp_path):
    file = write(tmp_path, """
[orchestrator]
data_dir = "/srv/orch"
allowed_roots = ["/srv/repos", "/home/me/code"]
commit_author = "Scrum Bot <scrum@example.com>"
commit_batch_ms = 0
[discord]
guild_id = 123456789012345678
channel_category = "Work"
channel_prefix = "p-"
admin_role = "Leads"
member_role = "Devs"
[tickets]
resolve_threshold = 70
""")
    config = load_config(file, env={})
    o = config.orchestrator
    assert o.data_dir == Path("/srv/orch")
    assert o.allowed_roots == [Path("/srv/repos"), Path("/home/me/code")]
    assert (o.author_name, o.author_email, o.commit_batch_ms) == ("Scrum Bot", "scrum@example.com", 0)
    assert config.discord.model_dump() == {"guild_id": 123456789012345678, "channel_category": "Work",
                                           "channel_prefix": "p-", "admin_role": "Leads", "member_role": "Devs"}
    assert config.tickets.resolve_threshold == 70


def test_environment_overrides_the_file(tmp_path):
    file = write(tmp_path, '[orchestrator]\ncommit_batch_ms = 100\n[discord]\nguild_id = 5\nadmin_role = "Leads"\n')
    env = {
        "ORCH_COMMIT_BATCH_MS": "900",
        "ORCH_ALLOWED_ROOTS": os.pathsep.join(["/a", "/b/c", ""]),
        "ORCH_GUILD_ID": "",  # empty: not set
        "ORCH_MEMBER_ROLE": "Devs",
        "ORCH_RESOLVE_THRESHOLD": "60",
        "ORCH_DATA_DIR": "/var/lib/orch",
    }
    config = load_config(file, env=env)
    assert config.orchestrator.commit_batch_ms == 900
    assert config.orchestrator.allowed_roots == [Path("/a"), Path("/b/c")]
    assert config.orchestrator.data_dir == Path("/var/lib/orch")
    assert config.discord.guild_id is None
    assert config.discord.admin_role == "Leads"  # from the file, untouched
    assert config.discord.member_role == "Devs"
    assert config.tickets.resolve_threshold == 60


def test_config_path_order(tmp_path):
    assert config_path("given.toml", env={"ORCH_CONFIG": "env.toml"}) == Path("given.toml")
    assert config_path(None, env={"ORCH_CONFIG": "env.toml"}) == Path("env.toml")
    assert config_path(None, env={}) == Path("config.toml")
    file = write(tmp_path, "[tickets]\nresolve_threshold = 42\n", "elsewhere.toml")
    assert load_config(None, env={"ORCH_CONFIG": str(file)}).tickets.resolve_threshold == 42


@pytest.mark.parametrize("text, key, value", [
    ("[orchestrator]\ncommit_batch_ms = -1\n", "orchestrator.commit_batch_ms", "-1"),
    ("[tickets]\nresolve_threshold = 150\n", "tickets.resolve_threshold", "150"),
    ("[discord]\nguild_id = \"my server\"\n", "discord.guild_id", "'my server'"),
    ('[orchestrator]\ncommit_author = "no email"\n', "orchestrator.commit_author", "'no email'"),
])
def test_a_bad_value_names_the_key_and_the_value(tmp_path, text, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    message = str(err.value)
    assert str(tmp_path / "config.toml") in message
    assert f"{key} = {value}:" in message
    assert "config.example.toml" in message  # the hint says where the keys are explained


@pytest.mark.parametrize("text, key", [
    ("[orchestrator]\ncommit_batch = 10\n", "orchestrator.commit_batch"),
    ("[tickets]\nthreshold = 10\n", "tickets.threshold"),
    ("[agents]\nmodel = 'x'\n", "agents.model"),
    ("[agents.projects.shop]\nmax_parallel = 3\n", "agents.projects.shop.max_parallel"),  # a global limit only
    ("[plugins]\nx = 1\n", "plugins"),
])
def test_an_unknown_key_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=re.escape(f"{key}: unknown key")):
        load_config(write(tmp_path, text), env={})


def test_a_bad_environment_value_names_its_variable(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(
            "orchestrator.commit_batch_ms (from ORCH_COMMIT_BATCH_MS) = 'soon':")):
        load_config(write(tmp_path, ""), env={"ORCH_COMMIT_BATCH_MS": "soon"})


@pytest.mark.parametrize("text", [
    '[discord]\ntoken = "MTIz.abc.def"\n',
    'token = "MTIz.abc.def"\n',
    '[discord]\nbot_token = "MTIz.abc.def"\n',
])
def test_a_token_in_the_file_is_refused_without_echoing_it(tmp_path, text):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env={})
    message = str(err.value)
    assert "token" in message and "DISCORD_TOKEN" in message
    assert "MTIz" not in message


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(None, env={"ORCH_CONFIG": str(tmp_path / "nope.toml")})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[orchestrator\n"), env={})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path, env={})  # a folder


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc" / "orch"
    folder.mkdir(parents=True)
    file = write(folder, '[orchestrator]\ndata_dir = "state"\nallowed_roots = ["../repos", "/abs", "~/code"]\n')
    monkeypatch.chdir(tmp_path)  # somewhere else: must not matter
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    o = load_config(file, env={}).orchestrator
    assert o.data_dir == folder / "state"
    assert o.allowed_roots == [tmp_path / "etc" / "repos", Path("/abs"), tmp_path / "home" / "code"]


def test_the_example_file_loads_and_validates():
    config = load_config(EXAMPLE, env={})
    assert config.orchestrator.commit_batch_ms == 250
    assert config.orchestrator.data_dir == EXAMPLE.parent / "data"


def test_the_example_file_documents_every_key():
    """Each key of the model appears in the example, commented in or out, right under its comment, and the
    example with every line uncommented still validates: the example cannot fall behind the model."""
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text.splitlines()
    uncommented = []
    found: dict[str, set[str]] = {}
    section = None
    for i, line in enumerate(lines):
        if m := re.match(r"^(?:# )?\[([\w.]+)\]$", line):
            section = m.group(1)
            line = line.removeprefix("# ")
        elif m := re.match(r"^(?:# )?(\w+) = ", line):
            found.setdefault(section, set()).add(m.group(1))
            assert lines[i - 1].startswith("#"), f"{m.group(1)} has no comment above it"
            line = line.removeprefix("# ")
        uncommented.append(line)
    expected = {name: set(field.annotation.model_fields) for name, field in Config.model_fields.items()}
    expected["agents"].discard("projects")  # a table of its own, shown with an example project
    expected["agents.projects.shop"] = set(AgentOverrides.model_fields)
    assert found == expected
    every_key = Config.model_validate(tomllib.loads("\n".join(uncommented)))
    assert every_key.discord.guild_id is not None and every_key.discord.member_role
    assert every_key.agents.command and every_key.agents.for_project("shop").timeout_s == 3600


def test_agents_defaults_and_per_project_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert not load_config(write(tmp_path, ""), env={}).agents.enabled  # no [agents]: no agent
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "reference_agent.py").write_text("")
    (tmp_path / "run-agent").write_text("")
    file = write(tmp_path, """
[agents]
command = ["python", "agents/reference_agent.py", "--flag=a/b", "/abs/agent", "~/bin/agent", "src/**", "http://x/y"]
test_command = ["python", "-m", "pytest", "tests/unit"]
env = ["ANTHROPIC_API_KEY"]
[agents.projects.shop]
command = ["./run-agent"]
timeout_s = 60
env = []
[agents.projects.token-app]
max_attempts = 1
""")
    agents = load_config(file, env={}).agents
    assert agents.command == ["python", str(tmp_path / "agents/reference_agent.py"), "--flag=a/b", "/abs/agent",
                              str(tmp_path / "home" / "bin" / "agent"), "src/**", "http://x/y"]
    assert agents.test_command == ["python", "-m", "pytest", "tests/unit"]  # runs in the worktree: as written
    shop = agents.for_project("shop")
    assert shop.command == [str(tmp_path / "run-agent")] and shop.timeout_s == 60 and shop.env == []
    assert shop.test_command == agents.test_command and shop.max_attempts == 3 and shop.projects == {}
    other = agents.for_project("other")
    assert (other.command, other.timeout_s, other.env, other.max_parallel) == (agents.command, 1800,
                                                                             ["ANTHROPIC_API_KEY"], 2)
    assert agents.for_project("token-app").max_attempts == 1  # a project name is not a secret key


@pytest.mark.parametrize("text, problem", [
    ('[agents]\nenv = ["DISCORD_TOKEN"]\n', "agents.env: DISCORD_TOKEN is the bot's own secret"),
    ('[agents]\nenv = ["NOT A NAME"]\n', "is not an environment variable name"),
    ('[agents]\ncommand = ["python", ""]\n', "no empty strings"),
    ('[agents]\ntimeout_s = 0\n', "agents.timeout_s = 0:"),
    ('[agents.projects.Shop]\ntimeout_s = 5\n', "'Shop' is not a project name"),
    ('[agents.projects.shop]\nenv = ["DISCORD_TOKEN"]\n', "never passed to an agent"),
    ('[agents.projects.shop]\napi_key = "x"\n', "secrets are never read"),
])
def test_bad_agents_settings_are_refused(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(write(tmp_path, text), env={})


def test_agents_keys_from_the_environment(tmp_path):
    env = {"ORCH_COMMAND": "python 'my agent.py' --fast", "ORCH_TEST_COMMAND": "make test",
           "ORCH_ENV": "OPENAI_API_KEY, HTTPS_PROXY", "ORCH_MAX_PARALLEL": "4", "ORCH_TIMEOUT_S": "90",
           "ORCH_MAX_PARALLEL_PER_PROJECT": "1", "ORCH_MAX_ATTEMPTS": "5", "ORCH_PROJECTS": "ignored"}
    agents = load_config(write(tmp_path, '[agents]\ncommand = ["x"]\n'), env=env).agents
    assert agents.command == ["python", "my agent.py", "--fast"]
    assert agents.test_command == ["make", "test"]
    assert agents.env == ["OPENAI_API_KEY", "HTTPS_PROXY"]
    assert (agents.max_parallel, agents.max_parallel_per_project, agents.timeout_s, agents.max_attempts) == (
        4, 1, 90, 5)
    assert not load_config(write(tmp_path, '[agents]\ncommand = ["x"]\n'), env={"ORCH_COMMAND": ""}).agents.enabled
    with pytest.raises(ConfigError, match="ORCH_COMMAND"):
        load_config(write(tmp_path, ""), env={"ORCH_COMMAND": "python 'unclosed"})


def test_every_key_name_is_unique_across_sections():
    """ORCH_<KEY> names no section, so two sections must never share a key name."""
    names = [key for field in Config.model_fields.values() for key in field.annotation.model_fields]
    assert len(names) == len(set(names))
