"""The benchmarks run end to end at small sizes and report what they promise (no timing is
asserted: figures belong to `taxonlens bench`, not to the test suite)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from taxonlens.bench.decode import bench_decode
from taxonlens.bench.encoders import bench_encode
from taxonlens.bench.labels import bench_label_cache
from taxonlens.cli import app


def test_decode_benchmark_marginals_are_exact():
    r = bench_decode(n_leaves=3000, batch=8)
    assert r["leaves"] == 3000 and r["batch"] == 8
    assert r["marginals_float64_max_abs_err"] < 1e-6 and r["marginals_float32_max_abs_err"] < 1e-5
    assert all(r[k] > 0 for k in ("build_decoder_s", "backoff_float32_s", "decode_top5_s", "greedy_s"))


def test_encode_benchmark_compares_with_a_plain_loop():
    r = bench_encode("tiny-clip", n_images=4, batch=2, n_labels=50, repeats=1)
    assert r["plain_open_clip_fp32_images_per_s"] > 0 and r["ratio_fp32"] > 0
    assert r["auto_precision"] in ("fp32", "bf16") and f"ratio_{r['auto_precision']}" in r


def test_label_cache_benchmark_loads_what_it_built():
    r = bench_label_cache(n_labels=300, sample=64)
    assert r["labels"] == 300 and r["embed_dim"] == 128 and r["build_s"] > 0 and r["load_from_cache_s"] > 0


def test_bench_commands_print_their_figures():
    result = CliRunner().invoke(app, ["bench", "decode", "--leaves", "500", "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert "backoff_float32_s" in result.output and "500" in result.output


def test_index_benchmark_reports_recall_against_the_exact_index():
    from taxonlens.bench.index import bench_index

    r = bench_index(n=5000, dim=16, queries=20, k=5)
    assert r["flat_recall_at_5"] == 1.0 and 0 < r["ivf_recall_at_5"] <= 1 and 0 < r["hnsw_recall_at_5"] <= 1
    assert r["hnsw_speedup"] > 0 and r["ivf_build_s"] > 0 and r["hnsw_ef1024_recall_at_5"] >= r["hnsw_recall_at_5"] - 0.05


def test_lmm_answering_benchmark_times_both_modes():
    from taxonlens.bench.lmm import bench_answering

    r = bench_answering("tiny-idefics2", n_questions=4, batch=2)
    assert r["generate_questions_per_s"] > 0 and r["score_questions_per_s"] > 0 and r["threads"] == 1


def test_predict_benchmark_prints_every_arm_at_both_precisions(tmp_path):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(app, ["bench", "predict", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "file-to-row throughput" in result.output and "of matmul bound" in result.output
    doc = json.loads(out.read_text())
    precisions = {r["precision"] for r in doc["rows"]}
    arms = ["encode only", "plain open_clip loop", "predict, 0 workers", "predict, 1 workers"]
    assert "fp32" in precisions and [r["arm"] for r in doc["rows"]] == arms * len(precisions)
    assert all(r["photos_per_s"] > 0 and r["matmul_fraction"] > 0 for r in doc["rows"])
    assert all(r["ratio_to_encode"] == 1.0 for r in doc["rows"] if r["arm"] == "encode only")
    assert doc["figures"]["GFLOP per photo (counted)"] > 0


def test_a_training_benchmark_trains_and_scores_where_its_spec_says(tmp_path):
    from types import SimpleNamespace

    from taxonlens.bench import HardwareSpec, TinySFTSpec

    hardware = HardwareSpec(threads=2, device="cuda", precision="bf16")
    config = TinySFTSpec(epochs=3).config(tmp_path, hardware, seed=5)
    assert (config.threads, config.device, config.precision, config.epochs, config.seed) == (2, "cuda", "bf16", 3, 5)
    trained = SimpleNamespace(model="in memory", model_dir=tmp_path / "model")
    calls = []

    def loader(name, **kwargs):
        calls.append((name, kwargs))
        return "reloaded"

    assert HardwareSpec(device="cpu", precision="fp32").scored(trained, loader) == "in memory" and not calls
    assert HardwareSpec(device="cpu", precision="bf16").scored(trained, loader) == "reloaded"
    assert calls == [(str(tmp_path / "model"), {"precision": "bf16", "device": "cpu"})]
