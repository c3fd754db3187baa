"""Stories and epics named by words of their title, not only by ID (orchestration/inputs.py story_of, epic_of):
through the `orch` command line on a real repository, and the rule itself."""
from __future__ import annotations

from orchestration.inputs import holds_words, titled
from orchestration.models import Story
from tests.conftest import backlog_json
from tests.orchestration import test_cli
from tests.orchestration.test_cli import ok

orch_cli = test_cli.orch_cli  # the fixture: `orch` run in-process with this test's config


def _stories(repo) -> dict[str, dict]:
    return {s["id"]: s for s in backlog_json(repo)["stories"]}


def test_the_cli_finds_stories_and_epics_by_words_of_their_title(orch_cli, make_repo):
    repo = make_repo("shop")
    ok(orch_cli("project", "register", str(repo), "--by", "admin"))
    ok(orch_cli("epic", "Checkout flow", "--by", "alice"))
    ok(orch_cli("epic", "Accounts", "--by", "alice"))
    # The epic by words of its title, the story by words of its own.
    assert 'to E-1' in ok(orch_cli("backlog", "add-story", "--epic", "checkout", "Cart page", "--by", "alice"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-2", "Login page", "--by", "alice"))
    ok(orch_cli("backlog", "add-story", "--epic", "accounts", "Login", "--by", "alice"))
    ok(orch_cli("backlog", "add-story", "--epic", "E-2", "S-1", "--by", "alice"))  # a title that reads like an ID

    ok(orch_cli("backlog", "prioritize", "cart", "high", "--by", "alice"))
    assert _stories(repo)["S-1"]["priority"] == "high"
    ok(orch_cli("backlog", "prioritize", "LOGIN", "low", "--by", "alice"))  # a whole title wins over a part of one
    assert _stories(repo)["S-3"]["priority"] == "low" and _stories(repo)["S-2"]["priority"] == "medium"
    ok(orch_cli("backlog", "prioritize", "S-1", "critical", "--by", "alice"))  # an ID always wins
    assert _stories(repo)["S-1"]["priority"] == "critical" and _stories(repo)["S-4"]["priority"] == "medium"

    assert "S-1" in ok(orch_cli("ticket", "open", "Which card provider?", "--story", "cart pa", "--by", "alice"))
    assert _stories(repo)["S-1"]["status"] == "blocked_awaiting_feedback"

    before = (repo / ".orch-state" / "backlog.json").read_text()
    code, _out, err = orch_cli("backlog", "prioritize", "page", "high", "--by", "alice")
    assert code != 0 and "'page' matches 2 stories: S-1 Cart page; S-2 Login page." in err
    assert "more words of the title" in err
    code, _out, err = orch_cli("backlog", "view", "--epic", "nothing like it")
    assert code != 0 and "there is no epic 'nothing like it' in shop" in err
    assert (repo / ".orch-state" / "backlog.json").read_text() == before  # refusals change nothing


def test_titled_prefers_a_whole_title_and_matches_every_word():
    stories = [Story(id=f"S-{n}", epic="E-1", title=t) for n, t in enumerate(["Login", "Login page", "Page"], 1)]
    assert [s.id for s in titled(stories, "  login ")] == ["S-1"]
    assert [s.id for s in titled(stories, "page log")] == ["S-2"]
    assert [s.id for s in titled(stories, "pag")] == ["S-2", "S-3"]
    assert titled(stories, "") == [] and titled(stories, "cart") == []
    assert holds_words("S-2 · Login page [todo]", "PAGE s-2") and not holds_words("Login", "login page")
