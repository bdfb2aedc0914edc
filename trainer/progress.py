"""How a long-running function says how far it has got, without knowing who listens.

Loading weights, generating replies and writing exports take minutes at the real size. Each
takes a `progress` callable and calls it with the number of items (tensors, prompts, rows) it has
just finished; the job passes a progress bar's `update`, tests and other callers nothing.
"""

from collections.abc import Callable

Progress = Callable[[int], None]  # progress(n): n more items are done


def no_progress(done: int) -> None:
    """The listener when nobody listens."""
