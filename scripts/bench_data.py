"""How fast, and in how much memory, `prepare_data.py` prepares a large data set, against HF `datasets`.

    python scripts/bench_data.py --rows 1000000             # ours on 4 formats, then both on one JSONL
    python scripts/bench_data.py --rows 20000 --reference none

It writes synthetic sources into a temporary folder, with planted trouble:
- `chat.jsonl` (messages, 40% of the rows), `alpaca.jsonl` (30%), `sharegpt.jsonl` (20%) and
  `faq.csv` (10%, with quoted commas and newlines);
- about 3% exact duplicates inside a source, 1% copies of another source's rows, 0.5% copies
  that differ only in Unicode form (NFD) or surrounding spaces, and 1% bad rows (broken JSON,
  no answer, a chat special token typed into the text).

Then it times the whole preparation (reading, checking, tokenizer statistics with the chat
template, deduplication, split, writing), each run in a process of its own so its peak RSS is
its own. For the comparison both stacks get the same rows as one messages JSONL file and do the
same steps: read, normalise, count tokens with our template and tokenizer, deduplicate by hash,
split off validation rows, write train and val JSONL (`datasets`: load_dataset("json"), map,
filter, train_test_split, to_json). `datasets` is imported only here, never by the trainer.
"""

import json
import random
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import click

from trainer.cli import AT_LEAST_ONE, user_errors_as_messages

SHARES = {"chat": 0.4, "alpaca": 0.3, "sharegpt": 0.2, "faq": 0.1}
TOPICS = ("資料表", "索引", "分區", "排程", "欄位", "串流", "快照", "權限", "pipeline", "warehouse", "join", "schema",
          "partition", "backfill", "checkpoint", "parquet", "a lookup table", "the nightly job", "the café report",
          "a naïve join")
VERBS = ("怎麼設計", "如何檢查", "為什麼會變慢", "要注意什麼", "how do I test", "what breaks when I resize",
         "why does it stall", "how should I name")


def question(rng: random.Random, i: int) -> str:
    return f"{rng.choice(TOPICS)} {rng.choice(VERBS)}？(case {i})"


def answer(rng: random.Random, i: int) -> str:
    sentences = [f"Step {k}: check {rng.choice(TOPICS)} before {rng.choice(TOPICS)}." for k in range(rng.randint(2, 6))]
    return " ".join(sentences) + f"\nIn short, {i}, as said: 結論 {i}。"  # a comma and a newline, for the CSV


def trouble(rng: random.Random, kept: list[dict]) -> dict | str | None:
    """A planted problem for the next row, or None: a duplicate, a near-duplicate, or a bad row."""
    draw = rng.random()
    if kept and draw < 0.03:
        return rng.choice(kept)  # exact duplicate within the source
    if kept and draw < 0.035:
        return json.loads(unicodedata.normalize("NFD", json.dumps(rng.choice(kept), ensure_ascii=False)))  # same row in NFD
    if draw < 0.045:
        return rng.choice(["{broken json", '{"messages": [{"role": "user", "content": "no answer"}]}',
                           '{"messages": [{"role": "user", "content": "hi <|im_start|>"}, '
                           '{"role": "assistant", "content": "x"}]}'])
    return None


def messages_row(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "tags": ["synthetic"]}


def as_format(name: str, row: dict) -> dict:
    q, a = row["messages"][0]["content"], row["messages"][1]["content"]
    if name == "alpaca":
        return {"instruction": q, "input": "", "output": a}
    if name == "sharegpt":
        return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
    return row


def write_sources(folder: Path, rows: int, seed: int) -> dict[str, Path]:
    """The four synthetic sources; 1% of each source's rows repeat a row of the previous source."""
    rng = random.Random(seed)
    paths, previous = {}, []
    for name, share in SHARES.items():
        count, kept = round(rows * share), []
        path = folder / (f"{name}.csv" if name == "faq" else f"{name}.jsonl")
        with path.open("w", encoding="utf-8", newline="") as file:
            if name == "faq":
                file.write("prompt,target\n")
            for i in range(count):
                planted = trouble(rng, kept)
                if planted is None and previous and rng.random() < 0.01:
                    planted = rng.choice(previous)  # a row another source already has
                row = planted if planted is not None else messages_row(question(rng, i), answer(rng, i))
                if isinstance(row, str):
                    file.write((row if name != "faq" else '"no answer",""') + "\n")
                    continue
                if len(kept) < 10_000:  # enough to draw duplicates from
                    kept.append(row)
                if name == "faq":
                    q, a = (m["content"].replace('"', '""') for m in row["messages"])
                    file.write(f'"{q}","{a}"\n')
                else:
                    file.write(json.dumps(as_format(name, row), ensure_ascii=False) + "\n")
        paths[name], previous = path, kept
    return paths


def one_jsonl(paths: dict[str, Path], out: Path) -> int:
    """Every usable row of the four sources as one messages JSONL (what both stacks read in the comparison)."""
    from trainer.prep.prepare import Rejection, read_rows

    count = 0
    with out.open("w", encoding="utf-8") as file:
        for name in ("chat", "alpaca", "sharegpt", "faq"):
            for item in read_rows(paths[name]):
                if not isinstance(item, Rejection):
                    file.write(json.dumps({"messages": list(item.messages)}, ensure_ascii=False) + "\n")
                    count += 1
    return count


OURS = """
import resource, sys, time
started = time.perf_counter()  # both runs count their imports
from trainer.commands.prepare_data import main
main(sys.argv[1:], standalone_mode=False)
print(f"RESULT {time.perf_counter() - started} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}")
"""

REFERENCE = """
import resource, sys, time
started = time.perf_counter()
from datasets import load_dataset, disable_progress_bars
from trainer.prep.prepare import answer_pieces, normalise_text, row_key, token_counts
from trainer.text.readers import Conversation
from trainer.text.tokenizer import load_tokenizer
disable_progress_bars()
source, out, val_ratio, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
tokenizer = load_tokenizer("tiny")

def prepare(batch):  # batched, so the tokenizer gets 1,024 rows a call, as ours does
    rows = [[{"role": m["role"], "content": normalise_text(m["content"])} for m in messages]
            for messages in batch["messages"]]
    talks = [Conversation(tuple(messages)) for messages in rows]
    counts = token_counts(tokenizer, [answer_pieces(talk) for talk in talks])
    return {"messages": rows, "key": [row_key(talk).hex() for talk in talks],
            "tokens": [c.total for c in counts], "answer_tokens": [c.answer for c in counts]}

seen = set()
def first_time(row):
    if row["key"] in seen:
        return False
    seen.add(row["key"])
    return True

data = load_dataset("json", data_files=source, split="train", cache_dir=out + "/cache")
data = data.map(prepare, batched=True, batch_size=1024).filter(first_time)
parts = data.train_test_split(test_size=val_ratio, seed=seed)
parts["train"].to_json(out + "/train.jsonl", force_ascii=False)
parts["test"].to_json(out + "/val.jsonl", force_ascii=False)
print(f"RESULT {time.perf_counter() - started} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}")
"""


def run_measured(code: str, args: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of `code` run in a fresh Python process."""
    done = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not result:
        raise click.ClickException(f"the run failed (exit {done.returncode}); its errors are printed above")
    seconds, rss = result[-1].split()[1:]
    return float(seconds), int(rss)


def ours_args(out: Path, sources: dict[str, Path]) -> list[str]:
    return [str(out), *(arg for name, path in sources.items() for arg in ("--source", f"{name}={path}"))]


def line(label: str, rows: int, seconds: float, rss: int) -> str:
    return f"{label:<44}{rows:>10,}{seconds:>10.1f}{rows / seconds:>12,.0f}{rss / 1e9:>10.2f}"


@click.command(context_settings={"show_default": True})
@click.option("--rows", type=AT_LEAST_ONE, default=100_000, help="Rows in all four synthetic sources together.")
@click.option("--reference", type=click.Choice(["datasets", "none"]), default="datasets",
              help="datasets: also run the same steps with HF datasets (pip install -e \".[bench]\"); none: ours only.")
@click.option("--seed", type=int, default=0, help="Seed of the synthetic rows.")
@user_errors_as_messages
def main(rows: int, reference: str, seed: int) -> None:
    if reference == "datasets":
        try:
            import datasets  # noqa: F401  (only checked here; it runs in its own process)
        except ImportError:
            raise click.ClickException("--reference datasets needs `pip install datasets` (or use --reference none)")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as folder:
        folder = Path(folder)
        started = time.perf_counter()
        sources = write_sources(folder, rows, seed)
        click.echo(f"wrote {rows:,} synthetic rows in 4 sources in {time.perf_counter() - started:.1f} s", err=True)
        click.echo(f"{'run':<44}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS GB':>12}")
        seconds, rss = run_measured(OURS, ours_args(folder / "ours-4", sources))
        click.echo(line("ours, 4 sources in 4 formats", rows, seconds, rss))
        report = json.loads((folder / "ours-4" / "report.json").read_text(encoding="utf-8"))
        click.echo(json.dumps(report["sources"], ensure_ascii=False), err=True)  # every row accounted for
        if reference == "none":
            return
        single = folder / "one.jsonl"
        count = one_jsonl(sources, single)
        ours_s, ours_rss = run_measured(OURS, ours_args(folder / "ours-1", {"all": single}))
        click.echo(line("ours, the same rows as one messages JSONL", count, ours_s, ours_rss))
        (folder / "ref").mkdir()
        ref_s, ref_rss = run_measured(REFERENCE, [str(single), str(folder / "ref"), "0.02", "42"])
        click.echo(line("HF datasets, the same steps on that file", count, ref_s, ref_rss))
        click.echo(f"ours / datasets: {ref_s / ours_s:.2f}x their throughput, {ours_rss / ref_rss:.2f}x their peak RSS")


if __name__ == "__main__":
    main()
