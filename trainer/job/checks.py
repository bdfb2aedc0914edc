"""After training: the exports proven and the model judged, with one copy of the base in memory.

    OUT/merged   checked tensor by tensor against bf16(original + scale * B A), streamed    check_merged
    OUT/adapter  reloaded onto the weights that trained (the 4-bit base): it must give the
                 trained model's replies, token for token                                   self_test
    self-test    the reloaded adapter answers 你是誰 with the new identity                   self_test
    merged/      asked 你是誰 itself, but only once the training model is freed, and only
                 where a dense copy fits (--check-merged)                                   ask_merged

The before/after table (whoami_job) runs on the same weights: adapter off, then the reloaded
adapter on. So the job never loads the dense base beside the training model; merged/ is loaded
at most once, at the end, alone.
"""

import math
from collections.abc import Sequence

import torch

from ..errors import TrainerError
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.generate import Reply, answer_questions, question_prompts, reply_to_prompts
from ..qwen3.model import LoraAdapter
from ..qwen3.weights import expected_shapes
from .evaluate import EvalSets, claims_new_identity
from .loading import LoadedModel

SELF_TEST_QUESTION = "你是誰"
PROBES_PER_SET = 3  # held-out prompts of each kind asked of the live and the reloaded adapter


def probe_questions(sets: EvalSets) -> list[str]:
    """你是誰, then the first few held-out identity wordings, control facts and ordinary prompts."""
    return [SELF_TEST_QUESTION, *sets.identity[:PROBES_PER_SET],
            *(fact.question for fact in sets.facts[:PROBES_PER_SET]), *sets.general[:PROBES_PER_SET]]


def self_test(model: LoadedModel, trained: LoraAdapter | None, exported: LoraAdapter | None, questions: Sequence[str],
              reply_tokens: int, progress: Progress = no_progress) -> str:
    """The reply to questions[0] (你是誰), which must claim the new identity. With an adapter, the
    exported one reloaded onto the training weights must first answer every question exactly as the
    trained model does, token for token (--method full has none: its export is checked by check_merged)."""
    prompts = question_prompts(questions)
    ours = reply_to_prompts(model.weights, model.config, model.tokenizer, prompts, reply_tokens, trained,
                            progress=progress)
    if exported is not None:
        theirs = reply_to_prompts(model.weights, model.config, model.tokenizer, prompts, reply_tokens, exported,
                                  progress=progress)
        differing = [(q, a, b) for q, a, b in zip(questions, ours, theirs) if a != b]
        if differing:
            question, a, b = differing[0]
            raise TrainerError(f"self-test failed: the exported adapter, reloaded, answers {question!r} with "
                               f"{decoded(model, b)!r} where the trained model said {decoded(model, a)!r}")
    reply = decoded(model, ours[0])
    if not claims_new_identity(reply):
        raise TrainerError(f"self-test failed: the exported model answered {questions[0]} with {reply!r}")
    return reply


def decoded(model: LoadedModel, reply: Reply) -> str:
    return model.tokenizer.decode(reply.ids)


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


def ask_merged(model: LoadedModel, reply_tokens: int, progress: Progress = no_progress) -> str:
    """merged/ loaded densely asks itself 你是誰: the reply must claim the new identity."""
    reply = answer_questions(model.weights, model.config, model.tokenizer, [SELF_TEST_QUESTION], reply_tokens,
                             progress=progress)[0].text
    if not claims_new_identity(reply):
        raise TrainerError(f"merged check failed: {model.folder} answered {SELF_TEST_QUESTION} with {reply!r}")
    return reply

