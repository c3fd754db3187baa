#!/usr/bin/env python3
"""The reference agent: speaks protocol 1 (docs/agents.md), needs no API key, and does something real and
deterministic, so a newcomer can watch a sprint run end to end.

For a story S-3 "Cart total" it works test first, in its worktree:
1. writes tests/test_s3_cart_total.py, which checks what the story asks for, and commits it;
2. runs the project's test command and expects it to fail (red: the module does not exist yet);
3. writes stories/s3_cart_total.py (the story's title, its acceptance criteria and the answers it got, as
   data with a small function over them) and commits it;
4. runs the test command again (green) and answers "done" with a summary, or "failed" with the output.

A story with nothing to go on (no description, no acceptance criteria, no answers yet) gets a question
instead: "What should ... do?", so the question -> ticket -> answer -> next attempt loop can be watched too.

Configure it with:  [agents] command = ["python", "agents/reference_agent.py"]
Its progress goes to stdout (the attempt's log); the last line is the JSON reply.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

GIT = ["git", "-c", "user.name=Reference Agent", "-c", "user.email=reference-agent@orch.local",
       "-c", "commit.gpgsign=false"]


def say(text: str) -> None:
    print(text, flush=True)


def reply(status: str, **fields: object) -> None:
    print(json.dumps({"status": status, **fields}), flush=True)


def module_name(story: dict) -> str:
    """S-3 "Cart total!" -> s3_cart_total"""
    words = re.sub(r"[^a-z0-9]+", "_", story["title"].lower()).strip("_")[:40].rstrip("_")
    return f"{story['id'].lower().replace('-', '')}_{words}" if words else story["id"].lower().replace("-", "")


def criteria_of(task: dict) -> list[str]:
    story = task["story"]
    return [*story.get("criteria", []), *(a["answer"] for a in task.get("answers", []))]


def test_source(task: dict, name: str) -> str:
    story = task["story"]
    return f'''"""Story {story["id"]}: {story["title"]} (written by the reference agent, before the code)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stories.{name} import STORY, check


def test_the_story_is_described():
    assert STORY["id"] == {story["id"]!r}
    assert STORY["title"] == {story["title"]!r}


def test_every_criterion_is_met():
    assert check() == {criteria_of(task)!r}
'''


def code_source(task: dict) -> str:
    story = task["story"]
    data = {"id": story["id"], "title": story["title"], "criteria": criteria_of(task)}
    return f'''"""Story {story["id"]}: {story["title"]} (written by the reference agent)."""

STORY = {json.dumps(data, indent=4, ensure_ascii=False)}


def check() -> list[str]:
    """The criteria this story meets."""
    return list(STORY["criteria"])
'''


def run_tests(command: list[str]) -> tuple[bool, str]:
    done = subprocess.run(command, capture_output=True, text=True)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def commit(paths: list[str], message: str) -> None:
    subprocess.run([*GIT, "add", "--", *paths], check=True)
    if subprocess.run([*GIT, "diff", "--cached", "--quiet"]).returncode:
        subprocess.run([*GIT, "commit", "--quiet", "--no-verify", "-m", message], check=True)


def main() -> None:
    task = json.loads(sys.stdin.read())
    story = task["story"]
    say(f"reference agent: {story['id']} {story['title']!r}, attempt {task['attempt']}, in {task['workdir']}")
    for previous in task.get("previous", []):
        say(f"attempt {previous['attempt']} ended {previous['outcome']}: {previous['summary']}")
    if not (story.get("description") or criteria_of(task)):
        reply("question", summary="the story says too little to test",
              question=f"What should {story['id']} \"{story['title']}\" do? Please give one acceptance criterion.",
              options=[])
        return
    name = module_name(story)
    test_file, code_file = Path("tests") / f"test_{name}.py", Path("stories") / f"{name}.py"
    test_file.parent.mkdir(exist_ok=True)
    test_file.write_text(test_source(task, name), encoding="utf-8")
    commit([str(test_file)], f"{story['id']}: test for {story['title']}")
    say(f"wrote {test_file} first")
    command = task.get("test_command") or []
    if command:
        red, _ = run_tests(command)
        say("red, as expected: the code is not written yet" if not red else "the tests pass already?")
    code_file.parent.mkdir(exist_ok=True)
    code_file.write_text(code_source(task), encoding="utf-8")
    commit([str(code_file)], f"{story['id']}: {story['title']}")
    say(f"wrote {code_file}")
    if command:
        green, output = run_tests(command)
        if not green:
            say(output)
            reply("failed", summary=f"the tests still fail after writing {code_file}")
            return
        say("green")
    reply("done", summary=f"{story['title']}: {code_file} with its test {test_file} (test first)",
          tests_added=[str(test_file)])


if __name__ == "__main__":
    main()
