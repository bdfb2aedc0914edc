"""Text generation with a KV cache: the prompt is run once (prefill), then one token per step.

`stream_tokens` yields ids as they are chosen, so a chat CLI can print as it goes;
`generate` collects them. Sampling is temperature, then top-k, then top-p (nucleus).

`generate_greedy_batch` answers many prompts at once (evaluation, rehearsal): prompts of
different lengths are padded on the LEFT, so every row's last prompt token sits in the same
column and each step appends one column for all rows under one KV cache:

    prompt lengths 3, 5   ->   _ _ a b c        mask 0 0 1 1 1     positions 0 0 0 1 2
                               d e f g h             1 1 1 1 1               0 1 2 3 4

The mask keeps padding out of attention and the positions count real tokens only, so each
row computes what it would alone. A row that reaches a stop id leaves the batch (its cache
rows are dropped); the others go on.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from trainer.errors import TrainerError
from trainer.progress import Progress, no_progress
from trainer.qwen3.config import Qwen3Config
from trainer.qwen3.model import KVCache, LoraAdapter, Weights, forward_cached, project_to_logits
from trainer.text.chat import ChatFormat
from trainer.text.tokenizer import Tokenizer


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


@dataclass(frozen=True)
class Reply:
    """One generated reply: the new ids (without the stop id) and why it ended."""

    ids: tuple[int, ...]
    finished: bool  # True: a stop id ended it; False: max_new_tokens ran out first


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Prompts of different lengths -> (ids [B, T], mask [B, T]), padded on the left (mask 0 there)."""
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (length - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


def keep_rows(cache: KVCache, mask: Tensor, tokens: Tensor, keep: Tensor) -> tuple[KVCache, Tensor, Tensor]:
    """Drop finished rows: select rows `keep` [B'] of every cached k/v [B, KVH, S, D], the mask and the tokens."""
    return tuple((k[keep], v[keep]) for k, v in cache), mask[keep], tokens[keep]


@torch.inference_mode()
def greedy_batch(weights: Weights, config: Qwen3Config, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 stop_ids: Sequence[int], lora: LoraAdapter | None, pad_id: int) -> list[Reply]:
    """Greedy replies to one left-padded batch, each row stopping at its own first stop id."""
    device = weights["model.embed_tokens.weight"].device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))  # [B, T]
    stop = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    rows = list(range(len(prompts)))  # the prompt each remaining batch row answers
    new_ids: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    cache: KVCache = ()
    for _ in range(max_new_tokens):
        hidden, cache = forward_cached(weights, config, ids, cache, attention_mask=mask, lora=lora)  # [B, T, H]
        tokens = project_to_logits(weights, config, hidden[:, -1]).float().argmax(-1)  # [B]
        stopped = torch.isin(tokens, stop).tolist()
        for row, token, is_stop in zip(rows, tokens.tolist(), stopped):
            finished[row] = is_stop
            new_ids[row] += [] if is_stop else [token]
        if any(stopped):
            keep = torch.tensor([i for i, is_stop in enumerate(stopped) if not is_stop], dtype=torch.long, device=device)
            cache, mask, tokens = keep_rows(cache, mask, tokens, keep)
            rows = [row for row, is_stop in zip(rows, stopped) if not is_stop]
        if not rows:
            break
        ids, mask = tokens[:, None], torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)  # [B, 1], [B, S + 1]
    return [Reply(tuple(r), f) for r, f in zip(new_ids, finished)]


def generate_greedy_batch(weights: Weights, config: Qwen3Config, prompts: Sequence[Sequence[int]],
                          max_new_tokens: int, stop_ids: Sequence[int], lora: LoraAdapter | None = None,
                          pad_id: int = 0, batch_size: int = 32, progress: Progress = no_progress) -> list[Reply]:
    """Greedy replies to many prompts, in their order; the same tokens as `generate` one at a time.

    Prompts are sorted by length and cut into batches of `batch_size`, so rows of a batch need
    little padding. LoRA dropout is off. pad_id only fills the padding (the mask hides it).
    progress(n) after each batch of n prompts.
    """
    for prompt in prompts:
        check_settings(list(prompt), max_new_tokens, True, 1.0, 0, 1.0)
    if batch_size < 1:
        raise TrainerError(f"generate: batch_size is {batch_size}; expected 1 or more")
    lora = None if lora is None else replace(lora, training=False)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: dict[int, Reply] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = greedy_batch(weights, config, [prompts[i] for i in chunk], max_new_tokens, stop_ids, lora, pad_id)
        replies.update(zip(chunk, batch))
        progress(len(chunk))
    return [replies[i] for i in range(len(prompts))]


@dataclass(frozen=True)
class Answer:
    """A decoded reply and whether the model ended it itself."""

    text: str  # the answer: after </think> where the chat format thinks
    finished: bool  # False: cut at the token budget (a character cut in half is left out)
    reasoning: str = ""  # what the model wrote before </think> (only where the format thinks)


def reply_to_prompts(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, prompts: Sequence[str],
                     max_new_tokens: int, lora: LoraAdapter | None = None, batch_size: int = 32,
                     progress: Progress = no_progress) -> list[Reply]:
    """Greedy replies, as token ids, to rendered chat prompts (each ending with the assistant header)."""
    stop = [tokenizer.im_end_id, tokenizer.endoftext_id]
    return generate_greedy_batch(weights, config, [tokenizer.encode(p) for p in prompts], max_new_tokens, stop, lora,
                                 tokenizer.endoftext_id, batch_size, progress)


def answer_prompts(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, prompts: Sequence[str],
                   max_new_tokens: int, lora: LoraAdapter | None = None, batch_size: int = 32,
                   progress: Progress = no_progress, chat: ChatFormat = ChatFormat()) -> list[Answer]:
    """Greedy replies to prompts rendered in `chat` (each ending where the reply starts), generated
    batched; where the format thinks, the reasoning is split from the answer."""
    replies = reply_to_prompts(weights, config, tokenizer, prompts, max_new_tokens, lora, batch_size, progress)
    texts = [tokenizer.decode(reply.ids) for reply in replies]
    parts = [chat.split_reply(text if reply.finished else text.rstrip("\ufffd")) for text, reply in zip(texts, replies)]
    return [Answer(answer, reply.finished, reasoning) for (reasoning, answer), reply in zip(parts, replies)]


def answer_questions(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, questions: Sequence[str],
                     max_new_tokens: int, lora: LoraAdapter | None = None, batch_size: int = 32,
                     progress: Progress = no_progress, chat: ChatFormat = ChatFormat()) -> list[Answer]:
    """Greedy replies to single user messages, generated batched."""
    return answer_prompts(weights, config, tokenizer, question_prompts(questions, chat), max_new_tokens, lora,
                          batch_size, progress, chat)


def question_prompts(questions: Sequence[str], chat: ChatFormat = ChatFormat()) -> list[str]:
    """Each question as a one-message chat, rendered up to the reply (the assistant's header, and
    what the model's chat format adds there)."""
    return [chat.prompt([{"role": "user", "content": q}]) for q in questions]
