#!/usr/bin/env python3
"""The reference clarity scorer: speaks the protocol's "clarity" role (docs/tickets.md), offline, with no model.

It reads one ClarityInput on stdin ({"protocol": 1, "role": "clarity", "question", "options", "reply",
"thread"}) and answers on the last line of stdout with {"completeness", "consistency", "actionability",
"missing"}, computed by the built-in rule scorer (orchestration/scoring.py) over the reply and its thread. It
exists so the `command` path can be run and tested end to end; replace it with a scorer backed by a real
language model that speaks the same two JSON lines (read the input, ask the model for the three parts and the
follow-up questions, print them). Run it with the bot's Python, where `orchestration` is installed:

    [tickets]
    scorer = "command"
    scorer_command = ["python", "agents/clarity_scorer.py"]
"""
from __future__ import annotations

import json
import sys

from orchestration.agents.protocol import ClarityInput
from orchestration.scoring import RuleScorer


def main() -> int:
    ask = ClarityInput.model_validate_json(sys.stdin.read())
    score = RuleScorer().score(ask.question, ask.options, ask.reply, [(m.author, m.text) for m in ask.thread])
    print(f"scored a reply to {ask.question[:60]!r}: {score.total}", file=sys.stderr)
    print(json.dumps({"completeness": score.completeness, "consistency": score.consistency,
                      "actionability": score.actionability, "missing": score.missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
