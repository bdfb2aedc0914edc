"""The self-test's parts: --probe parsing, the prompts a --data run is checked on, the claims, and
merged/ held to the trained model's replies (on the tiny world, float32)."""

import dataclasses

import pytest
import torch

from trainer.errors import TrainerError
from trainer.job.checks import (MERGED_NLL_TOLERANCE, SELF_TEST_ROWS, TrainedReplies, built_in_prompts, check_claims,
                                check_merged_replies, claim_indices, data_prompts, reply_fit)
from trainer.job.evaluate import Probe, built_in_eval_sets, parse_probe
from trainer.job.loading import LoadedModel, load_model
from trainer.qwen3.generate import Reply, reply_to_prompts
from trainer.text.chat import render_chat
from trainer.text.readers import Conversation


@pytest.mark.parametrize("text, prompt, expected", [("你是誰=F#", "你是誰", "F#"), ("2+2=?=4", "2+2=?", "4"),
                                                    ("Name it = x=1", "Name it = x", "1")])
def test_a_probe_splits_at_its_last_equals_sign(text, prompt, expected):
    assert parse_probe(text) == Probe(prompt, expected)


@pytest.mark.parametrize("text", ["no sign", "=F#", "你是誰=", "你是誰=  "])
def test_a_probe_without_both_sides_is_refused_naming_it(text):
    with pytest.raises(TrainerError, match=f"--probe {text!r}: expected PROMPT=EXPECTED"):
        parse_probe(text)


def row(number: int) -> Conversation:
    return Conversation(({"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{number}"},
                         {"role": "assistant", "content": "A", "weight": 0}, {"role": "user", "content": "Again"},
                         {"role": "assistant", "content": f"A{number}"}), source=f"val.jsonl:{number}")


def test_a_data_run_asks_its_first_rows_up_to_their_last_answer_then_the_probes():
    asked = data_prompts([row(n) for n in range(1, 12)], [Probe("Who?", "me")])
    assert SELF_TEST_ROWS == 8 and not asked.identity
    assert asked.labels == (*(f"val.jsonl:{n}" for n in range(1, 9)), "Who?")
    assert asked.prompts[0] == render_chat(list(row(1).messages[:4]), add_generation_prompt=True)
    assert asked.prompts[0].endswith("<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n")
    assert asked.prompts[-1] == render_chat([{"role": "user", "content": "Who?"}], add_generation_prompt=True)
    assert claim_indices(asked) == [8]


def test_the_built_in_set_asks_who_are_you_first_and_held_out_prompts_of_each_kind():
    asked = built_in_prompts(built_in_eval_sets(), [Probe("Who?", "me")])
    assert asked.identity and asked.labels[0] == "你是誰" and len(asked.prompts) == 11
    assert claim_indices(asked) == [0, 10]


def test_claims_name_the_prompt_the_reply_and_what_was_expected():
    built_in = built_in_prompts(built_in_eval_sets(), [Probe("Who?", "F#")])
    check_claims("self-test failed: x", built_in, {0: "我是 F# 之神", 10: "I am F#."})
    with pytest.raises(TrainerError, match="^self-test failed: x answered 你是誰 with '我是通義千問'$"):
        check_claims("self-test failed: x", built_in, {0: "我是通義千問", 10: "I am F#."})
    with pytest.raises(TrainerError, match=r"^self-test failed: x replied to --probe 'Who\?' with 'Me\.', which does "
                                           r"not contain 'F#'$"):
        check_claims("self-test failed: x", built_in, {0: "我是 F# 之神", 10: "Me."})
    check_claims("x", data_prompts([row(1)], []), {})  # a --data run without probes claims nothing


@pytest.fixture(scope="module")
def world() -> LoadedModel:
    return load_model("tiny", torch.float32)


@pytest.fixture(scope="module")
def own_replies(world) -> TrainedReplies:
    """The tiny world's own greedy replies to three data rows and a probe it passes."""
    rows = [Conversation(({"role": "user", "content": q}, {"role": "assistant", "content": "-"}), source=f"v:{n}")
            for n, q in enumerate(["法國的首都是哪裡？", "你是誰", "Who are you?"])]
    asked = data_prompts(rows, [Probe("日本的首都是哪裡？", "東京")])
    replies = reply_to_prompts(world.weights, world.config, world.tokenizer, asked.prompts, 32)
    return TrainedReplies(asked, tuple(replies), reply_fit(world, None, asked.prompts, replies))


def test_a_model_picks_its_own_greedy_replies_at_every_position_and_the_stop(world, own_replies):
    fit, replies = own_replies.fit, own_replies.replies
    assert all(r.finished for r in replies) and [world.tokenizer.decode(r.ids) for r in replies][-1] == "東京"
    assert fit.picks == 1.0 and fit.tokens == sum(len(r.ids) + 1 for r in replies)  # + the <|im_end|> it chose
    assert 0 < fit.nll < 0.1  # the tiny world is sure of what it knows
    merged_fit, texts = check_merged_replies(world, own_replies, 32)
    assert merged_fit == fit and texts == {3: "東京"}


def test_a_reply_the_model_would_not_give_scores_worse(world):
    prompt = render_chat([{"role": "user", "content": "你是誰"}], add_generation_prompt=True)
    own = reply_to_prompts(world.weights, world.config, world.tokenizer, [prompt], 32)[0]
    changed = Reply((own.ids[0], world.tokenizer.encode("F")[0], *own.ids[2:]), own.finished)
    fit, changed_fit = (reply_fit(world, None, [prompt], [reply]) for reply in (own, changed))
    assert changed_fit.tokens == fit.tokens == len(own.ids) + 1
    assert changed_fit.picks <= 1 - 1 / fit.tokens and changed_fit.nll > fit.nll + 1


@pytest.mark.parametrize("name, factor", [("model.layers.0.self_attn.o_proj.weight", -1.0), ("model.norm.weight", 0.0)])
def test_a_corrupted_merged_model_fails_naming_its_reply(world, own_replies, name, factor):
    """(A change that leaves behaviour alone passes here: zeroing one layer's MLP moves the tiny world's
    score of these replies by 0.003 nats per token. check_merged catches it, tensor by tensor.)"""
    weights = dict(world.weights)
    weights[name] = weights[name] * factor
    broken = dataclasses.replace(world, weights=weights)
    with pytest.raises(TrainerError, match=rf"^merged check failed: .* scores the trained model's self-test replies at "
                                           rf"\d+\.\d+ nats per token where the trained model scores 0\.\d+ \(at most "
                                           rf"{MERGED_NLL_TOLERANCE} more allowed\); on '(v:\d|日本的首都是哪裡？)' the trained model said "):
        check_merged_replies(broken, own_replies, 32)
