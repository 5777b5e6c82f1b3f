"""The daemon's malloc settings: object bodies stream through it in 1 MiB buffers.

glibc's defaults hand the top of the heap back to the kernel once more than twice the largest
recently freed block is free there, so every few chunks of a put or get the next buffer lands
on pages the kernel must fault in and zero again. Measured per GiB through the local provider:
about 0.3 CPU s of the daemon's put and 1 s of its get (about half). Fixed thresholds keep up
to TRIM_BYTES free per arena instead, and blocks of MMAP_BYTES or more (a 25 MiB KV value) still
go straight back to the kernel when freed: the heap no longer grows its trim threshold after
such a value, as the defaults do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

log = structlog.get_logger("bindingd.memory")

# mallopt() parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 4 * 1024 * 1024
TRIM_BYTES = 8 * 1024 * 1024


def tune_malloc() -> bool:
    """Set the thresholds above; False where the C library has no glibc-style mallopt."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt answers 1 when it took the setting (musl's stub answers 0).
    done: bool = mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    log.debug("malloc thresholds", set=done, mmap_bytes=MMAP_BYTES, trim_bytes=TRIM_BYTES)
    return done
