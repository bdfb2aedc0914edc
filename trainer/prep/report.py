"""What preparing data did to every row, as report.json and the table the command prints.

For every source, rows read = rejected + duplicates + kept; kept rows go to train or val, and the
mix may repeat some train rows or leave some unused. Token statistics count each kept row as the
chat template renders it.
"""

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from .prepare import Row


@dataclass
class SourceTally:
    """What happened to the rows of one source."""

    format: str
    read: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason_kind -> rows
    duplicates_within: int = 0
    duplicates_across: int = 0
    kept: int = 0


def reason_kind(reason: str) -> str:
    """The reason without row-specific details (numbers, quoted values), for the per-reason counts."""
    return re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "N", reason)[:120]


def percentile(values: Sequence[int], share: float) -> int:
    return sorted(values)[min(len(values) - 1, int(share * len(values)))] if values else 0


TOKEN_KEYS = ("total", "answer", "reasoning", "reasoning_dropped")  # TokenCount's fields, kept per kept row


def token_stats(counts: dict[str, Sequence[int]], seq_len: int) -> dict:
    """Tokens per row as the chat template renders it: p50, p95, max, answer share, rows over seq_len;
    and in all, the reasoning tokens trained and those the template drops."""
    totals, answers = counts["total"], counts["answer"]
    return {"rows": len(totals), "p50": percentile(totals, 0.5), "p95": percentile(totals, 0.95),
            "max": max(totals, default=0), "answer_share": round(sum(answers) / max(1, sum(totals)), 4),
            "over_seq_len": sum(t > seq_len for t in totals), "reasoning_trained": sum(counts["reasoning"]),
            "reasoning_dropped": sum(counts["reasoning_dropped"])}


def build_report(sources: Collection[str], tallies: dict[str, SourceTally], mixed: list[Row], val: list[Row],
                 repeats: dict[str, int], tokens: dict[str, dict[str, Sequence[int]]], conflicts: dict,
                 seq_len: int) -> dict:
    """report.json: per source the tally, where its kept rows went and its token statistics; then
    the totals, the conflicts and the token statistics of all kept rows."""
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
            "tokens": token_stats(tokens[name], seq_len),
        }
    every = {key: [n for name in sources for n in tokens[name][key]] for key in TOKEN_KEYS}
    return {
        "sources": per_source,
        "train": len(mixed), "val": len(val),
        "conflicts": conflicts,
        "tokens": token_stats(every, seq_len),
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
    named = [*((name, row["tokens"]) for name, row in report["sources"].items()), ("all", report["tokens"])]
    for name, tokens in named:
        values = [f"{tokens[key]:.1%}" if key == "answer_share" else tokens[key] for key in token_keys]
        lines.append(f"{name:<39}" + "".join(f"{value:>13}" for value in values))
    if report["tokens"]["reasoning_trained"] or report["tokens"]["reasoning_dropped"]:
        lines.append(f"{'reasoning tokens in all':<39}{'trained':>13}{'dropped':>13}  (by the chat template)")
        lines += [f"{name:<39}{tokens['reasoning_trained']:>13}{tokens['reasoning_dropped']:>13}" for name, tokens in named]
    return "\n".join(lines)
