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


def test_the_console_script_skips_the_collection_at_exit(tmp_path):
    # A handler registered first runs last, after medtune's: it sees what Python's final
    # collections would. `sweep train.max_steps=0`: refused at once, exit 2.
    code = (
        "import atexit, gc, sys; "
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0)); "
        "sys.argv = ['medtune', 'sweep', 'train.max_steps=0']; "
        "from tune.cli import run; run()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.split() == ["frozen", "True"]


def test_a_trial_process_skips_the_collection_at_exit():
    import trainables.trainable  # noqa: F401  (what every trial process imports)
    from trainables.memory import skip_collection_at_exit

    assert skip_collection_at_exit.cache_info().currsize == 1  # its exit handler is in place
