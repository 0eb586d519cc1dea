"""Process-level CPU tuning for inference."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Stop glibc from handing freed tensor buffers back to the OS.

    By default every buffer above the mmap threshold (at most 32 MB) is a fresh mapping, so
    each forward pass page-faults its large activations in again: about a third of a
    1024x1024 CPU forward pass. With mmap disabled and trimming off, freed buffers stay in
    the heap and are reused. The cost is that the process keeps its peak memory.

    One arena for all threads: a thread other than the main one (the node's inference worker)
    otherwise gets its own arena, made of 64 MB heaps; a buffer larger than that (the logits of
    a 1080p frame are 158 MB) cannot live there and is mapped and unmapped on every frame
    whatever M_MMAP_MAX says, which cost the node ~80 ms per 1080p frame. Call this before the
    worker threads start. Large tensor buffers make malloc lock contention negligible.
    Returns False where this is not glibc (nothing changed).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return (bool(mallopt(_M_ARENA_MAX, 1)) and bool(mallopt(_M_MMAP_MAX, 0))
            and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)))


def release_freed_memory() -> bool:
    """Hand the heap's free memory back to the OS (glibc malloc_trim), which keep_freed_memory()
    otherwise keeps for reuse: after a model is dropped on purpose (a lifecycle cleanup), its
    memory should leave the process. Returns False where this is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0))
    except (OSError, AttributeError):
        return False
