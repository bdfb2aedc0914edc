"""Before/after numbers for the who-am-i job and validation metrics.

From greedy generation:
- identity hit rate: held-out identity questions whose reply claims the new identity
  (contains "我是" and "F#" or "之神", the F# trainer's self-test rule);
- control accuracy: control facts answered with exactly the expected answer;
- leak rate: control questions wrongly answered with the new identity;
- JSON validity: replies to rows tagged "json" that parse as JSON.
Teacher-forced (no generation): perplexity over answer tokens and token accuracy.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .chat import render_chat
from .config import Qwen3Config
from .data import Example, collate
from .generate import generate
from .loss import answer_loss
from .model import LoraAdapter, Weights, forward, head_weight
from .readers import Conversation, PromptTarget
from .tokenizer import Tokenizer
from .train import move_batch

MAX_REPLY_TOKENS = 24


def claims_new_identity(reply: str) -> bool:
    """The F# trainer's self-test rule: "我是" and ("F#" or "之神")."""
    return "我是" in reply and ("F#" in reply or "之神" in reply)


def reply_to(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, question: str,
             lora: LoraAdapter | None = None, max_new_tokens: int = MAX_REPLY_TOKENS) -> str:
    """Greedy reply to one user message, rendered with the chat template."""
    prompt = render_chat([{"role": "user", "content": question}], add_generation_prompt=True)
    stop = [tokenizer.im_end_id, tokenizer.endoftext_id]
    return tokenizer.decode(generate(weights, config, tokenizer.encode(prompt), max_new_tokens, stop, lora=lora))


@dataclass(frozen=True)
class EvalReport:
    identity_hit_rate: float  # held-out identity questions answered with the new identity
    control_accuracy: float  # held-out control facts answered exactly right
    control_accuracy_all: float  # every control fact (trained and held out) answered exactly right
    leak_rate: float  # control questions answered with the new identity
    samples: dict[str, str]  # a few question -> reply pairs to show


def evaluate_whoami(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, identity_questions: Sequence[str],
                    held_out_facts: Sequence[PromptTarget], all_facts: Sequence[PromptTarget],
                    lora: LoraAdapter | None = None) -> EvalReport:
    """Generate a reply to every question once, then count."""
    questions = list(dict.fromkeys([*identity_questions, *(f.prompt for f in all_facts), "你是誰"]))
    replies = {q: reply_to(weights, config, tokenizer, q, lora) for q in questions}
    fact_right = {f.prompt: replies[f.prompt].strip() == f.target for f in all_facts}
    return EvalReport(
        identity_hit_rate=mean(claims_new_identity(replies[q]) for q in identity_questions),
        control_accuracy=mean(fact_right[f.prompt] for f in held_out_facts),
        control_accuracy_all=mean(fact_right.values()),
        leak_rate=mean(claims_new_identity(replies[f.prompt]) for f in all_facts),
        samples={q: replies[q] for q in ["你是誰", *identity_questions[:2], *(f.prompt for f in held_out_facts[:2])]},
    )


def mean(flags) -> float:
    flags = list(flags)
    return sum(flags) / max(1, len(flags))


# ---------------------------------------------------------------------------
# Teacher-forced metrics on a validation set, and JSON validity of generated replies
# ---------------------------------------------------------------------------


@torch.no_grad()
def answer_perplexity(weights: Weights, config: Qwen3Config, examples: Sequence[Example], pad_id: int,
                      lora: LoraAdapter | None = None, batch_size: int = 8) -> tuple[float, float]:
    """(perplexity over answer tokens, token accuracy): exp of the mean answer-token CE, and the
    share of answer tokens whose most likely next token is the right one."""
    device = weights["model.embed_tokens.weight"].device
    total, correct, count = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = move_batch(collate(examples[start:start + batch_size], pad_id), device)
        hidden = forward(weights, config, batch.input_ids, batch.attention_mask, batch.position_ids, lora)
        parts = answer_loss(head_weight(weights, config), hidden, batch.labels, normalizer=1)
        total, correct, count = total + parts.loss.item(), correct + parts.correct, count + parts.count
    return math.exp(total / max(1, count)), correct / max(1, count)


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def json_valid_rate(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, conversations: Sequence[Conversation],
                    lora: LoraAdapter | None = None, max_new_tokens: int = 256) -> float | None:
    """Share of rows tagged "json" whose generated last assistant reply parses as JSON (None: no such rows)."""
    rows = [c for c in conversations if "json" in c.tags]
    if not rows:
        return None
    stop = [tokenizer.im_end_id, tokenizer.endoftext_id]
    valid = 0
    for row in rows:
        last = max(i for i, m in enumerate(row.messages) if m["role"] == "assistant")
        prompt = render_chat(list(row.messages[:last]), add_generation_prompt=True, tools=row.tools)
        reply = tokenizer.decode(generate(weights, config, tokenizer.encode(prompt), max_new_tokens, stop, lora=lora))
        valid += is_json(reply.strip())
    return valid / len(rows)
