"""Process-level CPU tuning for entry points (the `sdegen` command, the study scripts).

PyTorch on the CPU takes every activation tensor from malloc. glibc serves blocks above its mmap threshold
(128 KiB at start) with fresh mmap pages and hands freed memory at the top of the heap back to the OS
above its trim threshold, so each forward of a conv net page-faults and zeroes new pages for its
activations. Measured here (TutorialUNet, batch 64, 1×28×28, one thread, no_grad): 69–71 ms per forward
with glibc's defaults, 52–53 ms with the two thresholds raised as below; inside a sampler whose own
allocations interleave with the network's (the adaptive ODE) the default costs even more, so
`studies/sampler_overhead.py` shows the effect with `--default-allocator`.

Like `torch.set_num_threads`, this changes the whole process, so the library never does it on import: the
`sdegen` command and the studies call `tune_allocator()` at start. Any other program gets the same with
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824 in its environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
