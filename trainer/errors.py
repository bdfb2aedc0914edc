"""The one error type a user sees: bad input, missing files, wrong shapes.

Scripts catch `TrainerError`, print its message on one line and exit non-zero,
so a user gets "file, line, what was expected" instead of a traceback.
"""


class TrainerError(Exception):
    """A problem with the user's input or files, with a message that says how to fix it."""
