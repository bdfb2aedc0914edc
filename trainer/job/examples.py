"""Rows to training examples for the job: the built-in identity rows or --data, each through the
F# path of trainer.text.data.

    PromptTarget (prompt, target)   -> example_from_prompt_target: render, window,
                                       make_next_token_pairs, slice_response_only
    Conversation (messages, tools)  -> example_from_messages: render, window,
                                       make_next_token_pairs, a mask over every assistant turn

A sample whose answer alone is longer than --seq-len is skipped and counted; any other bad
sample stops the job with its source named.
"""

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..errors import TrainerError
from ..prep.prepare import read_usable_rows
from ..text.chat_templates import INSTRUCT_2507
from ..text.data import IGNORE_INDEX, AnswerTooLong, Example, example_from_messages, example_from_prompt_target
from ..text.readers import Conversation, PromptTarget, Sample, prepared_file
from ..text.tokenizer import Tokenizer
from ..text.whoami import NEW_IDENTITY, identity_rows

PreparedValidation = tuple[tuple[Conversation, ...], tuple[Example, ...]]  # a prepared folder's val.jsonl: rows, examples


def build_examples(samples: Sequence[Sample], tokenizer: Tokenizer, seq_len: int,
                   family: str = INSTRUCT_2507) -> tuple[list[Example], int]:
    """(examples, skipped), rendered and masked as `family` does: samples whose answer alone exceeds
    seq_len are skipped and counted."""
    examples, skipped = [], 0
    for sample in samples:
        try:
            examples.append(build_example(sample, tokenizer, seq_len, family))
        except AnswerTooLong:
            skipped += 1
        except TrainerError as error:
            raise TrainerError(f"{sample.source}: {error}") from None
    if not examples:
        raise TrainerError(f"no usable training example: all {skipped} answers are longer than --seq-len {seq_len}"
                           if skipped else "no training example: the data set is empty")
    return examples, skipped


def build_example(sample: Sample, tokenizer: Tokenizer, seq_len: int, family: str) -> Example:
    if isinstance(sample, PromptTarget):
        return example_from_prompt_target(tokenizer, sample.prompt, sample.target, seq_len, ends_turn=sample.ends_turn,
                                          family=family)
    assert isinstance(sample, Conversation)
    return example_from_messages(tokenizer, sample.messages, seq_len, sample.tools, family=family)


def mark_kl_positions(example: Example) -> Example:
    """The example with every answer position marked for the KL term of --preserve-kl."""
    return replace(example, kl_positions=tuple(label != IGNORE_INDEX for label in example.labels))


def training_samples(data: str | None, strict: bool, echo: Callable[[str], None]) -> list[Sample]:
    """The built-in identity rows, or the rows of --data (a file, or a prepared folder's train.jsonl).

    Bad rows are set aside and counted, with the first few named, while at least one row is left
    (--strict: the first bad row stops the run). An empty file is an error, not a no-op run.
    """
    if data is None:
        return identity_rows(NEW_IDENTITY)
    path = prepared_file(data, "train.jsonl")
    samples, rejected = read_usable_rows(path, strict)
    if rejected:
        echo(f"data: {len(samples) + len(rejected)} rows read, {len(rejected)} set aside, training on {len(samples)}; "
             "first: " + "; ".join(f"{r.where}: {r.reason}" for r in rejected[:3]) + " (--strict stops at the first)")
    if not samples:
        raise TrainerError(f"{path}: no training rows (the file is empty after skipping comments and blank lines, "
                           "or every row was set aside)")
    return samples


def prepared_validation(data: str | None, tokenizer: Tokenizer, seq_len: int,
                        family: str = INSTRUCT_2507) -> PreparedValidation | None:
    """(rows, examples) of a prepared --data folder's val.jsonl; None when --data is not such a folder."""
    if data is None or not Path(data).is_dir():
        return None
    rows = tuple(read_usable_rows(prepared_file(data, "val.jsonl"), strict=False)[0])
    return rows, tuple(build_examples(rows, tokenizer, seq_len, family)[0])
