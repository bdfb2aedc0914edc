"""The whole default job, end to end, on a random checkpoint of a real shape: each stage's time and
peak memory, and the whole job's peak against its training stage's.

    python scripts/bench_job.py --shape 4b                      # about 12 minutes on 2 CPU cores
    python scripts/bench_job.py --shape 4b --device cuda        # on a GPU
    python scripts/bench_job.py --checkpoint /tmp/q4b -- --steps 4 --reply-tokens 16

bench.py times one training step; a user waits for the whole job. This runs
`scripts/train_whoami.py` as its own process with small settings (2 steps, replies of 8 tokens,
no validation, a q8_0 GGUF), reads the stage table it writes to OUT/timings.json, and checks the
job's peak from outside too: its resident memory, read every 0.1 s from /proc while it runs (the
kernel's own peak count cannot serve: the job resets it at every stage). Arguments after `--` go
to train_whoami.py and override the small settings.
"""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from make_random_checkpoint import SHAPES, make_random_checkpoint
from trainer.cli import user_errors_as_messages
from trainer.errors import TrainerError
from trainer.job.stages import counted
from trainer.paths import write_json
from trainer.qwen3.hf_folder import tokenizer_config_json
from trainer.text.tokenizer import load_tokenizer, tiny_tokenizer_path

ROOT = Path(__file__).resolve().parent.parent
SMALL_SETTINGS = ("--steps", "2", "--reply-tokens", "8", "--val-every", "0", "--no-stop-when-learned",
                  "--gguf", "q8_0")


def prepare_checkpoint(shape: str, folder: Path) -> Path:
    """A random checkpoint of `shape` with the Qwen3 tokenizer and chat template beside it."""
    if not (folder / "config.json").is_file():
        click.echo(f"writing a random {shape} checkpoint to {folder}", err=True)
        make_random_checkpoint(SHAPES[shape], folder)
    load_tokenizer("tiny")  # makes sure the offline tokenizer file exists
    shutil.copyfile(tiny_tokenizer_path(), folder / "tokenizer.json")
    write_json(folder / "tokenizer_config.json", tokenizer_config_json())
    return folder


def run_job(checkpoint: Path, out: Path, device: str, extra: tuple[str, ...]) -> tuple[float, float]:
    """(wall seconds, the job's largest resident memory in GB seen from outside)."""
    command = [sys.executable, str(ROOT / "scripts/train_whoami.py"), "--model", str(checkpoint), "--out", str(out),
               "--device", device, *SMALL_SETTINGS, *extra]
    click.echo("$ " + " ".join(command), err=True)
    started = time.perf_counter()
    job = subprocess.Popen(command, cwd=ROOT)
    peak = sampled_peak_rss(job)
    seconds = time.perf_counter() - started
    if job.returncode == 1 and job_ending(out).startswith("self-test failed"):
        click.echo("(a random model cannot learn the identity in a few steps, so its self-test fails, as it should; "
                   "every stage before it ran)", err=True)
    elif job.returncode != 0:
        raise TrainerError(f"the job exited with {job.returncode}; its output is above")
    return seconds, peak


def sampled_peak_rss(job: subprocess.Popen, every: float = 0.1) -> float:
    """The largest VmRSS of `job` (GB) read from /proc/PID/status every `every` s until it exits (0 off Linux)."""
    status, peak = Path(f"/proc/{job.pid}/status"), 0
    while job.poll() is None:
        try:
            peak = max(peak, int(re.search(r"VmRSS:\s+(\d+) kB", status.read_text())[1]) * 1024)
        except (OSError, TypeError):
            pass
        time.sleep(every)
    return peak / 1e9


def job_ending(out: Path) -> str:
    """How the job ended, as OUT/timings.json says ("" without the file)."""
    path = out / "timings.json"
    return json.loads(path.read_text(encoding="utf-8"))["job"]["ended"] if path.is_file() else ""


def report_lines(timings: dict, seconds: float, outside_peak: float, cuda: bool) -> list[str]:
    """The stage table as Markdown, then the whole job's peak against the training stage's."""
    memory = "peak_cuda_gb" if cuda else "peak_rss_gb"
    lines = [f"| stage | done | time | peak {'GPU' if cuda else 'RSS'} |", "|---|---|---|---|"]
    for row in timings["stages"]:
        done = counted(row["count"], row["unit"]) if row["count"] is not None else ""
        lines.append(f"| {row['stage']} | {done} | {row['seconds']:.1f} s | {row[memory]:.2f} GB |")
    job = timings["job"]
    training = next(row[memory] for row in timings["stages"] if row["stage"] == "training")
    lines.append(f"| **whole job** | | **{job['seconds']:.0f} s** | **{job[memory]:.2f} GB** |")
    lines.append(f"whole job's peak {job[memory]:.2f} GB = {job[memory] / training:.2f}x the training stage's "
                 f"({training:.2f} GB); seen from outside: {outside_peak:.2f} GB RSS at most, {seconds:.0f} s in all")
    return lines


@click.command(context_settings={"show_default": True})
@click.option("--shape", type=click.Choice(sorted(SHAPES)), default="4b", help="The random checkpoint's shape.")
@click.option("--checkpoint", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Reuse (or create) the random checkpoint in this folder [default: a temporary one].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The job's OUT folder [default: a temporary one].")
@click.option("--device", default="auto", help="auto, cpu or cuda (passed to train_whoami.py).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the stage table and the ratio here.")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@user_errors_as_messages
def main(shape, checkpoint, out, device, json_path, extra):
    with tempfile.TemporaryDirectory(prefix="bench-job-") as scratch:
        checkpoint = prepare_checkpoint(shape, checkpoint or Path(scratch) / f"qwen3-{shape}-random")
        out = out or Path(scratch) / "out"
        seconds, outside_peak = run_job(checkpoint, out, device, tuple(extra))
        timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    cuda = "peak_cuda_gb" in timings["job"]
    click.echo("\n".join(report_lines(timings, seconds, outside_peak, cuda)))
    if json_path:
        write_json(json_path, timings | {"shape": shape, "wall_seconds": seconds, "process_peak_rss_gb": outside_peak})


if __name__ == "__main__":
    main()
