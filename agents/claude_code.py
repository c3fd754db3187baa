#!/usr/bin/env python3
"""Adapter: Claude Code (the `claude` CLI) as a protocol-1 coding agent (docs/agents.md).

Configure it with
    [agents]
    command = ["python", "agents/claude_code.py"]          # or with your own claude options after it:
    # command = ["python", "agents/claude_code.py", "--model", "sonnet", "--max-turns", "40"]
    env = ["ANTHROPIC_API_KEY"]                              # or whatever your claude login needs

What it does, per attempt, in the story's worktree:
1. Builds a prompt from the protocol input: the story (title, description, acceptance criteria, epic), the
   project's architecture and best practices, earlier attempts and their output, the answers to the agent's
   questions, the test command, and the rules: write the test first, work only in this directory, never
   touch .orch-state/, do not push or switch branches, and end with one of the lines
       DONE: <one-line summary>      QUESTION: <question> (then optionally OPTIONS: a | b | c)
       FAILED: <why>
2. Runs `claude -p <prompt> --output-format json <options>`, where <options> are the adapter's own arguments
   (default: --permission-mode acceptEdits --allowedTools Bash,Read,Write,Edit,Glob,Grep, so it can edit
   and run the tests without asking). `claude` is looked up in PATH.
3. Reads Claude Code's JSON result (one object: type "result", subtype "success" or an error subtype such
   as "error_max_turns", is_error, result (the final message), session_id, num_turns, duration_ms,
   total_cost_usd), logs its metadata, and answers on its last stdout line:
   - is_error, or a subtype other than "success": "failed", with the subtype and the end of the message;
   - a QUESTION: line: "question" (with the OPTIONS: line's choices);
   - a FAILED: line: "failed"; a DONE: line, or no marker at all: "done" (the orchestrator runs the tests).
   Claude Code that cannot be started or prints no JSON result is "failed" with the reason.
Whatever Claude leaves uncommitted the orchestrator commits on the story's branch with the summary.
"""
from __future__ import annotations

import json
import subprocess
import sys

DEFAULT_OPTIONS = ["--permission-mode", "acceptEdits", "--allowedTools", "Bash,Read,Write,Edit,Glob,Grep"]
CONTEXT_MAX = 20_000  # characters of each context document in the prompt (one argv string stays < 128 KiB)
OUTPUT_MAX = 3_000


def reply(status: str, **fields: object) -> None:
    print(json.dumps({"status": status, **fields}), flush=True)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "\n[... cut]"


def build_prompt(task: dict) -> str:
    story = task["story"]
    parts = [f"You are the coding agent of the project {task['project']!r}, sprint {task['sprint']}. Do story "
             f"{story['id']}: {story['title']}."]
    if story.get("epic"):
        parts.append(f"It belongs to epic {story['epic']['id']}: {story['epic']['title']}.")
    if story.get("description"):
        parts.append(f"Description:\n{story['description']}")
    if story.get("criteria"):
        parts.append("Acceptance criteria:\n" + "\n".join(f"- {c}" for c in story["criteria"]))
    for key, title in (("architecture", "Architecture of the project"), ("best_practices", "Best practices")):
        if task.get("context", {}).get(key):
            parts.append(f"{title}:\n{_cut(task['context'][key], CONTEXT_MAX)}")
    for a in task.get("answers", []):
        parts.append(f"You asked (ticket {a['ticket']}): {a['question']}\nThe answer: {a['answer']}")
    for p in task.get("previous", []):
        parts.append(f"Attempt {p['attempt']} ended with {p['outcome']}: {p['summary']}\n"
                     f"Its output ended with:\n{_cut(p.get('output', ''), OUTPUT_MAX)}")
    tests = " ".join(task.get("test_command") or [])
    parts.append("Rules:\n"
                 "- Work test first: write or extend a test for each acceptance criterion, see it fail, then write "
                 "the code until it passes." + (f" The project's tests run with: {tests}" if tests else "") + "\n"
                 f"- Work only inside the current directory ({task['workdir']}), on the branch {task['branch']}. "
                 "You may commit there; do not push, and do not switch or move branches.\n"
                 "- Never create, change or delete anything under .orch-state/.\n"
                 "- If you cannot go on without a decision from a person, ask instead of guessing.\n"
                 "- End your final message with exactly one of these lines:\n"
                 "  DONE: <one-line summary of what you did>\n"
                 "  QUESTION: <your question> (optionally followed by a line OPTIONS: <choice> | <choice>)\n"
                 "  FAILED: <why you could not do it>")
    return "\n\n".join(parts)


def to_reply(result: dict) -> dict:
    """Claude Code's JSON result -> the protocol reply."""
    text = str(result.get("result") or "")
    if result.get("is_error") or result.get("subtype", "success") != "success":
        return {"status": "failed", "summary": f"Claude Code stopped ({result.get('subtype', 'error')}): "
                                               f"{text.strip()[-500:]}".strip()}
    question, options = "", []
    for line in text.splitlines():
        marker, _, rest = line.strip().partition(":")
        rest = rest.strip()
        if marker == "QUESTION" and rest:
            question = rest
        elif marker == "OPTIONS" and question:
            options = [o.strip() for o in rest.split("|") if o.strip()]
        elif marker == "FAILED" and rest:
            return {"status": "failed", "summary": rest}
        elif marker == "DONE" and rest:
            return {"status": "done", "summary": rest}
    if question:
        return {"status": "question", "summary": "Claude Code asks", "question": question, "options": options}
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return {"status": "done", "summary": lines[-1][:500] if lines else "Claude Code finished"}


def main(options: list[str]) -> None:
    task = json.loads(sys.stdin.read())
    argv = ["claude", "-p", build_prompt(task), "--output-format", "json", *(options or DEFAULT_OPTIONS)]
    print(f"claude-code adapter: {task['story']['id']} attempt {task['attempt']}: claude -p <prompt> "
          f"{' '.join(argv[3:])}", flush=True)
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except OSError as exc:
        reply("failed", summary=f"cannot start Claude Code (claude): {exc.strerror or exc}")
        return
    if done.stderr.strip():
        print(done.stderr.strip()[-OUTPUT_MAX:], flush=True)
    result = None
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            candidate = json.loads(line)
        except ValueError:
            continue
        if isinstance(candidate, dict) and candidate.get("type") == "result":
            result = candidate
            break
    if result is None:
        reply("failed", summary=f"Claude Code exited with status {done.returncode} without a JSON result: "
                                f"{(done.stdout or done.stderr).strip()[-300:]}")
        return
    meta = {k: result.get(k) for k in ("session_id", "num_turns", "duration_ms", "total_cost_usd")}
    print(f"claude result: {result.get('subtype')} {json.dumps(meta)}", flush=True)
    print(str(result.get("result") or "")[-OUTPUT_MAX:], flush=True)
    reply(**to_reply(result))


if __name__ == "__main__":
    main(sys.argv[1:])
