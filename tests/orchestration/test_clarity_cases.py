"""The rule scorer against a labelled set of realistic replies (data/clarity_cases.json): options, yes/no and
open questions; clear and unclear; answers spread over two messages. Its accuracy must stay at 95% or more.

Measure it (and list the cases it gets wrong): python -m tests.orchestration.test_clarity_cases
"""
from __future__ import annotations

import json
from pathlib import Path

from orchestration.scoring import RuleScorer

CASES = Path(__file__).parent / "data" / "clarity_cases.json"
THRESHOLD = 85  # the default [tickets] resolve_threshold


def results() -> list[tuple[dict, int, bool]]:
    data = json.loads(CASES.read_text(encoding="utf-8"))
    scorer, out = RuleScorer(), []
    for case in data["cases"]:
        q = data["questions"][case["q"]]
        thread = [(m["author"], m["text"]) for m in case.get("thread", [])]
        score = scorer.score(q["question"], q["options"], case["reply"], thread)
        out.append((case, score.total, (score.total >= THRESHOLD) == case["clear"]))
    return out


def test_the_labelled_set_is_big_and_varied():
    cases = [c for c, _, _ in results()]
    assert len(cases) >= 80
    assert sum(c["clear"] for c in cases) >= 30 and sum(not c["clear"] for c in cases) >= 30
    assert sum(bool(c.get("thread")) for c in cases) >= 8


def test_the_rule_scorer_gets_at_least_95_percent_right():
    got = results()
    wrong = [f'{c["q"]}: {c["reply"]!r} scored {total}, labelled {"clear" if c["clear"] else "unclear"}'
             for c, total, ok in got if not ok]
    assert 1 - len(wrong) / len(got) >= 0.95, "\n".join(wrong)


if __name__ == "__main__":
    got = results()
    for case, total, ok in got:
        if not ok:
            print(f'wrong: [{case["q"]}] {case.get("thread", "")} {case["reply"]!r} -> {total}, '
                  f'labelled {"clear" if case["clear"] else "unclear"}')
    for name, part in (("all", got), ("held out", [g for g in got if g[0].get("held_out")])):
        right = sum(ok for _, _, ok in part)
        print(f"rule scorer, {name}: {right} of {len(part)} right ({100 * right / len(part):.1f}%)")
