"""What every command-line script shares: user errors become one line and exit code 1."""

import functools
from collections.abc import Callable
from typing import TypeVar

import click

from .errors import TrainerError

F = TypeVar("F", bound=Callable)


def user_errors_as_messages(command: F) -> F:
    """Turn a TrainerError into click's `Error: ...` line and exit 1, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TrainerError as error:
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]
