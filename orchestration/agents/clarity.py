"""Clarity scored by a command (`[tickets] scorer = "command"`): the protocol's "clarity" role.

The command (`scorer_command`, no shell) gets a `ClarityInput` on stdin and answers with a `ClarityReply` on
the last line of stdout. It runs like an agent (attempt.run_process): an asyncio subprocess in a session of
its own, stopped with its whole process group after `scorer_timeout_s`, with the allowlisted environment
(policy.agent_env: PATH, HOME, LANG, ORCH_ROLE=clarity, ORCH_PROJECT and the project's `[agents] env`, e.g. a
hosted model's API key) and its output scrubbed of secrets. Its cwd is the data folder: it needs no files.
With `[agents] runner = "celery"` it runs on a worker (runners.run_clarity), with that machine's environment.

Whatever goes wrong (it cannot start, times out, exits non-zero, prints no valid reply) is one warning line
and the rule scorer decides instead; the Score says which scorer decided.
"""
from __future__ import annotations

import asyncio
import logging

from ..config import Config
from ..scoring import MAX_FOLLOW_UPS, Score, Scorer, Thread
from . import policy, runners
from .runner import Runner
from .protocol import ClarityInput, NotProtocol, Said, parse_clarity

log = logging.getLogger(__name__)

GRACE_S = 2.0  # after SIGTERM, before SIGKILL: a scorer holds no state worth a long goodbye
FOLLOW_UP_MAX = 300  # characters of one follow-up question a scorer proposes (the bot posts them)


async def score_by_command(runner: Runner, config: Config, fallback: Scorer, project: str, question: str,
                           options: list[str], reply: str, thread: Thread) -> Score:
    """The command's score, or `fallback`'s (run in a worker thread) when the command gives none."""
    settings = config.tickets
    ask = ClarityInput(question=question, options=options, reply=reply,
                       thread=[Said(author=author, text=text) for author, text in thread])
    result = await runners.run_clarity(runner, config, settings.scorer_command, ask.to_stdin(),
                                       config.agents.for_project(project).env,
                                       {"ORCH_ROLE": "clarity", "ORCH_PROJECT": project},
                                       settings.scorer_timeout_s, GRACE_S)
    why = (result.error or (f"ran longer than {settings.scorer_timeout_s:g} s" if result.timed_out else None)
           or (f"exited with status {result.returncode}" if result.returncode else None))
    if why is None:
        try:
            answer = parse_clarity(result.stdout)
        except NotProtocol as exc:
            why = exc.reason
        else:
            missing = [" ".join(m.split())[:FOLLOW_UP_MAX] for m in answer.missing if m.strip()]
            score = Score.of(answer.completeness, answer.consistency, answer.actionability,
                             missing[:MAX_FOLLOW_UPS], scorer="command")
            return score.model_copy(update={"conversation": bool(thread)})  # it may have read the whole thread
    line = f"project={project} clarity scorer {settings.scorer_command[0]}: {' '.join(why.split())}"
    log.warning("%s; the rule scorer decided", policy.Scrubber(policy.secret_values()).scrub(line))
    return await asyncio.to_thread(fallback.score, question, options, reply, thread)
