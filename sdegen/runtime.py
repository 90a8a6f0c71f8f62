"""Process-level CPU tuning for entry points (the `sdegen` command, the study scripts).

PyTorch on the CPU takes every activation tensor from malloc. glibc serves blocks above its mmap threshold
(128 KiB at start) with fresh mmap pages and hands freed memory at the top of the heap back to the OS
above its trim threshold, so each forward of a conv net page-faults and zeroes new pages for its
activations. Measured here (TutorialUNet, batch 64, 1×28×28, one thread, no_grad): 69–71 ms per forward
with glibc's defaults, 52–53 ms with the two thresholds raised as below; inside a sampler whose own
allocations interleave with the network's (the adaptive ODE) the default costs even more, so
`studies/sampler_overhead.py` shows the effect with `--default-allocator`.

Like `torch.set_num_threads`, this changes the whole process, so it is never done on import. The `sdegen`
command calls `tune_allocator()` at start; the library applies it once, on first use, in every run entry
point (`sdegen.sample`, `log_likelihood`/`bits_per_dim`, `encode`/`decode`, training) through
`tune_allocator_once()`, so a script that calls the library gets the command's speed. Set
SDEGEN_TUNE_ALLOCATOR=0 in the environment to keep glibc's defaults (the thresholds only change when and
how freed memory goes back to the OS: a process keeps up to 1 GiB of freed heap for reuse). Other programs
get the same with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 in their environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30  # keep up to 1 GiB of freed heap for reuse


def tune_allocator() -> bool:
    """Raise glibc's mmap threshold to 32 MiB and its trim threshold to 1 GiB for this process.

    Returns:
        True if both settings took effect; False where the C library has no `mallopt` (not glibc) or
        refused a value. Calling it again is harmless.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


@functools.cache
def tune_allocator_once() -> bool:
    """`tune_allocator()` the first time it is called in this process, unless SDEGEN_TUNE_ALLOCATOR=0.

    Returns:
        Whether the allocator is tuned (the first call's answer, remembered).
    """
    if os.environ.get("SDEGEN_TUNE_ALLOCATOR", "1").strip() == "0":
        return False
    return tune_allocator()
