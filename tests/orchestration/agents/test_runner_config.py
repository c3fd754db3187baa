"""[agents] runner settings: the default needs no broker; a broker password never comes from the file."""
from __future__ import annotations

import pytest

from orchestration.agents.celery_runner import AgentQueueUnreachable, CeleryRunner, make_app, time_limits
from orchestration.agents.local import LocalRunner
from orchestration.agents.runners import make_runner
from orchestration.config import load_config
from orchestration.errors import ConfigError

SECRET = "s3cr3t-broker-pass"


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


async def test_the_default_runner_is_local_and_needs_no_broker(tmp_path):
    config = load_config(write(tmp_path, '[agents]\ncommand = ["x"]\n'), env={})
    assert config.agents.runner == "local"
    runner = make_runner(config, lambda o: None, lambda s: None)
    assert isinstance(runner, LocalRunner)
    await runner.check()  # nothing to reach
    assert await runner.status() == "local: 0/2 attempts running"


def test_celery_settings_from_the_file_and_the_environment(tmp_path):
    text = ('[agents]\nrunner = "celery"\nbroker_url = "redis://127.0.0.1:6390/0"\nqueue = "shop-agents"\n'
            'timeout_s = 600\n[agents.projects.shop]\nrepo_url = "ssh://git@git.example.com/shop.git"\n'
            'timeout_s = 3600\n')
    config = load_config(write(tmp_path, text), env={})
    runner = make_runner(config, lambda o: None, lambda s: None)
    assert isinstance(runner, CeleryRunner) and runner.free() == 2
    conf = runner.app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.result_backend == "redis://127.0.0.1:6390/0" and conf.task_default_queue == "shop-agents"
    # the broker hands a running attempt to another worker only after the longest attempt's hard time limit
    assert conf.broker_transport_options["visibility_timeout"] > time_limits(3600)[1] > 2 * 3600
    assert config.agents.projects["shop"].repo_url == "ssh://git@git.example.com/shop.git"
    assert config.agents.for_project("shop").timeout_s == 3600

    url = f"redis://:{SECRET}@127.0.0.1:6390/1"
    env = {"ORCH_BROKER_URL": url, "ORCH_RESULT_BACKEND": "redis://127.0.0.1:6390/2", "ORCH_RUNNER": "celery"}
    agents = load_config(write(tmp_path, ""), env=env).agents
    assert agents.broker_url == url and make_app(agents).conf.result_backend == "redis://127.0.0.1:6390/2"


@pytest.mark.parametrize("text, hint", [
    (f'[agents]\nrunner = "celery"\nbroker_url = "redis://:{SECRET}@127.0.0.1:6379/0"\n', "ORCH_BROKER_URL"),
    (f'[agents]\nresult_backend = "redis://user:{SECRET}@127.0.0.1/0"\n', "ORCH_RESULT_BACKEND"),
    (f'[agents.projects.shop]\nrepo_url = "https://bot:{SECRET}@git.example.com/shop.git"\n', "credential helper"),
])
def test_a_url_with_a_password_in_the_file_is_refused_without_echoing_it(tmp_path, text, hint):
    with pytest.raises(ConfigError, match="a URL with a password") as err:
        load_config(write(tmp_path, text), env={})
    assert hint in str(err.value) and SECRET not in str(err.value)


def test_celery_needs_a_broker(tmp_path):
    with pytest.raises(ConfigError, match='runner = "celery" needs broker_url'):
        load_config(write(tmp_path, '[agents]\nrunner = "celery"\n'), env={})
    with pytest.raises(ConfigError, match="agents.runner"):
        load_config(write(tmp_path, '[agents]\nrunner = "kubernetes"\n'), env={})


def test_the_unreachable_message_names_the_broker_without_its_password():
    message = str(AgentQueueUnreachable(f"redis://user:{SECRET}@10.0.0.5:6379/0", "Connection refused"))
    assert "unreachable at redis://user:***@10.0.0.5:6379/0 (Connection refused)" in message
    assert SECRET not in message


def test_orch_worker_without_a_broker_says_what_to_set(tmp_path, capsys, monkeypatch):
    from orchestration.cli import main
    monkeypatch.delenv("ORCH_BROKER_URL", raising=False)
    assert main(["worker", "--config", str(write(tmp_path, "[agents]\n"))]) == 1
    err = capsys.readouterr().err
    assert "orch worker needs the broker: set [agents] broker_url or ORCH_BROKER_URL" in err
    assert "Traceback" not in err
