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
import re
import statistics
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click
from click.core import ParameterSource
from tqdm import tqdm

from ..cli import AT_LEAST_ONE, ZERO_OR_MORE, user_errors_as_messages
from ..errors import TrainerError
from ..loading import resolve_model
from ..prepare import MIX_MODES, Rejection, Row, mix, prompt_key, read_rows, row_key, split, to_json_row, token_count
from ..sources import detect_format
from ..tokenizer import load_tokenizer
from ..weights import write_atomic

MAX_CONFLICT_EXAMPLES = 10


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


def write_jsonl(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def percentile(values: list[int], share: float) -> int:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] if values else 0


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
    tokenizer = load_tokenizer(resolve_model(options["model"]) if options["model"] != "tiny" else "tiny")
    report = prepare(out, sources, formats, weights, columns, tokenizer, options)
    click.echo(report_table(report))


def prepare(out: Path, sources: dict[str, Path], formats: dict, weights: dict[str, float], columns: dict[str, str],
            tokenizer, options: dict) -> dict:
    """Read every source, write OUT/, return the report."""
    seq_len, tallies, kept, rejected = options["seq_len"], {}, [], []
    seen: dict[str, str] = {}  # row key -> the source that kept it
    answers: dict[str, tuple[str, str, str]] = {}  # prompt key -> (row key, where, last answer)
    conflicts, counts = [], {}
    for name, path in sources.items():
        tally = tallies[name] = SourceTally(str(formats[name]))
        for item in tqdm(read_rows(path, columns, formats[name]), desc=name, unit=" rows", disable=None):
            tally.read += 1
            if isinstance(item, Rejection):
                tally.rejected[reason_kind(item.reason)] += 1
                rejected.append(item.as_json(name))
                continue
            conversation, problem = item, None
            try:
                count = token_count(tokenizer, conversation)
            except Exception as error:  # a template that cannot render it
                problem = f"the chat template cannot render it ({type(error).__name__}: {error})"
            else:
                if count.last_answer > seq_len:
                    problem = f"the last answer alone has {count.last_answer} tokens, more than --seq-len {seq_len}"
            if problem is not None:
                tally.rejected[reason_kind(problem)] += 1
                rejected.append(Rejection(conversation.source, problem, json.dumps(to_json_row(
                    Row(conversation, name, conversation.source, "")), ensure_ascii=False)).as_json(name))
                continue
            key = row_key(conversation)
            if key in seen:
                if seen[key] == name:
                    tally.duplicates_within += 1
                else:
                    tally.duplicates_across += 1
                continue
            seen[key] = name
            tally.kept += 1
            counts[key] = count
            row = Row(conversation, name, conversation.source, key)
            kept.append(row)
            asked = prompt_key(conversation)
            answer = conversation.messages[-1].get("content") or ""
            if asked in answers and answers[asked][0] != key:
                if len(conflicts) < MAX_CONFLICT_EXAMPLES:
                    conflicts.append({"first": answers[asked][1], "then": conversation.source,
                                      "answers": [answers[asked][2][:200], answer[:200]]})
            answers.setdefault(asked, (key, conversation.source, answer))
    conflict_total = sum(1 for row in kept if answers[prompt_key(row.conversation)][0] != row.key)
    val_ratio, min_val, seed = options["val_ratio"], options["min_val"], options["seed"]
    if len(kept) <= min_val:
        raise TrainerError(f"only {len(kept)} unique rows are usable ({len(rejected)} rejected): too few for "
                           f"--min-val {min_val} and a train split; lower --min-val")
    train, val = split(kept, val_ratio, min_val, seed)
    by_source = {name: [row for row in train if row.source == name] for name in sources}
    mixed, repeats = mix(by_source, weights, options["mix"], options["total"], seed)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", [to_json_row(row) for row in mixed])
    write_jsonl(out / "val.jsonl", [to_json_row(row) for row in val])
    write_jsonl(out / "rejected.jsonl", rejected)
    report = build_report(sources, tallies, mixed, val, repeats, counts, conflicts, conflict_total, options)
    write_json(out / "report.json", report)
    recipe = {key: (list(value) if isinstance(value, tuple) else value) for key, value in options.items()}
    write_json(out / "recipe.json", recipe | {"inputs": {name: {"path": str(path), "bytes": path.stat().st_size,
                                                                 "sha256": sha256_of(path)}
                                                          for name, path in sources.items()}})
    return report


def reason_kind(reason: str) -> str:
    """The reason without row-specific details (numbers, quoted values), for the per-reason counts."""
    return re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "N", reason)[:120]


def write_json(path: Path, content: dict) -> None:
    text = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def build_report(sources, tallies, mixed, val, repeats, counts, conflicts, conflict_total, options) -> dict:
    unused = {name: 0 for name in sources}
    per_source = {}
    for name in sources:
        tally = tallies[name]
        in_train = sum(row.source == name for row in mixed)
        in_val = sum(row.source == name for row in val)
        unique_train = tally.kept - in_val
        unused[name] = max(0, unique_train - (in_train - repeats[name]))
        per_source[name] = {
            "format": tally.format, "read": tally.read, "rejected": sum(tally.rejected.values()),
            "duplicates": tally.duplicates_within + tally.duplicates_across, "kept": tally.kept,
            "train": in_train, "val": in_val, "repeats": repeats[name], "unused": unused[name],
            "duplicates_within": tally.duplicates_within, "duplicates_across": tally.duplicates_across,
            "rejected_by_reason": dict(tally.rejected.most_common()),
        }
    totals = [c.total for c in counts.values()]
    answers = sum(c.answer for c in counts.values())
    return {
        "sources": per_source,
        "train": len(mixed), "val": len(val),
        "conflicts": {"count": conflict_total, "examples": conflicts},
        "tokens": {"p50": int(statistics.median(totals)) if totals else 0, "p95": percentile(totals, 0.95),
                   "max": max(totals, default=0), "answer_share": round(answers / max(1, sum(totals)), 4),
                   "over_seq_len": sum(t > options["seq_len"] for t in totals)},
    }


def report_table(report: dict) -> str:
    keys = ("read", "rejected", "duplicates", "kept", "train", "val", "repeats", "unused")
    lines = [f"{'source':<16} {'format':<22}" + "".join(f"{key:>11}" for key in keys)]
    for name, row in report["sources"].items():
        lines.append(f"{name:<16} {row['format']:<22}" + "".join(f"{row[key]:>11}" for key in keys))
    tokens = report["tokens"]
    lines.append(f"train {report['train']} rows, val {report['val']} rows; conflicts (one prompt, two answers, kept): "
                 f"{report['conflicts']['count']}; tokens per row p50 {tokens['p50']}, p95 {tokens['p95']}, "
                 f"max {tokens['max']}; answer share {tokens['answer_share']:.1%}; over --seq-len {tokens['over_seq_len']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
