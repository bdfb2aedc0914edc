"""Ctrl-C and a scheduler's SIGTERM during training: finish the step, save, say how to continue.

While training runs, the first SIGINT or SIGTERM only asks to stop: the loop finishes the step
it is in, writes a checkpoint and raises `Interrupted`, which the command turns into one line and
exit code 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell expects. A
second SIGINT stops at once (KeyboardInterrupt): a checkpoint being written is then abandoned
(checkpoints are written under a temporary name), so the newest complete one stays the newest.
"""

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

StopRequested = Callable[[], signal.Signals | None]  # the signal that asked to stop, if one did


@dataclass
class Interrupted(Exception):
    """Training stopped on request after `step` steps, with its state saved in `checkpoint` (None: not saved)."""

    signal: signal.Signals
    step: int
    checkpoint: Path | None

    def __str__(self) -> str:
        saved = f"checkpoint {self.checkpoint}; continue with --resume" if self.checkpoint else "nothing was saved"
        return f"interrupted by {self.signal.name} after step {self.step}: {saved}"


def never() -> signal.Signals | None:
    return None


@contextmanager
def stop_on_signals() -> Iterator[StopRequested]:
    """SIGINT and SIGTERM ask to stop while the block runs; the previous handlers come back after it."""
    requested: list[signal.Signals] = []

    def ask(number: int, frame) -> None:
        if requested and number == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: at once
        requested.append(signal.Signals(number))

    previous = {number: signal.signal(number, ask) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: requested[0] if requested else None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
