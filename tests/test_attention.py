"""trainer.qwen3.attention: bf16 attention whose scores are float32-exact, against PyTorch's fused
kernel (float32 SDPA) and against a float64 reference of the same bf16 inputs."""

import pytest
import torch
import torch.nn.functional as F

from trainer.qwen3.attention import float32_scores, float_score_attention, mask_bias, query_blocks, split_in_two
from trainer.qwen3.model import attention_allowed, grouped_attention

B, QH, KVH, D = 2, 4, 2, 16


def qkv(length: int, spread: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """q [B, QH, T, D] scaled by `spread` (scores of about spread * sqrt(D)), k and v [B, KVH, T, D], dO."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(B, QH, length, D, generator=generator) * spread
    k, v = (torch.randn(B, KVH, length, D, generator=generator) for _ in range(2))
    return q, k, v, torch.randn(B, QH, length, D, generator=generator)


def run(attend, q, k, v, grad_out, dtype) -> list[torch.Tensor]:
    """[output, dq, dk, dv] in float64 of attend(q, k, v) with the inputs in `dtype`."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = attend(q, k, v)
    out.backward(grad_out.to(dtype))
    return [t.detach().double() for t in (out, q.grad, k.grad, v.grad)]


def sdpa(allowed=None):
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=allowed is None,
                                                          enable_gqa=True)


def ours(allowed=None):
    return lambda q, k, v: float_score_attention(q, k, v, allowed)


def relative_errors(got: list[torch.Tensor], expected: list[torch.Tensor]) -> list[float]:
    return [float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, expected)]


def test_query_blocks_cover_every_query_once_in_equal_blocks():
    assert query_blocks(360) == [(0, 120), (120, 240), (240, 360)]
    assert query_blocks(100) == [(0, 100)]
    assert query_blocks(129) == [(0, 65), (65, 129)]
    assert query_blocks(1, 128) == [(0, 1)]


def test_mask_bias_hides_later_keys_and_other_examples_for_each_stacked_head():
    causal = mask_bias(None, 1, 3, batch=1, kv_heads=1, group=2)  # queries 1..2 against keys 0..2, two heads
    assert causal.tolist() == [[0, 0, -torch.inf], [0, 0, 0]] * 2
    segments = torch.tensor([[1, 1, 2]])
    packed = mask_bias(attention_allowed(segments, 3), 0, 3, batch=1, kv_heads=1, group=1)
    assert packed.tolist() == [[[0, -torch.inf, -torch.inf], [0, 0, -torch.inf], [-torch.inf, -torch.inf, 0]]]


def test_split_in_two_gives_two_bf16_values_whose_sum_is_the_float32():
    x = torch.tensor([1 / 3, 1000.123, -7.77e-3])
    hi, lo = split_in_two(x, torch.bfloat16)
    assert torch.equal(hi, hi.bfloat16().float()) and torch.equal(lo, lo.bfloat16().float())
    assert ((hi + lo - x).abs() <= x.abs() * 2**-16).all()
    assert ((hi - x).abs() > x.abs() * 2**-12).any()  # hi alone is not enough


def test_float32_scores_from_two_bf16_products_are_exact_to_float32():
    """A bf16 product rounds its float32 sum once, to 8 bits: scores near 40 are off by up to 0.125.
    The second product gives back what that rounding lost: together within 2^-16 of float32."""
    generator = torch.Generator().manual_seed(1)
    q = (torch.randn(3, 40, 64, generator=generator) * 2).bfloat16()
    keys = torch.randn(3, 50, 64, generator=generator).bfloat16()
    exact = q.double() @ keys.double().transpose(1, 2)  # [3, 40, 50]: bf16 inputs, no rounding after
    bias = torch.zeros(40, 50)
    got = float32_scores(q, keys, bias, scale=1.0)
    assert got.dtype == torch.float32
    rounded_once = (torch.bmm(q, keys.transpose(1, 2)).double() - exact).abs().max()
    assert rounded_once > 0.02  # what plain bf16 scores lose at this size
    assert (got.double() - exact).abs().max() < exact.abs().max() * 2**-16
    assert torch.equal(float32_scores(q, keys, bias.fill_(-torch.inf), 0.5), torch.full((3, 40, 50), -torch.inf))


@pytest.mark.parametrize("length", [7, 200])
def test_in_float32_it_is_the_causal_softmax_attention(length):
    """The same algorithm run in float32 (no rounding to hide in) equals PyTorch's fused kernel:
    output and the three gradients, grouped heads, several query blocks (length 200 at block 128)."""
    q, k, v, grad_out = qkv(length)
    expected = run(sdpa(), q, k, v, grad_out, torch.float32)
    for got, want in zip(run(ours(), q, k, v, grad_out, torch.float32), expected):
        assert torch.allclose(got, want, atol=2e-6, rtol=1e-5)


def test_in_float32_a_packed_row_sees_only_its_own_example():
    """With the mask of a packed row (two examples and padding) it equals the fused kernel given that mask."""
    q, k, v, grad_out = qkv(9)
    segments = torch.tensor([[1, 1, 1, 1, 2, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1]])
    allowed = attention_allowed(segments, 9)
    expected = run(sdpa(allowed), q, k, v, grad_out, torch.float32)
    for got, want in zip(run(ours(allowed), q, k, v, grad_out, torch.float32), expected):
        assert torch.allclose(got, want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("spread", [1.0, 3.0])
def test_in_bf16_it_is_as_close_to_exact_as_the_fused_kernel(spread):
    """Against float64 on the same bf16-rounded inputs, its output and gradients are within what
    PyTorch's fused bf16 kernel (float32 scores inside) gets, and within 2% of the largest value,
    at scores of about 4 and 12 (spread 1 and 3) over 300 keys."""
    q, k, v, grad_out = (t.bfloat16().float() for t in qkv(300, spread))
    exact = run(sdpa(), q, k, v, grad_out, torch.float64)
    fused = relative_errors(run(sdpa(), q, k, v, grad_out, torch.bfloat16), exact)
    mine = relative_errors(run(ours(), q, k, v, grad_out, torch.bfloat16), exact)
    print(f"\nspread {spread}: relative errors (out, dq, dk, dv) ours {[f'{e:.1e}' for e in mine]}, "
          f"fused bf16 {[f'{e:.1e}' for e in fused]}")
    assert all(e < 0.02 for e in mine)
    assert all(m < 2 * f + 2e-3 for m, f in zip(mine, fused))


def test_the_model_uses_it_for_bf16_on_cpu_and_the_fused_kernel_otherwise():
    q, k, v, _ = qkv(5)
    half = [t.bfloat16() for t in (q, k, v)]
    assert torch.equal(grouped_attention(*half, None), float_score_attention(*half, None))
    assert torch.equal(grouped_attention(q, k, v, None), sdpa()(q, k, v))
