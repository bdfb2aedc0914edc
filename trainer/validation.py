"""Validation while training: is the identity learned yet, and are the rehearsed replies still fitted?

Every --val-every steps the job scores the model as it is at that step (adapter on, no dropout):
- identity hit rate on a validation split of identity wordings, disjoint from the test split
  the final table uses, so stopping on it does not peek at the test;
- answer loss of held-out rehearsal rows: the base's own replies to prompts never trained on
  (it rises when training drifts away from the base).
With --stop-when-learned, training ends once the hit rate has been 100% at two validations in
a row: more steps would only move the model further from what it knew.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .config import Qwen3Config
from .data import Example
from .evaluate import answer_perplexity, claims_new_identity, mean
from .generate import answer_questions
from .model import LoraAdapter, Weights
from .tokenizer import Tokenizer

LEARNED_IN_A_ROW = 2  # validations at 100% identity hit before training stops

Validation = Callable[[int], dict]  # finished steps -> metrics for that step's record ({} between validations)


@dataclass(frozen=True)
class ValidationData:
    identity_questions: tuple[str, ...]  # validation identity wordings
    rehearsal_examples: tuple[Example, ...]  # held-out rehearsal rows (may be empty: no rehearsal)


def validation_scores(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, lora: LoraAdapter | None,
                      data: ValidationData, max_new_tokens: int) -> dict[str, float]:
    """{"val_identity_hit": share of wordings answered with the new identity, "val_rehearsal_loss": mean CE}."""
    answers = answer_questions(weights, config, tokenizer, data.identity_questions, max_new_tokens, lora)
    scores = {"val_identity_hit": mean(claims_new_identity(answer.text) for answer in answers)}
    if data.rehearsal_examples:
        perplexity, _ = answer_perplexity(weights, config, data.rehearsal_examples, tokenizer.endoftext_id, lora)
        scores["val_rehearsal_loss"] = math.log(perplexity)
    return scores


def is_learned(hit_rates: Sequence[float], in_a_row: int = LEARNED_IN_A_ROW) -> bool:
    """The stop rule: the last `in_a_row` validation hit rates are all 100%."""
    return len(hit_rates) >= in_a_row and all(rate >= 1.0 for rate in hit_rates[-in_a_row:])


def make_validation(score: Callable[[], dict[str, float]], every: int) -> Validation:
    """Score every `every` steps; each scored record also says whether the identity counts as learned."""
    hit_rates: list[float] = []

    def validate(step: int) -> dict:
        if every <= 0 or step % every:
            return {}
        scores = score()
        hit_rates.append(scores["val_identity_hit"])
        return scores | {"learned": is_learned(hit_rates)}

    return validate
