"""The C heap under torch's CPU tensors: when freed memory goes back to the system, and when not.

torch allocates CPU tensors with the C library's malloc. glibc serves a large block (over 128 KB
at first, over 32 MB always) with fresh pages from the system, and hands a freed block, or the
free top of its heap, straight back. Two patterns of this project meet that rule:

- Loading quantizes one tensor at a time: small 4-bit results land between the dense
  temporaries of the next tensors, so the heap only grows (about 1 GB over a 4B model) unless
  its free pages are handed back after each tensor (`return_freed_memory`).
- Generating on 4-bit weights dequantizes every projection at every step, hundreds of MB of
  temporaries per token that the system gives back zeroed each time: 21 million page faults
  for 48 replies of 8 tokens at the 4B shape, half the time. While `freed_memory_kept` is on,
  freed blocks stay in the heap for the next step instead (2.0x faster there, measured: 43.6 s
  -> 21.8 s), and the heap is handed back when it ends. The memory kept is what one step needs
  at most, already counted in the step's peak (4.1 -> 4.9 GB there, below training's 6.0).

Other C libraries have none of these calls, and nothing here happens with them.
"""

import ctypes
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # mallopt's parameters (glibc malloc.h)
MMAP_MAX_DEFAULT, MMAP_THRESHOLD_MAX = 65536, 32 * 2**20  # glibc's defaults on 64-bit systems
NEVER_TRIM = 2**31 - 1


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


@contextmanager
def freed_memory_kept() -> Iterator[None]:
    """Inside: freed blocks stay in the heap for reuse (no mmap, no trimming); after: the heap is
    handed back, and glibc serves blocks as in its steady state (mmap over 32 MB, trim past 64 MB)."""
    mallopt = glibc("mallopt")
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)
    try:
        yield
    finally:
        mallopt(M_MMAP_MAX, MMAP_MAX_DEFAULT)
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        mallopt(M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX)
        return_freed_memory()
