"""Giving a finished trial's freed memory back to the OS; imports nothing heavy, so a test
can check it in a fresh process in a second."""

from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import os

__all__ = ["release_memory", "skip_collection_at_exit"]

_ALL_ARENAS = 4096  # jemalloc's MALLCTL_ARENAS_ALL


def release_memory() -> None:
    """Hand the memory a finished trial freed back to the OS.

    With `run.reuse_actors` (the default) Ray runs the next trial in the same process, and
    the allocator keeps freed pages: glibc's heap, or, in the trials of a Ray medtune starts,
    jemalloc, which is told to keep every freed page for reuse (`tune.cluster.JEMALLOC_CONF`).
    A reused SmolLM2 trial process grew by about 300 MiB of private memory per trial before
    this (measured in BENCHMARKS.md, "Reused trial processes").
    `MEDTUNE_MALLOC_TRIM=0` turns the release off (to measure it)."""
    gc.collect()
    if os.environ.get("MEDTUNE_MALLOC_TRIM", "1") == "0":
        return
    process = ctypes.CDLL(None)
    mallctl = getattr(process, "mallctl", None)  # only where jemalloc is loaded
    if mallctl is not None:
        mallctl(b"arena.%d.purge" % _ALL_ARENAS, None, None, None, ctypes.c_size_t(0))
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (macOS, musl): nothing to trim


@functools.cache  # one exit handler, however often it is called
def skip_collection_at_exit() -> None:
    """Have this process skip the garbage collection Python runs as it exits.

    With torch, transformers and peft loaded that collection takes 2.4 s of a core, after the
    work is done: in every trial process Tune stops (2.17 s there, 0.39 s with this) and every
    `medtune` command. `gc.freeze()` in an exit handler moves every object out of the
    collector's reach first; Python's exit handlers run before its final collections. Objects
    freed by reference count (a module's open files, say) are closed as before; a cycle left
    at exit is not collected, which Python never promised to do."""
    atexit.register(gc.freeze)
