"""The forward pass: hand-computed unit values, then logit parity with transformers' Qwen3."""

import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from trainer.qwen3.config import load_config
from trainer.qwen3.model import (LoraAdapter, apply_rope, attention_allowed, causal_alone_suffices, forward,
                                 forward_cached, grouped_attention, linear, lora_names, project_to_logits, rms_norm,
                                 rope_cos_sin, row_dropout, stable_seed, swiglu)
from trainer.qwen3.weights import load_weights

# Parity configs: tied/untied, GQA ratios 1, 2, 4, head_dim != hidden/heads, several RoPE bases,
# a sharded checkpoint, and the real vocabulary at a tiny width.
PARITY_CONFIGS = {
    "tied_gqa2": dict(rope_theta=1e6),
    "untied_gqa1_wide_heads": dict(num_key_value_heads=4, head_dim=32, tie_word_embeddings=False, rope_theta=1e4),
    "tied_gqa4_narrow_heads": dict(hidden_size=96, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
                                   num_hidden_layers=3, rope_theta=5e6),
    "untied_sharded": dict(tie_word_embeddings=False, max_shard_size="100KB"),
    "real_vocab": dict(vocab_size=151936, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=16, rope_theta=5e6),
}
TOLERANCE = 1e-4


def test_rms_norm_hand_values():
    x = torch.tensor([[3.0, 4.0]])  # mean square 12.5
    out = rms_norm(x, torch.tensor([1.0, 2.0]), eps=0.0)
    assert torch.allclose(out, torch.tensor([[3 / math.sqrt(12.5), 8 / math.sqrt(12.5)]]))


def test_rms_norm_eps_and_dtype():
    out = rms_norm(torch.zeros(1, 4, dtype=torch.bfloat16), torch.ones(4), eps=1e-6)
    assert out.dtype == torch.float32 and torch.equal(out, torch.zeros(1, 4))  # float32 weight promotes
    half = rms_norm(torch.full((1, 4), 300.0, dtype=torch.bfloat16), torch.ones(4, dtype=torch.bfloat16), 1e-6)
    assert half.dtype == torch.bfloat16 and torch.equal(half, torch.ones(1, 4, dtype=torch.bfloat16))


def test_rope_angles_hand_values():
    cos, sin = rope_cos_sin(torch.tensor([[0, 1, 2]]), head_dim=4, theta=100.0)  # frequencies 1 and 0.1
    angles = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.1, 1.0, 0.1], [2.0, 0.2, 2.0, 0.2]])
    assert cos.shape == (1, 3, 4)
    assert torch.allclose(cos[0], angles.cos()) and torch.allclose(sin[0], angles.sin())


def test_apply_rope_rotates_pairs_i_and_i_plus_half():
    cos, sin = rope_cos_sin(torch.tensor([[0, 1]]), head_dim=4, theta=100.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(1, 1, 2, 4)  # [B, heads, T, D]
    out = apply_rope(x, cos, sin)
    c1, s1, c2, s2 = math.cos(1), math.sin(1), math.cos(0.1), math.sin(0.1)
    expected = torch.tensor([1 * c1 - 3 * s1, 2 * c2 - 4 * s2, 3 * c1 + 1 * s1, 4 * c2 + 2 * s2])
    assert torch.equal(out[0, 0, 0], x[0, 0, 0])  # position 0 is not rotated
    assert torch.allclose(out[0, 0, 1], expected)


def test_rope_scores_depend_only_on_distance():
    q, k = torch.randn(2, 1, 1, 1, 8, generator=torch.Generator().manual_seed(0))
    cos, sin = rope_cos_sin(torch.tensor([[3, 5, 10, 12]]), head_dim=8, theta=1e4)
    rotated = [apply_rope(t, cos[:, i:i + 1], sin[:, i:i + 1]) for i, t in enumerate([q, k, q, k])]
    near = (rotated[0] * rotated[1]).sum()  # positions 3 and 5
    far = (rotated[2] * rotated[3]).sum()  # positions 10 and 12
    assert torch.allclose(near, far, atol=1e-5)


def test_attention_allowed_is_causal_and_hides_padding():
    allowed = attention_allowed(torch.tensor([[1, 1, 0]]), query_len=3)[0, 0]
    assert allowed.tolist() == [[True, False, False], [True, True, False], [False, False, True]]  # pad: only itself
    decode = attention_allowed(torch.tensor([[1, 1, 1, 1]]), query_len=1)[0, 0]
    assert decode.tolist() == [[True, True, True, True]]  # the new token sees the whole cache


def test_attention_allowed_is_block_diagonal_for_packed_rows():
    allowed = attention_allowed(torch.tensor([[1, 1, 2, 2, 2, 0]]), query_len=6)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0],  # the second example starts fresh
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees only itself
    ]


def test_causal_alone_suffices_only_for_right_padded_single_examples_without_cache():
    right_padded = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert causal_alone_suffices(right_padded, past_len=0)
    assert not causal_alone_suffices(right_padded, past_len=2)  # new queries sit after cached keys
    assert not causal_alone_suffices(torch.tensor([[0, 1, 1]]), past_len=0)  # left padding
    assert not causal_alone_suffices(torch.tensor([[1, 1, 2]]), past_len=0)  # two packed examples


def test_grouped_attention_causal_equals_the_causal_mask():
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    masked = grouped_attention(q, k, v, attention_allowed(torch.ones(2, 6, dtype=torch.long), 6))
    assert torch.allclose(grouped_attention(q, k, v, None), masked, atol=1e-6)


@dataclass(frozen=True)
class DoubledLinear:
    """A stand-in for a packed 4-bit weight: anything with `.linear(x)`."""

    weight: torch.Tensor

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x @ self.weight.T


def test_linear_dense_packed_and_lora():
    name = "model.layers.0.mlp.up_proj.weight"
    w, a, b, x = torch.randn(3, 4), torch.randn(2, 4), torch.randn(3, 2), torch.randn(5, 4)
    assert torch.allclose(linear(x, {name: w}, name), x @ w.T)
    assert torch.allclose(linear(x, {name: DoubledLinear(w)}, name), 2 * x @ w.T)
    a_name, b_name = lora_names(name)
    assert a_name == "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"
    lora = LoraAdapter({a_name: a, b_name: b}, scale=0.5, dropout=0.9, training=False)
    assert torch.allclose(linear(x, {name: w}, name, lora), x @ w.T + x @ a.T @ b.T * 0.5, atol=1e-6)
    other = "model.layers.0.mlp.gate_proj.weight"  # no adapter for this module
    assert torch.allclose(linear(x, {other: w}, other, lora), x @ w.T)


def test_a_training_forward_with_dropout_leaves_the_compiler_unimported():
    """torch._dynamo takes about 0.9 s to import: a process that trains eagerly must not pay it, not
    for the dropout operator (torch.library's custom_op imports it on first call) nor for anything else."""
    code = """
import sys, torch
from trainer.qwen3.model import LoraAdapter, linear, lora_names
name = "model.layers.0.mlp.up_proj.weight"
a_name, b_name = lora_names(name)
a, b = torch.randn(4, 8, requires_grad=True), torch.randn(6, 4, requires_grad=True)
lora = LoraAdapter({a_name: a, b_name: b}, scale=0.5, dropout=0.3, training=True, row_seeds=torch.tensor([7, 8]))
linear(torch.randn(2, 5, 8), {name: torch.randn(6, 8)}, name, lora).sum().backward()
print(a.grad.abs().sum() > 0, "torch._dynamo" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tensor(True)", "False"]


def test_stable_seed_is_a_fixed_63_bit_number_of_its_parts():
    """Pinned: the random checkpoints and every dropout mask are drawn from these numbers."""
    assert stable_seed(42, 3, 1) == 5654362666040656436  # sha256("42:3:1"), first 8 bytes little-endian, >> 1
    assert stable_seed(42, 1, 3) != stable_seed(42, 3, 1)


def test_row_dropout_masks_follow_the_row_seed_not_the_batch():
    """A row's mask comes from its seed and the weight's name alone: the same in any batch order,
    beside any other rows, padded to any length (CPU), and different for another weight."""
    x = torch.ones(3, 6, 40)
    seeds = torch.tensor([11, 22, 33])
    out = row_dropout(x, 0.25, seeds, "q")
    assert torch.equal(row_dropout(x[[2, 0]], 0.25, torch.tensor([33, 11]), "q"), out[[2, 0]])
    padded = row_dropout(torch.ones(1, 9, 40), 0.25, torch.tensor([22]), "q")
    assert torch.equal(padded[0, :6], out[1])
    assert not torch.equal(row_dropout(x, 0.25, seeds, "k"), out)
    assert torch.equal(out.unique(), torch.tensor([0.0, 1 / 0.75]))  # dropped, or kept and scaled by 1 / (1 - p)
    assert abs(float((out == 0).float().mean()) - 0.25) < 0.05  # 720 draws
    with pytest.raises(ValueError, match="one seed per row: got 2 for 3 rows"):
        row_dropout(x, 0.25, seeds[:2], "q")


def test_swiglu_hand_values():
    gate, up = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([3.0, 2.0, 1.0])
    # silu(g) = g * sigmoid(g): silu(0) = 0, silu(1) = 0.7310586, silu(-2) = -0.2384058
    assert torch.allclose(swiglu(gate, up), torch.tensor([0.0, 1.4621172, -0.2384058]))


def test_grouped_attention_equals_repeated_heads():
    """Query heads 2i and 2i+1 share key/value head i; the mask hides the future."""
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    allowed = attention_allowed(torch.ones(2, 5, dtype=torch.long), 5)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                                attn_mask=allowed)
    assert torch.allclose(grouped_attention(q, k, v, allowed), expected, atol=1e-6)
    first = torch.softmax(q[0, 1, 0] @ k[0, 0, :1].T / math.sqrt(8), -1) @ v[0, 0, :1]  # query 0 sees key 0 only
    assert torch.allclose(grouped_attention(q, k, v, allowed)[0, 1, 0], first, atol=1e-6)


def our_logits(model_dir, input_ids, attention_mask=None):
    config = load_config(model_dir)
    weights = load_weights(model_dir, config)
    return project_to_logits(weights, config, forward(weights, config, input_ids, attention_mask))


@pytest.mark.parametrize("name", PARITY_CONFIGS)
def test_logits_match_transformers(hf_qwen3, name):
    model, model_dir = hf_qwen3(name, **PARITY_CONFIGS[name])
    vocab = model.config.vocab_size
    single = torch.randint(0, vocab, (1, 13), generator=torch.Generator().manual_seed(1))
    batch = torch.randint(0, vocab, (3, 11), generator=torch.Generator().manual_seed(2))
    mask = (torch.arange(11) < torch.tensor([[11], [7], [2]])).long()  # right padding
    with torch.no_grad():
        single_diff = (our_logits(model_dir, single) - model(single).logits).abs().max()
        ours, theirs = our_logits(model_dir, batch, mask), model(batch, attention_mask=mask).logits
    batch_diff = (ours - theirs)[mask.bool()].abs().max()
    print(f"\n{name}: max abs logit diff single {single_diff:.2e}, padded batch {batch_diff:.2e}")
    assert single_diff < TOLERANCE and batch_diff < TOLERANCE
    assert theirs.abs().max() > 1.0  # the comparison is not between near-zero logits


def test_padded_rows_equal_unpadded_rows(hf_qwen3):
    _, model_dir = hf_qwen3("pad")
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    padded = our_logits(model_dir, ids, mask)
    alone = our_logits(model_dir, ids[1:, :4])
    assert torch.allclose(padded[1, :4], alone[0], atol=1e-5)
    assert torch.isfinite(padded).all()


def test_cached_forward_equals_full_forward(hf_qwen3):
    _, model_dir = hf_qwen3("cache")
    config = load_config(model_dir)
    weights = load_weights(model_dir, config)
    ids = torch.randint(0, 1000, (2, 10), generator=torch.Generator().manual_seed(4))
    full = forward(weights, config, ids)
    first, cache = forward_cached(weights, config, ids[:, :6])
    second, cache = forward_cached(weights, config, ids[:, 6:9], cache)
    third, cache = forward_cached(weights, config, ids[:, 9:], cache)
    assert cache[0][0].shape == (2, config.num_key_value_heads, 10, config.head_dim)
    assert torch.allclose(torch.cat([first, second, third], dim=1), full, atol=1e-5)
