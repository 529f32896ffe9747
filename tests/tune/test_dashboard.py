"""`medtune dashboard` and `medtune report` in a real browser (Debian's headless Chromium).

The finished sweep is the session's tiny e2e sweep; the running one is a second tiny sweep
watched while it trains. Pages must hold one row per trial, charts with the reported points,
no console errors, escaped text, and the static report must open from file:// offline.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.tune.conftest import MAX_STEPS, MEDTUNE, SAMPLES
from tune.dashboard import render_page
from tune.sweep_state import read_sweep

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# Chromium's background services would try (and fail) to reach Google on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("MEDTUNE_SCREENSHOTS")  # e.g. docs/screenshots, for the README


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: `make test` installs Debian's chromium as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Page:
    """A browser page that records console errors, page errors and alert() dialogs."""

    def __init__(self, browser, **context):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context)
        self.page = self.context.new_page()
        self.errors, self.dialogs, self.requests = [], [], []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser):
    p = Page(browser)
    yield p
    p.close()


def start_dashboard(folder: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [MEDTUNE, "dashboard", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    assert match, line + proc.stdout.read() if proc.poll() is not None else line
    return proc, match.group(0)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def table_rows(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#trials tbody tr",
        """rows => rows.map(r => ({
            trial: r.dataset.trial, status: r.dataset.status,
            cells: Array.from(r.cells).map(c => c.textContent.trim())}))""",
    )


def curve_points(page) -> dict[str, int]:
    """Points drawn per trial in the learning-curve chart (matplotlib path vertices)."""
    paths = page.eval_on_selector_all(
        '#chart-learning-curves g[id^="trial-"] > path',
        "ps => ps.map(p => [p.closest('g').id, p.getAttribute('d')])",
    )
    return {gid.removeprefix("trial-"): len(re.findall(r"[ML]", d)) for gid, d in paths}


def test_dashboard_of_the_finished_sweep(sweep, page, tmp_path):
    out, _ = sweep
    summary = json.loads((out / "sweep_summary.json").read_text())
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    proc, url = start_dashboard(out)
    try:
        page.page.goto(url)
        rows = table_rows(page.page)
        assert len(rows) == SAMPLES
        assert {r["trial"] for r in rows} == {t["trial_id"] for t in summary["trials"]}
        stopped = sum(r["status"] == "stopped" for r in rows)
        assert stopped == summary["stopped_early"]
        assert sum(r["status"] == "completed" for r in rows) == SAMPLES - stopped
        budget = SAMPLES * MAX_STEPS  # what ASHA saved, as `medtune sweep` prints it
        steps = page.page.text_content("#steps-trained")
        assert steps == f"{summary['steps_trained']} of {budget} steps trained"
        evaluations = {t["trial_id"]: t["evaluations"] for t in summary["trials"]}
        assert curve_points(page.page) == evaluations  # one point per evaluation, every trial
        parallel = page.page.locator('#chart-parallel-coordinates g[id^="trial-"]').count()
        assert parallel == SAMPLES
        best = summary["best"]
        assert page.page.text_content("#best-value") == f"{best['best_eval_loss']:.4f}"
        shown = page.page.text_content('#test-metrics [data-metric="test_loss"]')
        assert float(shown) == pytest.approx(metrics["tuned"]["test_loss"], abs=5e-5)
        assert page.page.locator("#samples tbody tr").count() == len(metrics["samples"])
        assert page.page.locator("#confirmation tbody tr").count() == 2

        # Sorting by best metric, descending then ascending.
        header = page.page.locator("#trials th", has_text="best eval_loss")
        header.click()
        header.click()
        values = [float(r["cells"][5]) for r in table_rows(page.page)]
        assert values == sorted(values, reverse=True)
        # Hovering a row highlights that trial's line in the charts.
        first = table_rows(page.page)[0]["trial"]
        page.page.hover(f'#trials tr[data-trial="{first}"]')
        assert page.page.locator(f'#chart-learning-curves [id="trial-{first}"].hl').count() == 1
        if SCREENSHOTS:
            page.page.screenshot(path=f"{SCREENSHOTS}/dashboard.png", full_page=True)
        dashboard_table = [r["cells"] for r in table_rows(page.page)]
    finally:
        stop(proc)
    assert page.errors == [], page.errors

    # The static report, opened from file:// with the network off, shows the same numbers.
    report = tmp_path / "report.html"
    done = subprocess.run(
        [MEDTUNE, "report", str(out), "--out", str(report)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("learning-curves", "parallel-coordinates", "importance"):
        png = tmp_path / f"report-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    offline = Page(page.page.context.browser, offline=True)
    try:
        offline.page.goto(report.as_uri())
        report_table = [r["cells"] for r in table_rows(offline.page)]
        header = offline.page.locator("#trials th", has_text="best eval_loss")
        header.click()
        header.click()
        assert [r["cells"] for r in table_rows(offline.page)] == dashboard_table
        assert len(report_table) == SAMPLES
        assert curve_points(offline.page) == evaluations
        assert offline.page.text_content("#best-value") == f"{best['best_eval_loss']:.4f}"
        assert offline.requests == [report.as_uri()]  # nothing else was fetched
        assert offline.errors == []
    finally:
        offline.close()


def test_dashboard_follows_a_running_sweep(model_cache, page, tmp_path):
    """Watch a sweep train: rows appear, evaluations grow and the sweep finishes on screen,
    all without reloading the page."""
    args = [
        "sweep",
        "--no-export",
        "model.name=tiny-random",
        "data.max_records=60",
        "search.num_samples=2",
        "scheduler.name=fifo",
        "train.max_steps=40",
        "train.eval_every=5",
        "train.per_device_batch_size=2",
        "resources.max_concurrent_trials=1",
        "ray.dashboard=false",  # medtune's dashboard is under test, not Ray's
        "run.name=live",
        # Ray Tune's MLflow callback rides along: one MLflow run per trial, checked below.
        f"run.mlflow_uri=sqlite:///{tmp_path}/mlflow.db",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sweep_proc = subprocess.Popen(
        [MEDTUNE, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    folder = tmp_path / "results" / "live"
    dashboard = None
    try:
        deadline = time.monotonic() + 120
        while not (folder / "medtune.yaml").exists():
            assert sweep_proc.poll() is None, sweep_proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        dashboard, url = start_dashboard(folder)
        page.page.goto(url)
        assert page.page.get_attribute("#summary", "data-finished") == "no"
        page.page.wait_for_selector('#trials tr[data-status="running"]', timeout=120_000)
        # Tune may mark the next trial running before the first one's end is saved.
        running = page.page.locator('#trials tr[data-status="running"]').first
        running = running.get_attribute("data-trial")
        page.page.wait_for_function(
            """id => { const n = Object.values(document.querySelectorAll(
                  '#chart-learning-curves g[id="trial-' + id + '"] > path'));
                return n.length && n[0].getAttribute('d').match(/L/g)?.length >= 1; }""",
            arg=running,
            timeout=120_000,
        )
        assert sweep_proc.wait(timeout=300) == 0
        page.page.wait_for_selector('#summary[data-finished="yes"]', timeout=30_000)
        rows = table_rows(page.page)
        assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
        assert all(n == 8 for n in curve_points(page.page).values())  # 40 steps / 5
        if SCREENSHOTS:
            page.page.screenshot(path=f"{SCREENSHOTS}/dashboard-live.png", full_page=True)
    finally:
        if sweep_proc.poll() is None:
            sweep_proc.kill()
        if dashboard is not None:
            stop(dashboard)
    assert page.errors == [], page.errors

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("live").experiment_id])
    assert len(runs) == 2
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "eval_loss")
        assert len(history) == 8 and all(math.isfinite(m.value) for m in history)


HOSTILE = "<script>alert(1)</script>"
HOSTILE_IMG = '<img src=x onerror="alert(2)">'


def test_dashboard_of_a_folder_of_sweeps_lists_them_and_serves_each(sweep, page, tmp_path):
    """Given results/ rather than one sweep: an index of its sweeps at /, each sweep's live page
    under sweep/<name>/ (its polling reaches that sweep's routes), a broken sweep's reason in
    its row, and nothing outside the folder."""
    import urllib.error

    out, _ = sweep
    root = tmp_path / "results"
    root.mkdir()
    (root / "tiny e2e").symlink_to(out, target_is_directory=True)  # a name to be quoted
    (root / "broken").mkdir()
    (root / "broken" / "medtune.yaml").write_text("model: [\n")
    proc, url = start_dashboard(root)
    try:

        def get(path):
            try:
                with urllib.request.urlopen(url + path, timeout=30) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, index = get("")
        assert status == 200
        assert 'href="sweep/tiny%20e2e/"' in index and "unreadable: " in index
        assert get("sweep/broken/")[0] == 503  # its reason, not a crash
        (tmp_path / "medtune.yaml").write_text((out / "medtune.yaml").read_text())
        for outside in ("sweep/../", "sweep/%2E%2E/", "sweep/..%2F..%2F/", "sweep/nope/", "x"):
            assert get(outside)[0] == 404, outside

        page.page.goto(url)
        page.page.click('a[href="sweep/tiny%20e2e/"]')
        page.page.wait_for_selector("#trials tbody tr")
        assert page.page.url == url + "sweep/tiny%20e2e/"
        assert len(table_rows(page.page)) == SAMPLES
        # The live page polls its own sweep's version under the prefix, without errors.
        page.page.wait_for_function("() => !!document.body.dataset.lastPoll", timeout=15_000)
        assert any(r.endswith("/sweep/tiny%20e2e/api/version") for r in page.requests)
        assert not page.errors, page.errors
        page.page.click("#all-sweeps")
        page.page.wait_for_selector("#sweeps")
        assert page.page.url == url
    finally:
        stop(proc)


def _follow(uri: str, cache: Path) -> tuple[subprocess.Popen, list[str]]:
    """`medtune dashboard <uri>` with its copies in `cache`, and its first two lines."""
    proc = subprocess.Popen(
        [MEDTUNE, "dashboard", uri, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "MEDTUNE_CACHE": str(cache)},
    )
    return proc, [proc.stdout.readline() for _ in range(2)]


def test_dashboard_of_a_sweep_on_object_storage_follows_it_from_another_machine(
    sweep, page, tmp_path
):
    """`medtune dashboard <uri>` away from the driver: the sweep at a storage URI (a file://
    one: pyarrow's code path for s3:// on this disk) copied without checkpoints or models to
    this machine's cache, shown, and followed as it changes there."""
    out, _ = sweep
    remote = tmp_path / "bucket" / "sweeps" / "e2e"
    shutil.copytree(out, remote)  # as a driver leaves it under run.storage: checkpoints too
    metrics = json.loads((remote / "export" / "metrics.json").read_text())
    cache = tmp_path / "cache"
    proc, lines = _follow(remote.as_uri(), cache)
    try:
        assert lines[0].startswith(f"Following {remote.as_uri()}"), lines
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[1]).group(0)
        (copy,) = (cache / "sweeps").iterdir()
        assert copy.name.startswith("e2e-")
        assert not list(copy.rglob("checkpoint_*"))
        assert [p.name for p in (copy / "export").iterdir()] == ["metrics.json"]

        page.page.goto(url)
        assert len(table_rows(page.page)) == SAMPLES
        shown = page.page.text_content('#test-metrics [data-metric="test_loss"]')
        assert float(shown) == pytest.approx(metrics["tuned"]["test_loss"], abs=5e-5)
        assert page.page.locator("#confirmation tbody tr").count() == 2

        # A new export at the URI (as a re-export from the driver writes it) reaches the page.
        metrics["tuned"]["test_loss"] = 1.2345
        (remote / "export" / "metrics.json").write_text(json.dumps(metrics))
        page.page.wait_for_function(
            """() => document.querySelector('#test-metrics [data-metric="test_loss"]')
                .textContent.trim() === '1.2345'""",
            timeout=40_000,
        )
        assert not page.errors, page.errors
    finally:
        stop(proc)

    # `medtune report` of the URI: the same copy, brought up to date, written as one file.
    report = tmp_path / "remote-report.html"
    done = subprocess.run(
        [MEDTUNE, "report", remote.as_uri(), "--out", str(report)],
        capture_output=True,
        text=True,
        env={**os.environ, "MEDTUNE_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    assert f"Copied {remote.as_uri()} without checkpoints to {copy}" in done.stdout
    html = report.read_text()
    assert re.search(r'data-metric="test_loss">\s*1\.2345\s*<', html), html[:2000]
    assert len(re.findall(r'<tr data-trial="', html)) == SAMPLES

    gone = subprocess.run(
        [MEDTUNE, "dashboard", (tmp_path / "bucket" / "nope").as_uri(), "--port", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "MEDTUNE_CACHE": str(cache)},
    )
    assert gone.returncode == 2
    assert gone.stderr.startswith("medtune: error: file://") and "nothing there" in gone.stderr
    (tmp_path / "bucket" / "sweeps" / "other").mkdir()  # no sweep, nor a folder of sweeps
    (tmp_path / "bucket" / "sweeps" / "other" / "progress.csv").write_text("step\n1\n")
    wrong = subprocess.run(
        [MEDTUNE, "dashboard", (tmp_path / "bucket" / "sweeps" / "other").as_uri()],
        capture_output=True,
        text=True,
        env={**os.environ, "MEDTUNE_CACHE": str(cache)},
    )
    assert wrong.returncode == 2 and "no medtune sweep there" in wrong.stderr
    assert len(list((cache / "sweeps").iterdir())) == 1  # nothing of it copied

    # The run.storage itself: an index of its sweeps, each one's page under sweep/<name>/.
    proc, lines = _follow((tmp_path / "bucket" / "sweeps").as_uri(), cache)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/", lines[1]).group(0)
        with urllib.request.urlopen(url, timeout=30) as r:
            index = r.read().decode()
        assert 'href="sweep/e2e/"' in index
        assert f"<h1>Sweeps in {(tmp_path / 'bucket' / 'sweeps').as_uri()}</h1>" in index
        with urllib.request.urlopen(url + "sweep/e2e/", timeout=30) as r:
            assert len(re.findall(r'<tr data-trial="', r.read().decode())) == SAMPLES
    finally:
        stop(proc)
    (copies,) = [p for p in (cache / "sweeps").iterdir() if p.name.startswith("sweeps-")]
    assert [p.name for p in copies.iterdir()] == ["e2e"] and not list(copies.rglob("checkpoint_*"))


def test_text_from_data_models_and_errors_is_escaped(sweep, browser, tmp_path):
    """A question, an answer and a trial's error text holding markup show as text, run
    nothing, in the dashboard and the report."""
    out, _ = sweep
    copy = tmp_path / "e2e"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.safetensors", "checkpoint_*"))
    metrics_file = copy / "export" / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["samples"][0]["question"] = f"Is {HOSTILE} safe?"
    metrics["samples"][0]["tuned"] = HOSTILE_IMG
    metrics_file.write_text(json.dumps(metrics))
    # One trial failed with an error message that quotes markup from the data.
    state_file = sorted(copy.glob("experiment_state-*.json"))[-1]
    state = json.loads(state_file.read_text())
    trial = json.loads(state["trial_data"][0][0])
    trial["status"] = "ERROR"
    state["trial_data"][0][0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))
    error_txt = copy / f"trial_{trial['trial_id']}" / "error.txt"
    # As Ray writes it: its traceback first, the task's name coloured; the reason last.
    error_txt.write_text(
        "Failure # 1 (occurred at 2026-12-01_23-57-43)\n"
        "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        '  File "trainables/trainable.py", line 9, in _train\n'
        f"ValueError: {HOSTILE_IMG}\n"
    )

    report = tmp_path / "report.html"
    assert subprocess.run([MEDTUNE, "report", str(copy), "--out", str(report)]).returncode == 0
    proc, url = start_dashboard(copy)
    try:
        for where in (url, report.as_uri()):
            p = Page(browser)
            try:
                p.page.goto(where)
                p.page.wait_for_timeout(300)
                assert p.dialogs == []
                assert p.page.locator("script").count() == 1  # the page's own
                assert p.page.locator("#samples img, #errors img").count() == 0
                assert HOSTILE in p.page.text_content("#samples")
                assert HOSTILE_IMG in p.page.text_content("#samples")
                assert HOSTILE_IMG in p.page.text_content("#errors")
                status = p.page.get_attribute(
                    f'#trials tr[data-trial="{trial["trial_id"]}"]', "data-status"
                )
                assert status == "errored"
                # The reason first, on one line; the whole error, without Ray's colour codes,
                # folded away below it.
                card = p.page.locator("#errors .card")
                assert card.locator(".reason").text_content() == f"ValueError: {HOSTILE_IMG}"
                details = card.locator("details")
                assert details.get_attribute("open") is None
                whole = details.locator("pre").text_content()
                assert whole.startswith("Failure # 1") and "\x1b" not in whole
                assert "ray::ImplicitFunc.train() (pid=1" in whole
                if where == url:
                    # Unfolded, it stays unfolded when the live page redraws (a new error).
                    details.locator("summary").click()
                    error_txt.write_text(f"{error_txt.read_text()}RuntimeError: again\n")
                    p.page.wait_for_function(
                        "() => document.querySelector('#errors .reason').textContent"
                        " === 'RuntimeError: again'",
                        timeout=30_000,
                    )
                    assert card.locator("details").get_attribute("open") is not None
            finally:
                p.close()
    finally:
        stop(proc)


def test_report_and_dashboard_refuse_bad_input(tmp_path):
    not_results = tmp_path / "nothing"
    not_results.mkdir()
    for args in (
        ["report", str(not_results)],
        ["dashboard", str(not_results), "--port", "0"],
        ["dashboard", str(tmp_path), "--port", "70000"],
    ):
        done = subprocess.run([MEDTUNE, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medtune: error: "), done.stderr
    assert list(not_results.iterdir()) == []


def test_dashboard_binds_loopback_unless_told_and_then_warns(sweep):
    out, _ = sweep
    proc = subprocess.Popen(
        [MEDTUNE, "dashboard", str(out), "--port", "0", "--host", "0.0.0.0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        warning, served = proc.stdout.readline(), proc.stdout.readline()
    finally:
        stop(proc)
    assert "WARNING" in warning and "no authentication" in warning, warning
    assert "http://0.0.0.0:" in served
    proc, url = start_dashboard(out)  # the default
    stop(proc)
    assert url.startswith("http://127.0.0.1:")


def test_asha_rungs_match_rays_scheduler():
    from ray.tune.schedulers import ASHAScheduler

    from tune.sweep_state import asha_rungs

    for max_t, grace, rf in ((4, 1, 2), (8, 1, 2), (9, 1, 3), (10, 2, 2), (4, 4, 2), (27, 1, 3)):
        ray_rungs = sorted(
            m
            for m, _ in ASHAScheduler(max_t=max_t, grace_period=grace, reduction_factor=rf)
            ._brackets[0]
            ._rungs
            if m < max_t
        )
        assert asha_rungs(max_t, grace, rf) == ray_rungs, (max_t, grace, rf)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_an_export_made_before_the_sweep_was_extended_says_so(sweep):
    """`metrics.json` keeps the sweep's trial budget at export; once `--resume
    search.num_samples=N` has raised it, the page says the export chose among fewer trials."""
    out, _ = sweep
    state = read_sweep(out)
    assert state.export["sweep_trials"] == SAMPLES == state.num_samples
    assert 'id="export-stale"' not in render_page(state, live=False, nonce="n", charts={})
    state.num_samples = SAMPLES + 2  # as after an extension, before the next export
    page = render_page(state, live=False, nonce="n", charts={})
    assert (
        f'<div class="muted" id="export-stale">Exported when the sweep had {SAMPLES} trials, '
        f'before it was extended to {SAMPLES + 2}: <span class="mono">medtune export {out}</span>'
        " again chooses among them all.</div>" in page
    )
