"""The useful arithmetic of one LoRA training step, counted from the shapes.

"Useful" is what the step cannot do without, at 2 FLOPs per multiply-add, so that tokens/s can
be set against the machine's own matmul limit:
- frozen projections: the forward (2 x tokens x in x out) and, in backward, only the gradient
  of the input (the same again): 4 x tokens x in x out. A frozen weight gets no gradient.
- LoRA on a projection: x A^T then (x A^T) B^T forward, and three times that in all with the
  gradients of the input, A and B: 6 x tokens x r x (in + out).
- attention: Q K^T and P V over the causal pairs only (a row of T positions has T (T + 1) / 2),
  per head 2 matmuls x 2 FLOPs x head_dim, forward plus twice that in backward: 12 x pairs x
  head_dim x heads.
- the head, on the answer positions only (the loss never needs the others): the logits and the
  gradient of the hidden state, 4 x answer tokens x hidden x vocabulary.
Not counted: norms, RoPE, SwiGLU, softmax and other element-wise work, and the recomputation of
gradient checkpointing (work done twice is not useful twice).
"""

from collections.abc import Collection

from .config import Qwen3Config


def projection_shapes(config: Qwen3Config) -> dict[str, tuple[int, int]]:
    """(in, out) features of each of the seven projections of one decoder layer."""
    attention = config.num_attention_heads * config.head_dim
    key_value = config.num_key_value_heads * config.head_dim
    hidden, inner = config.hidden_size, config.intermediate_size
    return {"q_proj": (hidden, attention), "k_proj": (hidden, key_value), "v_proj": (hidden, key_value),
            "o_proj": (attention, hidden), "gate_proj": (hidden, inner), "up_proj": (hidden, inner),
            "down_proj": (inner, hidden)}


def lora_step_flops(config: Qwen3Config, batch_size: int, seq_len: int, answer_tokens: int, lora_r: int,
                    targets: Collection[str]) -> int:
    """Useful FLOPs of one optimizer step on batch_size full rows of seq_len tokens, of which
    answer_tokens (in all) carry the loss; LoRA of rank lora_r on the named projections."""
    tokens = batch_size * seq_len
    per_layer = 0
    for name, (fan_in, fan_out) in projection_shapes(config).items():
        per_layer += 4 * tokens * fan_in * fan_out
        if name in targets:
            per_layer += 6 * tokens * lora_r * (fan_in + fan_out)
    causal_pairs = batch_size * seq_len * (seq_len + 1) // 2
    per_layer += 12 * causal_pairs * config.head_dim * config.num_attention_heads
    head = 4 * answer_tokens * config.hidden_size * config.vocab_size
    return config.num_hidden_layers * per_layer + head
