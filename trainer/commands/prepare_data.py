"""Prepare your own data: read sources in common formats, check, deduplicate, split, mix, report.

    python scripts/prepare_data.py data/prepared --source chat=chat.jsonl --source faq=faq.csv \\
        --weight chat=3 --weight faq=1 --mix interleave

Writes OUT/train.jsonl and OUT/val.jsonl (the guide's schema plus source and tags),
OUT/rejected.jsonl (every row that could not be used, with its file, line, reason and raw text),
OUT/report.json (also printed) and OUT/recipe.json (every setting, and the size and sha256 of
every input). For every source, rows read = rejected + duplicates + kept.

This module reads the options (and a --recipe); trainer/prep/pipeline.py prepares the data and
trainer/prep/report.py builds the report and its table.
"""

import tomllib
from pathlib import Path

import click
from click.core import ParameterSource

from ..cli import AT_LEAST_ONE, ZERO_OR_MORE, user_errors_as_messages
from ..errors import TrainerError
from ..prep.pipeline import prepare
from ..prep.prepare import MIX_MODES
from ..prep.report import report_table
from ..prep.sources import detect_format
from ..job.template_check import folder_family
from ..text.chat_templates import INSTRUCT_2507
from ..text.tokenizer import Tokenizer, load_tokenizer


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


def parse_weights(values: tuple[str, ...], sources: dict[str, Path]) -> dict[str, float]:
    """Each --weight NAME=W as a number; NAME must be a --source and W not negative."""
    weights = {}
    for name, value in parse_pairs(values, "--weight", "NAME=W").items():
        if name not in sources:
            raise click.BadParameter(f"{name!r} is not a --source", param_hint="'--weight'")
        try:
            weights[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{name}={value}: W must be a number", param_hint="'--weight'") from None
        if weights[name] < 0:
            raise click.BadParameter(f"{name}={value}: a weight cannot be negative", param_hint="'--weight'")
    return weights


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
    weights = parse_weights(options["weights"], sources)
    if (options["mix"] == "resample") != (options["total"] is not None):
        raise click.UsageError("--total goes with --mix resample, and --mix resample needs --total")
    columns = parse_pairs(tuple(options["columns"].split(",")), "--columns", "prompt=COL,target=COL") \
        if options["columns"] else {}
    formats = {name: detect_format(path) for name, path in sources.items()}  # a missing file is one line here
    tokenizer, family = tokenizer_for(options["model"]), family_for(options["model"])
    report = prepare(out, sources, formats, weights, columns, tokenizer, options, family)
    click.echo(report_table(report))


def tokenizer_for(model: str) -> Tokenizer:
    """The chosen model's tokenizer: "tiny" is the offline Qwen3 one (no weights, no torch); a
    folder or Hub id is found, or downloaded, the way training finds it."""
    if model == "tiny":
        return load_tokenizer("tiny")
    from ..job.loading import resolve_model  # here: torch comes in only for a real model's folder or id

    return load_tokenizer(resolve_model(model))


def family_for(model: str) -> str:
    """The chat format rows are rendered and counted in: the model folder's own template ("tiny" is
    instruct-2507)."""
    if model == "tiny":
        return INSTRUCT_2507
    from ..job.loading import resolve_model

    return folder_family(resolve_model(model))


if __name__ == "__main__":
    main()
