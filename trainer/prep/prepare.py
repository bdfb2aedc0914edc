"""Preparing a user's data, as pure functions: normalise, check, deduplicate, split, mix.

The pipeline (trainer/prep/pipeline.py, run by `scripts/prepare_data.py`) reads the files, feeds
these functions and writes what they return; nothing here touches a file or a random state it was
not given.

- `normalise`: Unicode NFC, control characters other than newline and tab removed, each turn
  trimmed.
- `problem_with`: why a conversation cannot be trained on (role order, empty turns, chat markup
  typed into the text), or None.
- `answer_pieces` and `token_counts`: a conversation as training tokenizes it, counted for a
  whole chunk of rows in one tokenizer call.
- `row_key`: the deduplication hash of the normalised messages and tools; `prompt_key` the same
  for every turn before the last answer, which finds conflicts (one prompt, two answers).
- `val_score`: where a row falls in [0, 1), from its key and the seed alone, so a row's side of
  the split never depends on the other rows: adding a source never moves a val row into train.
- `mix`: the train rows of every source, concatenated, interleaved by weight, or resampled to an
  exact count per source.
"""

import hashlib
import hmac
import json
import random
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import TrainerError
from ..text.chat import answer_spans, reasoning_parts, render_chat
from ..text.chat_templates import INSTRUCT_2507
from ..text.readers import Conversation
from ..text.tokenizer import QWEN3_SPECIAL_TOKENS
from .sources import SourceFormat, detect_format, stream_records, to_conversation

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but \t (09) and \n (0a)
CHAT_MARKUP = tuple(token for token in QWEN3_SPECIAL_TOKENS if token.startswith("<|"))
ANY_CHAT_MARKUP = re.compile("|".join(map(re.escape, CHAT_MARKUP)))  # one scan of a text for all of them
MIX_MODES = ("concat", "interleave", "resample")


@dataclass(frozen=True, slots=True)
class Row:
    """A kept row as the split and the mix see it: a few fields, not the conversation, so that a
    million of them fit in memory; its text waits in the pipeline's spool file."""

    key: bytes  # row_key: the deduplication hash
    source: str  # the --source NAME it came from
    at: int  # where its line starts in the spool file


class BatchCounter(Protocol):
    """What token counting needs from a tokenizer (trainer.text.tokenizer.Tokenizer has it)."""

    def count_tokens(self, texts: list[str]) -> list[int]: ...


def normalise_text(text: str) -> str:
    return CONTROL_CHARACTERS.sub("", unicodedata.normalize("NFC", text)).strip()


def normalise(conversation: Conversation) -> Conversation:
    """Every turn's text in NFC, without control characters (newline and tab stay), trimmed."""
    messages = tuple(message | ({"content": normalise_text(message["content"])}
                                if isinstance(message.get("content"), str) else {})
                     for message in conversation.messages)
    return Conversation(messages, tools=conversation.tools, id=conversation.id, tags=conversation.tags,
                        source=conversation.source)  # not dataclasses.replace: a million calls of it cost seconds


def problem_with(conversation: Conversation) -> str | None:
    """Why this conversation cannot be trained on, or None.

    Order: an optional system turn first, then a user turn; an assistant answers a user or a tool;
    a tool answers an assistant's tool call (or another tool); a user follows an assistant; the
    last turn is the assistant's answer. No turn is empty (an assistant turn may hold only tool
    calls), and no text holds the chat markup (<|im_start|> and the like) the template adds itself.
    """
    messages = conversation.messages
    for index, message in enumerate(messages):
        content = message.get("content") or ""
        if ANY_CHAT_MARKUP.search(content):
            marker = next(m for m in CHAT_MARKUP if m in content)
            return f"message {index} contains the special token {marker}"
        if not content and not (message["role"] == "assistant" and message.get("tool_calls")):
            return f"message {index} ({message['role']}) is empty"
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        return f"a system turn at position {roles.index('system', 1)}: only the first turn may be the system's"
    turns = roles[1:] if roles[0] == "system" else roles
    allowed_after = {None: {"user"}, "user": {"assistant"}, "assistant": {"user", "tool"}, "tool": {"assistant", "tool"}}
    for previous, role in zip([None, *turns], turns):
        if role not in allowed_after[previous]:
            return f"a {role} turn after {'the start' if previous is None else 'a ' + previous + ' turn'}"
    if turns[-1] != "assistant":
        return "the conversation does not end with an assistant answer"
    return None


@dataclass(frozen=True)
class TokenCount:
    """Tokens of one conversation as the chat template renders it (up to its last answer)."""

    total: int
    answer: int  # tokens of every assistant turn (the ones trained on)
    last_answer: int  # tokens of the final answer, which must fit in --seq-len
    reasoning: int = 0  # reasoning tokens inside the answers (trained)
    reasoning_dropped: int = 0  # reasoning tokens the chat template drops (earlier turns' thinking)


PROMPT, ANSWER, REASONING, DROPPED = "prompt", "answer", "reasoning", "dropped"  # kinds of piece


def answer_pieces(conversation: Conversation, family: str = INSTRUCT_2507) -> list[tuple[str, str]]:
    """The conversation rendered in `family` up to its last answer, cut at every answer's borders into
    (text, PROMPT or ANSWER) pieces, the pieces trainer.text.data.encode_segments tokenizes one by
    one; then its reasoning, as (text, REASONING) where trained and (text, DROPPED) where the
    template drops it, counted apart."""
    tools = list(conversation.tools) if conversation.tools else None
    spans = answer_spans(conversation.messages, tools, family)
    text = render_chat(list(conversation.messages), tools=tools, family=family)[: spans[-1][1]]
    pieces, cursor = [], 0
    for start, end in spans:
        pieces += [(text[cursor:start], PROMPT), (text[start:end], ANSWER)]
        cursor = end
    trained, dropped = reasoning_parts(conversation.messages, family)
    return [piece for piece in pieces if piece[0]] + [(r, REASONING) for r in trained] + [(r, DROPPED) for r in dropped]


def token_counts(tokenizer: BatchCounter, rows: Sequence[list[tuple[str, str]]]) -> list[TokenCount]:
    """The TokenCount of every row's answer_pieces, from one tokenizer call for all of them (the
    tokenizer spreads a batch over the cores)."""
    lengths = iter(tokenizer.count_tokens([piece for pieces in rows for piece, _ in pieces]))
    counts = []
    for pieces in rows:
        sizes = [(next(lengths), kind) for _, kind in pieces]
        of = lambda wanted: [n for n, kind in sizes if kind == wanted]  # noqa: E731
        answers = of(ANSWER)
        counts.append(TokenCount(sum(of(PROMPT)) + sum(answers), sum(answers), answers[-1], sum(of(REASONING)),
                                 sum(of(DROPPED))))
    return counts


@dataclass(frozen=True)
class Rejection:
    """A row that cannot be used: where it is, why, and its text as read."""

    where: str
    reason: str
    raw: str

    def as_json(self, source: str) -> dict:
        return {"source": source, "where": self.where, "reason": self.reason, "raw": self.raw}


def read_rows(path: Path, columns: dict[str, str] | None = None,
              source_format: SourceFormat | None = None) -> Iterator[Conversation | Rejection]:
    """Every record of a data file, in any format of trainer.prep.sources (detected unless given): a
    normalised conversation that passes `problem_with`, or the Rejection that says why not
    (streamed, one record at a time)."""
    source_format = source_format or detect_format(path)
    for record in stream_records(path, source_format, columns):
        if record.row is None:
            yield Rejection(record.where, record.problem or "unreadable", record.raw)
            continue
        try:
            conversation = normalise(to_conversation(record.row, source_format.schema, record.where))
        except TrainerError as error:
            yield Rejection(record.where, str(error).removeprefix(f"{record.where}: "), record.raw)
            continue
        problem = problem_with(conversation)
        yield conversation if problem is None else Rejection(record.where, problem, record.raw)


def read_usable_rows(path: Path, strict: bool) -> tuple[list[Conversation], list[Rejection]]:
    """(usable rows, rejections) of a data file; strict: the first rejection is a TrainerError
    that starts with its FILE:LINE."""
    usable, rejected = [], []
    for row in read_rows(path):
        if isinstance(row, Rejection):
            if strict:
                raise TrainerError(f"{row.where}: {row.reason}")
            rejected.append(row)
        else:
            usable.append(row)
    return usable, rejected


CANONICAL_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))  # json.dumps would make one a call


def canonical(value) -> str:
    return CANONICAL_JSON.encode(value)


def row_key(conversation: Conversation) -> bytes:
    """sha256 of the normalised messages and tools, as 32 bytes: the same conversation, the same key."""
    return hashlib.sha256(canonical([list(conversation.messages), conversation.tools]).encode()).digest()


def prompt_key(conversation: Conversation) -> bytes:
    """sha256 of everything before the last answer (and the tools), as 32 bytes (half the memory
    of hex, for the one entry per kept row that conflict finding holds)."""
    return hashlib.sha256(canonical([list(conversation.messages[:-1]), conversation.tools]).encode()).digest()


def val_score(key: bytes, seed: int) -> float:
    """A number in [0, 1) fixed by the row's key and the seed (HMAC-SHA256 of the key's hex digits,
    the seed as its key: the same scores, so the same splits, as when keys were kept as hex)."""
    digest = hmac.digest(str(seed).encode(), key.hex().encode(), "sha256")
    return int.from_bytes(digest[:8], "big") / 2**64


def split(rows: Sequence[Row], val_ratio: float, min_val: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, val): val holds the rows whose score is under val_ratio, topped up to min_val with
    the lowest-scoring train rows; both keep the input order."""
    scores = [val_score(row.key, seed) for row in rows]
    val = {i for i, score in enumerate(scores) if score < val_ratio}
    if len(val) < min_val:
        rest = sorted((i for i in range(len(rows)) if i not in val), key=lambda i: scores[i])
        val |= set(rest[:min_val - len(val)])
    return [r for i, r in enumerate(rows) if i not in val], [r for i, r in enumerate(rows) if i in val]


def normalised_weights(names: Sequence[str], weights: dict[str, float]) -> dict[str, float]:
    """Shares that sum to 1; missing weights count 1 when any is given, and all zero means equal."""
    given = {name: weights.get(name, 1.0 if not weights else 0.0) for name in names}
    total = sum(given.values())
    return {name: (value / total if total else 1 / len(names)) for name, value in given.items()}


def mix(train: dict[str, list[Row]], weights: dict[str, float], mode: str, total: int | None,
        seed: int) -> tuple[list[Row], dict[str, int]]:
    """(train rows in order, repeats per source).

    concat: every source in turn. interleave: each source shuffled (seeded), then the next row
    taken from a source drawn with probability proportional to its weight, among the sources not
    yet used up, until every row is used once. resample: exactly round(share x total) rows per
    source: a random subset without repeats when the source is large enough, otherwise all of its
    rows and then random repeats.
    """
    rng = random.Random(seed)
    repeats = dict.fromkeys(train, 0)
    if mode == "concat":
        return [row for rows in train.values() for row in rows], repeats
    shares = normalised_weights(list(train), weights)
    if mode == "interleave":
        queues = {name: rng.sample(rows, len(rows)) for name, rows in train.items()}
        mixed = []
        while live := [name for name, queue in queues.items() if queue]:
            chances = [shares[name] or 1e-12 for name in live]
            mixed.append(queues[rng.choices(live, chances)[0]].pop())
        return mixed, repeats
    mixed = []
    for name, rows in train.items():
        wanted = round(shares[name] * (total or 0))
        if not rows or not wanted:
            continue
        if wanted <= len(rows):
            mixed += rng.sample(rows, wanted)
        else:
            extra = [rng.choice(rows) for _ in range(wanted - len(rows))]
            repeats[name] = len(extra)
            mixed += rows + extra
    rng.shuffle(mixed)
    return mixed, repeats


def to_json_row(conversation: Conversation, source: str) -> dict:
    """A line of train.jsonl / val.jsonl: the guide's schema plus source and tags."""
    line = {"messages": list(conversation.messages)}
    if conversation.tools:
        line["tools"] = list(conversation.tools)
    if conversation.id is not None:
        line["id"] = conversation.id
    return line | {"tags": list(conversation.tags), "source": source}
