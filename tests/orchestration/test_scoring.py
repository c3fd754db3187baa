"""The default scorer's documented rules (orchestration/scoring.py, docs/tickets.md), one test each."""
from __future__ import annotations

import pytest

from orchestration.scoring import DEFAULT_SCORER, RuleScorer, Score, Scorer, options_in

THRESHOLD = 85
DB = "Should we use PostgreSQL or MongoDB?"
YES_NO = "Should we drop IE11 support?"
OPEN = "What rate limit should the public API use?"


def score(question: str, reply: str, options: list[str] | None = None) -> Score:
    return RuleScorer().score(question, options or [], reply)


def test_the_default_scorer_fits_the_protocol_and_the_total_is_the_rounded_mean():
    assert isinstance(DEFAULT_SCORER, Scorer)
    s = score(DB, "Postgres")
    assert (s.completeness, s.consistency, s.actionability) == (70, 100, 100)
    assert s.total == 90  # (70 + 100 + 100) / 3 = 90
    assert Score.of(70, 40, 50, []).total == 53  # 53.3 rounds down
    assert Score.of(100, 100, 50, []).total == 83  # 83.3


@pytest.mark.parametrize("question, expected", [
    (DB, ["PostgreSQL", "MongoDB"]),
    ("Should the cache be Redis, Memcached or in-process?", ["Redis", "Memcached", "in-process"]),
    ("Run the tests against a hosted Postgres vs SQLite?", ["hosted Postgres", "SQLite"]),
    (YES_NO, []),
    (OPEN, []),
])
def test_options_are_read_from_the_question(question, expected):
    assert options_in(question) == expected


def test_picking_an_option_with_a_reason_scores_full_marks():
    s = score(DB, "PostgreSQL, because we already run it in production.")
    assert s.total == 100 and s.missing == []


def test_a_further_clause_counts_as_a_reason():
    assert score(DB, "Postgres. We already run it in production.").total == 100


def test_picking_an_option_without_a_reason_is_clear_but_asks_why():
    s = score(DB, "PostgreSQL")
    assert THRESHOLD <= s.total < 100 and any(m.startswith("Why?") for m in s.missing)


def test_short_names_and_rejections_pick_an_option():
    assert score(DB, "mongo, since the data is document-shaped").completeness == 100
    rejected = score(DB, "Use MongoDB, not PostgreSQL, since the data is document-shaped.")
    assert rejected.total == 100
    assert score(DB, "Don't use MongoDB; the team knows SQL well.").total == 100  # rejecting B picks A


def test_the_tickets_own_options_come_before_the_question():
    s = score("How should we store sessions?", "Cookies, since we have no server state.", ["cookies", "redis"])
    assert s.total == 100
    assert score("How should we store sessions?", "Memcached please", ["cookies", "redis"]).total < THRESHOLD


@pytest.mark.parametrize("reply", ["maybe postgres", "not sure", "I don't know, either is fine", "up to you"])
def test_hedges_score_low_and_ask_for_a_firm_answer(reply):
    s = score(DB, reply)
    assert s.total < THRESHOLD and s.consistency <= 40 and s.actionability <= 50
    assert "decide firmly" in s.missing[0]


def test_a_bare_question_back_scores_low():
    s = score(DB, "Which one is cheaper?")
    assert s.total < THRESHOLD and s.actionability == 10 and "question back" in s.missing[0]


@pytest.mark.parametrize("reply", ["", "   ", "\n", "!!!"])
def test_an_empty_reply_scores_zero(reply):
    s = score(DB, reply)
    assert s.total == 0 and s.missing


def test_naming_every_option_without_choosing_scores_low():
    s = score(DB, "Both PostgreSQL and MongoDB have their merits")
    assert s.total < THRESHOLD and s.completeness == 30 and "which one" in s.missing[0]


def test_naming_no_option_scores_low_and_lists_the_choices():
    s = score(DB, "Let's use whatever the platform team recommends")
    assert s.total < THRESHOLD and any("PostgreSQL or MongoDB" in m for m in s.missing)


def test_yes_no_questions():
    assert score(YES_NO, "Yes, drop it; usage is below 0.1%.").total == 100
    assert score(YES_NO, "No").total >= THRESHOLD
    both = score(YES_NO, "yes and no")
    assert both.total < THRESHOLD and "both yes and no" in both.missing[0]
    assert score(YES_NO, "not sure").total < THRESHOLD  # "not sure" is a hedge, never a "no"


def test_open_questions_need_something_concrete():
    assert score(OPEN, "100 requests per minute per user, since that matches our peak.").total == 100
    vague = score(OPEN, "something reasonable")
    assert vague.total < THRESHOLD and vague.actionability == 60


def test_the_scorer_is_deterministic_and_bounded():
    replies = ["Postgres", "maybe", "x" * 10_000, "Which? " * 500, "Use MongoDB, not PostgreSQL"]
    for reply in replies:
        first, second = score(DB, reply), score(DB, reply)
        assert first == second and 0 <= first.total <= 100 and len(first.missing) <= 3


@pytest.mark.parametrize("question, reply", [
    ("Redis or Memcached for the session cache?", "Go with Redis; Memcached can stay on the dev box"),
    ("Should we keep the REST API or move to GraphQL?", "Keep the REST API, GraphQL maybe next year"),
    ("Run the integration tests on SQLite or Postgres?", "Not SQLite — use Postgres"),
    ("Run the integration tests on SQLite or Postgres?", "SQLite for speed; the nightly run can use Postgres later"),
])
def test_committing_to_one_option_picks_it_though_another_is_named_as_context(question, reply):
    s = score(question, reply)
    assert s.total >= THRESHOLD and s.consistency == 100 and s.actionability == 100


@pytest.mark.parametrize("reply", ["SQLite is faster, Postgres is closer to prod.", "Anything but SQLite"])
def test_comparing_options_or_rejecting_only_some_of_three_picks_none(reply):
    assert score("Run the integration tests on SQLite, Postgres or MySQL?", reply).total < THRESHOLD


def test_an_option_followed_by_a_question_is_not_yet_a_decision():
    s = score(DB, "Postgres? Or is that too slow on CI?")
    assert s.total < THRESHOLD and "decision" in s.missing[0]


def test_no_as_a_determiner_is_no_no():
    assert score("Is it OK to require 2FA for admins?", "Yes, require it for every admin, no exceptions.").total == 100
    assert score(YES_NO, "yes and no").total < THRESHOLD


def test_an_answer_over_two_messages_is_read_as_one_and_the_latest_word_counts():
    assert score(DB, "Because we already run it.").total < THRESHOLD
    assert RuleScorer().score(DB, [], "Because we already run it.", [("alice", "Postgres.")]).total == 100
    assert RuleScorer().score(DB, [], "Mongo, since the data is documents.", [("bob", "Postgres")]).total == 100
    assert RuleScorer().score(DB, [], "not sure", [("bob", "Postgres")]).total < THRESHOLD
