"""The C heap under torch's CPU tensors: handing freed memory back to the system.

torch allocates CPU tensors with the C library's malloc, and glibc keeps freed blocks for
reuse. Loading quantizes one tensor at a time: small 4-bit results land between the dense
temporaries of the next tensors, so the heap only grows (about 1 GB over a 4B model) unless its
free pages are handed back after each tensor; the job does the same before each of its stages.
Other C libraries have no such call and need none here.
"""

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def glibc(name: str) -> Callable[..., int] | None:
    """A glibc function, found among the symbols already loaded into this process; None elsewhere."""
    try:
        return getattr(ctypes.CDLL(None), name, None)
    except (OSError, TypeError):  # TypeError: Windows cannot open the running program by None
        return None


def return_freed_memory() -> None:
    """Give the free pages inside the C heap back to the system (malloc_trim(0)) at once."""
    malloc_trim = glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)
