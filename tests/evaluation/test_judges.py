"""The pairwise LLM judge: verdict parsing, both orders, ties, parse failures, the cache, the win rates,
templates, judge-check, the local judge on tiny models and the endpoint judge over real HTTP."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest

from judge_models import bigram_judge_fixture  # noqa: F401  (the fixture bigram_judge_dir)
from mipo.core.errors import ConfigError, InputError, MipoError
from mipo.evaluation.judges import (
    Judge,
    JudgeRequest,
    Judgment,
    judge_check,
    judge_pairwise,
    load_template,
    summary_line,
)
from mipo.evaluation.judges.cache import VerdictCache
from mipo.evaluation.judges.summary import length_controlled_win_rate, sign_test_p_value, summarize_outcomes
from mipo.evaluation.judges.template import NO_CONTEXT
from mipo.evaluation.judges.verdicts import combine_orders, parse_verdict

# ---------------------------------------------------------------- rule-based judges (no model)


class RuleJudge(Judge):
    """Prefers the longer reply (tie when equal); answers garbage when a reply contains '???'.
    Records every request it is asked, so tests can count calls and check the order of the replies."""

    name = "longer"

    def __init__(self, always: str | None = None, fail_after: int | None = None):
        self.always, self.fail_after = always, fail_after
        self.asked: list[JudgeRequest] = []

    def identity(self) -> dict:
        return {"kind": "rule", "always": self.always}

    def stream(self, requests, template) -> Iterator[tuple[int, Judgment]]:
        for index, request in enumerate(requests):
            if self.fail_after is not None and len(self.asked) >= self.fail_after:
                raise KeyboardInterrupt  # the run is killed here
            self.asked.append(request)
            yield index, self._verdict(request)

    def _verdict(self, request: JudgeRequest) -> Judgment:
        if "???" in request.answer_a + request.answer_b:
            return Judgment(None, "I cannot decide.")
        if self.always:
            return Judgment(self.always, f"[[{self.always}]]")
        a, b = len(request.answer_a), len(request.answer_b)
        letter = "A" if a > b else "B" if b > a else "C"
        return Judgment(letter, f"Verdict: [[{letter}]]")


def items(n: int) -> list[dict]:
    return [
        {"id": f"q{i}", "prompt": f"question {i}?", "context": "About me: I like cats."} for i in range(n)
    ]


# ---------------------------------------------------------------- parsing and combining


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("[[A]]", "A"),
        ("After thinking, my verdict is [[ B ]].", "B"),
        ("[[C]]", "C"),
        ('Reply "[[A]]" if A is better, "[[B]]" if B is better. Final verdict: [[B]]', "B"),
        ("I prefer assistant A.", None),
        ("[[D]]", None),
        ("", None),
    ],
)
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize(
    ("as_a", "as_b", "outcome", "inconsistent"),
    [
        ("A", "B", "win", False),  # model preferred in both orders
        ("B", "A", "loss", False),
        ("A", "A", "tie", True),  # the judge always picks the first reply: a tie, not a win
        ("B", "B", "tie", True),
        ("A", "C", "tie", True),
        ("C", "C", "tie", False),
        (None, "B", "unparseable", False),
        ("A", None, "unparseable", False),
    ],
)
def test_combine_orders(as_a, as_b, outcome, inconsistent):
    assert combine_orders(as_a, as_b) == (outcome, inconsistent)


# ---------------------------------------------------------------- judge_pairwise


def test_each_pair_is_judged_in_both_orders():
    judge = RuleJudge()
    summary, rows = judge_pairwise(
        items(3), ["long reply here", "s", "same"], ["short", "longer", "same"], judge, cache=False
    )
    # model first as A, then as B, with the same question and context
    assert judge.asked[0] == JudgeRequest("question 0?", "About me: I like cats.", "long reply here", "short")
    assert judge.asked[1] == JudgeRequest("question 0?", "About me: I like cats.", "short", "long reply here")
    assert [r["outcome"] for r in rows] == ["win", "loss", "tie"]
    assert [(r["verdict_model_as_a"], r["verdict_model_as_b"]) for r in rows] == [
        ("A", "B"),
        ("B", "A"),
        ("C", "C"),
    ]
    assert (summary["wins"], summary["losses"], summary["ties"], summary["inconsistent"]) == (1, 1, 1, 0)
    assert summary["win_rate"]["mean"] == pytest.approx(0.5)
    assert summary["judge_calls"] == 5  # "same" vs "same" is one request in both orders: asked once


def test_a_position_biased_judge_gives_ties():
    summary, rows = judge_pairwise(items(4), ["a"] * 4, ["bb"] * 4, RuleJudge(always="A"), cache=False)
    assert summary["ties"] == summary["inconsistent"] == 4
    assert summary["wins"] == summary["losses"] == 0
    assert summary["win_rate"]["mean"] == 0.5
    assert summary["sign_test_p"] == 1.0


def test_unparseable_verdicts_are_counted_and_shown_not_scored():
    summary, rows = judge_pairwise(
        items(3), ["long one", "??? odd", "long one"], ["s", "s", "s"], RuleJudge(), cache=False
    )
    assert summary["unparseable"] == 1 and summary["unparseable_verdicts"] == 2
    assert summary["n"] == 2 and summary["pairs"] == 3
    assert summary["win_rate"]["mean"] == 1.0
    assert rows[1]["outcome"] == "unparseable" and rows[1]["raw_model_as_a"] == "I cannot decide."
    assert "1 unparseable" in summary_line(summary)


def test_all_unparseable_gives_no_rate_but_says_so():
    summary, _ = judge_pairwise(items(2), ["???"] * 2, ["x"] * 2, RuleJudge(), cache=False)
    assert summary["win_rate"] is None and summary["lc_win_rate"] is None
    assert (
        summary_line(summary)
        == "judge longer (personalization): no parseable verdict on 2 pairs (2 unparseable)"
    )


def test_mismatched_lengths_are_one_line_errors():
    with pytest.raises(MipoError, match="3 items, 2 model replies and 3 baseline replies"):
        judge_pairwise(items(3), ["a", "b"], ["a", "b", "c"], RuleJudge(), cache=False)


# ---------------------------------------------------------------- cache


def test_cache_second_call_asks_nothing_and_a_new_model_only_new_pairs(tmp_path):
    judge = RuleJudge()
    first, _ = judge_pairwise(items(3), ["aa", "b", "cc"], ["x", "yy", "z"], judge, cache=tmp_path)
    assert first["judge_calls"] == 6 and len(judge.asked) == 6
    again, _ = judge_pairwise(items(3), ["aa", "b", "cc"], ["x", "yy", "z"], judge, cache=tmp_path)
    assert again["judge_calls"] == 0 and len(judge.asked) == 6
    assert again["win_rate"] == first["win_rate"]
    # a second model that repeats one reply: only the two changed pairs are judged (both orders each)
    judge_pairwise(items(3), ["aa", "bbbb", "c"], ["x", "yy", "z"], judge, cache=tmp_path)
    assert len(judge.asked) == 10
    # another template is another cache
    other, _ = judge_pairwise(
        items(3), ["aa", "b", "cc"], ["x", "yy", "z"], judge, "helpfulness", cache=tmp_path
    )
    assert other["judge_calls"] == 6


def test_killed_run_resumes_with_only_the_missing_verdicts(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        judge_pairwise(items(4), ["aa"] * 4, ["b"] * 4, RuleJudge(fail_after=3), cache=tmp_path)
    cache_file = next(tmp_path.glob("*.jsonl"))
    with cache_file.open("a") as f:
        f.write('{"key": "torn')  # the line being written when the process died
    judge = RuleJudge()
    summary, _ = judge_pairwise(items(4), ["aa"] * 4, ["b"] * 4, judge, cache=tmp_path)
    assert summary["judge_calls"] == len(judge.asked) == 8 - 3
    assert summary["wins"] == 4
    lines = [
        json.loads(x)
        for x in cache_file.read_text().splitlines()[:1] + cache_file.read_text().splitlines()[-5:]
    ]
    assert "header" in lines[0] and all("key" in row for row in lines[1:])


def test_cache_key_covers_context_and_order(tmp_path):
    template = load_template("personalization")
    cache = VerdictCache(tmp_path, RuleJudge(), template)
    cache.put(JudgeRequest("q", "ctx", "a", "b"), Judgment("A", "[[A]]"))
    assert cache.get(JudgeRequest("q", "ctx", "a", "b")).verdict == "A"
    assert cache.get(JudgeRequest("q", "ctx", "b", "a")) is None
    assert cache.get(JudgeRequest("q", None, "a", "b")) is None
    assert (
        VerdictCache(tmp_path, RuleJudge(), template).get(JudgeRequest("q", "ctx", "a", "b")).verdict == "A"
    )


# ---------------------------------------------------------------- statistics


def test_length_controlled_win_rate_by_hand():
    # Longer replies (difference +10 words) win 9 of 10; shorter ones (-10) win 5 of 10. With two length
    # values the regression fits each group exactly: logit(0.9) = ln 9 at x=+1, logit(0.5) = 0 at x=-1, so
    # the intercept (x=0, equal length) is ln 9 / 2 = ln 3 and the LC win rate sigmoid(ln 3) = 3/4.
    scores = [1.0] * 9 + [0.0] + [1.0] * 5 + [0.0] * 5
    differences = [10] * 10 + [-10] * 10
    assert length_controlled_win_rate(scores, differences) == pytest.approx(0.75, abs=1e-5)
    assert sum(scores) / len(scores) == 0.7  # the plain win rate credits length
    # with no length difference it is the plain win rate; a clean sweep stays a clean sweep
    assert length_controlled_win_rate([1, 0, 0.5, 1], [0, 0, 0, 0]) == pytest.approx(0.625, abs=1e-6)
    assert length_controlled_win_rate([1, 1, 1], [5, -3, 2]) == 1.0


def test_sign_test_by_hand():
    assert sign_test_p_value(9, 1) == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test_p_value(5, 5) == 1.0
    assert sign_test_p_value(0, 0) == 1.0


def test_summary_reports_lengths_beside_the_lc_win_rate():
    rows = [
        {"outcome": o, "inconsistent": False, "words_model": m, "words_baseline": 10}
        for o, m in [("win", 20)] * 9 + [("loss", 20)] + [("win", 0)] * 5 + [("loss", 0)] * 5
    ]
    summary = summarize_outcomes(rows)
    assert summary["mean_words"] == {"model": 10.0, "baseline": 10.0}
    assert summary["lc_win_rate"]["mean"] == pytest.approx(0.75, abs=1e-5)
    low, high = summary["lc_win_rate"]["ci"]
    assert low < 0.75 < high
    assert summary["win_rate"]["mean"] == pytest.approx(0.7)


# ---------------------------------------------------------------- templates


def test_builtin_templates_fill_every_placeholder():
    personal = load_template("personalization")
    text = personal.fill("What is 2+2?", None, "4 {answer_b}", "four")
    assert NO_CONTEXT in text and "What is 2+2?" in text
    assert "4 {answer_b}" in text  # a reply is not expanded again
    assert "{" not in text.replace("4 {answer_b}", "")
    helpful = load_template("helpfulness")
    assert "About me" not in helpful.fill("q", "About me: x", "a", "b")
    assert personal.verdict_first and helpful.verdict_first


def test_own_template_file(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text('Q: {question}\nUser: {context}\n1: {answer_a}\n2: {answer_b}\nJSON like {"a": 1} stays.')
    template = load_template(good)
    assert template.fill("q", "c", "x", "y").endswith('2: y\nJSON like {"a": 1} stays.')
    assert not template.verdict_first
    bad = tmp_path / "bad.txt"
    bad.write_text("Q: {question}\n1: {answer_a}\n")
    with pytest.raises(InputError) as error:
        load_template(bad)
    assert str(error.value) == (
        f"{bad}: judge template lacks the placeholder(s) {{answer_b}} "
        "(placeholders: {question}, {context}, {answer_a}, {answer_b})"
    )
    typo = tmp_path / "typo.txt"
    typo.write_text("{question} {answer_a} {answer_b} {contxt}")
    with pytest.raises(InputError, match="unknown placeholder"):
        load_template(typo)
    with pytest.raises(ConfigError, match="not a built-in template"):
        load_template("personalisation")


# ---------------------------------------------------------------- judge-check


def test_judge_check_agreement_with_the_checkers():
    from mipo.evaluation.judges import checker_pairs
    from mipo.tasks import Item

    lowercase = {"type": "lowercase", "params": {}, "text": "Always answer in lowercase."}
    prefs_items = [
        Item(
            f"p{i}",
            f"question {i}",
            "About me: Always answer in lowercase.",
            meta={"preferences": [lowercase]},
        )
        for i in range(3)
    ]
    examples = checker_pairs(
        prefs_items,
        ["all lowercase and long reply", "Short", "same text"],
        ["Not Lowercase", "a much longer reply in lowercase", "same text"],
    )
    assert [e[3] for e in examples] == [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    judge = RuleJudge()  # prefers the longer reply: agrees on the first pair, and on the second
    summary, rows = judge_check(examples, judge, cache=False)
    assert summary["pairs_given"] == 3 and summary["pairs"] == 2  # the third pair: checkers agree, skipped
    assert summary["agree"] == 2 and summary["agreement"]["mean"] == 1.0
    assert [r["judge_agrees"] for r in rows] == ["yes", "yes"]
    biased, _ = judge_check(examples, RuleJudge(always="A"), cache=False)
    assert biased["agreement"]["mean"] == 0.5
    assert "includes chance (0.5)" in biased["note"] and "do not trust its win rates" in biased["note"]


# ---------------------------------------------------------------- real models: local judge, endpoint judge


EXPECTED_PROBS = {
    v: math.exp(x) / (math.exp(16) + math.exp(15) + math.exp(14)) for v, x in zip("ABC", (16, 15, 14))
}


def test_local_judge_reads_verdict_logprobs(bigram_judge_dir, tmp_path):
    from mipo.evaluation.judges import make_judge

    judge = make_judge(str(bigram_judge_dir), batch_size=2)
    summary, rows = judge_pairwise(
        items(3), ["reply one", "r2", "r3"], ["b1", "b2", "b3 longer"], judge, cache=tmp_path
    )
    assert all(r["verdict_model_as_a"] == r["verdict_model_as_b"] == "A" for r in rows)
    assert summary["ties"] == summary["inconsistent"] == 3  # first-position bias -> ties
    for letter, p in EXPECTED_PROBS.items():
        assert rows[0]["probs_model_as_a"][letter] == pytest.approx(p, abs=2e-3)
    text_judge = make_judge(str(bigram_judge_dir), verdict="text")
    assert [j.raw for j in text_judge.judge([("q", None, "a", "b")], load_template("helpfulness"))] == [
        "[[A]]"
    ]


def test_local_judge_on_the_tiny_random_model(tiny_model_dir):
    # Verdicts of a random model are noise; this checks the plumbing: batching with padding, both modes.
    from mipo.evaluation.judges import make_judge

    judge = make_judge(str(tiny_model_dir), batch_size=3)
    requests = [("q", None, "a", "b"), ("a longer question here?", "About me: hi", "reply " * 30, "x")]
    together = judge.judge(requests, load_template("personalization"))
    alone = [judge.judge([r], load_template("personalization"))[0] for r in requests]
    for a, b in zip(together, alone):
        assert a.verdict in ("A", "B", "C") and sum(a.probs.values()) == pytest.approx(1.0)
        assert a.probs == pytest.approx(b.probs, abs=1e-4)  # left padding changes nothing
    text = make_judge(str(tiny_model_dir), verdict="text", max_new_tokens=4).judge(
        requests, load_template("helpfulness")
    )
    assert all(j.verdict == parse_verdict(j.raw) for j in text)


@pytest.fixture()
def judge_server(bigram_judge_dir):
    from openai_server import ChatServer

    server = ChatServer(bigram_judge_dir, served_name="bigram")
    url = server.start()
    yield server, url
    server.stop()


def test_endpoint_judge_over_http(judge_server, tmp_path):
    from mipo.evaluation.judges import make_judge

    server, url = judge_server
    judge = make_judge("bigram", url=url, concurrency=3)
    summary, rows = judge_pairwise(items(3), ["m1", "m2", "m3"], ["b1", "b2", "b3"], judge, cache=tmp_path)
    assert server.completions == 6 and summary["judge_calls"] == 6
    assert all(r["verdict_model_as_a"] == r["verdict_model_as_b"] == "A" for r in rows)
    assert summary["ties"] == summary["inconsistent"] == 3
    for letter, p in EXPECTED_PROBS.items():  # read from the server's top_logprobs after "[["
        assert rows[0]["probs_model_as_a"][letter] == pytest.approx(p, abs=2e-3)
    assert rows[0]["raw_model_as_a"].startswith("[[A]] | p(A)=")
    again, _ = judge_pairwise(items(3), ["m1", "m2", "m3"], ["b1", "b2", "b3"], judge, cache=tmp_path)
    assert server.completions == 6 and again["judge_calls"] == 0  # all from the cache
    text_judge = make_judge("bigram", url=url, verdict="text")
    assert text_judge.judge([("q", None, "a", "b")], load_template("helpfulness"))[0].raw == "[[A]]"


def test_endpoint_judge_retries_then_succeeds(judge_server):
    from mipo.evaluation.judges import make_judge

    server, url = judge_server
    server.fail_next = 2  # two 503s, then answers
    judge = make_judge("bigram", url=url, retries=3, backoff=0.01, concurrency=1)
    assert judge.judge([("q", None, "a", "b")], load_template("personalization"))[0].verdict == "A"


def test_endpoint_judge_parses_text_from_a_server_that_refuses_logprobs(judge_server):
    from mipo.evaluation.judges import make_judge

    server, url = judge_server
    server.refuse_logprobs = True
    judge = make_judge("bigram", url=url, retries=0)  # falling back to text is not a retry
    judgment = judge.judge([("q", None, "a", "b")], load_template("personalization"))[0]
    assert (judgment.verdict, judgment.raw, judgment.probs) == ("A", "[[A]]", None)


def test_make_judge_refuses_unknown_kinds_and_bad_urls():
    from mipo.evaluation.judges import JUDGES, make_judge

    assert {"local", "openai"} <= set(JUDGES.names())
    with pytest.raises(ConfigError, match="unknown judge 'anthropic'; known: local, openai"):
        make_judge("x", kind="anthropic")
    with pytest.raises(ConfigError, match="--judge-url must start with http:// or https://"):
        make_judge("x", url="localhost:8000/v1")


def test_endpoint_judge_errors_are_one_line(bigram_judge_dir, monkeypatch):
    from mipo.evaluation.judges import make_judge
    from openai_server import ChatServer

    server = ChatServer(bigram_judge_dir, served_name="bigram", api_key="sesame")
    url = server.start()
    template = load_template("personalization")
    try:
        monkeypatch.setenv("JUDGE_KEY", "sesame")
        assert (
            make_judge("bigram", url=url, key_env="JUDGE_KEY")
            .judge([("q", None, "a", "b")], template)[0]
            .verdict
            == "A"
        )
        monkeypatch.setenv("JUDGE_KEY", "wrong")
        with pytest.raises(MipoError, match=f"judge endpoint {url} refused the key in \\$JUDGE_KEY"):
            make_judge("bigram", url=url, key_env="JUDGE_KEY").judge([("q", None, "a", "b")], template)
        monkeypatch.delenv("JUDGE_KEY")
        with pytest.raises(ConfigError, match="the environment variable JUDGE_KEY is not set"):
            make_judge("bigram", url=url, key_env="JUDGE_KEY")
        monkeypatch.setenv("JUDGE_KEY", "sesame")
        with pytest.raises(MipoError, match="answered 404.*serves the model 'gpt-9'"):
            make_judge("gpt-9", url=url, key_env="JUDGE_KEY").judge([("q", None, "a", "b")], template)
    finally:
        server.stop()
    # the server is gone: every try is refused, then one line naming the URL
    judge = make_judge("bigram", url=url, key_env="JUDGE_KEY", retries=1, backoff=0.01, timeout=5)
    with pytest.raises(MipoError) as error:
        judge_pairwise(items(2), ["a", "b"], ["c", "d"], judge, cache=False)
    message = str(error.value)
    assert message.startswith(f"judge endpoint {url} failed after 2 tries: ") and "\n" not in message


def _token(text: str, logprob: float, alternatives: dict[str, float]):
    from types import SimpleNamespace

    top = [SimpleNamespace(token=t, logprob=lp) for t, lp in alternatives.items()]
    return SimpleNamespace(token=text, logprob=logprob, top_logprobs=top)


def test_verdict_from_server_logprobs_token_layouts():
    from mipo.evaluation.judges.endpoint import verdict_from_completion

    half = math.log(0.5)
    # "Verdict: [[B]]" with " [[" its own token: the letter after it, alternatives summed per letter
    tokens = [
        _token("Verdict:", 0, {}),
        _token(" [[", 0, {}),
        _token("B", half, {"B": half, "A": math.log(0.2), " A": math.log(0.2)}),
    ]
    judgment = verdict_from_completion("Verdict: [[B]]", tokens + [_token("]]", 0, {})])
    assert judgment.verdict == "B" and judgment.probs == pytest.approx(
        {"A": 0.4 / 0.9, "B": 0.5 / 0.9, "C": 0.0}
    )
    # "[[C" as one token: its alternatives "[[A"/"[[B" are the other verdicts; "Also" is not a verdict
    merged = [
        _token("[[C", math.log(0.6), {"[[C": math.log(0.6), "[[A": math.log(0.3), "Also": math.log(0.1)})
    ]
    judgment = verdict_from_completion("[[C]]", merged)
    assert judgment.verdict == "C" and judgment.probs == pytest.approx({"A": 1 / 3, "B": 0.0, "C": 2 / 3})
    assert judgment.mass == pytest.approx(0.9)
    # no letter after "[[" in the tokens: parsed from the text
    assert verdict_from_completion("I pick [[A]]", None).probs is None
    assert verdict_from_completion("I pick [[A]]", None).verdict == "A"


def test_judge_settings_give_the_flags_and_build_the_judge(tiny_model_dir):
    import argparse

    from mipo.core.config import add_config_arguments, resolve
    from mipo.evaluation.judges.endpoint import EndpointJudge
    from mipo.evaluation.judges.local import LocalJudge
    from mipo.evaluation.judges.settings import JudgeSettings

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, JudgeSettings)
    args = parser.parse_args(
        ["--judge", "qwen", "--judge-url", "http://127.0.0.1:9/v1", "--judge-retries", "0"]
    )
    settings = resolve(JudgeSettings, args)
    judge = settings.make()
    assert isinstance(judge, EndpointJudge) and (judge.url, judge.retries) == ("http://127.0.0.1:9/v1", 0)
    assert settings.judge_problems() == []
    local = resolve(
        JudgeSettings, parser.parse_args(["--judge", str(tiny_model_dir), "--judge-verdict", "text"])
    )
    assert isinstance(local.make(), LocalJudge) and local.make().verdict == "text"
    wrong = JudgeSettings(judge_key_env="KEY", judge_batch_size=0)
    assert wrong.judge_problems() == [
        "judge_batch_size must be at least 1",
        "judge_key_env needs judge_url (a local judge takes no key)",
    ]


def test_judge_check_says_plainly_that_a_builtin_judge_is_for_the_plumbing():
    from mipo.tasks import Item

    items = [Item("a", "q?", "About me: all caps please.", meta={"preferences": [{"type": "all_caps"}]})]
    judge = RuleJudge()
    judge.name = "smollm2-135m"
    check, _ = judge_check([(items[0], "LOUD REPLY", "quiet", (1.0, 0.0))], judge, cache=False)
    assert check["note"].endswith(
        "The built-in smollm2-135m is far too small to judge personalization (expect chance): it serves for "
        "the plumbing only; serve a larger judge (docs/judges.md)"
    )
    other, _ = judge_check([(items[0], "LOUD REPLY", "quiet", (1.0, 0.0))], RuleJudge(), cache=False)
    assert "built-in" not in other["note"]
