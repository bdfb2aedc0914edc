"""Causal attention for bf16 on CPU: bf16 matrix products at bf16 speed, scores exact to float32.

PyTorch's fused CPU kernel keeps float32 scores but runs its many small products far below the
machine's bf16 peak, while a batched bf16 product runs near it. A bf16 product adds in float32 and
rounds once, at the end, to 8 bits: a score near 40 comes back off by up to 0.125, before the
exponential, enough to move the loss. What the rounding lost can be asked for: baddbmm also adds
beta * C + A @ B in float32 and rounds once, so

    rough = q @ k^T                          (rounded)
    lost  = baddbmm(rough, q, k^T, beta=-1)  = q @ k^T - rough, rounded to 8 bits of its own

and rough + lost, added in float32, is within about 2^-17 of the float32 score. From there the
softmax is float32, and only the probabilities are rounded, once, for the product with v (as the
fused kernel does). Backward makes the scores again the same way; its dP - D (D = rowsum(dO * O))
is one product in which D, split into two bf16 columns, is subtracted inside the float32 sum, so
the cancellation happens before the rounding. Queries go in blocks, each against the keys it may
see, so the masked half of a causal product is never computed and no [B, QH, T, T] tensor is held.

Shapes: B batch, QH query heads, KVH key/value heads (G = QH / KVH queries share one), T tokens,
D head dim, t a block of queries, s the keys it sees, N = B * KVH, r = G * t.
"""

import torch
from torch import Tensor

QUERY_BLOCK = 128  # queries per block: measured best at T = 360 and 1024 (B 4, QH 16, D 128)


def query_blocks(length: int, size: int = QUERY_BLOCK) -> list[tuple[int, int]]:
    """[(start, end)] equal query blocks of about `size` covering 0..length. A block sees keys
    0..end only, so a causal call of n blocks computes (n + 1) / 2n of the full product; each
    block copies its keys once, since a batched product takes only contiguous batches."""
    count = -(-length // size)
    size = -(-length // count)
    return [(start, min(length, start + size)) for start in range(0, length, size)]


def grouped_rows(x: Tensor, start: int, end: int, group: int) -> Tensor:
    """x [B, QH, T, D] -> queries start..end as [B * KVH, G * t, D]: each key head's G query heads stacked."""
    batch, heads, _, dim = x.shape
    return x[:, :, start:end].reshape(batch * heads // group, group * (end - start), dim)


def ungrouped(x: Tensor, batch: int, heads: int) -> Tensor:
    """[B * KVH, G * t, D] -> [B, QH, t, D]: grouped_rows undone."""
    return x.reshape(batch, heads, -1, x.shape[-1])


def with_columns(x: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """x [N, r, D] -> [N, r, D + 2]: two more columns, each a [N, r] float32 tensor rounded to x's dtype."""
    return torch.cat([x, first.to(x.dtype)[..., None], second.to(x.dtype)[..., None]], dim=-1)


def with_ones(v: Tensor) -> Tensor:
    """v [B, KVH, T, D] -> [B * KVH, T, D + 2]: v, then two columns of 1, so a row's two extra
    columns are added to each of its products."""
    batch, kv_heads, length, dim = v.shape
    ones = torch.ones(batch, kv_heads, length, 2, dtype=v.dtype)
    return torch.cat([v, ones], dim=-1).reshape(batch * kv_heads, length, dim + 2)


def mask_bias(allowed: Tensor | None, start: int, end: int, batch: int, kv_heads: int, group: int) -> Tensor:
    """0 where query start..end may see key 0..end, -inf where not; float32, broadcastable to
    [B * KVH, G * t, s]. Added, not filled in: a broadcast add runs at memory speed, masked_fill
    at a third of it."""
    if allowed is None:
        hidden = torch.arange(end) > torch.arange(start, end)[:, None]  # [t, s]
        hidden = hidden.repeat(group, 1)  # [G * t, s]
    else:
        block = ~allowed[:, :, start:end, :end]  # [B, 1, t, s]
        hidden = block.expand(batch, kv_heads, -1, -1).repeat(1, 1, group, 1).reshape(batch * kv_heads, -1, end)
    return torch.zeros(hidden.shape).masked_fill_(hidden, -torch.inf)


def split_in_two(x: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """float32 x as hi + lo, both values of dtype (held in float32): their sum is within |x| * 2^-16 of x."""
    hi = x.to(dtype).float()
    return hi, (x - hi).to(dtype).float()


def float32_scores(q: Tensor, keys: Tensor, bias: Tensor, scale: float) -> Tensor:
    """q [N, r, D] . keys [N, s, D] * scale + bias as float32 [N, r, s], from two bf16 products.

    A bf16 product adds in float32 and rounds once at the end; baddbmm rounds beta * C + A @ B
    once too. So the second product, with C the first's rounded result, returns exactly what the
    rounding lost, itself to 2^-9: the two together are within about 2^-17 of the float32 score.
    """
    rough = torch.bmm(q, keys.transpose(1, 2))  # [N, r, s]
    lost = torch.baddbmm(rough, q, keys.transpose(1, 2), beta=-1)
    return lost.float().add_(rough).mul_(scale).add_(bias)


class FloatScoreAttention(torch.autograd.Function):
    """softmax(q k^T * scale + mask) v for bf16 q [B, QH, T, D], k and v [B, KVH, T, D] -> [B, QH, T, D]."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
        batch, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        group, scale = heads // kv_heads, dim**-0.5
        k_flat, v_flat = (x.reshape(batch * kv_heads, length, dim) for x in (k, v))
        out = torch.empty_like(q)
        log_totals = []
        for start, end in query_blocks(length):
            bias = mask_bias(allowed, start, end, batch, kv_heads, group)
            scores = float32_scores(grouped_rows(q, start, end, group), k_flat[:, :end].contiguous(), bias, scale)
            log_totals.append(torch.logsumexp(scores, -1))  # [N, r]
            p = torch.softmax(scores, -1).to(q.dtype)  # [N, r, s]: normalised in float32, rounded once
            out[:, :, start:end] = ungrouped(torch.bmm(p, v_flat[:, :end].contiguous()), batch, heads)
        ctx.save_for_backward(q, k, v, out, allowed, torch.cat(log_totals, 1))
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, out, allowed, log_totals = ctx.saved_tensors
        batch, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        group, scale = heads // kv_heads, dim**-0.5
        k_flat, v_one = k.reshape(batch * kv_heads, length, dim), with_ones(v)
        # D = rowsum(dO * O) in float32, the softmax's own term of dS = P * (dP - D)
        row_dot = (grad_out.float() * out.float()).sum(-1)  # [B, QH, T]
        grad_q = torch.empty_like(q)
        grad_k = torch.zeros(batch * kv_heads, length, dim)
        grad_v = torch.zeros(batch * kv_heads, length, dim)
        done = 0
        for start, end in query_blocks(length):
            rows = group * (end - start)
            log_total = log_totals[:, done:done + rows, None]  # [N, r, 1]
            done += rows
            q_rows, keys = grouped_rows(q, start, end, group), k_flat[:, :end].contiguous()
            bias = mask_bias(allowed, start, end, batch, kv_heads, group)
            p = float32_scores(q_rows, keys, bias, scale).sub_(log_total).exp_().to(q.dtype)  # [N, r, s]
            g_rows = grouped_rows(grad_out, start, end, group)
            hi, lo = split_in_two(grouped_rows(row_dot[..., None], start, end, group)[..., 0], q.dtype)
            # dP - D with the subtraction inside the product's float32 sum: [dO, -hi, -lo] . [v, 1, 1]
            centred = torch.bmm(with_columns(g_rows, -hi, -lo), v_one[:, :end].contiguous().transpose(1, 2))
            grad_scores = centred.mul_(p)  # dS / scale, [N, r, s]
            grad_q[:, :, start:end] = ungrouped(torch.bmm(grad_scores, keys).mul_(scale), batch, heads)
            grad_k[:, :end] += torch.bmm(grad_scores.transpose(1, 2), q_rows)
            grad_v[:, :end] += torch.bmm(p.transpose(1, 2), g_rows)
        shape = (batch, kv_heads, length, dim)
        return grad_q, grad_k.mul_(scale).reshape(shape).to(k.dtype), grad_v.reshape(shape).to(v.dtype), None


def float_score_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
    """q [B, QH, T, D], k and v [B, KVH, T, D] in bf16, allowed [B, 1, T, T] (within causal) or None
    (causal) -> [B, QH, T, D]."""
    return FloatScoreAttention.apply(q, k, v, allowed)
