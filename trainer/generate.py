"""Text generation with a KV cache: the prompt is run once (prefill), then one token per step.

`stream_tokens` yields ids as they are chosen, so a chat CLI can print as it goes;
`generate` collects them. Sampling is temperature, then top-k, then top-p (nucleus).
"""

from collections.abc import Iterator
from dataclasses import replace

import torch
from torch import Tensor

from trainer.config import Qwen3Config
from trainer.errors import TrainerError
from trainer.model import KVCache, LoraAdapter, Weights, forward_cached, project_to_logits


def check_settings(prompt_ids: list[int], max_new_tokens: int, greedy: bool, temperature: float, top_k: int,
                   top_p: float) -> None:
    """Reject settings that would fail deep inside sampling with an unhelpful message."""
    if not prompt_ids:
        raise TrainerError("generate: the prompt has no tokens; at least one is needed")
    if max_new_tokens < 0:
        raise TrainerError(f"generate: max_new_tokens is {max_new_tokens}; expected 0 or more")
    if not greedy and temperature <= 0:
        raise TrainerError(f"generate: temperature is {temperature}; expected > 0 (use greedy for argmax)")
    if top_k < 0:
        raise TrainerError(f"generate: top_k is {top_k}; expected 0 (off) or more")
    if not 0 < top_p <= 1:
        raise TrainerError(f"generate: top_p is {top_p}; expected a value in (0, 1]")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """logits [V] with all but the k largest set to -inf; k = 0 keeps everything."""
    if k == 0 or k >= logits.shape[-1]:
        return logits
    threshold = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < threshold, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """logits [V] keeping the fewest best tokens whose probability adds up to at least p."""
    if p >= 1:
        return logits
    sorted_logits, order = logits.sort(descending=True)  # [V]
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of all strictly better tokens
    drop = torch.zeros_like(mass_before, dtype=torch.bool).scatter(0, order, mass_before >= p)  # [V]
    return logits.masked_fill(drop, float("-inf"))


def pick_token(logits: Tensor, greedy: bool, temperature: float, top_k: int, top_p: float,
               generator: torch.Generator | None) -> int:
    """Choose the next id from logits [V]: argmax, or a draw from the filtered distribution."""
    logits = logits.float()
    if greedy:
        return int(logits.argmax())
    filtered = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return int(torch.multinomial(filtered.softmax(-1), 1, generator=generator))


@torch.inference_mode()
def next_logits(weights: Weights, config: Qwen3Config, ids: Tensor, cache: KVCache,
                lora: LoraAdapter | None) -> tuple[Tensor, KVCache]:
    """Run ids [1, T] after `cache`; returns (logits of the last position [V], the longer cache)."""
    hidden, cache = forward_cached(weights, config, ids, cache, lora=lora)  # [1, T, H]
    return project_to_logits(weights, config, hidden[0, -1]), cache


def stream_tokens(weights: Weights, config: Qwen3Config, prompt_ids: list[int], max_new_tokens: int,
                  stop_ids: list[int], greedy: bool = True, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0, seed: int | None = None, lora: LoraAdapter | None = None) -> Iterator[int]:
    """Yield new token ids one at a time until a stop id (not yielded) or max_new_tokens.

    A seed makes sampling reproducible; LoRA dropout is always off while generating.
    """
    check_settings(prompt_ids, max_new_tokens, greedy, temperature, top_k, top_p)
    device = weights["model.embed_tokens.weight"].device
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    lora = None if lora is None else replace(lora, training=False)
    ids, cache = torch.tensor([prompt_ids], device=device), ()  # [1, T]
    for _ in range(max_new_tokens):
        logits, cache = next_logits(weights, config, ids, cache, lora)
        token = pick_token(logits, greedy, temperature, top_k, top_p, generator)
        if token in stop_ids:
            return
        yield token
        ids = torch.tensor([[token]], device=device)  # [1, 1]


def generate(weights: Weights, config: Qwen3Config, prompt_ids: list[int], max_new_tokens: int,
             stop_ids: list[int], greedy: bool = True, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, seed: int | None = None, lora: LoraAdapter | None = None) -> list[int]:
    """The new token ids (without the stop id), generated with a KV cache."""
    return list(stream_tokens(weights, config, prompt_ids, max_new_tokens, stop_ids, greedy,
                              temperature, top_k, top_p, seed, lora))
