"""Shared fixtures: a tiny model built from a config, one Ray instance, the shared data."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# No test touches the network: the hub client fails at once instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The longest test files, longest first (seconds of one worker each in a 3-worker run on
# 2026-11-30). pytest-xdist hands out whole files (`--dist loadfile`) in this order when told
# not to reorder them (`--no-loadscope-reorder`, in the Makefile): by default it sorts them by
# their number of tests, which put the longest files last, one worker running alone at the end
# (its last file ended 105 s after the other two workers' in one run). A worker takes its next
# file as soon as at most 2 of its tests are left, so a file of one long test is followed by a
# short file of many: otherwise its worker took the next long file at once, and the kill test,
# the trainable's tests and the cluster test ran one after the other on one worker.
LONGEST_FIRST = [
    "tests/benchmarks/test_peer.py",  # 130
    "tests/tune/test_storage.py",  # 122
    "tests/tune/test_resume.py",  # 99-175: one test
    "tests/tune/test_data_report.py",  # 27: 12 tests
    "tests/tune/test_interrupt.py",  # 141 alone: three tests (twenty-second session)
    "tests/tune/test_scheduler.py",  # 156 alone, with an interrupted and resumed ASHA sweep
    "tests/trainables/test_trainable.py",  # 93
    "tests/tune/test_start_ray.py",  # 120, most of it waiting for Ray's start to time out
    "tests/tune/test_faults.py",  # 92
    "tests/benchmarks/test_reuse_memory.py",  # 75 alone: two sweeps (twenty-second session)
    "tests/tune/test_dashboard.py",  # 73
    "tests/tune/test_serve.py",  # 71, with the wait for the shared sweep
    "tests/tune/test_cluster.py",  # 57-102: one test
    "tests/trainables/test_models.py",  # 34: 10 tests
    "tests/tune/test_resume_order.py",  # 56
    "tests/benchmarks/test_bench.py",  # 56
    "tests/tune/test_e2e.py",  # 43
    "tests/tune/test_gguf_export.py",  # about 60: converts SmolLM2 and reads two GGUF files
    "tests/benchmarks/test_pinning.py",  # 32-72 (fifteenth session)
    "tests/tune/test_export.py",  # 31
    "tests/tune/test_trial_logs.py",  # 28
    "tests/tune/test_decision_metric.py",  # 25
]


def pytest_collection_modifyitems(config, items):
    """Longest files first, the rest in their usual order (a stable sort)."""

    def rank(item) -> int:
        path = item.nodeid.split("::")[0]  # relative to the rootdir, the repository
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real datasets live in ../shared/data)")
    return path


def load_benchmark(script: str):
    """`benchmarks/<script>` as a module: the benchmarks are scripts `make bench` runs, not a
    package. Not registered in `sys.modules`, so Ray pickles its functions by value."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"bench_{Path(script).stem}", REPO / "benchmarks" / script
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_progress(path):
    """A trial's progress.csv as a DataFrame, `trial_id` as text: pandas reads a random id such
    as 700e6327 as the float inf otherwise (seen in CI)."""
    import pandas as pd

    return pd.read_csv(path, dtype={"trial_id": str})


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("medtune-cache")
    os.environ["MEDTUNE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_path(model_cache) -> str:
    from trainables.config import ModelConfig
    from trainables.models import prepare_model

    return prepare_model(ModelConfig(name="tiny-random", cache_dir=str(model_cache)))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_path):
    from trainables.models import load_tokenizer

    return load_tokenizer(tiny_model_path)


def answering_brackets(export, dest):
    """A copy of the model folder `export` (an export, or the tiny model) whose model answers
    "[/][/][/]..." to any question: every layer's output projections are zero, so the last
    hidden state is the current token's embedding, and untied one-hot embeddings and head map
    any token to "[", "[" to "/", "/" to "]" and "]" to "[" again. Text rich would read as
    markup (a closing tag with none open)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(export, dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest)
    model.config.tie_word_embeddings = False
    ids = [tokenizer.convert_tokens_to_ids(t) for t in "[/]"]
    embed = torch.zeros(len(tokenizer), model.config.hidden_size)
    embed[:, 3] = 1.0
    head = torch.zeros_like(embed)
    head[ids[0], 3] = 1.0
    for k, token in enumerate(ids):
        embed[token] = torch.nn.functional.one_hot(torch.tensor(k), embed.shape[1])
        head[ids[(k + 1) % 3], k] = 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.zero_()
    model.get_input_embeddings().weight = torch.nn.Parameter(embed)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(dest, safe_serialization=True)
    return dest


@pytest.fixture(scope="module")
def ray_2_cpus():
    """A local Ray with 2 CPUs (as Ray's own `ray_start_2_cpus`), shared by the modules that
    use it: started again where an earlier test module shut it down (the cluster tests drive
    their own) or left one of another size running; Ray's atexit hook stops it at the end."""
    import ray

    if ray.is_initialized() and ray.cluster_resources().get("CPU") != 2:
        ray.shutdown()
    if not ray.is_initialized():
        from tune.cluster import init_local_ray, use_trial_worker_settings

        # Trial processes as medtune's own start runs them (tune/cluster.py): no idle workers
        # ahead of any work, jemalloc, and niceness 0. At Ray's 15 a trial here starved
        # beside the other pytest workers' processes: the failing-trial test of
        # tests/trainables/test_trainable.py took 135.15 s beside two busy loops, 24 s alone.
        use_trial_worker_settings()
        # A new Ray (a bare ray.init() joins the newest `ray start` cluster on this machine, such
        # as the two-node cluster of tests/tune/test_storage.py running in the other worker),
        # started again if its raylet gives up on a slow dashboard agent (tune/cluster.py).
        init_local_ray(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield


# An idle local Ray still costs about 8% of a core (its GCS, raylet, agents and monitors poll:
# 4.69 CPU-s in 60 s here, 2026-12-02), and a test worker kept the one `ray_2_cpus` started
# until the session ended, through the files that came after it, most of them without Ray.
# Starting it again costs about 11 CPU-s, about 140 s of idling: so once a worker has run 140 s
# of other modules since the last one that asked for it, it is shut down (a module that asks
# again starts it again).
RAY_IDLE_S = 140.0
_ray_use = {"module": None, "idle_since": None}


def pytest_runtest_setup(item):
    if "ray_2_cpus" in item.fixturenames:
        _ray_use.update(module=item.module, idle_since=None)
        return
    if item.module is _ray_use["module"] or "ray" not in sys.modules:
        return  # a module that uses it may have tests that do not ask for it themselves
    import ray

    now = time.monotonic()
    if not ray.is_initialized():
        _ray_use["idle_since"] = None
    elif _ray_use["idle_since"] is None:
        _ray_use["idle_since"] = now
    elif now - _ray_use["idle_since"] > RAY_IDLE_S:
        ray.shutdown()
        _ray_use["idle_since"] = None
