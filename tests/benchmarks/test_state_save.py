"""benchmarks/state_save.py at its smallest size, on a small folder shaped like Tune's staging
folder: it runs and produces its numbers (no timing asserted), and both copies land."""

import json

from tests.conftest import load_benchmark


def test_state_save_benchmark_produces_its_numbers(tmp_path):
    sweep = tmp_path / "sweep"
    for trial in ("trial_a", "trial_b"):
        (sweep / trial / "checkpoint_000000").mkdir(parents=True)
        (sweep / trial / "checkpoint_000000" / "adapter.bin").write_bytes(b"0" * 1000)
        (sweep / trial / "result.json").write_text('{"step": 5}\n')
        (sweep / trial / "progress.csv").write_text("step\n5\n")
    (sweep / "experiment_state-1.json").write_text("{}")
    (sweep / "search_gen_state-1.json").write_text("{}")
    out = load_benchmark("state_save.py").main(
        [f"--sweep={sweep}", "--trials=2,3", "--repeats=2", f"--out={tmp_path}"]
    )
    (written,) = tmp_path.glob("*-state-save.json")
    assert json.loads(written.read_text()) == out
    # Checkpoints are not in the staging folder; the third trial is a copy of the first.
    assert [(row["trials"], row["files"]) for row in out["copies"]] == [(2, 6), (3, 8)]
    for row in out["copies"]:
        for case in ("unchanged", "one_trial_reported"):
            for side in ("tune", "medtune"):
                assert len(row[case][side]["values"]) == 2
                assert all(ms > 0 for ms in row[case][side]["values"])
            assert row[case]["medtune_vs_tune"]["median"] > 0
