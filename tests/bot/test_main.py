"""`python -m bot`: start-up problems are one clear line and a non-zero exit, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bot(tmp_path: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("ORCH_")}
    if token is not None:
        env["DISCORD_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)


def test_no_token_is_one_line_and_exit_2(tmp_path):
    done = run_bot(tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN is not set" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_bad_config_is_one_line_and_never_shows_the_token(tmp_path):
    secret = "MTIzNDU2Nzg5.secret-token-value"
    bad = tmp_path / "bad.toml"
    bad.write_text("[orchestrator]\ncommit_batch_ms = 'soon'\n")
    done = run_bot(tmp_path, "--config", str(bad), token=secret)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1
    assert "commit_batch_ms" in lines[0] and secret not in done.stderr + done.stdout

    missing = run_bot(tmp_path, "--config", str(tmp_path / "nope.toml"), token=secret)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "not found" in missing.stderr and secret not in missing.stderr


def test_help_names_the_config_option(tmp_path):
    done = run_bot(tmp_path, "--help")
    assert done.returncode == 0 and "--config PATH" in done.stdout
