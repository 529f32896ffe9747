"""`run.storage` as an S3 URI on a two-node Ray cluster: trials write results and checkpoints
through the S3 API from the node they run on, the driver keeps a local copy without
checkpoints, export fetches the checkpoint it chose, `--resume` restores (and extends) the
sweep from the URI, and export's confirmation runs retrain on the worker nodes into the URI.

No cloud store is reachable from here: moto's S3 server on 127.0.0.1 stands in for S3, as in
Ray's own storage tests; pyarrow, Ray and medtune talk to it over HTTP like to any S3 endpoint.
"""

import json
import os
import subprocess

import pyarrow.fs as pafs
import pytest
import yaml

from tests.tune.conftest import MEDTUNE, snapshot
from tune.cluster import use_trial_worker_settings
from tune.storage import run_uri
from tune.sweep_state import read_sweep

pytestmark = pytest.mark.slow
STEPS, EVERY = 10, 5
KEYS = {
    "AWS_ACCESS_KEY_ID": "medtune-test",
    "AWS_SECRET_ACCESS_KEY": "medtune-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3(monkeypatch):
    """An S3 endpoint on 127.0.0.1 with an empty bucket; yields (storage URI, filesystem)."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    fs = pafs.S3FileSystem(
        endpoint_override=f"{host}:{port}",
        scheme="http",
        access_key=KEYS["AWS_ACCESS_KEY_ID"],
        secret_key=KEYS["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("medtune")
    yield f"s3://medtune/sweeps?endpoint_override={host}:{port}&scheme=http", fs
    server.stop()


@pytest.fixture
def cluster(s3):
    """Two worker nodes with a CPU each (the head takes no trials), started after `s3` so
    their processes hold its credentials, like nodes with an instance role."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    # Nodes started with the settings docs/cluster.md gives `ray start` (trials at niceness
    # 0, on jemalloc, no idle workers), as tests/conftest.py's local Ray.
    use_trial_worker_settings()
    # No Ray dashboard (about 3 CPU-s of a start): nothing here reads it.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1, resources={"trainer": 1})
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def medtune(*args, cwd, env=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [MEDTUNE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def files(fs, path):
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    return [i.path for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]


def test_a_sweep_on_s3_storage_exports_and_resumes(s3, cluster, tmp_path, model_cache):
    uri, fs = s3
    local = tmp_path / "local"
    args = [
        "model.name=tiny-random",
        "data.max_records=120",
        "scheduler.name=fifo",
        "search.num_samples=2",
        f"train.max_steps={STEPS}",
        f"train.eval_every={EVERY}",
        "run.name=s3run",
        f"run.storage={uri}",
        f"run.local_dir={local}",
        "run.reuse_actors=false",  # a fresh actor per trial, placed wherever Ray has room
        # The last export retrains the best configuration with 2 new seeds (not the first,
        # which exports a trial chosen with --trial).
        "export.confirm_top_k=1",
        "export.confirm_seeds=2",
        f"ray.address={cluster.address}",
        "resources.custom={trainer: 1}",
    ]
    proc = medtune("sweep", "--no-export", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = local / "s3run"

    # On S3: medtune's files, Ray's experiment and every trial's checkpoints.
    remote = files(fs, "medtune/sweeps/s3run")
    names = {p.removeprefix("medtune/sweeps/s3run/") for p in remote}
    for name in ("medtune.yaml", "data.json", "data/test.jsonl", "sweep_summary.json"):
        assert name in names
    assert any(n.startswith("experiment_state-") for n in names)
    checkpoints = {n.split("/checkpoint_")[0] for n in names if "/checkpoint_" in n}
    assert len(checkpoints) == 2  # both trials uploaded theirs
    assert any(n.endswith("adapter_model.safetensors") for n in names)

    # Locally: the same results without a single checkpoint, enough for the dashboard.
    assert not list(out.rglob("checkpoint_*"))
    state = read_sweep(out)
    assert [t.status for t in state.trials] == ["completed", "completed"]
    assert all(len(t.history) == STEPS // EVERY for t in state.trials)
    # From both worker nodes: neither shares a checkpoint folder with the driver's copy.
    assert len({t.node_id for t in state.trials}) == 2
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["best"] is not None

    # Export fetches the best trial's best checkpoint from S3 into the local folder and
    # scores it.
    best = summary["best"]["trial_id"]
    proc = medtune("export", str(out), "--trial", best, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    assert metrics["best_trial"]["trial_id"] == best
    chosen = metrics["best_trial"]["checkpoint"]
    assert (out / chosen / "adapter_model.safetensors").is_file()
    assert f"medtune/sweeps/s3run/{chosen}/adapter_model.safetensors" in remote
    assert len(list(out.rglob("checkpoint_*"))) == 1  # that one only
    # The export is on S3 too, file for file, its manifest included.
    export = out / "export"
    uploaded = files(fs, "medtune/sweeps/s3run/export")
    assert sorted(p.removeprefix("medtune/sweeps/s3run/export/") for p in uploaded) == sorted(
        p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()
    )
    assert "checksums.sha256" in {p.rsplit("/", 1)[1] for p in uploaded}

    # Resume from the URI with one more trial: the two finished ones are not run again,
    # and the export uploaded above is not copied back over the local one.
    exported = snapshot(out / "export")
    proc = medtune(
        "sweep", "--resume", str(out), "--no-export", "search.num_samples=3", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = read_sweep(out)
    assert len(state.trials) == 3
    assert all(t.status == "completed" for t in state.trials)
    assert all(len(t.history) == STEPS // EVERY for t in state.trials)  # none twice
    assert snapshot(out / "export") == exported
    with fs.open_input_stream("medtune/sweeps/s3run/medtune.yaml") as f:
        assert yaml.safe_load(f.read())["search"]["num_samples"] == 3

    # Export with confirmation: the best configuration retrained with 2 new seeds on the
    # worker nodes, their checkpoints written to S3; the driver fetches the chosen one only.
    proc = medtune("export", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    assert metrics["chosen_by"] == "confirmation"
    runs = metrics["confirmation"]["candidates"][0]["runs"]
    assert sorted(r["seed"] for r in runs) == [1, 2]
    confirmed = metrics["best_trial"]["checkpoint"]
    assert confirmed.startswith("confirm/") and (out / confirmed / "adapter_config.json").is_file()
    remote = files(fs, "medtune/sweeps/s3run/confirm")
    for run in runs:
        assert any(p.startswith(f"medtune/sweeps/s3run/{run['checkpoint']}/") for p in remote)
    assert len({r["checkpoint"] for r in runs}) == 2
    names = {p.removeprefix("medtune/sweeps/s3run/") for p in files(fs, "medtune/sweeps/s3run")}
    assert "confirm_summary.json" in names
    assert len(list(out.rglob("checkpoint_*"))) == 2  # the --trial export's and this one
    with fs.open_input_stream("medtune/sweeps/s3run/export/metrics.json") as f:
        assert json.loads(f.read())["chosen_by"] == "confirmation"  # the new export replaced it

    # From another machine, with the bucket's URI alone: the same model, exported where asked
    # (the confirmation's summary and the chosen checkpoint fetched; nothing retrained).
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    proc = medtune(
        "export",
        run_uri(uri, "s3run"),
        "--out",
        "model",
        cwd=laptop,
        env={"MEDTUNE_CACHE": str(laptop / "cache")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Copied s3://medtune/sweeps/s3run" in proc.stdout and "Confirming" not in proc.stdout
    elsewhere = json.loads((laptop / "model" / "metrics.json").read_text())
    assert elsewhere["best_trial"] == metrics["best_trial"]
    assert elsewhere["tuned"] == pytest.approx(metrics["tuned"])
    assert (laptop / "model" / "checksums.sha256").is_file()
    (copy,) = (laptop / "cache" / "sweeps").iterdir()
    assert [p.relative_to(copy).as_posix() for p in copy.rglob("checkpoint_*")] == [confirmed]
    # The bucket's sweeps, listed from there: the row points at the sweep's URI.
    proc = medtune("list", uri, "--json", cwd=laptop, env={"MEDTUNE_CACHE": str(laptop / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout)
    assert row["name"] == "s3run" and row["folder"] == run_uri(uri, "s3run")
    assert row["status"] == "finished" and row["trials"] == row["ended"] == 3
    assert row["test"]["tuned"] == metrics["tuned"]["test_loss"]

    # The same run name again is refused while the run exists on S3, even without a local copy.
    (tmp_path / "elsewhere").mkdir()
    proc = medtune(
        "sweep",
        "--no-export",
        *(a for a in args if "local_dir" not in a),
        "run.local_dir=x",
        cwd=tmp_path / "elsewhere",
    )
    assert proc.returncode == 2
    assert "already exists under run.storage=s3://medtune/sweeps" in proc.stderr


def test_the_local_copy_skips_checkpoints_and_copies_only_what_changed(tmp_path):
    from tune.storage import MirrorResults, download_results

    remote = tmp_path / "bucket" / "run"
    (remote / "trial_a" / "checkpoint_000001").mkdir(parents=True)
    (remote / "trial_a" / "checkpoint_000001" / "adapter_model.safetensors").write_bytes(b"w")
    (remote / "trial_a" / "progress.csv").write_text("step,eval_loss\n5,2.9\n")
    (remote / "experiment_state-1.json").write_text("{}")
    # Exports the driver uploaded (the default place and an --out inside the results folder):
    # a model it has locally already, never copied back.
    for export in (remote / "export", remote / "picked" / "r8-export"):
        export.mkdir(parents=True)
        (export / "medtune_prompt.json").write_text("{}")
        (export / "model.safetensors").write_bytes(b"merged model")
    local = tmp_path / "local"

    uri = remote.as_uri()  # file://: the same pyarrow code path as s3://, on this disk
    assert download_results(uri, local) == 2
    assert not (local / "export").exists() and not (local / "picked").exists()
    assert (local / "trial_a" / "progress.csv").read_text().endswith("2.9\n")
    assert not (local / "trial_a" / "checkpoint_000001").exists()
    assert not list(local.rglob("*.part"))
    assert download_results(uri, local) == 0  # nothing changed, nothing copied

    (remote / "trial_a" / "progress.csv").write_text("step,eval_loss\n5,2.9\n10,2.7\n")
    mirror = MirrorResults(uri, local, every_s=3600)
    mirror.on_trial_result(0, [], None, {})  # the first result syncs at once
    assert (local / "trial_a" / "progress.csv").read_text().endswith("2.7\n")
    (remote / "experiment_state-2.json").write_text("{}")
    mirror.on_trial_result(1, [], None, {})  # within every_s: no sync
    assert not (local / "experiment_state-2.json").exists()
    mirror.on_experiment_end([])  # the end always syncs
    assert (local / "experiment_state-2.json").exists()


def test_a_copy_elsewhere_drops_what_the_storage_no_longer_holds(tmp_path, monkeypatch):
    """A sweep run again under its URI with --overwrite: the copy another machine keeps
    (`medtune dashboard`, `list`, `export` of a URI) drops the old run's trials, its export's
    metrics and the checkpoint export fetched of it, so no old trial shows among the new;
    a download under way and an export made on that machine stay."""
    import shutil

    from tune.export_layout import PROMPT_FILE
    from tune.storage import copy_sweep, download_folder

    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    remote = tmp_path / "bucket" / "run"

    def run(trial):
        (remote / trial / "checkpoint_000001").mkdir(parents=True)
        (remote / trial / "checkpoint_000001" / "adapter_model.safetensors").write_bytes(b"w")
        (remote / trial / "progress.csv").write_text("step,eval_loss\n5,2.9\n")
        (remote / "medtune.yaml").write_text(f"run: {{name: {trial}}}\n")

    run("trial_old")
    (remote / "export").mkdir()
    (remote / "export" / PROMPT_FILE).write_text("{}")
    (remote / "export" / "metrics.json").write_text("{}")
    uri = remote.as_uri()  # file://: the same pyarrow code path as s3://
    local = copy_sweep(uri)
    download_folder(uri, "trial_old/checkpoint_000001", local)  # what an export fetched
    assert (local / "export" / "metrics.json").is_file()
    (local / ".trial_old.part").write_bytes(b"half a download")
    (local / "picked").mkdir()  # an export made on this machine, its upload not ended
    (local / "picked" / PROMPT_FILE).write_text("{}")
    (local / "picked" / "model.safetensors").write_bytes(b"merged")

    shutil.rmtree(remote)
    run("trial_new")
    assert copy_sweep(uri) == local
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*")) == [
        ".trial_old.part",
        "medtune.yaml",
        "picked",
        f"picked/{PROMPT_FILE}",
        "picked/model.safetensors",
        "trial_new",
        "trial_new/progress.csv",
    ]
    assert (local / "medtune.yaml").read_text() == "run: {name: trial_new}\n"


def test_a_same_size_rewrite_is_copied(tmp_path):
    """Object stores keep whole seconds: a rewrite at the same size within the second of the
    last copy looks unchanged to a size-and-time check; a new time, or the final copy, not."""
    import os

    from tune.storage import download_results

    remote = tmp_path / "bucket" / "run"
    remote.mkdir(parents=True)
    state = remote / "experiment_state-1.json"
    state.write_text('{"status": "RUNNING___"}')
    os.utime(state, (1000, 1000))
    local = tmp_path / "local"
    uri = remote.as_uri()
    assert download_results(uri, local) == 1
    state.write_text('{"status": "TERMINATED"}')  # same size
    os.utime(state, (1000, 1000))  # and the same whole second
    assert download_results(uri, local) == 0
    assert download_results(uri, local, every_file=True) == 1  # what the sweep's end does
    assert "TERMINATED" in (local / "experiment_state-1.json").read_text()
    state.write_text('{"status": "RUNNING___"}')
    os.utime(state, (1001, 1001))  # a later second: copied, even though the local file is
    assert download_results(uri, local) == 1  # newer on this disk than the remote's time
    assert "RUNNING" in (local / "experiment_state-1.json").read_text()


def test_a_checkpoint_is_downloaded_whole_and_once(tmp_path):
    """What export fetches: the folder at its relative path, a cut-short download replaced,
    one already there not fetched again; a path that is not there is one clear error."""
    from tune.errors import UserError
    from tune.storage import download_folder

    remote = tmp_path / "bucket" / "run"
    ckpt = remote / "confirm" / "confirm_a" / "checkpoint_000001"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"weights")
    (ckpt / "trainer_state.json").write_text('{"global_step": 5}')
    (ckpt / "rng").mkdir()
    (ckpt / "rng" / "state.pth").write_bytes(b"rng")
    local = tmp_path / "local"
    partial = local / "confirm" / "confirm_a" / ".checkpoint_000001.part"
    partial.mkdir(parents=True)
    (partial / "adapter_model.safetensors").write_bytes(b"half")  # a download cut short

    uri = remote.as_uri()
    got = download_folder(uri, "confirm/confirm_a/checkpoint_000001", local)
    assert got == local / "confirm" / "confirm_a" / "checkpoint_000001"
    assert (got / "adapter_model.safetensors").read_bytes() == b"weights"
    assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*")) == [
        "adapter_model.safetensors",
        "rng",
        "rng/state.pth",
        "trainer_state.json",
    ]
    assert not partial.exists()
    (ckpt / "adapter_model.safetensors").write_bytes(b"changed")  # there already: kept
    download_folder(uri, "confirm/confirm_a/checkpoint_000001", local)
    assert (got / "adapter_model.safetensors").read_bytes() == b"weights"
    with pytest.raises(UserError, match="cannot open it"):
        download_folder(uri, "confirm/confirm_b/checkpoint_000001", local)
    assert not list(local.rglob("*.part"))  # nothing half-fetched left behind
