"""The job's stages, shown and measured: a progress bar for each on a terminal (one line each in a
log), its time, and its peak memory, summed up at the end and written to OUT/timings.json.

    with stages.stage("base answers", total=205, unit="prompt") as bar:
        evaluate(..., progress=bar.update)

Peak memory is the process's peak resident set (RSS) on a CPU and the most memory torch held
allocated on a GPU, each measured over the stage alone: Linux lets a process reset its RSS peak
(/proc/self/clear_refs), and torch its CUDA one. (So after the job, the kernel's count, which
/usr/bin/time and getrusage read, holds the last stage's peak only.) Where the RSS peak cannot be reset (macOS,
Windows), a stage reports the peak of the whole process so far. A stage run several times
(validation) adds up its time and keeps its highest peak. Before a stage starts, what the earlier
ones left behind is released (Python's garbage, the C heap's free pages, CUDA's cached blocks).
"""

import gc
import re
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..paths import write_json
from ..qwen3.heap import return_freed_memory

GB = 1e9
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_bytes() -> int:
    """The process's peak resident set since the last reset: VmHWM on Linux, ru_maxrss elsewhere."""
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", STATUS.read_text())[1]) * 1024
    except (OSError, TypeError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux kilobytes


def reset_peaks(cuda: bool) -> None:
    """Start measuring peaks afresh: the RSS peak drops to the current RSS (Linux only), and so does CUDA's."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        pass
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def release_memory(cuda: bool) -> None:
    """Give back what nothing refers to any more: Python's cycles, the C heap's free pages, CUDA's cache."""
    gc.collect()
    return_freed_memory()
    if cuda:
        torch.cuda.empty_cache()


class StageBar:
    """A stage's progress bar (tqdm, silent in a log) that also counts what was done, for the summary."""

    def __init__(self, bar: tqdm):
        self.bar, self.done = bar, 0

    def update(self, done: int = 1) -> None:
        self.done += done
        self.bar.update(done)

    def set_postfix(self, values: dict) -> None:
        self.bar.set_postfix(values)


@dataclass(frozen=True)
class StageTime:
    """One stage as measured: what it worked through, how long it took, and its peak memory."""

    stage: str
    count: int | None  # items worked through (tensors, prompts, steps); None: a stage that counts nothing
    unit: str
    seconds: float
    peak_rss_gb: float  # the process's peak resident memory during the stage
    peak_cuda_gb: float | None = None  # the most memory torch held allocated on the GPU (None: CPU)
    runs: int = 1  # how often it ran (validation: once per --val-every steps)


class Stages:
    """Measures the job stage by stage. `progress`: show bars on a terminal (lines elsewhere);
    `echo`: where lines and the closing summary go."""

    def __init__(self, echo: Callable[[str], None], progress: bool, cuda: bool):
        self.echo, self.cuda = echo, cuda
        self.bars = progress and sys.stderr.isatty()
        self.times: dict[str, StageTime] = {}
        self.open: list[list[float]] = []  # the peaks (RSS, CUDA) seen so far by each stage still running
        self.job_peaks = [0.0, 0.0]
        self.started = time.perf_counter()
        reset_peaks(cuda)

    def peaks_so_far(self) -> None:
        """The (RSS, CUDA) peaks since the last reset, folded into every open stage and the job; then reset."""
        peaks = (peak_rss_bytes() / GB, torch.cuda.max_memory_allocated() / GB if self.cuda else 0.0)
        for seen in [*self.open, self.job_peaks]:
            seen[:] = [max(a, b) for a, b in zip(seen, peaks)]
        reset_peaks(self.cuda)

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "it", transient: bool = False,
              initial: int = 0) -> Iterator[StageBar]:
        """Run the body as stage `name`, expected to work through `total` items (`initial` done before:
        a resumed run); yields its progress bar (`bar.update(n)`; silent in a log). transient: the bar
        disappears when done (a stage inside another, such as validation in training)."""
        release_memory(self.cuda)  # what the stages before left behind is given back before this one starts
        self.peaks_so_far()
        self.open.append([0.0, 0.0])
        if not self.bars:
            self.echo(f"{name} ({counted(total, unit)}) ..." if total is not None else f"{name} ...")
        started = time.perf_counter()
        bar = StageBar(tqdm(total=total, initial=initial, desc=name, unit=unit, disable=not self.bars,
                            leave=not transient, dynamic_ncols=True))
        try:
            yield bar
        finally:
            bar.bar.close()
            self.peaks_so_far()
            self.record(name, bar.done if total is not None or bar.done else None, unit, time.perf_counter() - started,
                        self.open.pop())

    def record(self, name: str, count: int | None, unit: str, seconds: float, peaks: list[float]) -> None:
        measured = StageTime(name, count, unit, seconds, peaks[0], peaks[1] if self.cuda else None)
        earlier = self.times.get(name)
        self.times[name] = measured if earlier is None else replace(
            earlier, count=(earlier.count or 0) + (count or 0), seconds=earlier.seconds + seconds,
            peak_rss_gb=max(earlier.peak_rss_gb, measured.peak_rss_gb), runs=earlier.runs + 1,
            peak_cuda_gb=None if earlier.peak_cuda_gb is None else max(earlier.peak_cuda_gb, peaks[1]))

    def peak(self, stage: str | None = None) -> float:
        """Peak memory in GB (CUDA's on a GPU, RSS on a CPU) of one stage, or of the whole job so far."""
        if stage is not None:
            time_of = self.times[stage]
            return time_of.peak_cuda_gb if self.cuda else time_of.peak_rss_gb
        self.peaks_so_far()
        return self.job_peaks[1] if self.cuda else self.job_peaks[0]

    def summary(self, ended: str) -> dict:
        """Every stage so far, and the whole job: seconds, peaks, and how it `ended`."""
        self.peaks_so_far()
        job = {"seconds": time.perf_counter() - self.started, "peak_rss_gb": self.job_peaks[0]} | \
            ({"peak_cuda_gb": self.job_peaks[1]} if self.cuda else {}) | {"ended": ended}
        return {"stages": [asdict(t) for t in self.times.values()], "job": job}

    def finish(self, path: Path | None, ended: str = "finished") -> None:
        """Print the stage-times table; write it to `path` (None: this process writes no files)."""
        summary = self.summary(ended)
        self.echo(stage_table(summary, self.cuda))
        if path is None:
            return
        try:
            write_json(path, summary)
        except OSError as error:  # a full disk must not hide the error that may be ending the job
            self.echo(f"warning: {path} not written ({error.strerror or error})")


def counted(count: int, unit: str) -> str:
    """"1 prompt", "46 tensors"."""
    return f"{count} {unit}{'' if count == 1 else 's'}"


def stage_table(summary: dict, cuda: bool) -> str:
    """The summary as a table: one row per stage and one for the whole job."""
    memory = "peak_cuda_gb" if cuda else "peak_rss_gb"
    lines = [f"{'stage':<22} {'done':>14} {'time':>9} {'peak ' + ('GPU' if cuda else 'RSS'):>9}"]
    for row in summary["stages"]:
        done = counted(row["count"], row["unit"]) if row["count"] is not None else ""
        lines.append(f"{row['stage']:<22} {done:>14} {row['seconds']:>7.1f} s {row[memory]:>6.2f} GB")
    job = summary["job"]
    lines.append(f"{'whole job':<22} {'':>14} {job['seconds']:>7.1f} s {job[memory]:>6.2f} GB")
    return "\n".join(lines)
