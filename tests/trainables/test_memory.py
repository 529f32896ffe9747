"""trainables/memory.py: a trial process gives the heap its trial freed back to the OS, in
a fresh process under glibc and under the jemalloc medtune's trials run on."""

import os
import subprocess
import sys

import pytest

_HEAP = """
import os
from pathlib import Path

from trainables.memory import release_memory


def rss_mib():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


blocks = [bytearray(b"medtune!") * 8192 for _ in range(4000)]  # 250 MiB of 64 KiB heap blocks
keep = bytearray(b"medtune!") * 8192  # one live block above them: the heap top cannot shrink
del blocks
freed = rss_mib()
release_memory()
print(freed, rss_mib())
"""


@pytest.mark.parametrize("allocator", ["glibc", "jemalloc"])
@pytest.mark.parametrize("trim", ["1", "0"])
def test_release_memory_gives_freed_heap_back_to_the_os(trim, allocator):
    """What a reused trial process runs after each trial: the pages of what the trial freed
    leave the process (glibc, and jemalloc as medtune's trials run it, keep them otherwise;
    MEDTUNE_MALLOC_TRIM=0 shows that)."""
    from tune.cluster import JEMALLOC_CONF, ray_jemalloc

    env = {**os.environ, "MEDTUNE_MALLOC_TRIM": trim}
    if allocator == "jemalloc":
        if not ray_jemalloc():
            pytest.skip("this Ray ships no jemalloc (its Linux wheels do)")
        env |= {"LD_PRELOAD": ray_jemalloc(), "MALLOC_CONF": JEMALLOC_CONF}
    proc = subprocess.run(
        [sys.executable, "-c", _HEAP], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    freed, after = map(int, proc.stdout.split())
    if trim == "1":
        assert freed - after > 150, (freed, after)
    else:
        assert freed - after < 50, (freed, after)
