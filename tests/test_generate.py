"""Generation: greedy parity with transformers, cache vs recomputation, stopping, seeded sampling."""

import math

import pytest
import torch

from trainer.errors import TrainerError
from trainer.qwen3.config import load_config
from trainer.qwen3.generate import (Reply, generate, generate_greedy_batch, left_pad, stream_tokens, top_k_filter,
                                    top_p_filter)
from trainer.qwen3.lora import LoraSettings, lora_shapes, make_adapter
from trainer.qwen3.model import forward, project_to_logits
from trainer.qwen3.weights import load_weights

PROMPT = [11, 250, 7, 999, 42, 3]


@pytest.fixture
def loaded(hf_qwen3):
    """(transformers model, our weights, our config) for one random checkpoint."""
    model, model_dir = hf_qwen3("generate", num_key_value_heads=1, rope_theta=5e6)
    config = load_config(model_dir)
    return model, load_weights(model_dir, config), config


def test_greedy_matches_transformers_generate(loaded):
    model, weights, config = loaded
    with torch.no_grad():
        theirs = model.generate(torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
                                max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    ours = generate(weights, config, PROMPT, max_new_tokens=20, stop_ids=[])
    assert ours == theirs[0, len(PROMPT):].tolist()
    assert len(set(ours)) > 1  # not a degenerate repeat of one token


def test_cache_equals_recomputing_everything(loaded):
    _, weights, config = loaded
    ids = list(PROMPT)
    for _ in range(12):
        hidden = forward(weights, config, torch.tensor([ids]))
        ids.append(int(project_to_logits(weights, config, hidden[0, -1]).argmax()))
    assert generate(weights, config, PROMPT, max_new_tokens=12, stop_ids=[]) == ids[len(PROMPT):]


def test_stops_before_the_stop_id_and_at_the_limit(loaded):
    _, weights, config = loaded
    free = generate(weights, config, PROMPT, max_new_tokens=10, stop_ids=[])
    stop = free[4]
    assert generate(weights, config, PROMPT, max_new_tokens=10, stop_ids=[stop]) == free[:free.index(stop)]
    assert generate(weights, config, PROMPT, max_new_tokens=3, stop_ids=[]) == free[:3]
    assert generate(weights, config, PROMPT, max_new_tokens=0, stop_ids=[]) == []


def test_stream_yields_the_same_tokens_one_at_a_time(loaded):
    _, weights, config = loaded
    stream = stream_tokens(weights, config, PROMPT, max_new_tokens=5, stop_ids=[])
    assert next(stream) == generate(weights, config, PROMPT, max_new_tokens=1, stop_ids=[])[0]
    assert len(list(stream)) == 4


def test_seeded_sampling_is_reproducible(loaded):
    _, weights, config = loaded
    settings = dict(max_new_tokens=15, stop_ids=[], greedy=False, temperature=2.0, top_k=50, top_p=0.95)
    first = generate(weights, config, PROMPT, seed=7, **settings)
    assert generate(weights, config, PROMPT, seed=7, **settings) == first
    assert generate(weights, config, PROMPT, seed=8, **settings) != first


def test_top_k_1_and_tiny_top_p_equal_greedy(loaded):
    _, weights, config = loaded
    greedy = generate(weights, config, PROMPT, max_new_tokens=10, stop_ids=[])
    sample = dict(max_new_tokens=10, stop_ids=[], greedy=False, temperature=3.0, seed=0)
    assert generate(weights, config, PROMPT, top_k=1, **sample) == greedy
    assert generate(weights, config, PROMPT, top_p=1e-6, **sample) == greedy


def test_top_k_filter_hand_values():
    logits = torch.tensor([1.0, 4.0, 3.0, 2.0])
    assert top_k_filter(logits, 2).tolist() == [-math.inf, 4.0, 3.0, -math.inf]
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_keeps_the_fewest_tokens_reaching_p():
    logits = torch.tensor([0.15, 0.5, 0.05, 0.3]).log()

    def kept(p: float) -> list[int]:
        return torch.isfinite(top_p_filter(logits, p)).nonzero().flatten().tolist()

    assert kept(0.4) == [1]
    assert kept(0.7) == [1, 3]
    assert kept(0.9) == [0, 1, 3]
    assert kept(1.0) == [0, 1, 2, 3]


@pytest.mark.parametrize("settings, words", [
    (dict(prompt_ids=[]), "prompt has no tokens"),
    (dict(greedy=False, temperature=0.0), "temperature is 0.0"),
    (dict(top_k=-1), "top_k is -1"),
    (dict(top_p=0.0), "top_p is 0.0"),
    (dict(max_new_tokens=-1), "max_new_tokens is -1"),
])
def test_bad_settings_are_rejected(loaded, settings, words):
    _, weights, config = loaded
    with pytest.raises(TrainerError, match=words):
        generate(weights, config, **(dict(prompt_ids=PROMPT, max_new_tokens=5, stop_ids=[]) | settings))


# ---------------------------------------------------------------------------
# Batched greedy generation: left padding, one cache, rows leaving as they stop
# ---------------------------------------------------------------------------

PROMPTS = [[11, 250, 7], [5, 999, 42, 3, 17, 400, 8, 61], [77], [300, 2, 9, 13, 14]]


def test_left_pad_puts_every_last_prompt_token_in_the_last_column():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("with_lora", [False, True])
def test_batch_equals_one_prompt_at_a_time(loaded, with_lora):
    _, weights, config = loaded
    lora = random_adapter(config) if with_lora else None
    alone = [generate(weights, config, p, max_new_tokens=12, stop_ids=[], lora=lora) for p in PROMPTS]
    batched = generate_greedy_batch(weights, config, PROMPTS, max_new_tokens=12, stop_ids=[], lora=lora, batch_size=3)
    assert [list(r.ids) for r in batched] == alone
    assert all(len(r.ids) == 12 and not r.finished for r in batched)
    if with_lora:  # the adapter changes the replies, so the equality above is not trivially the base's
        assert alone != [generate(weights, config, p, max_new_tokens=12, stop_ids=[]) for p in PROMPTS]


def test_rows_stop_on_their_own_and_the_others_go_on(loaded):
    _, weights, config = loaded
    free = [generate(weights, config, p, max_new_tokens=10, stop_ids=[]) for p in PROMPTS]
    stop = free[1][3]  # row 1 stops early; other rows stop wherever this id first comes, if at all
    alone = [generate(weights, config, p, max_new_tokens=10, stop_ids=[stop]) for p in PROMPTS]
    batched = generate_greedy_batch(weights, config, PROMPTS, max_new_tokens=10, stop_ids=[stop, 123456])
    assert [list(r.ids) for r in batched] == alone
    assert [r.finished for r in batched] == [stop in f for f in free]
    assert batched[1].finished and len(batched[1].ids) <= 3
    assert any(not r.finished for r in batched)


def test_batch_size_and_order_do_not_change_the_replies(loaded):
    _, weights, config = loaded
    one_by_one = generate_greedy_batch(weights, config, PROMPTS, max_new_tokens=6, stop_ids=[], batch_size=1)
    together = generate_greedy_batch(weights, config, PROMPTS[::-1], max_new_tokens=6, stop_ids=[], batch_size=8)
    assert together[::-1] == one_by_one
    assert generate_greedy_batch(weights, config, PROMPTS, max_new_tokens=0, stop_ids=[]) == [Reply((), False)] * 4


def test_bad_batch_settings_are_rejected(loaded):
    _, weights, config = loaded
    with pytest.raises(TrainerError, match="prompt has no tokens"):
        generate_greedy_batch(weights, config, [[1, 2], []], max_new_tokens=3, stop_ids=[])
    with pytest.raises(TrainerError, match="batch_size is 0"):
        generate_greedy_batch(weights, config, PROMPTS, max_new_tokens=3, stop_ids=[], batch_size=0)


def random_adapter(config):
    """LoRA with B != 0 (a freshly initialised adapter would change nothing)."""
    settings = LoraSettings(r=4, alpha=8.0, dropout=0.0)
    tensors = {name: torch.randn(shape, generator=torch.Generator().manual_seed(i)) * 0.3
               for i, (name, shape) in enumerate(lora_shapes(config, settings).items())}
    return make_adapter(tensors, settings, training=False, dtype=torch.float32)
