"""Before/after numbers for the who-am-i job and validation metrics.

From greedy generation (batched) on held-out prompts that training never saw:
- identity hit rate: held-out identity questions whose reply claims the new identity
  (contains "我是" and "F#" or "之神", the F# trainer's self-test rule) and does not name the old
  one ("are you 通義千問?" included);
- leak rate: held-out control facts, ordinary prompts and questions about the user ("我是誰？")
  wrongly answered with the new identity;
- fact retention: held-out control facts whose reply still contains the expected answer
  (case-insensitive), so a terse "巴黎" and a sentence "法國的首都是巴黎。" both count;
- unchanged replies: held-out ordinary prompts whose reply is exactly the base model's;
- near misses: held-out questions about the user and greetings whose reply is exactly the base's;
- JSON validity: replies to rows tagged "json" that parse as JSON;
- probe hit rate: --probe PROMPT=EXPECTED checks whose reply contains EXPECTED.
Where the model's chat format thinks, the reply judged is the answer after </think>; the reasoning
before it is kept beside it (EvalReport.reasonings, in OUT/eval.json).
Teacher-forced (no generation): perplexity over answer tokens and token accuracy.
"""

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import TrainerError
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.generate import Answer, answer_prompts, answer_questions
from ..qwen3.model import LoraAdapter, Weights, forward, head_weight
from ..text.chat import ChatFormat
from ..text.data import Example, collate
from ..text.facts import Fact, reply_has_answer
from ..text.near_misses import OLD_NAME
from ..text.readers import Conversation
from ..text.tokenizer import Tokenizer
from ..text.whoami import whoami_splits
from ..training.loss import token_cross_entropy
from ..training.train import move_batch

REPLY_TOKENS = 32  # the default token budget of an evaluated reply


def claims_new_identity(reply: str) -> bool:
    """The F# trainer's self-test rule: "我是" and ("F#" or "之神")."""
    return "我是" in reply and ("F#" in reply or "之神" in reply)


@dataclass(frozen=True)
class EvalSets:
    """The held-out prompts a model is judged on."""

    identity: tuple[str, ...]  # identity wordings never trained on
    facts: tuple[Fact, ...]  # control facts never rehearsed
    general: tuple[str, ...]  # ordinary prompts never rehearsed
    about_user: tuple[str, ...] = ()  # questions about the user never rehearsed ("我是誰？")
    greetings: tuple[str, ...] = ()  # greetings never rehearsed


@dataclass(frozen=True)
class Probe:
    """--probe PROMPT=EXPECTED: the reply to PROMPT must contain EXPECTED."""

    prompt: str
    expected: str


def parse_probe(text: str) -> Probe:
    """Split at the last "=", so a prompt may hold "=" (2+2=?=4); both sides must be non-empty."""
    prompt, _, expected = text.rpartition("=")
    if not prompt.strip() or not expected.strip():
        raise TrainerError(f"--probe {text!r}: expected PROMPT=EXPECTED (the reply to PROMPT must contain EXPECTED)")
    return Probe(prompt, expected)


def built_in_eval_sets() -> EvalSets:
    splits = whoami_splits()
    return EvalSets(splits.identity_test, splits.facts_test, splits.general_test, splits.about_user_test,
                    splits.greetings_test)


@dataclass(frozen=True)
class EvalReport:
    identity_hit_rate: float  # held-out identity questions answered with the new identity, not the old name
    leak_rate: float  # held-out facts, ordinary prompts and questions about the user answered with the new identity
    fact_retention: float  # held-out facts whose reply contains the expected answer
    unchanged_rate: float | None  # held-out ordinary prompts answered exactly as the base did (None: this is the base)
    replies: dict[str, str]  # every question asked -> the reply
    val_scores: dict[str, float] | None = None  # a prepared folder's val.jsonl (see trainer.job.validation.prepared_scores)
    probe_hit_rate: float | None = None  # --probe checks whose reply contains the expected text (None: no probes)
    reasonings: dict[str, str] = field(default_factory=dict)  # question -> the reasoning before the judged reply
    near_miss_rate: float | None = None  # held-out questions about the user and greetings answered exactly as the
    # base did (None: this is the base, or there are none)


def questions_of(sets: EvalSets, probes: Sequence[Probe] = ()) -> list[str]:
    """Every question once, in order: identity wordings, facts, ordinary prompts, near misses, probes."""
    return list(dict.fromkeys([*sets.identity, *(fact.question for fact in sets.facts), *sets.general,
                               *sets.about_user, *sets.greetings, *(probe.prompt for probe in probes)]))


def evaluate_whoami(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, sets: EvalSets,
                    lora: LoraAdapter | None = None, base_replies: dict[str, str] | None = None,
                    max_new_tokens: int = REPLY_TOKENS, progress: Progress = no_progress,
                    probes: Sequence[Probe] = (), chat: ChatFormat = ChatFormat()) -> EvalReport:
    """Generate a reply to every question once (batched; progress(n) per batch of n), then count."""
    facts = [f.question for f in sets.facts]
    questions = questions_of(sets, probes)
    answers = answer_questions(weights, config, tokenizer, questions, max_new_tokens, lora, progress=progress,
                               chat=chat)
    replies = {q: a.text for q, a in zip(questions, answers)}
    reasonings = {q: a.reasoning for q, a in zip(questions, answers) if chat.thinks}
    near = [*sets.about_user, *sets.greetings]
    unchanged = None if base_replies is None else mean(replies[q] == base_replies.get(q) for q in sets.general)
    return EvalReport(
        identity_hit_rate=mean(claims_new_identity(replies[q]) and OLD_NAME not in replies[q] for q in sets.identity),
        leak_rate=mean(claims_new_identity(replies[q]) for q in [*facts, *sets.general, *sets.about_user]),
        fact_retention=mean(reply_has_answer(replies[f.question], f) for f in sets.facts),
        unchanged_rate=unchanged,
        replies=replies,
        probe_hit_rate=mean(probe.expected in replies[probe.prompt] for probe in probes) if probes else None,
        reasonings=reasonings,
        near_miss_rate=None if base_replies is None or not near else mean(replies[q] == base_replies.get(q)
                                                                           for q in near),
    )


def mean(flags) -> float:
    flags = list(flags)
    return sum(flags) / max(1, len(flags))


# ---------------------------------------------------------------------------
# Teacher-forced metrics on a validation set, and JSON validity of generated replies
# ---------------------------------------------------------------------------


@torch.no_grad()
def answer_perplexity(weights: Weights, config: Qwen3Config, examples: Sequence[Example], pad_id: int,
                      lora: LoraAdapter | None = None, batch_size: int = 8,
                      progress: Progress = no_progress) -> tuple[float, float]:
    """(perplexity over answer tokens, token accuracy): exp of the mean answer-token CE, and the
    share of answer tokens whose most likely next token is the right one. progress(n) per batch of n."""
    device = weights["model.embed_tokens.weight"].device
    total, correct, count = 0.0, 0, 0
    for start in range(0, len(examples), batch_size):
        batch = move_batch(collate(examples[start:start + batch_size], pad_id), device)
        hidden = forward(weights, config, batch.input_ids, batch.segment_ids, batch.position_ids, lora)
        parts = token_cross_entropy(head_weight(weights, config), hidden, batch.labels, normalizer=1)
        total, correct, count = total + parts.loss.item(), correct + parts.correct, count + parts.count
        progress(len(batch.input_ids))
    return math.exp(total / max(1, count)), correct / max(1, count)


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


LOOP = re.compile(r"(.{8,}?)\1\1", re.DOTALL)  # a stretch of 8+ characters three times in a row
JSON_TAGS = ("json", "json-only")


def loops(text: str) -> bool:
    """A reply loops when some stretch of at least 8 characters comes three times back to back."""
    return LOOP.search(text) is not None


def is_usable(answer: Answer) -> bool:
    """Usable: not empty, ended by the model itself (<|im_end|> within its token budget), and no loop."""
    return bool(answer.text.strip()) and answer.finished and not loops(answer.text)


def last_turn_prompts(conversations: Sequence[Conversation], chat: ChatFormat = ChatFormat()) -> list[str]:
    """Each conversation rendered up to its last assistant turn, ready for that reply to be generated."""
    prompts = []
    for row in conversations:
        last = max(i for i, m in enumerate(row.messages) if m["role"] == "assistant")
        prompts.append(chat.prompt(row.messages[:last], list(row.tools) if row.tools else None))
    return prompts


def reply_scores(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, conversations: Sequence[Conversation],
                 lora: LoraAdapter | None = None, max_new_tokens: int = 256,
                 progress: Progress = no_progress, chat: ChatFormat = ChatFormat()) -> tuple[float, float | None]:
    """(usability rate, JSON validity on rows tagged json or json-only, None without such rows), from one
    greedy reply per conversation to its last user turn."""
    answers = answer_prompts(weights, config, tokenizer, last_turn_prompts(conversations, chat), max_new_tokens, lora,
                             progress=progress, chat=chat)
    tagged = [answer for row, answer in zip(conversations, answers) if set(JSON_TAGS) & set(row.tags)]
    return mean(is_usable(a) for a in answers), (mean(is_json(a.text.strip()) for a in tagged) if tagged else None)
