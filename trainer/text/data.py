"""Text to training example: the F# trainer's pure functions, example building and batching.

The data flow for one sample (a data engineer may read "shift by one" as lag/lead):

    messages ──render_chat──> text ──encode──> full_ids, is_answer      (one flag per token)
    full_ids ──window──> the last seq_len + 1 ids (the answer is at the end, so it survives)
    window ──make_next_token_pairs──> input_ids = ids[:-1], target_ids = ids[1:]
    target_ids where is_answer[1:] is False ──> IGNORE_INDEX (no loss on prompt or padding)

Position t of the model reads input_ids[:t+1] and is graded on target_ids[t]. The last prompt
token (the "\\n" after "<|im_start|>assistant") predicts the first answer token, and the
answer's own last target is "<|im_end|>", so the model learns to stop.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import TrainerError
from .chat import answer_spans, render_chat, reply_opening
from .chat_templates import INSTRUCT_2507

IGNORE_INDEX = -100  # cross_entropy skips targets with this value


class TextEncoder(Protocol):
    """What example building needs from a tokenizer (trainer.text.tokenizer.Tokenizer has it)."""

    im_end_id: int

    def encode(self, text: str) -> list[int]: ...


# ---------------------------------------------------------------------------
# The F# trainer's core, with the same semantics
# ---------------------------------------------------------------------------


def make_next_token_pairs(full_ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Shift by one: the model reads `input_ids` and must predict `target_ids` (a lead of 1)."""
    if len(full_ids) < 2:
        raise TrainerError(f"need at least 2 token ids to make next-token pairs, got {len(full_ids)}")
    return list(full_ids[:-1]), list(full_ids[1:])


def window(full_ids: Sequence[int], seq_len: int) -> tuple[int, list[int]]:
    """Keep the last `seq_len + 1` ids (seq_len pairs after the shift); return (window_start, ids).

    Cutting from the left keeps the answer, which always sits at the end of a sample.
    """
    if seq_len < 1:
        raise TrainerError(f"seq_len must be at least 1, got {seq_len}")
    window_start = max(0, len(full_ids) - (seq_len + 1))
    return window_start, list(full_ids[window_start:])


def slice_response_only(
    prompt_ids: Sequence[int], window_start: int, input_ids: Sequence[int], target_ids: Sequence[int]
) -> tuple[int, int, list[int]]:
    """Find the answer inside the shifted window: (response_start, response_len, answer targets).

    Full position p (0-based) is window position p - window_start. The last prompt token sits at
    full position len(prompt_ids) - 1, and it is the first input whose target is answer text:

        full ids   : P0 P1 P2 A0 A1 <|im_end|>          prompt_ids = P0 P1 P2
        input_ids  : P0 P1 P2 A0 A1
        target_ids : P1 P2 A0 A1 <|im_end|>
        response_start = 3 - 1 - 0 = 2   ->  targets A0 A1 <|im_end|>
    """
    response_start = max(0, len(prompt_ids) - 1 - window_start)
    response_len = len(input_ids) - response_start
    if response_len <= 0:
        raise TrainerError(
            f"no answer tokens left in the window: response_start {response_start}, "
            f"input length {len(input_ids)}"
        )
    return response_start, response_len, list(target_ids[response_start : response_start + response_len])


# ---------------------------------------------------------------------------
# Examples: rendered text -> (ids, is_answer) -> shifted, masked training rows
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One training row after the shift; labels hold IGNORE_INDEX where there is no loss.

    A packed row holds several examples: `segments` numbers them 1, 2, ... per position and
    `positions` restarts at 0 for each. An ordinary example leaves both empty. `kl_positions`
    marks the answer positions whose next-token distribution is pulled towards the base
    model's by a KL term (rehearsal rows under --preserve-kl); empty means none.
    """

    input_ids: tuple[int, ...]  # [T]
    labels: tuple[int, ...]  # [T]
    positions: tuple[int, ...] = ()  # [T] position ids, when packed
    segments: tuple[int, ...] = ()  # [T] which example each position belongs to, when packed
    kl_positions: tuple[bool, ...] = ()  # [T] True: KL(base || model) is added here, when asked

    @property
    def answer_token_count(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


class AnswerTooLong(TrainerError):
    """The answer alone does not fit in seq_len: the sample is skipped and counted."""


def example_from_prompt_target(
    tokenizer: TextEncoder, prompt: str, target: str, seq_len: int, system: str | None = None, ends_turn: bool = True,
    family: str = INSTRUCT_2507,
) -> Example:
    """The F# path: rendered prompt + target + <|im_end|>, window, shift, slice the response.

    ends_turn=False leaves <|im_end|> out: the target is the start of a longer reply (a base
    model's reply cut at its token budget), so the model must not learn to stop there. A thinking
    family is prompted with thinking off (hybrid: the empty think block is prompt), and the same
    pair as a conversation gives the same example.
    """
    if not target.strip():
        raise TrainerError("the target (answer) is empty")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    prompt = render_chat(messages, add_generation_prompt=True, family=family, enable_thinking=False)
    prompt_ids = tokenizer.encode(prompt)
    answer_ids = tokenizer.encode(reply_opening(family) + target) + ([tokenizer.im_end_id] if ends_turn else [])
    _check_answer_fits(len(answer_ids), seq_len)
    window_start, kept = window(prompt_ids + answer_ids, seq_len)
    input_ids, target_ids = make_next_token_pairs(kept)
    response_start, response_len, response_targets = slice_response_only(prompt_ids, window_start, input_ids,
                                                                          target_ids)
    # the response slice keeps its targets and every other position is IGNORE_INDEX: the F# trainer
    # narrows hidden to the slice, a batch of rows of different lengths masks instead
    after = len(input_ids) - response_start - response_len  # 0: the answer ends the window
    labels = [IGNORE_INDEX] * response_start + response_targets + [IGNORE_INDEX] * after
    return Example(tuple(input_ids), tuple(labels))


def _check_answer_fits(answer_len: int, seq_len: int) -> None:
    """Every answer token needs the token before it as input: answer_len <= seq_len."""
    if answer_len > seq_len:
        raise AnswerTooLong(f"the answer has {answer_len} tokens (with <|im_end|>) but --seq-len is {seq_len}")


def encode_segments(tokenizer: TextEncoder, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    """Tokenize text piece by piece at the span borders: (ids, is_answer per id).

    Encoding each piece separately means no token straddles a prompt/answer border, and the
    prompt ends on the same ids the model sees at generation time.
    """
    ids: list[int] = []
    is_answer: list[bool] = []
    cursor = 0
    for start, end in spans:
        for piece, flag in ((text[cursor:start], False), (text[start:end], True)):
            piece_ids = tokenizer.encode(piece) if piece else []
            ids += piece_ids
            is_answer += [flag] * len(piece_ids)
        cursor = end
    tail = tokenizer.encode(text[cursor:]) if cursor < len(text) else []
    return ids + tail, is_answer + [False] * len(tail)


def example_from_messages(
    tokenizer: TextEncoder,
    messages: Sequence[dict],
    seq_len: int,
    tools: Sequence[dict] | None = None,
    last_turn_only: bool = False,
    family: str = INSTRUCT_2507,
) -> Example:
    """A multi-turn conversation: loss on every assistant turn (or only the last one), as `family`
    renders it and masks it (trainer.text.chat.answer_spans)."""
    spans = answer_spans(messages, tools, family)
    if not spans:
        raise TrainerError("the conversation has no assistant turn to learn from")
    if last_turn_only:
        spans = spans[-1:]
    # Nothing after the last answer's <|im_end|> has a target worth learning: cut it off.
    text = render_chat(list(messages), tools=list(tools) if tools else None, family=family)[: spans[-1][1]]
    ids, is_answer = encode_segments(tokenizer, text, spans)
    _check_answer_fits(last_answer_length(is_answer), seq_len)
    return example_from_mask(ids, is_answer, seq_len)


def last_answer_length(is_answer: Sequence[bool]) -> int:
    """Length of the final run of answer tokens (the turn that must survive the window)."""
    length = 0
    for flag in reversed(is_answer):
        if flag:
            length += 1
        elif length:
            break
    return length


def example_from_mask(full_ids: Sequence[int], is_answer: Sequence[bool], seq_len: int) -> Example:
    """Window, shift, and keep a target only where the token it predicts is answer text.

    A conversation's answers are many slices, one per assistant turn, so the F# slice_response_only
    (one slice at the end) becomes its general form: target t is kept where is_answer[t + 1].
    """
    window_start, kept = window(full_ids, seq_len)
    input_ids, target_ids = make_next_token_pairs(kept)
    target_is_answer = is_answer[window_start + 1 :]
    labels = [t if flag else IGNORE_INDEX for t, flag in zip(target_ids, target_is_answer)]
    if all(label == IGNORE_INDEX for label in labels):
        raise AnswerTooLong(f"no answer token is left after keeping the last {seq_len + 1} tokens")
    return Example(tuple(input_ids), tuple(labels))


# ---------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """A right-padded micro-batch, ready for the model."""

    input_ids: torch.Tensor  # [B, T] int64, pad_id after each row
    labels: torch.Tensor  # [B, T] int64, IGNORE_INDEX on prompt and padding
    segment_ids: torch.Tensor  # [B, T] int64, 0 = padding, else which example (1 unless packed): the attention mask
    position_ids: torch.Tensor  # [B, T] int64, 0.. per segment, padding clipped
    kl_positions: torch.Tensor  # [B, T] bool, True where KL(base || model) is added (--preserve-kl)
    dropout_seeds: tuple[int, ...] = ()  # one per row, set by the training loop: LoRA dropout's masks

    @property
    def answer_token_count(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    @property
    def real_token_count(self) -> int:
        return int((self.segment_ids > 0).sum())


def collate(examples: Sequence[Example], pad_id: int, dropout_seeds: Sequence[int] = ()) -> Batch:
    """Right-pad rows to the longest one; position ids = clip(cumsum(mask) - 1, min=0) unless packed."""
    if not examples:
        raise TrainerError("cannot collate an empty batch")
    length = max(len(e.input_ids) for e in examples)

    def pad(values: Sequence[int], fill: int) -> list[int]:
        return list(values) + [fill] * (length - len(values))

    input_ids = torch.tensor([pad(e.input_ids, pad_id) for e in examples], dtype=torch.long)
    labels = torch.tensor([pad(e.labels, IGNORE_INDEX) for e in examples], dtype=torch.long)
    segments = torch.tensor([pad(e.segments or (1,) * len(e.input_ids), 0) for e in examples], dtype=torch.long)
    positions = torch.tensor([pad(e.positions or range(len(e.input_ids)), 0) for e in examples], dtype=torch.long)
    kl_positions = torch.tensor([pad(e.kl_positions or (False,) * len(e.input_ids), False) for e in examples],
                                dtype=torch.bool)
    return Batch(input_ids, labels, segments, positions, kl_positions, tuple(dropout_seeds))


# ---------------------------------------------------------------------------
# Packing: several short examples in one row, none seeing another
# ---------------------------------------------------------------------------


def pack_examples(examples: Sequence[Example], seq_len: int) -> list[Example]:
    """Fill rows of at most seq_len positions with whole examples, in order (first fit).

    Each example keeps its own positions (0, 1, ...) and a segment number, so the model's
    block-diagonal causal mask stops attention across examples: the loss is the same as
    unpacked, with far less padding.
    """
    rows: list[list[Example]] = []
    for example in examples:
        if rows and sum(len(e.input_ids) for e in rows[-1]) + len(example.input_ids) <= seq_len:
            rows[-1].append(example)
        else:
            rows.append([example])
    return [join_segments(row) for row in rows]


def join_segments(row: Sequence[Example]) -> Example:
    """Concatenate examples into one packed Example with segments 1..k and restarting positions."""
    return Example(
        input_ids=tuple(i for e in row for i in e.input_ids),
        labels=tuple(label for e in row for label in e.labels),
        positions=tuple(p for e in row for p in range(len(e.input_ids))),
        segments=tuple(number for number, e in enumerate(row, start=1) for _ in e.input_ids),
        kl_positions=tuple(flag for e in row for flag in (e.kl_positions or (False,) * len(e.input_ids)))
        if any(e.kl_positions for e in row) else (),
    )
