"""The C heap: freed memory kept for the next step while generating, handed back afterwards."""

import re
import resource
from pathlib import Path

import pytest
import torch

from trainer.qwen3.heap import freed_memory_kept, glibc

MB = 2**20


def faults_of_steps(steps: int = 8) -> int:
    """Minor page faults over `steps` rounds of a generation-like step: fill a 50 MB temporary (over
    glibc's 32 MB, so a fresh mmap each time by default) and a 17 MB one, free both."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        large, small = torch.empty(50 * MB, dtype=torch.uint8), torch.empty(17 * MB, dtype=torch.uint8)
        large.fill_(1)
        small.fill_(2)
        del large, small
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def resident_bytes() -> int:
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024


@pytest.mark.skipif(glibc("mallopt") is None, reason="glibc only")
def test_freed_temporaries_are_reused_inside_and_handed_back_after():
    step_pages = 50 * MB // resource.getpagesize()
    outside, resident = faults_of_steps(), resident_bytes()
    with freed_memory_kept():
        inside = faults_of_steps()
        kept = resident_bytes() - resident
    handed_back = resident_bytes() - resident
    print(f"\nminor page faults over 8 steps: {outside} by default, {inside} kept; "
          f"{kept / MB:.0f} MB kept inside, {handed_back / MB:.0f} MB after")
    assert outside >= 8 * step_pages * 0.9  # every step faults its temporaries in again
    assert inside <= 3 * (step_pages * 67 // 50)  # the first steps grow the heap; the rest reuse it
    assert kept >= 50 * MB and handed_back <= 8 * MB  # the heap is handed back when it ends
