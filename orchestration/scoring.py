"""How clear is a reply to a ticket's question? A score from 0 to 100, as the design has it: the mean of
completeness, consistency and actionability. The ticket resolves at `tickets.resolve_threshold` (85) or more.

The scorer is pluggable (`Scorer`): anything with `score(question, options, reply, thread) -> Score` will do;
`[tickets] scorer = "command"` asks a language model through the agent protocol (agents/clarity.py in this
package) and falls back to this one. The default, `RuleScorer`, is built in, deterministic and cheap. It reads
the reply alone and the conversation ending with it (the thread's earlier replies), and keeps the clearer.
Its rules (docs/tickets.md shows them with examples; each has a test in tests/orchestration/test_scoring.py):

Options. The choices are the ticket's `options` if it has any; else they are read from the question:
"A or B", "A, B or C", "A vs B" (the words next to the "or"); else a question starting with should / can /
is / do ... is a yes/no question; else it is open (no options). A reply *picks* an option when it names
exactly one of them, commits to one (a clause that opens with a decision verb, "Go with Redis; Memcached can
stay on the dev box", or the reply opens with its bare name, "SQLite for speed; ..."; the others are then
context, and a hedge about them only is no hedge), or rejects every other ("not B", "rather than B", "anything
but B"; "B is out" does not count). Names may be shortened ("postgres" for "PostgreSQL"). A pick followed by
a question ("Postgres? Or is that too slow?") is not a decision yet.

- Completeness: picks one option (or, for an open question, makes a statement of 3+ words) -> 70; a shorter
  statement -> 40; names several options without choosing -> 30; names none of the options -> 20; empty -> 0.
  A reason adds 30: "because", "since", "so that", "due to", ... or a further clause of 3+ words
  ("Postgres. We already run it.").
- Consistency: 100, minus 60 when the reply hedges ("maybe", "not sure", "I don't know", "either", "up to
  you", ...), minus 40 when it names several options, says both yes and no, or asks back after a pick.
- Actionability: a picked option -> 100; an open answer with something concrete (a number, or a decision
  verb: use, keep, drop, set, go with, let's ...) -> 100; another statement -> 60; a bare question back ->
  10; empty -> 0. A hedged reply gets at most 50.

`missing` holds the follow-up questions the bot asks when the total is below the threshold.
"""
from __future__ import annotations

import re
from typing import Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

MAX_CHARS = 4000  # longer replies are scored on their first 4,000 characters
THREAD_MAX = 5  # earlier replies read with a new one (older ones rarely complete it)
MAX_FOLLOW_UPS = 3  # more questions at once would read as a form, not a conversation


class Score(BaseModel):
    model_config = ConfigDict(defer_build=True)  # built when first used (see models.Model)
    total: int = Field(ge=0, le=100)
    completeness: int = Field(ge=0, le=100)
    consistency: int = Field(ge=0, le=100)
    actionability: int = Field(ge=0, le=100)
    missing: list[str] = Field(default_factory=list, description="follow-up questions, most important first")
    # Which scorer decided: "rule" or "command" (files written before this field existed read as "rule").
    scorer: str = "rule"
    # The score is of the conversation that ends with this reply (an answer over several messages), which
    # then becomes the resolution; false: of the reply alone.
    conversation: bool = False

    @classmethod
    def of(cls, completeness: int, consistency: int, actionability: int, missing: list[str],
           scorer: str = "rule") -> Score:
        parts = [max(0, min(100, p)) for p in (completeness, consistency, actionability)]
        return cls(total=int(sum(parts) / 3 + 0.5), completeness=parts[0], consistency=parts[1],
                   actionability=parts[2], missing=missing, scorer=scorer)


Thread = Sequence[tuple[str, str]]  # the earlier replies in the ticket's thread, oldest first: (author, text)


@runtime_checkable
class Scorer(Protocol):
    def score(self, question: str, options: list[str], reply: str, thread: Thread = ()) -> Score: ...


# -- vocabulary ----------------------------------------------------------------------------------------------
HEDGES = (
    "maybe", "perhaps", "not sure", "unsure", "i don't know", "i dont know", "don't know", "dont know", "idk",
    "no idea", "not certain", "probably", "possibly", "might", "either", "whatever", "up to you", "dunno",
    "i guess", "hard to say", "no preference", "doesn't matter", "does not matter", "hmm",
)
REASONS = ("because", "since", "so that", "so we", "due to", "given", "in order to", "to avoid", "to keep",
           "otherwise", "as it", "as we", "as the", "that way", "which means", "reason")
NEGATORS = {"not", "no", "never", "avoid", "without", "instead", "than", "over", "against", "don't", "dont",
            "skip", "drop", "nor", "except", "anything"}  # "anything but X" rejects X
YES = {"yes", "yeah", "yep", "yup", "sure", "ok", "okay", "agreed", "approve", "approved", "correct",
       "absolutely", "definitely", "affirmative"}
NO = {"no", "nope", "never", "negative"}
NO_PHRASES = ("don't", "do not", "dont", "not now", "let's not", "skip it")
YES_NO_STARTS = {"should", "shall", "can", "could", "do", "does", "did", "is", "are", "was", "will", "would",
                 "may", "must", "have", "has"}
DECISION_VERBS = {"use", "go", "pick", "choose", "keep", "drop", "add", "remove", "set", "make", "switch", "ship",
                  "build", "skip", "deploy", "move", "rename", "start", "stop", "limit", "allow", "deny", "block",
                  "enable", "disable", "write", "delete", "create", "merge", "split", "cap", "run", "let's",
                  "lets", "put", "store", "send", "return", "call", "name", "prefer", "take"}
# A clause that starts with one of these (after a filler) commits to the first option it names: "Go with Redis;
# Memcached can stay on the dev box". Verbs that reject (drop, skip, avoid) are negators instead.
COMMIT_VERBS = {"use", "go", "pick", "choose", "keep", "add", "set", "make", "switch", "ship", "build", "deploy",
                "move", "start", "enable", "write", "create", "run", "let's", "lets", "put", "store", "prefer",
                "take", "stay", "stick", "migrate", "adopt", "want", "need"}
FILLERS = {"so", "then", "and", "please", "ok", "okay", "just", "we", "we'll", "i'd", "i", "should", "will",
           "definitely", "yes", "yeah", "sure", "but", "rather", "simply"}
# A reply that opens with one option's bare name decides for it ("SQLite for speed; the nightly run can use
# Postgres later"), unless a predicate follows ("SQLite is faster, Postgres is closer to prod").
LEAD_FOLLOWERS = {"for", "because", "since", "so", "please", "it", "then", "definitely", "first", "all"}
# Words never taken as (part of) an option's name.
STOPWORDS = {"a", "an", "the", "we", "i", "you", "it", "to", "of", "in", "on", "for", "with", "be", "is", "are",
             "should", "shall", "can", "could", "would", "will", "do", "does", "use", "using", "go", "choose",
             "pick", "which", "what", "whether", "keep", "store", "make", "our", "their", "this", "that", "one",
             "either", "via", "by", "as", "at", "from", "into", "and", "or", "vs", "versus", "prefer", "want"}

_WORD = re.compile(r"[a-z0-9][a-z0-9_.'+#-]*[a-z0-9+#]|[a-z0-9]")
_CLAUSES = re.compile(r"[.;:!?,\n—–()]+|\s-\s")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("’", "'"))


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9']){re.escape(phrase)}(?![a-z0-9'])", text) is not None


# -- options -----------------------------------------------------------------------------------------------
def options_in(question: str) -> list[str]:
    """The choices a question names: "A or B", "A, B or C", "A vs B". Empty if it names none."""
    q = question.strip().rstrip("?").strip()
    for clause in re.split(r"[?;:\n]|\.\s", q):
        parts = re.split(r"\s+(?:or|vs\.?|versus)\s+|,\s*(?:or\s+)?", clause, flags=re.I)
        if len(parts) < 2 or not re.search(r"\s(?:or|vs\.?|versus)\s", clause, flags=re.I):
            continue
        found = []
        for i, part in enumerate(parts):
            ws = part.split()
            if i == 0:  # the words right before the first separator, back to the first stopword
                run = []
                for w in reversed(ws):
                    if w.lower() in STOPWORDS:
                        break
                    run.insert(0, w)
            else:  # the words right after a separator (and its verb: "move to GraphQL"), up to a stopword
                run = []
                for w in ws:
                    if w.lower() in STOPWORDS or (not run and w.lower() in COMMIT_VERBS):
                        if run:
                            break
                        continue
                    run.append(w)
            if run:
                found.append(" ".join(run))
        if len(found) >= 2:
            return found
    return []


def is_yes_no(question: str) -> bool:
    first = words(question)[:1]
    return bool(first) and first[0] in YES_NO_STARTS


def _key_words(option: str) -> list[str]:
    return [w for w in words(option) if w not in STOPWORDS]


def _same(a: str, b: str) -> bool:
    """One word names the other: equal, or a prefix of 5+ letters ("postgres" / "postgresql")."""
    if a == b:
        return True
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 5 and long_.startswith(short)


def _option_keys(options: list[str]) -> list[list[str]]:
    """The words that name each option (words all options share, like "CI", name none of them)."""
    keys = [_key_words(o) for o in options]
    common = set.intersection(*(set(k) for k in keys)) if keys else set()
    return [[w for w in k if w not in common] or k for k in keys]


def _named(word: str, keys: list[list[str]]) -> int | None:
    return next((i for i, k in enumerate(keys) if any(_same(word, kw) for kw in k)), None)


def _committed(reply: str, options: list[str]) -> set[int]:
    """Options the reply commits to: named first in a clause that opens with a decision verb ("use", "go
    with", "let's", "stay on"), or named bare at the very start of the reply ("Postgres, since ...")."""
    keys = _option_keys(options)
    found: set[int] = set()
    for n, clause in enumerate(c for c in _CLAUSES.split(reply.lower()) if words(c)):
        ws = words(clause)
        start = 0
        while start < len(ws) - 1 and ws[start] in FILLERS and ws[start] not in COMMIT_VERBS:
            start += 1
        named = [(j, i) for j, w in enumerate(ws) if (i := _named(w, keys)) is not None]
        if not named:
            continue
        first_at, first = named[0]
        if any(w in NEGATORS for w in ws[:first_at]):
            continue
        if ws[start] in COMMIT_VERBS:
            found.add(first)
        elif n == 0 and first_at == start and len({i for _, i in named}) == 1:
            rest = [w for j, w in enumerate(ws) if j > first_at and _named(w, keys) is None]
            if not rest or rest[0] in LEAD_FOLLOWERS:
                found.add(first)
    return found


def _mentions(reply: str, options: list[str]) -> tuple[set[int], set[int]]:
    """(named, rejected): indexes of the options the reply names, and of those it names only to reject them."""
    keys = _option_keys(options)
    named: set[int] = set()
    affirmed: set[int] = set()
    for clause in _CLAUSES.split(reply.lower()):
        ws = words(clause)
        negated = False
        for w in ws:
            if w in NEGATORS:
                negated = True
            for i, k in enumerate(keys):
                if any(_same(w, kw) for kw in k):
                    named.add(i)
                    if not negated:
                        affirmed.add(i)
    return named, named - affirmed


# -- the default scorer --------------------------------------------------------------------------------------
class RuleScorer:
    """The built-in, deterministic scorer (rules in this module's docstring and in docs/tickets.md)."""

    def score(self, question: str, options: list[str], reply: str, thread: Thread = ()) -> Score:
        """The reply alone, or the conversation that ends with it (an answer given over several messages:
        "Postgres." then "Because we already run it."), whichever is clearer: the latest word counts, and
        what was said before can complete it."""
        alone = self._score(question, options, reply)
        earlier = [text for _, text in thread[-THREAD_MAX:] if (text or "").strip()]
        if not earlier or not (reply or "").strip():
            return alone
        together = self._score(question, options, "\n".join([*earlier, reply])[-MAX_CHARS:])
        return together.model_copy(update={"conversation": True}) if together.total > alone.total else alone

    def _score(self, question: str, options: list[str], reply: str) -> Score:
        text = " ".join((reply or "").split())[:MAX_CHARS]
        low = text.lower().replace("’", "'")
        if not words(low):
            return Score.of(0, 0, 0, ["There is no answer yet: what do you decide?"])
        options = [o for o in (options or []) if o.strip()] or options_in(question)
        yes_no = not options and is_yes_no(question)
        if yes_no:
            options = ["yes", "no"]
        missing: list[str] = []

        hedges = [h for h in HEDGES if _has_phrase(low, h)]
        firm = low
        for h in hedges:  # "not sure" must not read as "no", nor "sure" as "yes"
            firm = re.sub(rf"(?<![a-z0-9']){re.escape(h)}(?![a-z0-9'])", " ", firm)
        clauses = [c for c in _CLAUSES.split(firm) if words(c)]
        question_back = text.rstrip().endswith("?")

        # Which option does it pick?
        picked: int | None = None
        several = False
        if yes_no:
            said_yes = bool(set(words(firm)) & YES)
            # "no" before a word in its clause is a determiner ("no exceptions"), unless it opens the reply
            said_no = (bool(set(words(firm)[:1]) & NO) or any(w in NO and (w != "no" or words(c)[-1] == "no")
                                                  for c in clauses for w in words(c))
                       or any(_has_phrase(firm, p) for p in NO_PHRASES))
            several = said_yes and said_no
            if said_yes != said_no:
                picked = 0 if said_yes else 1
        elif options:
            named, rejected = _mentions(firm, options)
            chosen, committed = named - rejected, _committed(firm, options)
            if len(committed) == 1:  # the others are only context: "Keep REST, GraphQL maybe next year"
                picked = next(iter(committed))
            elif len(chosen) == 1:
                picked = next(iter(chosen))
            elif not chosen and len(rejected) == len(options) - 1:
                picked = next(i for i in range(len(options)) if i not in rejected)  # "not B" picks A
            several = picked is None and len(chosen) > 1
            if picked is not None:  # a hedge about another option only ("GraphQL maybe next year") is no hedge
                keys = _option_keys(options)
                named_in = [({_named(w, keys) for w in words(c)} - {None}, c) for c in _CLAUSES.split(low)]
                kept = [c for named_here, c in named_in if not named_here or picked in named_here]
                hedges = [h for h in hedges if any(_has_phrase(c, h) for c in kept)]
        choice_words = " or ".join(options[:5])

        # Completeness
        if picked is not None:
            completeness = 70
        elif several:
            completeness = 30
            if not yes_no:
                missing.append(f"You named more than one of {choice_words}: which one should it be?")
        elif options and not yes_no:
            completeness = 20
            missing.append(f"Which do you choose: {choice_words}?")
        elif len(words(firm)) >= 3 and not question_back:
            completeness = 70
        else:
            completeness = 40 if not question_back else 20
            if yes_no and not question_back:
                missing.append("Is it a yes or a no?")
            elif not question_back:
                missing.append("Can you say a bit more: what exactly should be done?")
        has_reason = any(_has_phrase(firm, r) for r in REASONS) or any(len(words(c)) >= 3 for c in clauses[1:])
        if has_reason:
            completeness += 30
        else:
            missing.append("Why? A short reason helps whoever picks the work up.")

        # Consistency
        consistency = 100
        if hedges:
            consistency -= 60
            missing.insert(0, f'Can you decide firmly? "{hedges[0]}" leaves the question open.')
        if several:
            consistency -= 40
            if yes_no:
                missing.insert(0, "You said both yes and no: which is it?")
        tentative = picked is not None and question_back  # "Postgres? Or is that too slow on CI?"
        if tentative:
            consistency -= 40
            missing.insert(0, f"Is {options[picked]!r} your decision, or still a question?")

        # Actionability
        if picked is not None:
            actionability = 100
        elif question_back and not (options and several):
            actionability = 10
            missing.insert(0, "That is a question back: what is your answer to the ticket's question? "
                              "(Ask it in the thread too; the ticket stays open.)")
        elif not options or yes_no:
            concrete = bool(re.search(r"\d", firm)) or any(
                (ws := words(c)) and ws[0] in DECISION_VERBS or _has_phrase(c, "go with") or _has_phrase(c, "we'll")
                or _has_phrase(c, "we will") for c in clauses)
            actionability = 100 if concrete else 60
            if not concrete:
                missing.append("What is the concrete next step (a value, a name, or what to do)?")
        else:
            actionability = 30
        if hedges or tentative:
            actionability = min(actionability, 50)
        return Score.of(completeness, consistency, actionability, list(dict.fromkeys(missing))[:MAX_FOLLOW_UPS])


DEFAULT_SCORER: Scorer = RuleScorer()
