"""Validation while training: is the identity learned yet, and are the rehearsed replies still fitted?

Every --val-every steps the job scores the model as it is at that step (adapter on, no dropout):
- identity hit rate on a validation split of identity wordings, disjoint from the test split
  the final table uses, so stopping on it does not peek at the test, and the share of them
  answered exactly as taught;
- answer loss of held-out rehearsal rows: the base's own replies to prompts never trained on
  (it rises when training drifts away from the base);
- with a prepared folder as --data, its val.jsonl instead of the identity wordings: answer
  perplexity, token accuracy, the share of usable replies and of parsing JSON replies.
With --stop-when-learned, training ends once every validation wording has been answered exactly
as taught at two validations in a row: more steps would only move the model further from what
it knew. Exactly, because a model that half knows its new name ("我是 F#is華") already passes the
hit rule on most wordings, and would then miss some held-out ones.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.generate import answer_questions
from ..qwen3.model import LoraAdapter, Weights
from ..text.chat import ChatFormat
from ..text.data import Example
from ..text.readers import Conversation
from ..text.tokenizer import Tokenizer
from .evaluate import answer_perplexity, claims_new_identity, mean, reply_scores

LEARNED_IN_A_ROW = 2  # validations with every wording answered exactly as taught, before training stops

Validation = Callable[[int], dict]  # finished steps -> metrics for that step's record ({} between validations)


@dataclass(frozen=True)
class ValidationData:
    identity_questions: tuple[str, ...]  # validation identity wordings (empty: prepared data instead)
    identity_reply: str  # what they are taught to answer
    rehearsal_examples: tuple[Example, ...]  # held-out rehearsal rows (may be empty: no rehearsal)
    data_conversations: tuple[Conversation, ...] = ()  # a prepared folder's val.jsonl rows
    data_examples: tuple[Example, ...] = ()  # ... as training examples, for their answer perplexity
    chat: ChatFormat = ChatFormat()  # how the model is prompted

    @property
    def size(self) -> int:
        """Prompts answered and rows scored by one validation: what its progress counts."""
        return len(self.identity_questions) + len(self.rehearsal_examples) + len(self.data_examples) + \
            len(self.data_conversations)


def validation_scores(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, lora: LoraAdapter | None,
                      data: ValidationData, max_new_tokens: int, progress: Progress = no_progress) -> dict[str, float]:
    """{"val_identity_hit": share of wordings answered with the new identity, "val_identity_exact": share
    answered exactly as taught, "val_rehearsal_loss": mean CE}; for prepared data instead of identity
    wordings: val_perplexity, val_token_accuracy, val_usability and (rows tagged json) val_json_valid."""
    scores = {}
    if data.identity_questions:
        answers = [answer.text for answer in
                   answer_questions(weights, config, tokenizer, data.identity_questions, max_new_tokens, lora,
                                    progress=progress, chat=data.chat)]
        scores |= {"val_identity_hit": mean(claims_new_identity(answer) for answer in answers),
                   "val_identity_exact": mean(answer == data.identity_reply for answer in answers)}
    if data.data_examples:
        scores |= prepared_scores(weights, config, tokenizer, lora, data.data_conversations, data.data_examples,
                                  max_new_tokens, progress, data.chat)
    if data.rehearsal_examples:
        perplexity, _ = answer_perplexity(weights, config, data.rehearsal_examples, tokenizer.endoftext_id, lora,
                                          progress=progress)
        scores["val_rehearsal_loss"] = math.log(perplexity)
    return scores


def prepared_scores(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, lora: LoraAdapter | None,
                    conversations: Sequence[Conversation], examples: Sequence[Example], max_new_tokens: int,
                    progress: Progress = no_progress, chat: ChatFormat = ChatFormat()) -> dict[str, float]:
    """A prepared val.jsonl: val_perplexity and val_token_accuracy on its answers, val_usability of the
    greedy replies, and val_json_valid on rows tagged json or json-only (absent without such rows)."""
    perplexity, accuracy = answer_perplexity(weights, config, examples, tokenizer.endoftext_id, lora, progress=progress)
    usability, json_valid = reply_scores(weights, config, tokenizer, conversations, lora, max_new_tokens, progress, chat)
    return {"val_perplexity": perplexity, "val_token_accuracy": accuracy, "val_usability": usability} | \
        ({"val_json_valid": json_valid} if json_valid is not None else {})


def is_learned(exact_rates: Sequence[float], in_a_row: int = LEARNED_IN_A_ROW) -> bool:
    """The stop rule: the last `in_a_row` validations answered every wording exactly as taught."""
    return len(exact_rates) >= in_a_row and all(rate >= 1.0 for rate in exact_rates[-in_a_row:])


def make_validation(score: Callable[[], dict[str, float]], every: int) -> Validation:
    """Score every `every` steps; each scored record also says whether the identity counts as learned."""
    exact_rates: list[float] = []

    def validate(step: int) -> dict:
        if every <= 0 or step % every:
            return {}
        scores = score()
        if "val_identity_exact" not in scores:
            return scores  # prepared data: no identity to have learned
        exact_rates.append(scores["val_identity_exact"])
        return scores | {"learned": is_learned(exact_rates)}

    return validate
