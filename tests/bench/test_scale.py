"""bench scale: the projection on hand-computed costs, and a quick run through the command line
(local engine, Ray with 1 and 2 workers, the costs per photo and the projection table)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from taxonlens.bench.scale import PHOTOS, UNITS, ScaleSpec, projection_table
from taxonlens.cli import app
from taxonlens.errors import TaxonlensError


def test_projection_follows_the_costs_and_the_bound():
    spec = ScaleSpec(gpu_tflops=100.0, gpu_utilisation=0.5, cpu_cores_per_gpu=8, node_cores=32)
    # a GPU encodes 100e12 * 0.5 / 50e9 = 1000 photos/s; its 8 cores preprocess 8 / 0.004 = 2000/s
    costs = {"gflops": 50.0, "cpu_stage_core_ms": 4.0, "encoder_core_ms": 396.0}
    rows = projection_table(spec, costs, efficiency=0.5)
    assert [(r["hardware"], r["units"]) for r in rows] == list(UNITS)
    gpu1, gpu8, node1 = rows[0], rows[1], rows[3]
    assert gpu1["bound"] == "GPU" and math.isclose(gpu1["images_per_s"], 500.0)
    assert math.isclose(gpu8["images_per_s"], 8 * 500.0)
    assert math.isclose(gpu1["hours"][1_000_000], 1_000_000 / 500 / 3600)
    assert math.isclose(node1["images_per_s"], 32 / 0.4 * 0.5) and node1["bound"] == "CPU"
    slow_cpu = projection_table(spec, {**costs, "cpu_stage_core_ms": 16.0}, efficiency=1.0)
    assert slow_cpu[0]["bound"] == "CPU stage" and math.isclose(slow_cpu[0]["images_per_s"], 8 / 0.016)


def test_spec_checks():
    with pytest.raises(TaxonlensError, match="two batches"):
        ScaleSpec(photos=10, batch_size=8)
    with pytest.raises(TaxonlensError, match="gpu-utilisation"):
        ScaleSpec(gpu_utilisation=1.5)


def test_quick_run_fills_every_field(tmp_path):
    out = tmp_path / "scale.json"
    result = CliRunner().invoke(app, ["bench", "scale", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "projected hours" in result.output and "(raylet)" not in result.output
    r = json.loads(out.read_text())
    engines = {(e["engine"], e["workers"]): e for e in r["engines"]}
    assert set(engines) == {("local", 0), ("ray", 1), ("ray", 2)}
    n = ScaleSpec.quick().photos
    b = 2 * ScaleSpec.quick().batch_size
    for e in engines.values():
        assert e["photos"] == n and e["startup_s"] > 0 and e["seconds"] > 0
        steady = (n - b) / (e["seconds"] - e["startup_s"]) if e["steady"] else n / e["seconds"]
        assert e["steady"] == (e["seconds"] > e["startup_s"]) and math.isclose(e["images_per_s"], steady)
    local = engines["local", 0]["images_per_s"]
    for w in ("1", "2"):
        ray = engines["ray", int(w)]["images_per_s"]
        assert math.isclose(r["ratio"][w], ray / local)
        assert math.isclose(r["overhead_ms"][w], 1000 * (1 / ray - 1 / local))
    assert r["goal_met"] == (r["ratio"]["2"] >= 0.9)
    costs = r["costs"]
    assert costs["cpu_stage_core_ms"] > 0 and costs["encoder_core_ms"] > 0 and costs["inference_gb"] > 0
    # bioclip's tower: ViT-B/16, about 86 M parameters over 197 tokens
    assert 80e6 < costs["vision_parameters"] < 90e6 and costs["vision_tokens"] == 197
    assert math.isclose(costs["gflops"], 2 * costs["vision_parameters"] * 197 / 1e9)
    assert [[p["hardware"], p["units"]] for p in r["projection"]] == [list(u) for u in UNITS]
    for p in r["projection"]:
        hours = [p["hours"][str(k)] for k in PHOTOS]
        assert hours[0] > 0 and math.isclose(hours[1], 10 * hours[0])
    assert len(r["assumptions"]) >= 4 and "TFLOPS" in r["assumptions"][0]
