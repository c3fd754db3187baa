"""Protocol 1: the input an agent reads, and the reply on the last line of its stdout."""
from __future__ import annotations

import json

import pytest

from orchestration.agents.protocol import CodeInput, NotProtocol, parse_reply


def test_the_input_is_the_documented_json():
    example = {"protocol": 1, "role": "code", "project": "shop", "sprint": "sprint-001",
               "story": {"id": "S-3", "title": "Cart total", "description": "Sum the cart",
                         "criteria": ["empty cart is 0"], "points": 3, "priority": "high",
                         "epic": {"id": "E-1", "title": "Checkout"}},
               "attempt": 2, "workdir": "/data/worktrees/shop/S-3", "branch": "orch/S-3",
               "test_command": ["python", "-m", "pytest", "-q"],
               "context": {"architecture": "# Architecture", "best_practices": "# Practices"},
               "previous": [{"attempt": 1, "outcome": "tests_failed", "summary": "s", "output": "1 failed"}],
               "answers": [{"ticket": "TK-2", "question": "q?", "answer": "a"}]}
    task = CodeInput.model_validate(example)
    assert json.loads(task.to_stdin()) == example
    with pytest.raises(ValueError):
        CodeInput.model_validate({**example, "protocol": 2})
    with pytest.raises(ValueError):
        CodeInput.model_validate({**example, "role": "plan"})  # not built yet (issue 9)


def test_the_reply_is_the_last_line_and_earlier_lines_are_log():
    out = 'thinking...\n{"status": "question"}\n{"status": "done", "summary": "ok", "cost": 1}\n\n'
    reply = parse_reply(out)
    assert (reply.status, reply.summary, reply.options, reply.tests_added) == ("done", "ok", [], [])
    q = parse_reply('{"status": "question", "question": "Which?", "options": ["a", "b"]}')
    assert (q.question, q.options) == ("Which?", ["a", "b"])


@pytest.mark.parametrize("out, reason", [
    ("", "printed nothing on stdout"),
    ("  \n\n", "printed nothing on stdout"),
    ("working\nall good!", "the last line of stdout is not JSON: all good!"),
    ('{"status": "done"}\ntrailing words', "not JSON: trailing words"),
    ('["done"]', "JSON but not an object"),
    ('{"summary": "no status"}', "unknown status null (expected one of done, question, failed)"),
    ('{"status": "finished"}', 'unknown status "finished"'),
    ('{"status": "question", "question": " "}', 'a "question" reply needs a non-empty "question"'),
    ('{"status": "done", "options": "a"}', "the reply is not valid: options: Input should be a valid list"),
    ('{"status": "done", "summary": "' + "x" * 70_000 + '"}', "more than a reply may be"),
])
def test_what_is_not_the_protocol_says_why(out, reason):
    with pytest.raises(NotProtocol) as err:
        parse_reply(out)
    assert reason in err.value.reason
