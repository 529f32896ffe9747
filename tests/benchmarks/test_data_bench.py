"""The data-preparation benchmark at its smallest size (the demo set, tiny-random's
tokenizer): it runs, checks its own cache round trip, and writes its numbers. No timing is
asserted."""

import json

from tests.conftest import load_benchmark


def test_data_bench_smoke(tmp_path, model_cache):
    bench = load_benchmark("data_bench.py")
    args = ["--source", "demo", "--model", "tiny-random", "--repeats", "1", "--out", str(tmp_path)]
    bench.main(args)
    (result,) = tmp_path.glob("*-data-demo-tiny-random.json")
    data = json.loads(result.read_text())
    counts = data["counts"]
    assert counts["records_read"] == counts["records_kept"] == sum(counts["splits"].values()) == 250
    assert sum(counts["examples"].values()) == 250 - counts["too_long"] and counts["tokens"] > 0
    for run in ("cold_seconds", "cached_seconds"):
        spread = data[run]["total"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    assert data["machine"]["cores"] >= 1 and data["machine"]["transformers"]
    assert len(data["runs"]) == 1 and data["max_length"] == 256
