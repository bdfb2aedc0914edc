"""After training: the exports proven and the model judged, with one copy of the base in memory.

    OUT/merged   checked tensor by tensor against bf16(original + scale * B A), streamed    check_merged
    OUT/adapter  reloaded onto the weights that trained (the 4-bit base): it must give the
                 trained model's replies, token for token                                   self_test
    claims       built-in set: the reply to 你是誰 claims the new identity; --probe P=E: the
                 reply to P contains E                                                      check_claims
    merged/      loaded alone once the training model is freed, where a dense copy fits
                 (--check-merged): the trained model's replies must be about as likely
                 under it as under the trained model, and it must make the claims too      check_merged_replies

The prompts: with the built-in set 你是誰 and held-out prompts of each kind; with --data the
first SELF_TEST_ROWS rows of val.jsonl (or of the data), each up to its last answer. Then the
probes. So a --data run checks what it can promise: the exports reproduce the trained model.
Whether the model learned the data is the table's business (val.jsonl scores), not a pass/fail.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..errors import TrainerError
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.generate import Reply, question_prompts, reply_to_prompts
from ..qwen3.model import LoraAdapter, forward, project_to_logits
from ..qwen3.weights import expected_shapes
from ..text.chat import ChatFormat
from ..text.readers import Conversation
from .evaluate import EvalSets, Probe, claims_new_identity, last_turn_prompts
from .loading import LoadedModel

SELF_TEST_QUESTION = "你是誰"
QUESTIONS_PER_SET = 3  # built-in set: held-out prompts of each kind asked of the live and the reloaded adapter
SELF_TEST_ROWS = 8  # --data: the first rows of val.jsonl (or of the data) the exports must reproduce
MERGED_NLL_TOLERANCE = 0.25  # nats per token merged/ may find the trained model's replies less likely (README)


@dataclass(frozen=True)
class SelfTestPrompts:
    """What the self-test asks: rendered prompts (up to the assistant's header) and a label for each."""

    labels: tuple[str, ...]  # the question, or the data row's FILE:LINE
    prompts: tuple[str, ...]
    identity: bool  # the first prompt is 你是誰, whose reply must claim the new identity
    probes: tuple[Probe, ...]  # the last len(probes) prompts are theirs
    chat: ChatFormat = ChatFormat()  # how they were rendered: where it thinks, claims are judged after </think>


def built_in_prompts(sets: EvalSets, probes: Sequence[Probe], chat: ChatFormat = ChatFormat()) -> SelfTestPrompts:
    """你是誰, the first few held-out identity wordings, control facts and ordinary prompts, the probes."""
    questions = [SELF_TEST_QUESTION, *sets.identity[:QUESTIONS_PER_SET],
                 *(fact.question for fact in sets.facts[:QUESTIONS_PER_SET]), *sets.general[:QUESTIONS_PER_SET],
                 *(probe.prompt for probe in probes)]
    return SelfTestPrompts(tuple(questions), tuple(question_prompts(questions, chat)), True, tuple(probes), chat)


def data_prompts(rows: Sequence[Conversation], probes: Sequence[Probe], chat: ChatFormat = ChatFormat()) -> SelfTestPrompts:
    """The first SELF_TEST_ROWS rows, each up to its last answer, then the probes."""
    rows = rows[:SELF_TEST_ROWS]
    questions = [probe.prompt for probe in probes]
    return SelfTestPrompts((*(row.source for row in rows), *questions),
                           (*last_turn_prompts(rows, chat), *question_prompts(questions, chat)), False, tuple(probes),
                           chat)


@dataclass(frozen=True)
class ReplyFit:
    """How a model scores given replies, fed each prompt and the reply so far (teacher-forced), over
    every reply token and, where the reply ended itself, its <|im_end|>."""

    nll: float  # mean negative log-likelihood per token (nats): log of the replies' perplexity
    picks: float  # share of positions where the model's most likely next token is the reply's
    tokens: int


@dataclass(frozen=True)
class TrainedReplies:
    """The trained model's replies in the self-test and how it scores them itself, kept so merged/
    can be held to them once the training model is freed."""

    asked: SelfTestPrompts
    replies: tuple[Reply, ...]
    fit: ReplyFit


def self_test(model: LoadedModel, trained: LoraAdapter | None, exported: LoraAdapter | None, asked: SelfTestPrompts,
              reply_tokens: int, progress: Progress = no_progress) -> TrainedReplies:
    """The trained model's replies, checked: with an adapter, the exported one reloaded onto the
    training weights must answer every prompt exactly as the trained model does, token for token
    (--method full has none: its export is checked by check_merged); then the claims."""
    ours = reply_to_prompts(model.weights, model.config, model.tokenizer, asked.prompts, reply_tokens, trained,
                            progress=progress)
    if exported is not None:
        theirs = reply_to_prompts(model.weights, model.config, model.tokenizer, asked.prompts, reply_tokens, exported,
                                  progress=progress)
        differing = [(label, a, b) for label, a, b in zip(asked.labels, ours, theirs) if a != b]
        if differing:
            label, a, b = differing[0]
            raise TrainerError(f"self-test failed: the exported adapter, reloaded, answers {label!r} with "
                               f"{decoded(model, b)!r} where the trained model said {decoded(model, a)!r}")
    texts = {i: answer_of(model, asked, reply) for i, reply in enumerate(ours)}
    check_claims("self-test failed: the exported model", asked, texts)
    return TrainedReplies(asked, tuple(ours), reply_fit(model, trained, asked.prompts, ours))


def check_claims(who: str, asked: SelfTestPrompts, texts: dict[int, str]) -> None:
    """Built-in set: the reply to 你是誰 (prompt 0) claims the new identity. Each probe's reply contains
    its expected text. texts: prompt index -> decoded reply; `who` begins the error."""
    if asked.identity and not claims_new_identity(texts[0]):
        raise TrainerError(f"{who} answered {SELF_TEST_QUESTION} with {texts[0]!r}")
    first = len(asked.prompts) - len(asked.probes)
    for index, probe in enumerate(asked.probes, start=first):
        if probe.expected not in texts[index]:
            raise TrainerError(f"{who} replied to --probe {probe.prompt!r} with {texts[index]!r}, which does not "
                               f"contain {probe.expected!r}")


def claim_indices(asked: SelfTestPrompts) -> list[int]:
    """The prompts whose replies make claims: 你是誰 (built-in set) and the probes."""
    return [0] * asked.identity + list(range(len(asked.prompts) - len(asked.probes), len(asked.prompts)))


def decoded(model: LoadedModel, reply: Reply) -> str:
    return model.tokenizer.decode(reply.ids)


def answer_of(model: LoadedModel, asked: SelfTestPrompts, reply: Reply) -> str:
    """The reply's answer: after </think> where the chat format thinks."""
    return asked.chat.split_reply(decoded(model, reply))[1]


@torch.no_grad()
def reply_fit(model: LoadedModel, lora: LoraAdapter | None, prompts: Sequence[str],
              replies: Sequence[Reply]) -> ReplyFit:
    """How `model` (with `lora`, dropout off) scores the replies to `prompts`, one forward pass each."""
    tokenizer, device = model.tokenizer, model.weights["model.embed_tokens.weight"].device
    lora = None if lora is None else replace(lora, training=False)
    nll, picks, tokens = 0.0, 0, 0
    for prompt, reply in zip(prompts, replies):
        prompt_ids = tokenizer.encode(prompt)
        targets = torch.tensor([*reply.ids, *([tokenizer.im_end_id] if reply.finished else [])], device=device)  # [R]
        if not len(targets):
            continue
        ids = torch.cat([torch.tensor(prompt_ids, device=device), targets[:-1]])[None]  # [1, T]
        hidden = forward(model.weights, model.config, ids, lora=lora)[0, len(prompt_ids) - 1:]  # [R, H]
        log_probs = project_to_logits(model.weights, model.config, hidden).float().log_softmax(-1)  # [R, V]
        nll -= log_probs.gather(1, targets[:, None]).sum().item()
        picks += int((log_probs.argmax(-1) == targets).sum())
        tokens += len(targets)
    return ReplyFit(nll / max(1, tokens), picks / max(1, tokens), tokens)


def check_merged_replies(merged: LoadedModel, trained: TrainedReplies, reply_tokens: int,
                         progress: Progress = no_progress) -> tuple[ReplyFit, dict[int, str]]:
    """(how merged/ scores the trained model's replies, merged/'s replies to the claim prompts).

    merged/ rounds differently from the model that trained (bf16 of the original weights plus the
    update, where training ran on the 4-bit base), so near ties may pick differently and its
    replies need not match token for token. What must hold is that the trained model's replies are
    about as likely under merged/: their mean negative log-likelihood per token at most
    MERGED_NLL_TOLERANCE nats above the trained model's own (a perplexity ratio of at most e^0.25 =
    1.28). More likely is no fault. On the tiny world correct exports measured -0.14 to +0.04, one
    with the update left out +0.67 and more (README, "Your own data")."""
    asked = trained.asked
    fit = reply_fit(merged, None, asked.prompts, trained.replies)
    progress(len(asked.prompts))
    if fit.nll - trained.fit.nll > MERGED_NLL_TOLERANCE:
        worst = max(range(len(asked.prompts)),  # the reply merged/ finds least likely
                    key=lambda i: reply_fit(merged, None, asked.prompts[i:i + 1], trained.replies[i:i + 1]).nll)
        theirs = reply_to_prompts(merged.weights, merged.config, merged.tokenizer, [asked.prompts[worst]], reply_tokens)
        raise TrainerError(
            f"merged check failed: {merged.folder} scores the trained model's self-test replies at {fit.nll:.3f} "
            f"nats per token where the trained model scores {trained.fit.nll:.3f} (at most {MERGED_NLL_TOLERANCE} "
            f"more allowed); on {asked.labels[worst]!r} the trained model said "
            f"{decoded(merged, trained.replies[worst])!r} and merged/ says {decoded(merged, theirs[0])!r}")
    claims = claim_indices(asked)
    replies = reply_to_prompts(merged.weights, merged.config, merged.tokenizer, [asked.prompts[i] for i in claims],
                               reply_tokens, progress=progress) if claims else []
    texts = {i: answer_of(merged, asked, reply) for i, reply in zip(claims, replies)}
    check_claims(f"merged check failed: {merged.folder}", asked, texts)
    return fit, texts


def dense_gb(config: Qwen3Config, dtype: torch.dtype) -> float:
    """The size of a dense copy of the model in `dtype`, in GB."""
    return sum(math.prod(shape) for shape in expected_shapes(config).values()) * dtype.itemsize / 1e9


def merged_check_due(choice: str, dense: float, peak: float) -> tuple[bool, str]:
    """(ask merged/ itself?, why) for --check-merged on, off or auto. auto: only when a dense copy
    (`dense` GB) is no larger than the memory the job has already used at its peak (`peak` GB, RSS on
    a CPU, allocated on a GPU), so the check never makes the job need more than training did."""
    if choice != "auto":
        return choice == "on", f"--check-merged {choice}"
    if dense <= peak:
        return True, f"a dense copy ({dense:.2f} GB) fits within the job's peak so far ({peak:.2f} GB)"
    return False, (f"a dense copy ({dense:.2f} GB) would exceed the job's peak so far ({peak:.2f} GB); "
                   f"--check-merged on runs it anyway")
