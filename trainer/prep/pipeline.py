"""Preparing data files into OUT/: read, check, count, deduplicate, split, mix and write.

`prepare` streams every source CHUNK_ROWS rows at a time; the tokenizer counts one chunk in a
thread of its own (`one_ahead`) while this thread handles the chunk before and reads the next. A
kept row waits in the `Spool` file, not in memory, until the split and the mix decide its place.
Writes train.jsonl, val.jsonl, rejected.jsonl, report.json and recipe.json; no torch here (the
tokenizer comes in as a value).
"""

import hashlib
import json
import os
import shutil
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from ..errors import TrainerError
from ..paths import write_atomic, write_json
from ..text.chat_templates import INSTRUCT_2507
from ..text.readers import Conversation
from .prepare import (BatchCounter, Rejection, Row, TokenCount, answer_pieces, mix, prompt_key, read_rows, row_key,
                      split, to_json_row, token_counts)
from .report import TOKEN_KEYS, SourceTally, build_report, reason_kind
from .sources import SourceFormat

MAX_CONFLICT_EXAMPLES = 10
CHUNK_ROWS = 1024  # rows read, checked and token-counted together (one tokenizer call)
ROW_JSON = json.JSONEncoder(ensure_ascii=False)  # one encoder for a million rows (json.dumps with options makes one a call)


class Spool:
    """Kept rows wait here, one line each, until the split and the mix decide their order: a
    temporary file (deleted on close) holds `WHERE NUL JSON` lines, and a Row holds only where its
    line starts, so a million rows cost a few hundred MB of memory, not their text. (A file path
    never holds NUL; json.dumps escapes NUL and newlines in the text, and a newline in a path is
    written as \\n.)"""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="prepare-spool-")
        self.size = 0

    def add(self, key: bytes, source: str, where: str, line: str) -> Row:
        label = where.replace("\n", "\\n")  # one line per row, whatever the path holds
        data = f"{label}\0{line}\n".encode()
        self.file.write(data)
        self.size += len(data)
        return Row(key, source, self.size - len(data))

    def read(self, row: Row) -> tuple[str, dict]:
        """(where, the JSON row) of a kept row."""
        where, line = self.entry(row).decode().split("\0", 1)
        return where, json.loads(line)

    def entry(self, row: Row) -> bytes:
        self.file.seek(row.at)
        data = self.file.readline()
        self.file.seek(0, os.SEEK_END)
        return data

    def write_lines(self, path: Path, rows: list[Row]) -> None:
        """The rows' JSON lines, in this order, into `path` (atomically)."""
        write_atomic(path, partial(self.write_to, rows))

    def write_to(self, rows: list[Row], path: Path) -> None:
        with path.open("wb") as out:
            for row in rows:
                out.write(self.entry(row).split(b"\0", 1)[1])


def checked_chunks(rows: Iterable[Conversation | Rejection],
                   family: str = INSTRUCT_2507) -> Iterator[tuple[list, list[Conversation], list]]:
    """CHUNK_ROWS rows at a time: (every row as read, its usable conversations, their `rendered` pieces)."""
    for chunk in chunked(rows, CHUNK_ROWS):
        usable = [row for row in chunk if not isinstance(row, Rejection)]
        yield chunk, usable, rendered(usable, family)


def one_ahead(pool: Executor, work: Callable, items: Iterable) -> Iterator[tuple]:
    """(item, work(item)) for every item in order, work(next item) running in the pool while the
    caller handles this one (and this thread reads the item after that)."""
    pending = None
    for item in items:
        running = pool.submit(work, item)
        if pending is not None:
            yield pending[0], pending[1].result()
        pending = item, running
    if pending is not None:
        yield pending[0], pending[1].result()


def chunked(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rendered(conversations: list[Conversation], family: str = INSTRUCT_2507) -> list[list[tuple[str, str]] | str]:
    """Each conversation's answer_pieces in the model's chat family, or why the template cannot render it."""
    pieces: list[list[tuple[str, str]] | str] = []
    for conversation in conversations:
        try:
            pieces.append(answer_pieces(conversation, family))
        except Exception as error:  # a template that cannot render it
            pieces.append(f"the chat template cannot render it ({type(error).__name__}: {error})")
    return pieces


def measure(tokenizer: BatchCounter, pieces: list[list[tuple[str, str]] | str], seq_len: int) -> list[TokenCount | str]:
    """Each rendered conversation's TokenCount, or why it cannot be used (the template cannot
    render it, or its last answer alone is longer than seq_len); one tokenizer call for them all."""
    counts = iter(token_counts(tokenizer, [p for p in pieces if not isinstance(p, str)]))
    results = [p if isinstance(p, str) else next(counts) for p in pieces]
    return [f"the last answer alone has {r.last_answer} tokens, more than --seq-len {seq_len}"
            if isinstance(r, TokenCount) and r.last_answer > seq_len else r for r in results]


def prepare(out: Path, sources: dict[str, Path], formats: dict[str, SourceFormat], weights: dict[str, float],
            columns: dict[str, str], tokenizer: BatchCounter, options: dict, family: str = INSTRUCT_2507) -> dict:
    """Read every source, write OUT/, return the report. `options` are the command's settings
    (seq_len, min_val, val_ratio, seed, mix, total, ...), all of them saved in recipe.json."""
    spool, rejected, tallies, kept = Spool(), tempfile.TemporaryFile(prefix="prepare-rejected-"), {}, []
    seen: dict[bytes, str] = {}  # row key -> the source that kept it
    first_answer: dict[bytes, Row] = {}  # prompt key -> the first kept row with that prompt
    conflicts = {"count": 0, "examples": []}
    tokens = {name: {key: array("l") for key in TOKEN_KEYS} for name in sources}
    # the tokenizer counts one chunk in a thread of its own (it lets go of Python's lock and spreads
    # over the cores) while this thread checks the chunk before and reads the next
    def counted(checked: tuple) -> list[TokenCount | str]:
        _, _, pieces = checked
        return measure(tokenizer, pieces, options["seq_len"])

    with spool.file, rejected, ThreadPoolExecutor(max_workers=1) as counter:
        for name, path in sources.items():
            tally = tallies[name] = SourceTally(str(formats[name]))
            rows = tqdm(read_rows(path, columns, formats[name]), desc=name, unit=" rows", disable=None)
            for (chunk, usable, _), counts in one_ahead(counter, counted, checked_chunks(rows, family)):
                tally.read += len(chunk)
                for item in chunk:
                    if isinstance(item, Rejection):
                        reject(tally, rejected, item, name)
                for conversation, count in zip(usable, counts):
                    if isinstance(count, str):
                        line = ROW_JSON.encode(to_json_row(conversation, name))
                        reject(tally, rejected, Rejection(conversation.source, count, line), name)
                        continue
                    row = keep(conversation, name, tally, seen, spool)
                    if row is None:
                        continue
                    kept.append(row)
                    for key in TOKEN_KEYS:
                        tokens[name][key].append(getattr(count, key))
                    note_conflict(conversation, row, first_answer, conflicts, spool)
        if len(kept) <= options["min_val"]:
            raise TrainerError(f"only {len(kept)} unique rows are usable ({sum(t.rejected.total() for t in tallies.values())} "
                               f"rejected): too few for --min-val {options['min_val']} and a train split; lower --min-val")
        train, val = split(kept, options["val_ratio"], options["min_val"], options["seed"])
        by_source = {name: [row for row in train if row.source == name] for name in sources}
        mixed, repeats = mix(by_source, weights, options["mix"], options["total"], options["seed"])
        out.mkdir(parents=True, exist_ok=True)
        spool.write_lines(out / "train.jsonl", mixed)
        spool.write_lines(out / "val.jsonl", val)
        write_atomic(out / "rejected.jsonl", partial(copy_from_start, rejected))
    report = build_report(sources, tallies, mixed, val, repeats, tokens, conflicts, options["seq_len"]) | \
        {"chat_format": family}
    write_json(out / "report.json", report)
    write_recipe(out / "recipe.json", sources, options)
    return report


def write_recipe(path: Path, sources: dict[str, Path], options: dict) -> None:
    """Every setting, and the size and sha256 of every input: what it takes to prepare the same data again."""
    recipe = {key: (list(value) if isinstance(value, tuple) else value) for key, value in options.items()}
    write_json(path, recipe | {"inputs": {name: {"path": str(source), "bytes": source.stat().st_size,
                                                 "sha256": sha256_of(source)}
                                          for name, source in sources.items()}})


def copy_from_start(source: BinaryIO, path: Path) -> None:
    source.seek(0)
    with path.open("wb") as target:
        shutil.copyfileobj(source, target)


def reject(tally: SourceTally, rejected: BinaryIO, rejection: Rejection, name: str) -> None:
    tally.rejected[reason_kind(rejection.reason)] += 1
    rejected.write((json.dumps(rejection.as_json(name), ensure_ascii=False) + "\n").encode())


def keep(conversation: Conversation, name: str, tally: SourceTally, seen: dict[bytes, str], spool: Spool) -> Row | None:
    """The conversation spooled as a kept Row, or None (counted) when an earlier row has its key."""
    key = row_key(conversation)
    if key in seen:
        if seen[key] == name:
            tally.duplicates_within += 1
        else:
            tally.duplicates_across += 1
        return None
    seen[key] = name
    tally.kept += 1
    return spool.add(key, name, conversation.source, ROW_JSON.encode(to_json_row(conversation, name)))


def note_conflict(conversation: Conversation, row: Row, first_answer: dict[bytes, Row], conflicts: dict,
                  spool: Spool) -> None:
    """Count a kept row whose prompt an earlier kept row already answered differently (a few as examples)."""
    asked = prompt_key(conversation)
    first = first_answer.setdefault(asked, row)
    if first is row:
        return
    conflicts["count"] += 1
    if len(conflicts["examples"]) < MAX_CONFLICT_EXAMPLES:
        where, line = spool.read(first)
        answers = [line["messages"][-1].get("content") or "", conversation.messages[-1].get("content") or ""]
        conflicts["examples"].append({"first": where, "then": conversation.source, "answers": [a[:200] for a in answers]})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
