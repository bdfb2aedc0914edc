"""Self-distilled rehearsal: keep what the model knew by training it on its own replies.

Teaching a new identity on identity questions alone moves everything else too. The usual cure
is to mix in "control" rows, but hand-written answers ("巴黎") teach a style the real model
never had (it answers in sentences). So at job start the base model itself (the same frozen
weights, adapter off) answers the rehearsal prompts greedily, and those replies are the rows:
whatever the base says is the behaviour to keep. The rows are written to OUT/rehearsal.jsonl,
one {"prompt", "reply", "finished", "split"} object per line, and `--resume` reads them back.

A reply cut at its token budget (finished = false) is trained WITHOUT the closing
<|im_end|>: the base never ended it there, so the model must not learn to stop there. It is
kept rather than dropped because dropping would remove exactly the long answers and rehearse
only the short ones; its first tokens are still the base's own behaviour.

A model that thinks (Thinking-2507, a hybrid asked with thinking on) writes reasoning before
its answer. The row keeps it ("reasoning") and trains it as the template renders it, as the
assistant turn's reasoning_content. Such a reply cut before its end teaches reasoning without the
answer it led to, and is not kept: the budget for these models (--reasoning-tokens) is larger.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import TrainerError
from ..paths import write_atomic
from ..progress import Progress, no_progress
from ..qwen3.config import Qwen3Config
from ..qwen3.generate import answer_questions
from ..qwen3.model import Weights
from ..text.chat import ChatFormat
from ..text.facts import Fact
from ..text.readers import Conversation, PromptTarget, Sample
from ..text.tokenizer import Tokenizer
from ..text.whoami import whoami_splits

REHEARSAL_FILE = "rehearsal.jsonl"


@dataclass(frozen=True)
class RehearsalRow:
    """One prompt and the reply to keep."""

    prompt: str
    reply: str
    finished: bool  # the base ended the reply itself; False: cut at the token budget
    split: str  # "train" (rehearsed) or "validation" (its answer loss is scored while training)
    reasoning: str = ""  # what a thinking model wrote before </think>


def self_distilled_rows(weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, prompts: Sequence[str],
                        split: str, max_new_tokens: int, progress: Progress = no_progress,
                        chat: ChatFormat = ChatFormat()) -> list[RehearsalRow]:
    """The base's greedy replies to `prompts` (generated batched). An empty answer has nothing to teach, and
    a thinking model's reply cut before its end teaches reasoning without its answer: both dropped."""
    answers = answer_questions(weights, config, tokenizer, prompts, max_new_tokens, progress=progress, chat=chat)
    return [RehearsalRow(prompt, answer.text, answer.finished, split, answer.reasoning)
            for prompt, answer in zip(prompts, answers)
            if answer.text.strip() and (answer.finished or not chat.thinks)]


def fixed_rows(facts: Sequence[Fact]) -> list[RehearsalRow]:
    """`--rehearsal fixed`: the hand-written terse answers of the control facts (the tiny world's own)."""
    return [RehearsalRow(fact.question, fact.reply, True, "train") for fact in facts]


def as_samples(rows: Sequence[RehearsalRow], split: str = "train") -> list[Sample]:
    """Rows of one split as training samples; a cut-off reply does not end the turn; a reply with
    reasoning is a conversation whose answer carries it (as the family's template renders it)."""
    return [as_sample(row) for row in rows if row.split == split]


def as_sample(row: RehearsalRow) -> Sample:
    source = f"{REHEARSAL_FILE}: {row.prompt!r}"
    if not row.reasoning:
        return PromptTarget(row.prompt, row.reply, source, ends_turn=row.finished)
    return Conversation(({"role": "user", "content": row.prompt},
                         {"role": "assistant", "content": row.reply, "reasoning_content": row.reasoning}), source=source)


def write_rehearsal(path: Path, rows: Sequence[RehearsalRow]) -> None:
    text = "".join(json.dumps(asdict(row), ensure_ascii=False) + "\n" for row in rows)
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def read_rehearsal(path: Path) -> list[RehearsalRow]:
    """Rows written by `write_rehearsal`; a damaged line is an error naming the file and line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            rows.append(RehearsalRow(str(row["prompt"]), str(row["reply"]), bool(row["finished"]), str(row["split"]),
                                     str(row.get("reasoning", ""))))
        except (ValueError, KeyError, TypeError):
            raise TrainerError(f"{path}:{number}: expected a JSON object with prompt, reply, finished and split; "
                               f"delete the file to generate it again") from None
    return rows


def rehearsal_prompts() -> dict[str, list[str]]:
    """The prompts --rehearsal self has the base answer, by split: the rehearsed control facts,
    ordinary prompts, questions about the user and greetings ("train"), and the held-out ordinary
    prompts and near misses scored while training ("validation")."""
    splits = whoami_splits()
    return {"train": [fact.question for fact in splits.facts_rehearsed] + [*splits.general_rehearsed,
                                                                           *splits.near_rehearsed],
            "validation": [*splits.general_validation, *splits.near_validation]}


def prompts_to_answer(mode: str, path: Path, reuse: bool) -> int:
    """How many replies `rehearsal_rows` will generate (0: none, or read back from `path`)."""
    generating = mode == "self" and not (reuse and path.is_file())
    return sum(len(prompts) for prompts in rehearsal_prompts().values()) if generating else 0


def rehearsal_rows(mode: str, weights: Weights, config: Qwen3Config, tokenizer: Tokenizer, reply_tokens: int,
                   path: Path, reuse: bool, write: bool, progress: Progress = no_progress,
                   chat: ChatFormat = ChatFormat()) -> list[RehearsalRow]:
    """--rehearsal self: the base's replies (the frozen weights, adapter off), generated once and kept
    in `path` (read back when `reuse`, as --resume does); fixed: the hand-written fact answers; none:
    nothing. `write`: this process writes the file (rank 0 under torchrun). progress(n) per batch of n."""
    if mode == "none":
        return []
    if mode == "fixed":
        return fixed_rows(whoami_splits().facts_rehearsed)
    if not prompts_to_answer(mode, path, reuse):
        return read_rehearsal(path)
    rows = [row for split, prompts in rehearsal_prompts().items()
            for row in self_distilled_rows(weights, config, tokenizer, prompts, split, reply_tokens, progress, chat)]
    if write:
        write_rehearsal(path, rows)
    return rows
