"""``bench memory``: real sizes on paper, computed by the code.

The published architectures of :data:`~taxonlens.bench.memory_models.ARCHITECTURES` are built on
the ``meta`` device (no weights, no memory); their parameters are counted and set beside the
published counts, and the GPU memory of inference, LoRA and full fine-tuning is estimated from
the counts and the config, per precision and per DeepSpeed ZeRO stage, with a fit table for 24,
48, 80 and 141 GB GPUs. GB here means GiB (2^30 bytes), as GPU memory is sold.

The formulas (P parameters, of which Q in the quantizable ``nn.Linear`` layers; T LoRA
parameters; N GPUs; per GPU a batch of B samples of ``n_v`` image-tower tokens and ``n_t`` LM tokens):

- weights: ``P * w`` with ``w`` = 4 (fp32) or 2 (bf16) bytes; int8 and nf4 keep the linear
  layers at 1 and ``0.5 + 1/64 + 4/(64*256)`` bytes (nf4 blocks of 64 with double-quantized
  scales) and the rest in bf16: ``Q * q + (P - Q) * 2``.
- full fine-tuning: gradients ``P * w``; AdamW ``P * 8`` (fp32 m and v) plus ``P * 4`` (the fp32
  master weights) under bf16 mixed precision. LoRA (peft's ``all-linear``: image tower, connector
  and LM): the frozen base weights, plus ``16 T`` bytes (fp32 adapters, their gradients, m and
  v); QLoRA is LoRA over nf4 base weights. LoRA keeps the activations of full fine-tuning (with
  ``lora_dropout=0`` an adapter shares its layer's saved input).
- ZeRO over N GPUs: stage 1 divides the optimizer states (master weights included) by N, stage 2
  the gradients too, stage 3 the weights too (its gathered-layer buffers are left out).
- activations kept for backward, per token and layer, with SDPA attention (no score matrix kept;
  values, times the activation bytes, 4 in fp32 and 2 in bf16), for a tower of width h,
  query width ``h_q = heads * head_dim``, key/value width ``h_kv`` and MLP width f::

      per layer = 2 * c_norm * h           the two norms (c_norm = 3 for transformers' eager
                                             RMSNorm: input, normalised, output; 2 for LayerNorm)
                + 2 * h_q + 2 * h_kv       q and k after RoPE, v, the attention output (o_proj's input)
                + 2 * (h_q + h_kv)         only with per-head q/k RMSNorm (Qwen3)
                + 4 * f  (gated MLP)       gate, up, act(gate), act(gate) * up
                  2 * f  (fc1 -> act -> fc2)

  times layers and tokens for each tower, plus the patch embedding's input (``n_v`` patches of
  channels x frames x patch^2 values), the final norm, and the loss over the vocabulary V:
  ``n_t * V * (w_act + 4)`` bytes kept (the logits the step holds, the fp32 log-softmax the loss
  saves) and ``n_t * V * 4`` more at the peak (the fp32 upcast of the logits in the forward, their
  gradient in the backward). Connectors (Qwen's merger, Idefics2's perceiver) are left out (<2 %).
  With gradient checkpointing (per layer), ``h`` values per token and layer are kept, plus one
  layer's full set at a time while it is recomputed.
- inference: weights, the KV cache ``2 * layers * h_kv * n_t * B`` values (bf16 unless fp32),
  and one layer's working set (the per-layer values above) with the last position's logits.

The activation formula is checked against the tiny presets (:mod:`taxonlens.models.presets`):
one training forward on the CPU, summing the distinct storages autograd saves for backward
(gradient checkpointing and the transient peak terms are not measured).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from taxonlens.bench.memory_models import (
    ARCHITECTURES,
    Shape,
    Tower,
    build_on_meta,
    linear_parameters,
    lora_parameters,
    model_shape,
    parameter_counts,
)
from taxonlens.errors import TaxonlensError

GIB = 2 ** 30
#: bytes per weight of the quantized linear layers (the rest stays bf16)
QUANT_BYTES = {"int8": 1.0, "nf4": 0.5 + 1 / 64 + 4 / (64 * 256)}
#: the runs, and the precisions each is estimated at (nf4 LoRA is QLoRA)
RUNS: dict[str, tuple[str, ...]] = {"inference": ("fp32", "bf16", "int8", "nf4"), "lora": ("fp32", "bf16", "nf4"),
                                    "full": ("fp32", "bf16")}
PARTS = ("weights", "gradients", "optimizer", "activations", "kv_cache")


@dataclass(frozen=True)
class MemorySpec:
    """What ``bench memory`` estimates.

    Attributes:
        models: names in :data:`~taxonlens.bench.memory_models.ARCHITECTURES`.
        batch_size: samples per GPU (the micro-batch) in training and inference.
        text_tokens: text tokens per sample (prompt and answer) of an LMM; CLIP's text tower
            always sees its context length.
        image_side: pixels of the square photo; images_per_sample: photos per sample.
        gpus: N, the data-parallel GPUs ZeRO partitions over; zero_stages: the stages estimated.
        lora_rank: rank of LoRA on every linear layer but the output layer.
        gpu_sizes: GPU memory (GB) of the fit table; reserve_gb: what a run cannot use of it
            (CUDA context, workspaces, allocator fragmentation).
        check_presets, check_batch, check_words: the tiny presets the activation formula is
            checked on (:func:`activation_check`), with that batch and texts of that many words.
    """

    models: tuple[str, ...] = tuple(ARCHITECTURES)
    batch_size: int = 4
    text_tokens: int = 512
    image_side: int = 448
    images_per_sample: int = 1
    gpus: int = 8
    zero_stages: tuple[int, ...] = (0, 2, 3)
    lora_rank: int = 16
    gpu_sizes: tuple[int, ...] = (24, 48, 80, 141)
    reserve_gb: float = 2.0
    check_presets: tuple[str, ...] = ("tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-idefics2", "tiny-clip")
    check_batch: int = 2
    check_words: int = 48


@dataclass(frozen=True)
class MemoryRow:
    """One estimate: ``run`` (inference, lora, full) of ``model`` at ``precision``, with or
    without gradient checkpointing (None for inference) under ZeRO stage ``zero`` (None for
    inference); ``gb``: part (:data:`PARTS`) -> GB per GPU."""

    model: str
    run: str
    precision: str
    checkpointing: bool | None
    zero: int | None
    gb: dict[str, float]

    @property
    def total_gb(self) -> float:
        return sum(self.gb.values())


def layer_values(t: Tower) -> int:
    """Values per token one layer of ``t`` keeps for backward (the module docstring's formula)."""
    hq, hkv = t.heads * t.head_dim, t.kv_heads * t.head_dim
    norm = 3 if t.rms_norm else 2
    attention = norm * t.hidden + 2 * hq + 2 * hkv + (2 * (hq + hkv) if t.qk_norm else 0)
    mlp = norm * t.hidden + (4 if t.gated else 2) * t.intermediate
    return attention + mlp


def activation_bytes(shape: Shape, batch: int, vision_tokens: int, text_tokens: int, act_bytes: int,
                     checkpointing: bool = False, peak: bool = True) -> float:
    """Bytes of activations in one training step of ``batch`` samples of ``vision_tokens``
    image-tower tokens (all photos) and ``text_tokens`` LM tokens each: what autograd keeps for
    backward and the logits, with (``peak``) or without the loss's transient fp32 copy."""
    towers = [(shape.vision, vision_tokens), (shape.text, text_tokens)]
    if checkpointing:
        values = sum(t.layers * t.hidden * n for t, n in towers) + max(layer_values(t) * n for t, n in towers)
    else:
        values = sum(t.layers * layer_values(t) * n for t, n in towers)
    values += vision_tokens * shape.patch_values + text_tokens * (3 if shape.text.rms_norm else 2) * shape.text.hidden
    logits = text_tokens * shape.vocab * (act_bytes + 4 + (4 if peak else 0))
    return batch * (values * act_bytes + logits)


def _sample_tokens(shape: Shape, spec: MemorySpec) -> tuple[int, int]:
    """``(image-tower tokens, LM tokens)`` of one sample of ``spec``."""
    n = spec.images_per_sample
    text = shape.text_len if shape.text_len is not None else spec.text_tokens
    return n * shape.vision_tokens(spec.image_side), text + n * shape.image_tokens(spec.image_side)


def _weight_bytes(precision: str, params: int, linear: int) -> float:
    if precision in QUANT_BYTES:
        return linear * QUANT_BYTES[precision] + (params - linear) * 2
    return params * (4 if precision == "fp32" else 2)


def memory_rows(name: str, shape: Shape, params: int, linear: int, lora: int, spec: MemorySpec) -> list[MemoryRow]:
    """Every estimate of one model: :data:`RUNS` x precisions, training runs with and without
    checkpointing x ``spec.zero_stages`` over ``spec.gpus`` GPUs.

    Args:
        params: P; linear: Q, the parameters of the quantizable linear layers; lora: T.
    """
    n_v, n_t = _sample_tokens(shape, spec)
    b, n = spec.batch_size, spec.gpus
    rows = []
    for precision in RUNS["inference"]:
        act = 4 if precision == "fp32" else 2
        kv = 2 * shape.text.layers * shape.text.kv_heads * shape.text.head_dim * n_t * b * act if shape.causal_lm else 0
        working = b * (max(layer_values(shape.vision) * n_v, layer_values(shape.text) * n_t) * act + shape.vocab * 4)
        rows.append(MemoryRow(name, "inference", precision, None, None, _gb(
            weights=_weight_bytes(precision, params, linear), kv_cache=kv, activations=working)))
    for run in ("lora", "full"):
        for precision in RUNS[run]:
            act = 4 if precision == "fp32" else 2
            for checkpointing in (False, True):
                acts = activation_bytes(shape, b, n_v, n_t, act, checkpointing)
                for zero in spec.zero_stages:
                    weights = _weight_bytes(precision, params, linear)
                    if run == "full":  # gradients in the weights' precision; AdamW m, v (+ fp32 master in bf16)
                        grads, optimizer = weights, params * (8 if precision == "fp32" else 12)
                    else:  # fp32 adapters, their gradients, m and v
                        weights, grads, optimizer = weights + lora * 4, lora * 4, lora * 8
                    rows.append(MemoryRow(name, run, precision, checkpointing, zero, _gb(
                        weights=weights / (n if zero >= 3 else 1), gradients=grads / (n if zero >= 2 else 1),
                        optimizer=optimizer / (n if zero >= 1 else 1), activations=acts)))
    return rows


def _gb(**parts: float) -> dict[str, float]:
    return {p: parts.get(p, 0.0) / GIB for p in PARTS}


def fit_label(rows: Iterable[MemoryRow], capacity_gb: float, reserve_gb: float) -> str:
    """How a run fits a GPU of ``capacity_gb``: the first of its ``rows`` (of one model, run and
    precision) in the order no tricks, checkpointing, ZeRO stages up (fewest first) whose total
    stays within ``capacity_gb - reserve_gb``, as ``yes`` (inference), ``Z0``, ``Z2+ckpt``...;
    ``no`` when none does."""
    def cost(r: MemoryRow) -> tuple[int, bool]:
        return (r.zero or 0, bool(r.checkpointing))

    for r in sorted(rows, key=cost):
        if r.total_gb <= capacity_gb - reserve_gb:
            return "yes" if r.zero is None else f"Z{r.zero}" + ("+ckpt" if r.checkpointing else "")
    return "no"


def saved_tensor_bytes(model: torch.nn.Module, step: Callable[[], tuple[torch.Tensor, Sequence[torch.Tensor]]]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``step()`` runs one
    training forward of ``model`` (parameters left out), and of the outputs the step holds
    besides (the logits): the activation memory kept until the backward, which it runs too.
    ``step`` returns ``(loss, held tensors)``."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, held = step()
    for t in held:
        pack(t)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(saved.values())


def activation_check(preset: str, batch: int, words: int) -> dict[str, Any]:
    """The activation formula against :func:`saved_tensor_bytes` of tiny preset ``preset`` in
    fp32: an LMM (:data:`~taxonlens.models.presets.LMM_PRESETS`) on one 112 px photo and a
    question of ``words`` words per sample, scored on its own tokens; or a CLIP encoder
    (:data:`~taxonlens.models.presets.ENCODER_PRESETS`) on photos and captions of ``words``
    words under the CLIP loss. ``{"preset", "batch", "vision_tokens", "text_tokens",
    "estimate_mb", "measured_mb", "ratio"}``, tokens per sample, ratio = estimate / measured."""
    from taxonlens.models.presets import ENCODER_PRESETS

    model, step, vision_tokens, text_tokens = (_clip_step if preset in ENCODER_PRESETS else _lmm_step)(
        preset, batch, " ".join(["species"] * words))
    measured = saved_tensor_bytes(model, step)
    estimate = activation_bytes(model_shape(model), batch, vision_tokens, text_tokens, act_bytes=4, peak=False)
    return {"preset": preset, "batch": batch, "vision_tokens": vision_tokens, "text_tokens": text_tokens,
            "estimate_mb": estimate / 2 ** 20, "measured_mb": measured / 2 ** 20, "ratio": estimate / measured}


def _lmm_step(preset: str, batch: int, question: str):
    """``(model, step, image-tower tokens, LM tokens)`` of a tiny LMM preset (see :func:`activation_check`)."""
    from PIL import Image

    from taxonlens.models.mllm import LMM
    from taxonlens.models.tiny_lmm import build_tiny_lmm

    model, processor = build_tiny_lmm(preset)
    lmm = LMM(model, processor, preset)
    inputs = lmm.inputs([Image.new("RGB", (112, 112), (90, 140, 60))] * batch, [lmm.chat(question)] * batch)
    if "image_grid_thw" in inputs:  # Qwen: a grid of patches per photo
        vision_tokens = int(inputs["image_grid_thw"][0].prod())
    else:  # Idefics2: [B, photos, 3, H, W]
        vision_tokens = inputs["pixel_values"].shape[-2] * inputs["pixel_values"].shape[-1] // model_shape(model).patch ** 2

    def step():
        out = model(**inputs, labels=inputs["input_ids"])
        return out.loss, [out.logits]

    return model, step, vision_tokens, inputs["input_ids"].shape[1]


def _clip_step(preset: str, batch: int, caption: str):
    """``(model, step, image-tower tokens, text tokens)`` of a tiny CLIP preset (see :func:`activation_check`)."""
    import open_clip

    from taxonlens.models.encoders import load_encoder

    encoder = load_encoder(preset)
    model, shape = encoder.model, model_shape(encoder.model)
    side = shape.fixed_side
    pixels = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    tokens = encoder.tokenizer([caption] * batch)  # [B, context]
    loss_fn = open_clip.ClipLoss()

    def step():
        image, text, scale = model(pixels, tokens)[:3]
        return loss_fn(image, text, scale), []

    return model, step, shape.vision_tokens(side), tokens.shape[1]


@dataclass
class MemoryResult:
    """What ``bench memory`` computed.

    Attributes:
        spec: what was asked.
        parameters: per model ``{"model", "repo", "total", "vision", "text", "tied", "published",
            "source", "diff_percent", "linear", "lora", "vision_tokens", "lm_tokens"}`` (counts as
            :func:`~taxonlens.bench.memory_models.parameter_counts`; tokens per sample).
        rows: every :class:`MemoryRow`.
        fit: per model, run and precision ``{"model", "run", "precision", "fit": {GB: label}}``
            (:func:`fit_label`).
        activation_checks: :func:`activation_check` of each checked preset.
    """

    spec: MemorySpec
    parameters: list[dict[str, Any]]
    rows: list[MemoryRow]
    fit: list[dict[str, Any]]
    activation_checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (rows with their ``total_gb``)."""
        out = asdict(self)
        out["rows"] = [asdict(r) | {"total_gb": r.total_gb} for r in self.rows]
        out["fit"] = [f | {"fit": {str(k): v for k, v in f["fit"].items()}} for f in self.fit]
        return out

    def render(self):
        """A rich group of tables: parameters beside the published counts, the activation
        check, the memory of each model, and the fit table."""
        from rich.console import Group
        from rich.table import Table

        s = self.spec
        params = Table(title="parameters, built on the meta device, beside the published counts",
                       caption="published: the hub page's or open_clip's model profile, to 3 significant "
                               "figures; a tied tensor counts once, as the checkpoint stores it")
        for col in ("model", "repo", "total", "vision", "text", "tied", "published", "diff"):
            params.add_column(col, justify="left" if col in ("model", "repo") else "right")
        for p in self.parameters:
            params.add_row(p["model"], p["repo"], f"{p['total']:,}", f"{p['vision']:,}", f"{p['text']:,}",
                           f"{p['tied']:,}", f"{p['published']:,}", f"{p['diff_percent']:+.2f} %")
        tables = [params]
        if self.activation_checks:
            check = Table(title="activation formula vs saved-for-backward bytes of the tiny presets (fp32, CPU)")
            for col in ("preset", "batch", "image tokens", "LM tokens", "estimate MB", "measured MB", "ratio"):
                check.add_column(col, justify="left" if col == "preset" else "right")
            for c in self.activation_checks:
                check.add_row(c["preset"], str(c["batch"]), str(c["vision_tokens"]), str(c["text_tokens"]),
                              f"{c['estimate_mb']:.2f}", f"{c['measured_mb']:.2f}", f"{c['ratio']:.2f}")
            tables.append(check)
        for p in self.parameters:
            tables.append(self._model_table(p))
        fit = Table(title=f"fit per GPU size ({s.reserve_gb:g} GB reserved): the first of Z0, Z0+ckpt, Z2, Z2+ckpt, "
                          f"... that fits; ZeRO over {s.gpus} GPUs, batch {s.batch_size} per GPU")
        for col in ("model", "run", "precision", *(f"{g} GB" for g in s.gpu_sizes)):
            fit.add_column(col)
        for f in self.fit:
            fit.add_row(f["model"], f["run"], f["precision"], *(f["fit"][g] for g in s.gpu_sizes))
        tables.append(fit)
        return Group(*tables)

    def _model_table(self, p: dict[str, Any]):
        from rich.table import Table

        s = self.spec
        table = Table(title=f"{p['model']}: GB per GPU, batch {s.batch_size} x ({p['vision_tokens']} image-tower + "
                            f"{p['lm_tokens']} LM tokens); parts at ZeRO 0; ZeRO over {s.gpus} GPUs; LoRA rank "
                            f"{s.lora_rank} ({p['lora']:,} parameters)")
        for col in ("run", "precision", "ckpt", *PARTS, *(f"total Z{z}" for z in s.zero_stages)):
            table.add_column(col, justify="left" if col in ("run", "precision", "ckpt") else "right")
        rows = [r for r in self.rows if r.model == p["model"]]
        for r in rows:
            if r.zero not in (None, s.zero_stages[0]):
                continue
            same = [x for x in rows if (x.run, x.precision, x.checkpointing) == (r.run, r.precision, r.checkpointing)]
            totals = [f"{x.total_gb:.1f}" for x in same] if r.zero is not None else [f"{r.total_gb:.1f}"]
            totals += [""] * (len(s.zero_stages) - len(totals))
            ckpt = "" if r.checkpointing is None else ("yes" if r.checkpointing else "no")
            table.add_row(r.run, r.precision, ckpt, *(f"{r.gb[k]:.2f}" for k in PARTS), *totals)
        return table


def fit_table(rows: Sequence[MemoryRow], spec: MemorySpec) -> list[dict[str, Any]]:
    """:func:`fit_label` of every model, run and precision of ``rows`` on each of ``spec.gpu_sizes``."""
    groups: dict[tuple[str, str, str], list[MemoryRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.run, r.precision), []).append(r)
    return [{"model": m, "run": run, "precision": p,
             "fit": {g: fit_label(group, g, spec.reserve_gb) for g in spec.gpu_sizes}}
            for (m, run, p), group in groups.items()]


def bench_memory(spec: MemorySpec = MemorySpec()) -> MemoryResult:
    """Count, estimate and check (see the module docstring).

    Raises:
        TaxonlensError: a model not in :data:`~taxonlens.bench.memory_models.ARCHITECTURES`, a
            ZeRO stage outside 0-3, or fewer than one GPU.
    """
    unknown = [m for m in spec.models if m not in ARCHITECTURES]
    if unknown:
        raise TaxonlensError(f"unknown models {unknown}; known: {', '.join(ARCHITECTURES)}")
    if spec.gpus < 1 or not set(spec.zero_stages) <= {0, 1, 2, 3}:
        raise TaxonlensError(f"ZeRO needs stages in 0-3 and at least one GPU, got {spec.zero_stages} over {spec.gpus}")
    parameters, rows = [], []
    for name in spec.models:
        arch = ARCHITECTURES[name]
        model = build_on_meta(arch)
        counts, shape = parameter_counts(model), model_shape(model)
        linear, lora = linear_parameters(model), lora_parameters(model, spec.lora_rank)
        n_v, n_t = _sample_tokens(shape, spec)
        parameters.append({"model": name, "repo": arch.repo, **counts, "published": arch.published,
                           "source": arch.source, "diff_percent": 100 * (counts["total"] - arch.published) / arch.published,
                           "linear": linear, "lora": lora, "vision_tokens": n_v, "lm_tokens": n_t})
        rows += memory_rows(name, shape, counts["total"], linear, lora, spec)
    checks = [activation_check(p, spec.check_batch, spec.check_words) for p in spec.check_presets]
    return MemoryResult(spec, parameters, rows, fit_table(rows, spec), checks)


__all__ = ["MemoryResult", "MemoryRow", "MemorySpec", "activation_bytes", "activation_check", "bench_memory",
           "fit_label", "layer_values", "memory_rows", "saved_tensor_bytes"]
