"""bench memory: real architectures counted on the meta device, the memory formulas on a
hand-computed case, the activation formula against a tiny preset, the fit table."""

from __future__ import annotations

import json

import pytest

from taxonlens.bench.memory import (
    GIB,
    MemoryRow,
    MemorySpec,
    activation_bytes,
    activation_check,
    bench_memory,
    fit_label,
    layer_values,
    memory_rows,
)
from taxonlens.bench.memory_models import ARCHITECTURES, Shape, Tower, build_on_meta, model_shape, parameter_counts
from taxonlens.errors import TaxonlensError


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b", "idefics2-8b"])
def test_real_architectures_count_within_one_percent_of_the_published_counts(name: str) -> None:
    arch = ARCHITECTURES[name]
    model = build_on_meta(arch)
    assert all(p.is_meta for p in model.parameters())
    counts = parameter_counts(model)
    assert abs(counts["total"] - arch.published) / arch.published < 0.01
    assert counts["vision"] + counts["text"] == counts["total"] and counts["vision"] > 0 and counts["text"] > 0


def test_tied_embeddings_are_counted_once() -> None:
    model = build_on_meta(ARCHITECTURES["qwen2.5-vl-3b"])
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert parameter_counts(model)["tied"] == 151936 * 2048  # the shared embedding, counted once


def test_the_shape_read_from_a_real_config() -> None:
    shape = model_shape(build_on_meta(ARCHITECTURES["qwen2.5-vl-3b"]))
    assert (shape.text.layers, shape.text.hidden, shape.text.kv_heads, shape.text.head_dim) == (36, 2048, 2, 128)
    assert shape.vision_tokens(448) == 32 * 32 and shape.image_tokens(448) == 16 * 16  # 14 px patches, 2x2 merged


# a hand-sized model: text tower of 2 layers (h 8, 2 heads of 4, 1 KV head, gated MLP 16, RMSNorm),
# image tower of 1 layer (h 4, 1 head, fc1-act-fc2 of 8, LayerNorm), vocabulary 10, 2 px patches
TEXT = Tower(layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, gated=True, rms_norm=True)
VISION = Tower(layers=1, hidden=4, heads=1, kv_heads=1, head_dim=4, intermediate=8, gated=False, rms_norm=False)
SHAPE = Shape(VISION, TEXT, vocab=10, patch=2, patch_values=12)


def test_activation_formula_on_a_hand_computed_case() -> None:
    # text: norms 2 * 3 * 8 + q, out 2 * 8 + k, v 2 * 4 + gate, up, act, product 4 * 16
    assert layer_values(TEXT) == 48 + 16 + 8 + 64
    assert layer_values(VISION) == 2 * 2 * 4 + 2 * 4 + 2 * 4 + 2 * 8
    # 3 samples of 5 image-tower and 7 LM tokens in bf16: layers + patches + final norm, and logits
    values = 1 * 48 * 5 + 2 * 136 * 7 + 5 * 12 + 7 * 3 * 8
    logits = 7 * 10 * (2 + 4 + 4)
    assert activation_bytes(SHAPE, 3, 5, 7, act_bytes=2) == 3 * (values * 2 + logits)
    assert activation_bytes(SHAPE, 3, 5, 7, act_bytes=2, peak=False) == 3 * (values * 2 + 7 * 10 * 6)
    # checkpointing: each layer's input, plus the largest single layer recomputed
    kept = (1 * 4 * 5 + 2 * 8 * 7) + max(48 * 5, 136 * 7) + 5 * 12 + 7 * 3 * 8
    assert activation_bytes(SHAPE, 3, 5, 7, act_bytes=2, checkpointing=True) == 3 * (kept * 2 + logits)


def test_memory_rows_on_a_hand_computed_case() -> None:
    spec = MemorySpec(batch_size=3, text_tokens=3, image_side=4, gpus=4)  # 4 patches -> 4 LM tokens: 7 in all
    rows = {(r.run, r.precision, r.checkpointing, r.zero): r
            for r in memory_rows("m", SHAPE, params=1000, linear=600, lora=50, spec=spec)}

    def parts(key) -> dict[str, float]:
        return {k: v * GIB for k, v in rows[key].gb.items() if v}

    nf4 = 600 * (0.5 + 1 / 64 + 4 / (64 * 256)) + 400 * 2
    kv = 2 * 2 * 1 * 4 * 7 * 3 * 2  # K and V x layers x KV width x tokens x batch x bf16
    assert parts(("inference", "bf16", None, None))["weights"] == pytest.approx(2000)
    assert parts(("inference", "bf16", None, None))["kv_cache"] == pytest.approx(kv)
    assert parts(("inference", "int8", None, None))["weights"] == pytest.approx(600 + 800)
    assert parts(("inference", "nf4", None, None))["weights"] == pytest.approx(nf4)
    acts = activation_bytes(SHAPE, 3, 4, 7, act_bytes=2)
    assert parts(("full", "bf16", False, 0)) == pytest.approx(
        {"weights": 2000, "gradients": 2000, "optimizer": 12000, "activations": acts})
    assert parts(("full", "bf16", False, 2)) == pytest.approx(
        {"weights": 2000, "gradients": 500, "optimizer": 3000, "activations": acts})
    assert parts(("full", "fp32", False, 3)) == pytest.approx(
        {"weights": 1000, "gradients": 1000, "optimizer": 2000, "activations": activation_bytes(SHAPE, 3, 4, 7, 4)})
    assert parts(("lora", "bf16", True, 0)) == pytest.approx(
        {"weights": 2200, "gradients": 200, "optimizer": 400,
         "activations": activation_bytes(SHAPE, 3, 4, 7, 2, checkpointing=True)})
    assert parts(("lora", "nf4", False, 3))["weights"] == pytest.approx((nf4 + 200) / 4)


def test_activation_formula_within_a_quarter_of_the_measured_saved_tensors() -> None:
    check = activation_check("tiny-qwen2.5-vl", batch=2, words=16)
    assert check["vision_tokens"] == 64 and check["text_tokens"] > 16
    assert 0.8 <= check["ratio"] <= 1.25, check


def _row(total: float, zero: int | None, checkpointing: bool | None) -> MemoryRow:
    return MemoryRow("m", "full", "bf16", checkpointing, zero, {"weights": total})


def test_fit_label_takes_the_first_setting_that_fits_fewest_tricks_first() -> None:
    rows = [_row(15, 2, True), _row(30, 0, False), _row(25, 2, False), _row(20, 0, True), _row(5, 3, True)]
    assert fit_label(rows, 80, reserve_gb=2) == "Z0"
    assert fit_label(rows, 24, reserve_gb=2) == "Z0+ckpt"  # 20 <= 22, before the smaller ZeRO-2 run
    assert fit_label(rows, 17, reserve_gb=2) == "Z2+ckpt"
    assert fit_label(rows, 16, reserve_gb=2) == "Z3+ckpt"
    assert fit_label(rows, 6, reserve_gb=2) == "no"
    assert fit_label([_row(3, None, None)], 6, reserve_gb=2) == "yes"


def test_bench_memory_refuses_unknown_models_and_stages() -> None:
    with pytest.raises(TaxonlensError, match="unknown models"):
        bench_memory(MemorySpec(models=("gpt-5",)))
    with pytest.raises(TaxonlensError, match="ZeRO"):
        bench_memory(MemorySpec(models=("bioclip",), zero_stages=(4,)))


def test_bench_memory_result_renders_and_is_json() -> None:
    result = bench_memory(MemorySpec(models=("qwen3-vl-2b",), check_presets=(), gpu_sizes=(24, 80)))
    (p,) = result.parameters
    assert p["model"] == "qwen3-vl-2b" and abs(p["diff_percent"]) < 1
    assert {(f["run"], f["precision"]) for f in result.fit} >= {("inference", "bf16"), ("full", "bf16")}
    assert all(set(f["fit"]) == {24, 80} for f in result.fit)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["rows"][0]["total_gb"] > 0 and set(data["fit"][0]["fit"]) == {"24", "80"}
    assert len(result.render().renderables) == 3  # parameters, the model's memory, the fit table
