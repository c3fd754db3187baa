"""Clarity scored by a command ([tickets] scorer = "command"): real processes, the real Orchestrator, real files.

The stand-in (fixtures/clarity_standin.py) answers as told; the reference scorer (agents/clarity_scorer.py)
is run as shipped."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

import pytest

from orchestration.config import Config, TicketSettings
from tests.orchestration.test_tickets import QUESTION, tickets_file

STANDIN = str(Path(__file__).parent / "fixtures" / "clarity_standin.py")
REFERENCE = str(Path(__file__).resolve().parents[3] / "agents" / "clarity_scorer.py")
SECRET = "sk-model-0123456789abcdef"


def use_command(orch, *argv: str, timeout_s: float = 10) -> None:
    orch.config.tickets = TicketSettings(scorer="command", scorer_command=[sys.executable, *argv],
                                         scorer_timeout_s=timeout_s)


def answer(completeness: int, consistency: int, actionability: int, missing: list[str] = ()) -> str:
    return json.dumps({"completeness": completeness, "consistency": consistency,
                       "actionability": actionability, "missing": list(missing)})


async def test_the_command_scorer_resolves_and_refuses_as_its_answers_say(orch, project):
    await orch.open_ticket(project, QUESTION, by="po")
    use_command(orch, STANDIN, "answer", answer(20, 40, 10, ["Which database, and why?"]))
    refused = await orch.reply_to_ticket(project, "TK-1", "bob", "PostgreSQL, because we already run it.")
    assert refused.action == "unclear" and refused.score.total == 23  # the rule scorer would give 100
    assert refused.follow_ups == ["Which database, and why?"] and refused.score.scorer == "command"

    use_command(orch, STANDIN, "answer", answer(90, 100, 95))
    resolved = await orch.reply_to_ticket(project, "TK-1", "bob", "hm")  # the rule scorer would give 33
    assert resolved.action == "resolved" and resolved.score.total == 95
    stored = tickets_file(orch, project)["tickets"][0]
    assert stored["status"] == "resolved" and [r["score"]["scorer"] for r in stored["replies"]] == ["command"] * 2
    assert stored["resolution"] == "bob: PostgreSQL, because we already run it.\nbob: hm"  # it read the thread


async def test_the_scorer_gets_the_protocol_input_and_the_allowlisted_environment(orch, project, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "discord-token-never-passed")
    monkeypatch.setenv("MODEL_API_KEY", SECRET)
    monkeypatch.setenv("UNLISTED_VARIABLE", "x")
    orch.config.agents.env = ["MODEL_API_KEY"]
    await orch.open_ticket(project, QUESTION, options=["PostgreSQL", "MongoDB"], by="po")
    orch.config.tickets.resolve_threshold = 95
    assert (await orch.reply_to_ticket(project, "TK-1", "alice", "Postgres.")).action == "unclear"  # 90, by rule
    use_command(orch, STANDIN, "dump", str(tmp_path / "got.json"))
    await orch.reply_to_ticket(project, "TK-1", "bob", "Because we already run it.")
    got = json.loads((tmp_path / "got.json").read_text())
    assert got["stdin"] == {"protocol": 1, "role": "clarity", "question": QUESTION,
                            "options": ["PostgreSQL", "MongoDB"], "reply": "Because we already run it.",
                            "thread": [{"author": "alice", "text": "Postgres."}]}
    env = got["env"]
    assert env["ORCH_ROLE"] == "clarity" and env["ORCH_PROJECT"] == project and env["MODEL_API_KEY"] == SECRET
    assert "DISCORD_TOKEN" not in env and "UNLISTED_VARIABLE" not in env


@pytest.mark.parametrize("mode, arg, why", [
    ("garbage", "", "not JSON"),
    ("answer", answer(150, 100, 100), "completeness"),
    ("answer", json.dumps({"completeness": True, "consistency": 100, "actionability": 100}), "completeness"),
    ("answer", json.dumps({"status": "done"}), "completeness"),
    ("exit", "3", "exited with status 3"),
    ("no-such-file", "", "exited with status 2"),
])
async def test_bad_output_falls_back_to_the_rule_scorer_in_one_log_line_without_secrets(
        orch, project, caplog, monkeypatch, mode, arg, why):
    monkeypatch.setenv("MODEL_API_KEY", SECRET)
    orch.config.agents.env = ["MODEL_API_KEY"]
    await orch.open_ticket(project, QUESTION, by="po")
    use_command(orch, STANDIN if mode != "no-such-file" else "/nonexistent/scorer.py", mode, *[arg] if arg else [])
    caplog.set_level(logging.WARNING, logger="orchestration.agents.clarity")
    outcome = await orch.reply_to_ticket(project, "TK-1", "bob", "PostgreSQL, because we already run it.")
    assert outcome.action == "resolved" and outcome.score.scorer == "rule" and outcome.score.total == 100
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and why in lines[0] and "the rule scorer decided" in lines[0] and "\n" not in lines[0]
    assert SECRET not in caplog.text


async def test_a_command_that_cannot_start_falls_back(orch, project, caplog):
    await orch.open_ticket(project, QUESTION, by="po")
    orch.config.tickets = TicketSettings(scorer="command", scorer_command=["/nonexistent/clarity-model"])
    outcome = await orch.reply_to_ticket(project, "TK-1", "bob", "maybe postgres")
    assert outcome.action == "unclear" and outcome.score.scorer == "rule" and "decide firmly" in outcome.follow_ups[0]
    assert "cannot start /nonexistent/clarity-model" in caplog.text


async def test_a_time_out_stops_the_scorer_and_its_children_and_falls_back(orch, project, caplog):
    await orch.open_ticket(project, QUESTION, by="po")
    use_command(orch, STANDIN, "sleep", "30", timeout_s=0.5)
    started = time.monotonic()
    outcome = await orch.reply_to_ticket(project, "TK-1", "bob", "Postgres, since we run it.")
    assert time.monotonic() - started < 5  # 0.5 s, then SIGTERM to the whole group
    assert outcome.action == "resolved" and outcome.score.scorer == "rule"
    assert "ran longer than 0.5 s" in caplog.text
    children = await asyncio.create_subprocess_exec("pgrep", "-f", "time.sleep(30)", stdout=asyncio.subprocess.PIPE)
    assert (await children.communicate())[0] == b""  # the child it started was stopped too


async def test_while_the_scorer_runs_the_project_is_not_locked_and_a_reply_meanwhile_is_read_in(orch, project,
                                                                                                tmp_path):
    calls = tmp_path / "calls.jsonl"
    await orch.open_ticket(project, QUESTION, by="po")
    use_command(orch, STANDIN, "calls", str(calls))  # it answers 50: every reply is recorded, none resolves
    slow = asyncio.create_task(orch.reply_to_ticket(project, "TK-1", "alice", "slow: Postgres"))
    await asyncio.sleep(0.4)  # alice's reply is being scored (1 s)
    quick = await asyncio.wait_for(orch.reply_to_ticket(project, "TK-1", "bob", "Because we run it."), 0.9)
    assert quick.action == "unclear"  # applied while alice's was still scored: no lock was held
    await slow
    asked = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [a["reply"] for a in asked] == ["slow: Postgres", "Because we run it.", "slow: Postgres"]
    assert asked[2]["thread"] == [{"author": "bob", "text": "Because we run it."}]  # scored again, with bob's
    assert [r["author"] for r in tickets_file(orch, project)["tickets"][0]["replies"]] == ["bob", "alice"]


async def test_the_reference_scorer_reads_the_whole_thread(orch, project):
    await orch.open_ticket(project, QUESTION, by="po")
    use_command(orch, REFERENCE)
    first = await orch.reply_to_ticket(project, "TK-1", "alice", "Which one do we run already?")
    assert first.action == "unclear" and first.score.scorer == "command"
    second = await orch.reply_to_ticket(project, "TK-1", "bob", "Postgres.")
    assert second.action == "resolved" and second.score.scorer == "command"
    third_ticket = await orch.open_ticket(project, QUESTION, by="po")
    assert (await orch.reply_to_ticket(project, third_ticket.ticket.id, "bob", "not sure")).action == "unclear"


def test_the_config_needs_a_command_for_the_command_scorer_and_reads_it_from_the_environment(tmp_path):
    from orchestration.config import load_config
    from orchestration.errors import ConfigError

    with pytest.raises(Exception, match="scorer_command"):
        Config.model_validate({"tickets": {"scorer": "command"}})
    file = tmp_path / "config.toml"
    file.write_text("[tickets]\nscorer = \"command\"\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="scorer_command"):
        load_config(file, env={})
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "clarity_scorer.py").write_text("")
    config = load_config(file, env={"ORCH_SCORER_COMMAND": "python agents/clarity_scorer.py",
                                    "ORCH_SCORER_TIMEOUT_S": "5"})
    assert config.tickets.scorer_command == ["python", str(tmp_path / "agents" / "clarity_scorer.py")]
    assert config.tickets.scorer_timeout_s == 5 and TicketSettings().scorer == "rule"


class StandInAPI:
    """A local stand-in for the Messages API: records each request, answers with the next text in `answers`."""

    def __init__(self, answers: list[str]) -> None:
        import http.server
        import threading

        self.requests: list[dict] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                api.requests.append({"path": self.path, "key": self.headers["x-api-key"], "body": body})
                text = answers.pop(0)
                status = 500 if text == "500" else 200
                payload = json.dumps({"content": [{"type": "text", "text": text}]}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_the_hosted_model_adapter_asks_the_api_and_its_failures_fall_back(orch, project, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    orch.config.agents.env = ["ANTHROPIC_API_KEY"]
    api = StandInAPI(['Here it is: {"completeness": 40, "consistency": 30, "actionability": 20, '
                      '"missing": ["Which one?"]}', "I would say it is clear.", "500",
                      '```json\n{"completeness": 95, "consistency": 100, "actionability": 90, "missing": []}\n```'])
    try:
        await orch.open_ticket(project, QUESTION, by="po")
        use_command(orch, str(Path(REFERENCE).parent / "clarity_claude.py"), "--url", api.url, "--model", "m-1")
        first = await orch.reply_to_ticket(project, "TK-1", "alice", "Postgres.")
        assert first.action == "unclear" and first.score.scorer == "command" and first.follow_ups == ["Which one?"]
        request = api.requests[0]
        assert request["path"] == "/v1/messages" and request["key"] == SECRET and request["body"]["model"] == "m-1"
        assert QUESTION in request["body"]["messages"][0]["content"]
        for _ in range(2):  # prose instead of scores, then a server error: the rules decide
            fallback = await orch.reply_to_ticket(project, "TK-1", "alice", "maybe")
            assert fallback.score.scorer == "rule"
        last = await orch.reply_to_ticket(project, "TK-1", "bob", "Because we already run it.")
        assert last.action == "resolved" and last.score.scorer == "command" and last.score.total == 95
        assert "- alice: Postgres." in api.requests[-1]["body"]["messages"][0]["content"]  # the thread is asked
    finally:
        api.close()
