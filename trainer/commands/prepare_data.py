"""Prepare your own data: read sources in common formats, check, deduplicate, split, mix, report.

    python scripts/prepare_data.py data/prepared --source chat=chat.jsonl --source faq=faq.csv \\
        --weight chat=3 --weight faq=1 --mix interleave

Writes OUT/train.jsonl and OUT/val.jsonl (the guide's schema plus source and tags),
OUT/rejected.jsonl (every row that could not be used, with its file, line, reason and raw text),
OUT/report.json (also printed) and OUT/recipe.json (every setting, and the size and sha256 of
every input). For every source, rows read = rejected + duplicates + kept.
"""

import hashlib
import json
import os
import re
import shutil
import tempfile
import tomllib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import click
from click.core import ParameterSource
from tqdm import tqdm

from ..cli import AT_LEAST_ONE, ZERO_OR_MORE, user_errors_as_messages
from ..errors import TrainerError
from ..paths import write_atomic
from ..prep.prepare import (MIX_MODES, Rejection, Row, TokenCount, answer_pieces, mix, prompt_key, read_rows, row_key,
                            split, to_json_row, token_counts)
from ..prep.sources import detect_format
from ..text.readers import Conversation
from ..text.tokenizer import Tokenizer, load_tokenizer

MAX_CONFLICT_EXAMPLES = 10
CHUNK_ROWS = 1024  # rows read, checked and token-counted together (one tokenizer call)
ROW_JSON = json.JSONEncoder(ensure_ascii=False)  # one encoder for a million rows (json.dumps with options makes one a call)


@dataclass
class SourceTally:
    """What happened to the rows of one source."""

    format: str
    read: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> rows
    duplicates_within: int = 0
    duplicates_across: int = 0
    kept: int = 0


def parse_pairs(values: tuple[str, ...], option: str, what: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise click.BadParameter(f"{value!r}: expected {what}", param_hint=f"'{option}'")
        if name in pairs:
            raise click.BadParameter(f"{name!r} is given twice", param_hint=f"'{option}'")
        pairs[name] = rest
    return pairs


def from_recipe(ctx: click.Context, recipe: Path | None, options: dict) -> dict:
    """Options left at their defaults on the command line take the recipe's values."""
    if recipe is None:
        return options
    try:
        table = tomllib.loads(recipe.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise TrainerError(f"{recipe}: not a readable TOML recipe ({error})") from None
    unknown = set(table) - {"sources", "weights", "mix", "total", "val_ratio", "min_val", "seed", "model", "seq_len", "columns"}
    if unknown:
        raise TrainerError(f"{recipe}: unknown settings {sorted(unknown)}")
    given = dict(options)
    for key, value in table.items():
        if ctx.get_parameter_source(key) == ParameterSource.DEFAULT:
            if key in ("sources", "weights"):
                value = tuple(f"{name}={item}" for name, item in value.items())
            elif key == "columns":
                value = ",".join(f"{name}={item}" for name, item in value.items())
            given[key] = value
    return given


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def percentile(values: list[int], share: float) -> int:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] if values else 0


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


def checked_chunks(rows: Iterable[Conversation | Rejection]) -> Iterator[tuple[list, list[Conversation], list]]:
    """CHUNK_ROWS rows at a time: (every row as read, its usable conversations, their `rendered` pieces)."""
    for chunk in chunked(rows, CHUNK_ROWS):
        usable = [row for row in chunk if not isinstance(row, Rejection)]
        yield chunk, usable, rendered(usable)


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


def rendered(conversations: list[Conversation]) -> list[list[tuple[str, bool]] | str]:
    """Each conversation's answer_pieces, or why the chat template cannot render it."""
    pieces: list[list[tuple[str, bool]] | str] = []
    for conversation in conversations:
        try:
            pieces.append(answer_pieces(conversation))
        except Exception as error:  # a template that cannot render it
            pieces.append(f"the chat template cannot render it ({type(error).__name__}: {error})")
    return pieces


def measure(tokenizer, pieces: list[list[tuple[str, bool]] | str], seq_len: int) -> list[TokenCount | str]:
    """Each rendered conversation's TokenCount, or why it cannot be used (the template cannot
    render it, or its last answer alone is longer than seq_len); one tokenizer call for them all."""
    counts = iter(token_counts(tokenizer, [p for p in pieces if not isinstance(p, str)]))
    results = [p if isinstance(p, str) else next(counts) for p in pieces]
    return [f"the last answer alone has {r.last_answer} tokens, more than --seq-len {seq_len}"
            if isinstance(r, TokenCount) and r.last_answer > seq_len else r for r in results]


@click.command(context_settings={"show_default": True})
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", "sources", multiple=True, metavar="NAME=PATH",
              help="A data file and the name its rows carry (repeat for more sources; the first named wins duplicates).")
@click.option("--weight", "weights", multiple=True, metavar="NAME=W", help="A source's share when mixing (default: equal).")
@click.option("--mix", type=click.Choice(MIX_MODES), default="concat",
              help="concat: one source after another; interleave: drawn by weight until all are used; "
                   "resample: exactly round(share x --total) train rows per source.")
@click.option("--total", type=AT_LEAST_ONE, default=None, help="Train rows in all (with --mix resample).")
@click.option("--val-ratio", type=click.FloatRange(0, 1, max_open=True), default=0.02, help="Share of unique rows for validation.")
@click.option("--min-val", type=ZERO_OR_MORE, default=100, help="At least this many validation rows.")
@click.option("--seed", type=int, default=42, help="Seed of the split and of the mixing.")
@click.option("--model", default="tiny", help="Whose tokenizer and chat template count the tokens: tiny or a model folder.")
@click.option("--seq-len", type=click.IntRange(min=2), default=1024, help="Rows whose last answer alone is longer are rejected.")
@click.option("--columns", default=None, metavar="prompt=COL,target=COL", help="CSV/Parquet column names of prompt and target.")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A TOML file with the same settings ([sources], [weights], mix, total, ...); the command line wins.")
@click.pass_context
@user_errors_as_messages
def main(ctx: click.Context, out: Path, recipe: Path | None, **options) -> None:
    options = from_recipe(ctx, recipe, options)
    sources = {name: Path(path) for name, path in parse_pairs(options["sources"], "--source", "NAME=PATH").items()}
    if not sources:
        raise click.UsageError("give at least one --source NAME=PATH (or a --recipe with [sources])")
    weights = {}
    for name, value in parse_pairs(options["weights"], "--weight", "NAME=W").items():
        if name not in sources:
            raise click.BadParameter(f"{name!r} is not a --source", param_hint="'--weight'")
        try:
            weights[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{name}={value}: W must be a number", param_hint="'--weight'") from None
        if weights[name] < 0:
            raise click.BadParameter(f"{name}={value}: a weight cannot be negative", param_hint="'--weight'")
    if (options["mix"] == "resample") != (options["total"] is not None):
        raise click.UsageError("--total goes with --mix resample, and --mix resample needs --total")
    columns = parse_pairs(tuple(options["columns"].split(",")), "--columns", "prompt=COL,target=COL") \
        if options["columns"] else {}
    formats = {name: detect_format(path) for name, path in sources.items()}  # a missing file is one line here
    tokenizer = tokenizer_for(options["model"])
    report = prepare(out, sources, formats, weights, columns, tokenizer, options)
    click.echo(report_table(report))


def tokenizer_for(model: str) -> Tokenizer:
    """The chosen model's tokenizer: "tiny" is the offline Qwen3 one (no weights, no torch); a
    folder or Hub id is found, or downloaded, the way training finds it."""
    if model == "tiny":
        return load_tokenizer("tiny")
    from ..job.loading import resolve_model  # here: torch comes in only for a real model's folder or id

    return load_tokenizer(resolve_model(model))


def prepare(out: Path, sources: dict[str, Path], formats: dict, weights: dict[str, float], columns: dict[str, str],
            tokenizer, options: dict) -> dict:
    """Read every source, write OUT/, return the report."""
    spool, rejected, tallies, kept = Spool(), tempfile.TemporaryFile(prefix="prepare-rejected-"), {}, []
    seen: dict[bytes, str] = {}  # row key -> the source that kept it
    first_answer: dict[bytes, Row] = {}  # prompt key -> the first kept row with that prompt
    conflicts = {"count": 0, "examples": []}
    tokens = {name: {"total": array("l"), "answer": array("l")} for name in sources}
    # the tokenizer counts one chunk in a thread of its own (it lets go of Python's lock and spreads
    # over the cores) while this thread checks the chunk before and reads the next
    def counted(checked: tuple) -> list[TokenCount | str]:
        _, _, pieces = checked
        return measure(tokenizer, pieces, options["seq_len"])

    with spool.file, rejected, ThreadPoolExecutor(max_workers=1) as counter:
        for name, path in sources.items():
            tally = tallies[name] = SourceTally(str(formats[name]))
            rows = tqdm(read_rows(path, columns, formats[name]), desc=name, unit=" rows", disable=None)
            for (chunk, usable, _), counts in one_ahead(counter, counted, checked_chunks(rows)):
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
                    tokens[name]["total"].append(count.total)
                    tokens[name]["answer"].append(count.answer)
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
    report = build_report(sources, tallies, mixed, val, repeats, tokens, conflicts, options)
    write_json(out / "report.json", report)
    recipe = {key: (list(value) if isinstance(value, tuple) else value) for key, value in options.items()}
    write_json(out / "recipe.json", recipe | {"inputs": {name: {"path": str(path), "bytes": path.stat().st_size,
                                                                 "sha256": sha256_of(path)}
                                                          for name, path in sources.items()}})
    return report


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


def reason_kind(reason: str) -> str:
    """The reason without row-specific details (numbers, quoted values), for the per-reason counts."""
    return re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "N", reason)[:120]


def write_json(path: Path, content: dict) -> None:
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def token_stats(totals: Sequence[int], answers: Sequence[int], seq_len: int) -> dict:
    """Tokens per row as the chat template renders it: p50, p95, max, answer share, rows over seq_len."""
    return {"rows": len(totals), "p50": percentile(totals, 0.5), "p95": percentile(totals, 0.95),
            "max": max(totals, default=0), "answer_share": round(sum(answers) / max(1, sum(totals)), 4),
            "over_seq_len": sum(t > seq_len for t in totals)}


def build_report(sources, tallies, mixed, val, repeats, tokens, conflicts, options) -> dict:
    per_source = {}
    for name in sources:
        tally = tallies[name]
        in_train = sum(row.source == name for row in mixed)
        in_val = sum(row.source == name for row in val)
        unique_train = tally.kept - in_val
        per_source[name] = {
            "format": tally.format, "read": tally.read, "rejected": tally.rejected.total(),
            "duplicates": tally.duplicates_within + tally.duplicates_across, "kept": tally.kept,
            "train": in_train, "val": in_val, "repeats": repeats[name],
            "unused": max(0, unique_train - (in_train - repeats[name])),
            "duplicates_within": tally.duplicates_within, "duplicates_across": tally.duplicates_across,
            "rejected_by_reason": dict(tally.rejected.most_common()),
            "tokens": token_stats(tokens[name]["total"], tokens[name]["answer"], options["seq_len"]),
        }
    every_total = [n for name in sources for n in tokens[name]["total"]]
    every_answer = [n for name in sources for n in tokens[name]["answer"]]
    return {
        "sources": per_source,
        "train": len(mixed), "val": len(val),
        "conflicts": conflicts,
        "tokens": token_stats(every_total, every_answer, options["seq_len"]),
    }


def report_table(report: dict) -> str:
    """Rows per source (read = rejected + duplicates + kept), then tokens per kept row per source."""
    keys = ("read", "rejected", "duplicates", "kept", "train", "val", "repeats", "unused")
    lines = [f"{'source':<16} {'format':<22}" + "".join(f"{key:>11}" for key in keys)]
    for name, row in report["sources"].items():
        lines.append(f"{name:<16} {row['format']:<22}" + "".join(f"{row[key]:>11}" for key in keys))
    lines.append(f"train {report['train']} rows, val {report['val']} rows; conflicts (one prompt, two answers, kept): "
                 f"{report['conflicts']['count']}")
    token_keys = ("p50", "p95", "max", "answer_share", "over_seq_len")
    lines.append(f"{'tokens per row':<39}" + "".join(f"{key:>13}" for key in token_keys))
    for name, tokens in [*((name, row["tokens"]) for name, row in report["sources"].items()), ("all", report["tokens"])]:
        values = [f"{tokens[key]:.1%}" if key == "answer_share" else tokens[key] for key in token_keys]
        lines.append(f"{name:<39}" + "".join(f"{value:>13}" for value in values))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
