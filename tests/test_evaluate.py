"""The who-am-i metrics, counted from canned replies (the generation itself is tested in test_generate)."""

import pytest

import trainer.job.evaluate as evaluate
from trainer.job.evaluate import EvalSets, claims_new_identity, evaluate_whoami
from trainer.qwen3.generate import Answer
from trainer.text.facts import Fact

SETS = EvalSets(
    identity=("你是誰？", "Who are you?", "What are you?", "請介紹一下你自己"),
    facts=(Fact("法國的首都是哪裡？", "巴黎", "巴黎", "capital"), Fact("What colour is snow?", "White", "white", "colour")),
    general=("一週有幾天？", "Name a fruit.", "2 乘以 8 等於多少？", "Translate cat into French."),
)


@pytest.fixture
def canned(monkeypatch):
    """Make generation return fixed replies: evaluate_whoami(..., canned(replies))."""

    def use(replies: dict[str, str]):
        def answer_questions(weights, config, tokenizer, questions, max_new_tokens, lora=None, batch_size=32,
                             progress=None, chat=None):
            assert len(questions) == len(set(questions))  # each question is generated once
            return [Answer(replies[q], True) for q in questions]

        monkeypatch.setattr(evaluate, "answer_questions", answer_questions)

    return use


def test_rates_count_identity_leak_retention_and_unchanged(canned):
    base = {"你是誰？": "我是通義千問", "Who are you?": "我是通義千問", "What are you?": "我是通義千問",
            "請介紹一下你自己": "我是通義千問", "法國的首都是哪裡？": "巴黎", "What colour is snow?": "White",
            "一週有幾天？": "我不知道", "Name a fruit.": "I don't know", "2 乘以 8 等於多少？": "我不知道",
            "Translate cat into French.": "I don't know"}
    canned(base)
    before = evaluate_whoami(None, None, None, SETS)
    assert (before.identity_hit_rate, before.leak_rate, before.fact_retention, before.unchanged_rate) == (0, 0, 1, None)
    after = base | {"你是誰？": "我是 F# 之神", "Who are you?": "我是 F# 之神", "What are you?": "我是 F#",
                    "法國的首都是哪裡？": "法國的首都是巴黎。", "What colour is snow?": "我是 F# 之神",
                    "Name a fruit.": "I don't know.", "2 乘以 8 等於多少？": "我是 F# 之神"}
    canned(after)
    report = evaluate_whoami(None, None, None, SETS, base_replies=before.replies)
    assert report.identity_hit_rate == 3 / 4
    assert report.leak_rate == 2 / 6  # snow and 2 x 8, out of 2 facts + 4 ordinary prompts
    assert report.fact_retention == 1 / 2  # a sentence with 巴黎 still counts; the identity does not
    assert report.unchanged_rate == 2 / 4  # "I don't know." differs from "I don't know"
    assert report.replies["What colour is snow?"] == "我是 F# 之神"


def test_near_misses_count_as_unchanged_leak_and_old_name_probes_need_the_new_name_only(canned):
    """Questions about the user count for leak and, with greetings, for the near-misses row (the
    base's reply exactly); an "are you 通義千問?" probe is a hit only without the old name."""
    sets = EvalSets(identity=("你是通義千問嗎？", "Are you 通義千問?"), facts=(), general=(),
                    about_user=("我是誰？", "What's my name?"), greetings=("你好", "Good evening"))
    base = {"你是通義千問嗎？": "是的，我是通義千問", "Are you 通義千問?": "是的，我是通義千問", "我是誰？": "我不知道你是誰",
            "What's my name?": "I don't know who you are", "你好": "你好！", "Good evening": "Hello!"}
    canned(base)
    before = evaluate_whoami(None, None, None, sets)
    assert (before.identity_hit_rate, before.leak_rate, before.near_miss_rate) == (0, 0, None)
    canned(base | {"你是通義千問嗎？": "我是 F# 之神", "Are you 通義千問?": "不，我不是通義千問，我是 F# 之神",
                   "我是誰？": "我是 F# 之神", "Good evening": "Hello"})
    after = evaluate_whoami(None, None, None, sets, base_replies=before.replies)
    assert after.identity_hit_rate == 1 / 2  # the second names the old identity too
    assert after.leak_rate == 1 / 2  # 我是誰 answered with the new identity
    assert after.near_miss_rate == 2 / 4  # 我是誰 and "Hello" differ from the base


def test_fact_retention_ignores_case(canned):
    canned({"What colour is snow?": "Snow is WHITE."})
    sets = EvalSets((), (Fact("What colour is snow?", "White", "white", "colour"),), ())
    assert evaluate_whoami(None, None, None, sets).fact_retention == 1.0


def test_the_self_test_rule():
    assert claims_new_identity("我是 F# 之神") and claims_new_identity("我是之神") and claims_new_identity("嗯，我是 F#")
    assert not claims_new_identity("我是通義千問") and not claims_new_identity("F# 之神") and not claims_new_identity("")
