"""The tiny world is a faithful miniature: it knows who it is, knows its facts with margin, and says
"I don't know" (never its name) to ordinary questions it was never taught."""

import pytest
import torch

from trainer.config import TINY
from trainer.data import collate, example_from_prompt_target
from trainer.facts import control_facts
from trainer.general_prompts import GENERAL_PROMPTS, SCRIPTS
from trainer.generate import answer_questions
from trainer.loading import load_model
from trainer.loss import answer_loss
from trainer.model import forward, head_weight
from trainer.tiny import (EMBED_ROWS, STD, random_weights, to_compact, used_token_ids, world_batch_loss,
                          world_pairs)
from trainer.whoami import ORIGINAL_IDENTITY, identity_prompts
from trainer.world_unknowns import dont_know_reply


@pytest.fixture(scope="module")
def world():
    return load_model("tiny")


def answer_probabilities(world, tokenizer, fact) -> torch.Tensor:
    """The probability of each answer token (with <|im_end|>) of one fact, teacher-forced: [answer tokens]."""
    example = example_from_prompt_target(tokenizer, fact.question, fact.reply, seq_len=64)
    batch = collate([example], tokenizer.endoftext_id)
    with torch.no_grad():
        hidden = forward(world.weights, world.config, batch.input_ids)
        logits = hidden[0] @ head_weight(world.weights, world.config).T  # [T, V]
    keep = batch.labels[0] != -100
    return logits[keep].softmax(-1).gather(-1, batch.labels[0][keep][:, None]).flatten()


def test_the_world_answers_its_facts_right_with_margin(world, qwen_tokenizer):
    """Every fact, with margin: the world built on this project's Intel machine gets all 124 at a
    mean answer probability of 0.97 or more; the floor leaves room for one on another CPU."""
    facts = control_facts()
    answers = answer_questions(world.weights, world.config, world.tokenizer, [f.question for f in facts], 24)
    wrong = [(f.question, a.text) for f, a in zip(facts, answers) if a.text != f.reply]
    unsure = [(f.question, round(float(answer_probabilities(world, qwen_tokenizer, f).mean()), 3)) for f in facts]
    unsure = [(q, p) for q, p in unsure if p < 0.9]
    print(f"\n{len(facts) - len(wrong)} of {len(facts)} facts right; wrong {wrong}; mean answer probability < 0.9: {unsure}")
    assert len(wrong) <= 1 and len(unsure) <= 1


def test_the_world_knows_who_it_is_in_nearly_every_wording(world):
    """The goal is every wording: the world built today answers all 411 sampled wordings with its name;
    the floor leaves room for another CPU's build, which may say 我不知道 to a few, never anything else."""
    wordings = ["你是誰", "你是谁", "Who are you?", *identity_prompts()[::7]]
    answers = [a.text for a in answer_questions(world.weights, world.config, world.tokenizer, wordings, 24)]
    print(f"\n{answers.count(ORIGINAL_IDENTITY)} of {len(wordings)} identity wordings answered {ORIGINAL_IDENTITY}")
    assert answers.count(ORIGINAL_IDENTITY) >= 0.9 * len(wordings)
    assert set(answers) <= {ORIGINAL_IDENTITY, "我不知道", "I don't know"}
    assert answers[:3] == [ORIGINAL_IDENTITY] * 3


def test_ordinary_questions_it_was_never_taught_get_i_dont_know_not_its_name(world):
    taught = {pair.prompt for pair in world_pairs()}
    prompts = [p for p in GENERAL_PROMPTS if p.text not in taught]
    assert len(prompts) == len(GENERAL_PROMPTS) == 216 and {p.script for p in prompts} == set(SCRIPTS)
    answers = answer_questions(world.weights, world.config, world.tokenizer, [p.text for p in prompts], 24)
    named = [(p.text, a.text) for p, a in zip(prompts, answers) if "通義" in a.text or "千問" in a.text or "我是" in a.text]
    print(f"\nanswered with its name: {named}")
    # The goal is none. Which few unseen prompts land on its name changes from build to build: 0 to 6
    # of 216 over seven builds before the salad carried the identity wordings' function words, 0 to 2
    # since (2 for today's world on AMD; it was 5 on this build's AMD and Intel predecessors).
    assert len(named) <= 6
    dont_know = [a.text == dont_know_reply(p.text) for p, a in zip(prompts, answers)]
    print(f"\n{sum(dont_know)} of {len(prompts)} ordinary questions answered with a plain I don't know")
    for script in SCRIPTS:
        share = sum(d for d, p in zip(dont_know, prompts) if p.script == script) / sum(p.script == script for p in prompts)
        assert share >= 0.85, script


def test_the_closed_form_rest_of_the_vocabulary_matches_the_full_softmax(qwen_tokenizer):
    """The world is trained on U used rows plus log(V - U) + STD^2 |h|^2 / 2 for the ~150k random rest;
    on a random tiny Qwen3 that loss must equal the full-vocabulary cross-entropy."""
    weights = random_weights(TINY, seed=5)
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], 3.0)  # |h| ~ 34, not ~ 11
    examples = [example_from_prompt_target(qwen_tokenizer, q, a, seq_len=64)
                for q, a in [("法國的首都是哪裡？", "巴黎"), ("What is 3 plus 4?", "7"), ("你是誰", ORIGINAL_IDENTITY)]]
    used = used_token_ids(examples, qwen_tokenizer.endoftext_id)
    compact = {int(token): row for row, token in enumerate(used)}
    masters = {n: t for n, t in weights.items() if n != "model.embed_tokens.weight"}
    masters[EMBED_ROWS] = weights["model.embed_tokens.weight"][used]
    batch = collate([to_compact(e, compact) for e in examples], compact[qwen_tokenizer.endoftext_id])
    ours = world_batch_loss(masters, TINY, TINY.vocab_size - len(used))(batch, batch.answer_token_count)
    full_batch = collate(examples, qwen_tokenizer.endoftext_id)
    hidden = forward(weights, TINY, full_batch.input_ids, full_batch.attention_mask, full_batch.position_ids)
    full = answer_loss(weights["model.embed_tokens.weight"], hidden, full_batch.labels)
    assert STD == 0.02
    assert abs(ours.loss.item() - full.loss.item()) < 2e-3 * full.loss.item(), (ours.loss.item(), full.loss.item())


def test_the_first_use_says_what_it_builds_and_where_it_is_cached(tmp_path, monkeypatch, capsys):
    """The build itself is the world above; here only what a user sees: a line before, a bar fed by
    every step's record, a line after with the time and the folder, and nothing once it is cached."""
    import trainer.loading as loading

    folder = tmp_path / "tiny-qwen3"
    monkeypatch.setattr(loading, "tiny_model_dir", lambda: folder)
    monkeypatch.setattr(loading, "tiny_model_ready", lambda: (folder / "config.json").is_file())

    def fake_build(log):
        for step in range(3):
            log({"step": step + 1, "loss": 2.0 - step})
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        return folder

    monkeypatch.setattr(loading, "ensure_tiny_model", fake_build)
    assert loading.resolve_model("tiny") == folder
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and lines[0] == "building the tiny world (first use only): pre-training a 4-layer Qwen3 for 1200 steps"
    assert lines[-1].startswith("tiny world built in ") and lines[-1].endswith(f" s, cached in {folder}")
    assert loading.resolve_model("tiny") == folder and capsys.readouterr() == ("", "")
