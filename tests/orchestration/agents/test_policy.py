"""The agent's environment allowlist and the scrubbing of secret values (the checks after an attempt are
tested with real agents in test_attempt.py)."""
from __future__ import annotations

import pytest

from orchestration.agents.policy import Scrubber, agent_env, secret_values

ENV = {"PATH": "/usr/bin", "HOME": "/home/bot", "LANG": "C.UTF-8", "DISCORD_TOKEN": "MTIz.discord.token",
       "ANTHROPIC_API_KEY": "sk-ant-0123456789", "AWS_SECRET_ACCESS_KEY": "aws-secret-value", "SHELL": "/bin/sh",
       "ORCH_CONFIG": "/etc/orch.toml", "DEBUG_TOKEN": "1", "HTTPS_PROXY": "http://proxy:3128"}


def test_the_agent_gets_the_allowlist_and_nothing_else():
    env = agent_env(["ANTHROPIC_API_KEY", "HTTPS_PROXY", "NOT_SET", "DISCORD_TOKEN"], {"ORCH_STORY": "S-1"}, ENV)
    assert env == {"PATH": "/usr/bin", "HOME": "/home/bot", "LANG": "C.UTF-8", "ANTHROPIC_API_KEY": "sk-ant-0123456789",
                   "HTTPS_PROXY": "http://proxy:3128", "ORCH_STORY": "S-1"}


def test_secret_values_are_those_of_the_bots_secrets():
    assert secret_values(ENV) == ["MTIz.discord.token", "sk-ant-0123456789", "aws-secret-value"]  # not "1"


def test_scrubbing_a_stream_catches_a_secret_cut_between_chunks():
    scrub = Scrubber(["MTIz.discord.token", "sk-ant-0123456789"])
    text = "log: MTIz.discord.token and sk-ant-0123456789 twice MTIz.discord.token é\n".encode()
    for size in (1, 3, 7, 64):
        out = "".join(scrub.feed(text[i:i + size]) for i in range(0, len(text), size)) + scrub.end()
        assert out == "log: *** and *** twice *** é\n"
    assert scrub.scrub("MTIz.discord.tokenMTIz.discord.token") == "******"


@pytest.mark.parametrize("secrets", [[], ["x" * 8]])
def test_scrubbing_without_a_match_keeps_the_text(secrets):
    scrub = Scrubber(secrets)
    assert scrub.feed(b"hello ") + scrub.feed(b"world") + scrub.end() == "hello world"
