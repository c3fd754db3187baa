#!/usr/bin/env python3
"""A clarity scorer backed by a hosted model (Anthropic's Messages API): an adapter for the protocol's
"clarity" role (docs/tickets.md). Standard library only.

It reads the ClarityInput on stdin, asks the model to judge the reply (with the thread's earlier replies) and
to answer with the three parts and the follow-up questions as JSON, checks that answer and prints it as the
last stdout line. Anything wrong (no key, the API unreachable or refusing, an answer that is not the JSON
asked for) exits with status 1 and a reason on stderr: the orchestrator then lets the rule scorer decide.

    [tickets]
    scorer = "command"
    scorer_command = ["python", "agents/clarity_claude.py", "--model", "claude-3-5-haiku-latest"]
    [agents]
    env = ["ANTHROPIC_API_KEY"]     # passed through to the scorer (and scrubbed from its output)

--url points it at another endpoint with the same API (a proxy, or the tests' stand-in server).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

PROMPT = """A person answered a question that holds up a software team's work. Judge how clear the answer is.

Question: {question}
Options: {options}
Earlier messages in the thread, oldest first:
{thread}
The answer to judge (read it with the earlier messages: an answer may be spread over several):
{reply}

Score from 0 to 100, as integers:
- completeness: does it answer the question (pick an option, or say what to do), with a reason?
- consistency: is it firm and free of contradictions (no hedging, no "both")?
- actionability: can someone act on it now without asking again?
List in "missing" up to three short follow-up questions to ask if it is not clear enough (empty if it is).
Answer with one line of JSON and nothing else:
{{"completeness": 0, "consistency": 0, "actionability": 0, "missing": []}}"""


def ask_model(url: str, key: str, model: str, prompt: str, timeout: float) -> str:
    body = json.dumps({"model": model, "max_tokens": 400, "messages": [{"role": "user", "content": prompt}]})
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/messages", data=body.encode(), method="POST", headers={
        "x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = json.load(response)
    return "".join(part.get("text", "") for part in data.get("content", []) if part.get("type") == "text")


def scores_in(text: str) -> dict:
    """The JSON object in the model's text (it may wrap it in prose or a code fence), checked."""
    start, end = text.find("{"), text.rfind("}")
    found = json.loads(text[start:end + 1]) if 0 <= start < end else None
    parts = ("completeness", "consistency", "actionability")
    if not isinstance(found, dict) or not all(
            isinstance(found.get(p), int) and not isinstance(found.get(p), bool) and 0 <= found[p] <= 100
            for p in parts):
        raise ValueError(f"the model did not answer with the scores: {text[:200]!r}")
    missing = [str(m) for m in found.get("missing", []) if str(m).strip()] if isinstance(found.get("missing"), list) else []
    return {**{p: found[p] for p in parts}, "missing": missing[:3]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="claude-3-5-haiku-latest")
    parser.add_argument("--url", default="https://api.anthropic.com")
    parser.add_argument("--timeout", type=float, default=25.0, help="seconds for the API call")
    args = parser.parse_args()
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    if not key:
        print("ANTHROPIC_API_KEY is not set (name it in [agents] env)", file=sys.stderr)
        return 1
    ask = json.loads(sys.stdin.read())
    thread = "\n".join(f"- {m['author']}: {m['text']}" for m in ask.get("thread", [])) or "(none)"
    prompt = PROMPT.format(question=ask["question"], options=", ".join(ask.get("options", [])) or "(none given)",
                           thread=thread, reply=ask["reply"])
    try:
        answer = scores_in(ask_model(args.url, key, args.model, prompt, args.timeout))
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"no score from the model: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
