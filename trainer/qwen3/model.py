"""The Qwen3 forward pass as pure functions over a dict of weights.

Weights are keyed by the checkpoint's own names (`model.layers.0.mlp.up_proj.weight`),
so loading is "read the file into a dict" and nothing maps names. One decoder layer:

    x -> rms_norm -> attention (q/k rms_norm per head, RoPE, GQA, causal SDPA) -> + x
      -> rms_norm -> SwiGLU MLP -> + x

Shapes: B batch, T new tokens, S keys (past + new), H hidden, D head_dim,
QH query heads, KVH key/value heads, V vocabulary.

Operations marked @rebuildable are ones whose output backward may make again instead of
keeping; `forward` turns that on while training (trainer.qwen3.memory). It changes what is
kept between forward and backward, never a value.
"""

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from trainer.qwen3.attention import float_score_attention
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.memory import RMSNorm, SwiGLU, rebuildable, rebuilt_in_backward


class PackedLinear(Protocol):
    """A frozen weight stored in another format (e.g. NF4) that knows how to multiply itself."""

    def linear(self, x: Tensor) -> Tensor:
        """x [.., in] -> x @ W.T [.., out]."""
        ...


Weights = dict[str, "Tensor | PackedLinear"]

# Per layer (k, v), each [B, KVH, S, D], after k_norm and RoPE.
KVCache = tuple[tuple[Tensor, Tensor], ...]


@dataclass(frozen=True)
class LoraAdapter:
    """Low-rank updates added to frozen linears: y = W x + B (A dropout(x)) * scale."""

    tensors: dict[str, Tensor]  # PEFT names: lora_A [r, in] and lora_B [out, r]; cast to x's dtype at use
    scale: float  # alpha / r
    dropout: float  # dropout probability on the adapter's input
    training: bool  # dropout is applied only while training
    # while training with dropout: int64 [B], one seed per batch row (row_dropout)
    row_seeds: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))


@dataclass(frozen=True)
class AttentionInputs:
    """What every layer's attention shares for one call: RoPE angles and the visibility mask."""

    cos: Tensor  # [B, T, D] float32
    sin: Tensor  # [B, T, D] float32
    allowed: Tensor | None  # [B, 1, T, S] bool: may query t see key s; None = causal alone suffices


def lora_names(name: str) -> tuple[str, str]:
    """PEFT's names for the A and B matrices of the checkpoint weight `name`."""
    base = "base_model.model." + name.removesuffix(".weight")
    return f"{base}.lora_A.weight", f"{base}.lora_B.weight"


def stable_seed(*parts: object) -> int:
    """A generator seed made from `parts` that is the same in every process and run (unlike hash())."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds must fit in a signed 64-bit int


# The row-seeded dropout mask is an operator of its own, so that under --compile the graph calls it
# as it is (a generator seeded inside it cannot be traced) instead of breaking at every adapted
# projection. Defined with torch.library's plain Library: custom_op would import the compiler on
# its first call, 0.9 s in every training process.
OPERATORS = torch.library.Library("qwen3_trainer", "DEF")
OPERATORS.define("row_keep_mask(Tensor row_seeds, str name, Tensor like, float p) -> Tensor")


def row_keep_mask(row_seeds: Tensor, name: str, like: Tensor, p: float) -> Tensor:
    """keep [B, T, in] bool for dropout on `like` [B, T, in]: row b's from (row_seeds[b], name) alone."""
    return torch.stack([torch.rand(like.shape[1:], device=like.device, generator=torch.Generator(like.device)
                                   .manual_seed(stable_seed(seed, name))) >= p for seed in row_seeds.tolist()])


OPERATORS.impl("row_keep_mask", row_keep_mask, "CompositeExplicitAutograd")
torch.library.register_fake("qwen3_trainer::row_keep_mask", lib=OPERATORS)(
    lambda row_seeds, name, like, p: torch.empty_like(like, dtype=torch.bool))  # its shape, for the compiler


@rebuildable
def row_dropout(x: Tensor, p: float, row_seeds: Tensor, name: str) -> Tensor:
    """Dropout on x [B, T, in] whose mask for row b is drawn from (row_seeds[b], name) alone.

    The training loop makes a row's seed from (seed, step, the row's place in the step's global
    batch), so a row gets the same mask whichever process or micro-batch it lands in (N processes
    x batch b train exactly like 1 x batch N*b), and a recomputed layer redraws the same mask.
    On CPU a row's mask does not depend on how far the batch is padded; CUDA's generator lays its
    numbers out by tensor size, so there a row padded to another length gets another mask.
    """
    if row_seeds.shape != x.shape[:1]:
        raise ValueError(f"LoRA dropout needs one seed per row: got {row_seeds.numel()} for {x.shape[0]} rows")
    return x * torch.ops.qwen3_trainer.row_keep_mask(row_seeds, name, x.detach(), p) / (1 - p)


def linear(x: Tensor, weights: Weights, name: str, lora: LoraAdapter | None = None) -> Tensor:
    """x [.., in] -> [.., out] through the weight `name`, plus its LoRA update if it has one.

    The only place that knows a weight may be packed (4-bit): a Tensor uses F.linear,
    anything else multiplies itself.
    """
    weight = weights[name]
    y = F.linear(x, weight) if isinstance(weight, Tensor) else weight.linear(x)  # [.., out]
    a_name, b_name = lora_names(name)
    if lora is None or a_name not in lora.tensors:
        return y
    if lora.training and lora.dropout > 0:
        x = row_dropout(x, lora.dropout, lora.row_seeds, name)
    low_rank = F.linear(x, lora.tensors[a_name].to(x.dtype)) * lora.scale  # [.., r]: scaling r values, not out
    # in place: y is saved by nothing, and a second [.., out] buffer would be the widest moment of a
    # recomputing forward (up_proj's [B, T, I] on the 4B model)
    return y.add_(F.linear(low_rank, lora.tensors[b_name].to(x.dtype)))


@rebuildable
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x [.., H] / rms(x) * weight [H], the mean square taken in float32 so bf16 does not drift.

    Narrower x goes through memory.RMSNorm: the same formula, whose backward keeps x as it came
    instead of the float32 copy plain autograd would keep.
    """
    if x.dtype != torch.float32:
        return RMSNorm.apply(x, weight, eps)
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)).mul_(weight)  # in place: one buffer fewer


# RoPE layout. Qwen3 checkpoints use the "rotate-half" convention: dimension i is paired
# with dimension i + D/2 (not with its neighbour 2i+1, as in the original RoPE paper).
# Pair i turns by angle position * theta^(-2i/D):
#   out[i]       = x[i] cos - x[i + D/2] sin
#   out[i + D/2] = x[i + D/2] cos + x[i] sin
def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """positions [B, T] -> (cos, sin), each [B, T, D] float32, both halves repeating the same angles."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    inv_freq = 1.0 / theta**exponents  # [D/2]
    angles = positions[..., None].float() * inv_freq  # [B, T, D/2]
    angles = torch.cat([angles, angles], dim=-1)  # [B, T, D]
    return angles.cos(), angles.sin()


@rebuildable
def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, heads, T, D] by the angles in cos/sin [B, T, D] (rotate-half layout)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([x[..., half:], x[..., :half]], dim=-1)  # [B, heads, T, D]
    rotated[..., :half].neg_()
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # [B, 1, T, D]
    # x * cos + rotated * sin, made in two buffers instead of four (the same roundings)
    return (x * cos).add_(rotated.mul_(sin))


def attention_allowed(key_segments: Tensor, query_len: int) -> Tensor:
    """key_segments [B, S] (0 = padding, else which example) -> allowed [B, 1, T, S].

    A query may see earlier-or-same keys of its own segment: causal within each example,
    block-diagonal across the examples of a packed row (an ordinary 0/1 attention mask is
    the one-segment case). The T queries are the last T of the S keys (the rest is cache).
    A pad query still sees itself, so no row is all False (which would make softmax NaN).
    """
    key_len = key_segments.shape[1]
    key_pos = torch.arange(key_len, device=key_segments.device)  # [S]
    query_pos = key_pos[key_len - query_len:, None]  # [T, 1]
    causal = key_pos <= query_pos  # [T, S]
    query_segments = key_segments[:, key_len - query_len:, None]  # [B, T, 1]
    same_example = (key_segments[:, None, :] == query_segments) & (query_segments > 0)  # [B, T, S]
    return (causal & (same_example | (key_pos == query_pos)))[:, None]  # [B, 1, T, S]


def causal_alone_suffices(attention_mask: Tensor, past_len: int) -> bool:
    """True when a plain causal mask gives every real token exactly the keys it may see:
    no cache, and each row [B, T] of 0/1 is one example whose padding, if any, is at its end.

    Padding queries then also see the real tokens before them, but nothing reads their
    outputs: no real query sees them and they carry no loss. The fused kernels skip the
    masked half of the work when told "causal", and never build a [B, 1, T, S] mask.
    """
    if past_len > 0:
        return False
    ones_then_zeros = attention_mask[:, 1:] <= attention_mask[:, :-1]  # [B, T - 1]
    return bool((attention_mask.max() <= 1) & ones_then_zeros.all())


def attention_inputs(config: Qwen3Config, input_ids: Tensor, attention_mask: Tensor | None,
                     position_ids: Tensor | None, past_len: int) -> AttentionInputs:
    """RoPE angles and mask for T new tokens after past_len cached ones.

    attention_mask is [B, past_len + T] (default all ones; segment numbers when packed).
    Position ids default to clip(cumsum(mask > 0) - 1, 0), which counts real tokens, so right
    padding changes nothing.
    """
    batch, new = input_ids.shape
    if attention_mask is None:
        attention_mask = torch.ones(batch, past_len + new, dtype=torch.long, device=input_ids.device)
    if position_ids is None:
        position_ids = ((attention_mask > 0).long().cumsum(-1) - 1).clamp(min=0)[:, -new:]  # [B, T]
    cos, sin = rope_cos_sin(position_ids, config.head_dim, config.rope_theta)
    causal = causal_alone_suffices(attention_mask, past_len)
    return AttentionInputs(cos, sin, None if causal else attention_allowed(attention_mask, new))


def split_heads(x: Tensor, head_dim: int) -> Tensor:
    """[B, T, heads * D] -> [B, heads, T, D]."""
    batch, length, _ = x.shape
    return x.view(batch, length, -1, head_dim).transpose(1, 2)


@rebuildable
def merge_heads(x: Tensor) -> Tensor:
    """[B, heads, T, D] -> [B, T, heads * D]."""
    return x.transpose(1, 2).flatten(2)


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
    """q [B, QH, T, D], k and v [B, KVH, S, D], allowed [B, 1, T, S] or None (causal) -> [B, QH, T, D].

    Each key/value head serves QH / KVH consecutive query heads. On CPU the fused kernel
    reads the shared heads in place (enable_gqa), and so does CUDA's flash kernel for a
    causal bf16/fp16 call (one Qwen3-4B layer at T = 2048 on an H200, forward + backward:
    0.54 ms, against 0.79 with repeated heads and 0.97 with a mask). With a mask, or in
    float32 (which the flash kernel does not take), CUDA's other fused kernels do not take
    grouped heads (SDPA would fall back to one that stores [B, QH, T, S] scores), so there the
    key/value heads are repeated to QH first.
    """
    causal = allowed is None
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.shape[2] == q.shape[2]:
        return float_score_attention(q, k, v, allowed)
    if q.device.type == "cpu" or (causal and q.dtype != torch.float32):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=causal, enable_gqa=True)
    group = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q, k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1),
                                          attn_mask=allowed, is_causal=causal)


def attention(weights: Weights, config: Qwen3Config, layer: int, x: Tensor, inputs: AttentionInputs,
              past: tuple[Tensor, Tensor] | None, lora: LoraAdapter | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Grouped-query self-attention over x [B, T, H]; returns ([B, T, H], this layer's (k, v) [B, KVH, S, D]).

    Qwen3 normalises each query and key head (q_norm, k_norm) before RoPE.
    """
    p = f"model.layers.{layer}.self_attn."
    eps, dim = config.rms_norm_eps, config.head_dim
    q = split_heads(linear(x, weights, p + "q_proj.weight", lora), dim)  # [B, QH, T, D]
    k = split_heads(linear(x, weights, p + "k_proj.weight", lora), dim)  # [B, KVH, T, D]
    v = split_heads(linear(x, weights, p + "v_proj.weight", lora), dim)  # [B, KVH, T, D]
    q = apply_rope(rms_norm(q, weights[p + "q_norm.weight"], eps), inputs.cos, inputs.sin)
    k = apply_rope(rms_norm(k, weights[p + "k_norm.weight"], eps), inputs.cos, inputs.sin)
    if past is not None:
        k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # [B, KVH, S, D]
    heads = grouped_attention(q, k, v, inputs.allowed)  # [B, QH, T, D]
    return linear(merge_heads(heads), weights, p + "o_proj.weight", lora), (k, v)


@rebuildable
def swiglu(gate: Tensor, up: Tensor) -> Tensor:
    """silu(gate) * up, [B, T, I]; memory.SwiGLU's backward keeps gate and up, not silu(gate)."""
    return SwiGLU.apply(gate, up)


def mlp(weights: Weights, layer: int, x: Tensor, lora: LoraAdapter | None) -> Tensor:
    """SwiGLU: down(silu(gate(x)) * up(x)); x [B, T, H] -> [B, T, H]."""
    p = f"model.layers.{layer}.mlp."
    gate = linear(x, weights, p + "gate_proj.weight", lora)  # [B, T, I]
    up = linear(x, weights, p + "up_proj.weight", lora)  # [B, T, I]
    return linear(swiglu(gate, up), weights, p + "down_proj.weight", lora)


def decoder_layer(weights: Weights, config: Qwen3Config, layer: int, x: Tensor, inputs: AttentionInputs,
                  past: tuple[Tensor, Tensor] | None, lora: LoraAdapter | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One pre-norm block with explicit residuals; x [B, T, H] -> ([B, T, H], (k, v))."""
    p, eps = f"model.layers.{layer}.", config.rms_norm_eps
    attended, kv = attention(weights, config, layer, rms_norm(x, weights[p + "input_layernorm.weight"], eps),
                             inputs, past, lora)
    x = x + attended  # [B, T, H]
    return x + mlp(weights, layer, rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps), lora), kv


def forward(weights: Weights, config: Qwen3Config, input_ids: Tensor, attention_mask: Tensor | None = None,
            position_ids: Tensor | None = None, lora: LoraAdapter | None = None,
            checkpoint_layers: bool = False) -> Tensor:
    """input_ids [B, T] (right-padded; attention_mask [B, T] marks real tokens) -> hidden [B, T, H].

    The training path: no cache is kept. Logits come from `project_to_logits`, so a
    loss can project only the positions it needs. checkpoint_layers keeps only each layer's
    input for backward and recomputes the rest (less memory, about a third more compute);
    without it, backward makes again what is cheap to make (trainer.qwen3.memory).
    """
    hidden, _ = forward_cached(weights, config, input_ids, (), attention_mask, position_ids, lora, checkpoint_layers)
    return hidden


def forward_cached(weights: Weights, config: Qwen3Config, input_ids: Tensor, cache: KVCache = (),
                   attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                   lora: LoraAdapter | None = None, checkpoint_layers: bool = False) -> tuple[Tensor, KVCache]:
    """Like `forward`, continuing after `cache` (empty = start); returns (hidden [B, T, H], the longer cache).

    attention_mask, if given, covers past and new tokens: [B, S].
    """
    past_len = cache[0][0].shape[2] if cache else 0
    inputs = attention_inputs(config, input_ids, attention_mask, position_ids, past_len)
    x = F.embedding(input_ids, weights["model.embed_tokens.weight"])  # [B, T, H]
    new_cache = []
    # a recomputed (checkpointed) layer keeps nothing but its input: nothing there to make again
    keep_less = torch.is_grad_enabled() and not checkpoint_layers and not torch.compiler.is_compiling()
    with rebuilt_in_backward() if keep_less else nullcontext():
        for layer in range(config.num_hidden_layers):
            step = partial(decoder_layer, weights, config, layer, inputs=inputs,
                           past=cache[layer] if cache else None, lora=lora)
            x, kv = checkpoint(step, x, use_reentrant=False) if checkpoint_layers else step(x)
            new_cache.append(kv)
        return rms_norm(x, weights["model.norm.weight"], config.rms_norm_eps), tuple(new_cache)


def head_weight(weights: Weights, config: Qwen3Config) -> Tensor:
    """The output matrix [V, H]: the input embedding when tied (Qwen3-4B), else lm_head."""
    return weights["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]


def project_to_logits(weights: Weights, config: Qwen3Config, hidden: Tensor) -> Tensor:
    """hidden [.., H] -> logits [.., V]."""
    return F.linear(hidden, head_weight(weights, config))
