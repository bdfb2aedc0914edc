"""What every command-line script shares: user errors become one line and exit code 1."""

import functools
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

from .errors import TrainerError
from .interrupts import Interrupted

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable)


def user_errors_as_messages(command: F) -> F:
    """Turn a TrainerError into click's `Error: ...` line and exit 1, never a traceback; an interrupt
    into one line and exit 128 + its signal's number (130 for Ctrl-C, 143 for SIGTERM)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TrainerError as error:
            raise click.ClickException(str(error)) from None
        except Interrupted as stop:
            ignore_further_ctrl_c()
            click.echo(str(stop), err=True)
            raise SystemExit(128 + stop.signal) from None
        except KeyboardInterrupt:
            ignore_further_ctrl_c()
            click.echo("interrupted: stopped at once (the newest complete checkpoint, if any, is unchanged)", err=True)
            raise SystemExit(128 + signal.SIGINT) from None

    return wrapper  # type: ignore[return-value]


def ignore_further_ctrl_c() -> None:
    """The command is stopping already: a Ctrl-C pressed while Python shuts down (its exit handlers
    run after ours) would only print a traceback, so it is ignored from here on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


DTYPE_CHOICES = ("auto", "float32", "bfloat16")
DTYPE_HELP = "Compute dtype; auto = bf16 on a GPU or a CPU with AMX or AVX512-BF16, else fp32."


def chosen_dtype(requested: str, device: str) -> "torch.dtype":
    """--dtype settled for this machine (see trainer.job.loading.auto_dtype); which and why goes to
    stderr, so stdout stays the command's own output."""
    import torch  # here, not at the top: data preparation uses this module and never needs torch

    from .job.loading import dtype_line, resolve_dtype

    dtype, why = resolve_dtype(requested, device)
    click.echo(dtype_line(dtype, why), err=True)
    return getattr(torch, dtype)


# Ranges every command's numeric options are checked against by click before any work (exit 2).
AT_LEAST_ONE = click.IntRange(min=1)
ZERO_OR_MORE = click.IntRange(min=0)
POSITIVE = click.FloatRange(min=0, min_open=True)
NON_NEGATIVE = click.FloatRange(min=0)
PROBABILITY_BELOW_ONE = click.FloatRange(min=0, max=1, max_open=True)  # dropout
SHARE = click.FloatRange(min=0, max=1, min_open=True)  # top-p
