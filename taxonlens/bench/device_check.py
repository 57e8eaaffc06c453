"""``bench device``: every kind of model taxonlens runs, a few steps each on one device, with its
throughput and peak memory; what ``scripts/gpu-check.sh`` runs on a GPU machine.

Rows, in order (each a fresh model on the device, at the resolved precision):

- ``predict``: zero-shot recognition (encode photos, score the labels, decode the tree) of
  synthworld photos by each encoder of ``encoders`` (``ViT-B-16``: open_clip's architecture with
  random weights, BioCLIP's size); photos per second.
- ``score``: letter scoring of four-option questions by each LMM of ``lmms``
  (``random:qwen2.5-vl-3b``: Qwen2.5-VL-3B's towers with random weights); questions per second.
- ``sft``, ``grpo``, ``grpo+tara``, ``finedefics-stage1``: one training step of each trainer on
  each LMM (LoRA; weights fp32, forward passes autocast to a GPU's precision as the trainers
  do); seconds per step.

Peak memory is what :func:`~taxonlens.models.device.peak_memory_mb` reports: on a CUDA GPU the
most torch allocated during the row, elsewhere the process's peak resident set so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from taxonlens.bench import WorldSpec, bench_run
from taxonlens.bench.cells import table
from taxonlens.models.device import peak_memory_mb, reset_peak_memory, resolve_device, resolve_precision

#: The trainers of the check, in the order they run.
TRAINERS = ("sft", "grpo", "grpo+tara", "finedefics-stage1")


@dataclass(frozen=True)
class DeviceCheckSpec:
    """What ``bench device`` runs: ``encoders`` and ``lmms`` on ``device`` at ``precision``, on the
    photos of ``world``; ``photos`` photos predicted, ``questions`` questions scored, training steps
    of ``batch_size`` records; ``threads`` torch threads (``None``: as set)."""

    device: str = "auto"
    precision: str = "auto"
    encoders: tuple[str, ...] = ("ViT-B-16", "tiny-clip")
    lmms: tuple[str, ...] = ("tiny-qwen2.5-vl", "random:qwen2.5-vl-3b")
    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=4, images_per_species=8,
                                                     novel_fraction=0.0, size=112))
    photos: int = 64
    questions: int = 32
    batch_size: int = 2
    threads: int | None = None

    def quick(self) -> DeviceCheckSpec:
        """The same check with the tiny models only and few photos (for tests and a CPU)."""
        return replace(self, encoders=("tiny-clip",), lmms=("tiny-qwen2.5-vl",), photos=8, questions=4)


@dataclass
class DeviceCheckResult:
    """What ``bench device`` measured: ``rows`` of ``{"task", "model", "items", "unit", "seconds",
    "per_second", "peak_mb"}`` on ``device`` at ``precision`` (both resolved)."""

    spec: DeviceCheckSpec
    device: str
    precision: str
    rows: list[dict[str, Any]]
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """One row per task and model: items, seconds, throughput, peak memory."""
        memory = "peak GPU MiB" if self.device.startswith("cuda") else "peak RSS MiB"
        out = table(f"every model on {self.device} at {self.precision} ({self.total_seconds:.0f} s in all)",
                    ("task", "model", "items", "seconds", "per second", memory), left=("task", "model"))
        for r in self.rows:
            out.add_row(r["task"], r["model"], f"{r['items']} {r['unit']}", f"{r['seconds']:.2f}",
                        f"{r['per_second']:.2f}", f"{r['peak_mb']:.0f}")
        return out


def _row(task: str, model: str, items: int, unit: str, device: str, run: Callable[[], float | None]
         ) -> dict[str, Any]:
    """Run ``run`` once (after whatever warm-up it does itself) and measure it: its own seconds
    when it returns them (a trainer's step, without loading the model), else the call's."""
    reset_peak_memory(device)
    start = time.perf_counter()
    own = run()
    seconds = own if own is not None else time.perf_counter() - start
    return {"task": task, "model": model, "items": items, "unit": unit, "seconds": seconds,
            "per_second": items / seconds, "peak_mb": peak_memory_mb(device)}


def bench_device(spec: DeviceCheckSpec = DeviceCheckSpec(), workdir: str | Path | None = None,
                 progress: Callable[[str], None] | None = None) -> DeviceCheckResult:
    """Run the check of ``spec`` (see the module docstring)."""
    say = progress or (lambda _msg: None)
    device = str(resolve_device(spec.device))
    precision = resolve_precision(spec.precision, device)
    start = time.perf_counter()
    with bench_run(workdir, spec.threads, "device") as work:
        from taxonlens.bench.vqa import vqa_world

        vw = vqa_world(spec.world, 4, "path", work / "world")
        rows = [_predict_row(name, spec, vw, device, precision, say) for name in spec.encoders]
        for name in spec.lmms:
            rows.append(_score_row(name, spec, vw, device, precision, say))
            rows.extend(_training_rows(name, spec, vw, device, precision, work / name.replace(":", "-"), say))
    return DeviceCheckResult(spec, device, precision, rows, time.perf_counter() - start)


def _predict_row(name: str, spec: DeviceCheckSpec, vw, device: str, precision: str,
                 say: Callable[[str], None]) -> dict[str, Any]:
    from taxonlens.predict import build_recognizer

    say(f"predict: {name}, {spec.photos} photos")
    recognizer = build_recognizer(name, vw.taxonomy, precision=precision, device=device)
    photos = [vw.load(r) for r in vw.records["train"]]
    photos = (photos * (spec.photos // len(photos) + 1))[:spec.photos]
    recognizer.predict(photos[:2])  # first-use work: kernels, caches

    def predict() -> None:
        recognizer.predict(photos)

    return _row("predict", name, len(photos), "photos", device, predict)


def _score_row(name: str, spec: DeviceCheckSpec, vw, device: str, precision: str,
               say: Callable[[str], None]) -> dict[str, Any]:
    from taxonlens.bench.lmm import letter_questions
    from taxonlens.models.mllm import load_lmm
    from taxonlens.recognize.answers import SYSTEM_PROMPT

    say(f"score: {name}, {spec.questions} questions")
    lmm = load_lmm(name, precision, device=device)
    records = vw.train
    images = [vw.load(records[i % len(records)]) for i in range(spec.questions)]
    questions, letters = letter_questions(vw.taxonomy, spec.questions)

    def score() -> None:
        lmm.option_logprobs(images, questions, letters, batch_size=16, system=SYSTEM_PROMPT)

    lmm.option_logprobs(images[:1], questions[:1], letters[:1], system=SYSTEM_PROMPT)
    return _row("score", name, spec.questions, "questions", device, score)


def _training_rows(name: str, spec: DeviceCheckSpec, vw, device: str, precision: str, work: Path,
                   say: Callable[[str], None]) -> list[dict[str, Any]]:
    """One step of every trainer of :data:`TRAINERS` on ``name``: the step's own seconds, the
    peak memory of the whole run."""
    from taxonlens.models.encoders import load_encoder
    from taxonlens.train import RFTConfig, SFTConfig, Stage1Config, train_grpo, train_sft, train_stage1
    from taxonlens.train.finedefics import leaf_embeddings
    from taxonlens.train.sft import image_loader

    ranks = list(vw.taxonomy.ranks)
    questions = vw.train[:spec.batch_size]
    photos = vw.records["train"][:spec.batch_size]
    common = {"model": name, "epochs": 1, "seed": spec.world.seed, "threads": spec.threads, "device": device,
              "precision": precision}
    embeddings = leaf_embeddings(load_encoder("tiny-clip"), vw.taxonomy)
    load_photo = image_loader(str(vw.manifest.parent))
    runs = {
        "sft": lambda out, step: train_sft(SFTConfig(**common, out=out, batch_size=spec.batch_size,
                                                     questions_per_record=1, eval_every=0),
                                           questions, vw.load, ranks, progress=step),
        "grpo": lambda out, step: train_grpo(RFTConfig(**common, out=out, questions_per_step=spec.batch_size,
                                                       generations=2, max_new_tokens=8),
                                             questions, vw.load, ranks, progress=step),
        "grpo+tara": lambda out, step: train_grpo(RFTConfig(**common, out=out, questions_per_step=spec.batch_size,
                                                            generations=2, max_new_tokens=8, tara=True),
                                                  questions, vw.load, ranks, progress=step),
        "finedefics-stage1": lambda out, step: train_stage1(
            Stage1Config(**common, out=out, batch_size=spec.batch_size, similar=1, eval_every=0), photos,
            vw.taxonomy, load_photo, embeddings=embeddings, progress=step),
    }
    rows = []
    for task in TRAINERS:
        say(f"{task}: {name}, one step of {spec.batch_size}")
        steps: list[float] = []

        def one_step(task: str = task, steps: list[float] = steps) -> float:
            runs[task](str(work / task), lambda log: steps.append(log.seconds))
            return steps[-1]

        rows.append(_row(task, name, 1, "step", device, one_step))
    return rows


__all__ = ["TRAINERS", "DeviceCheckResult", "DeviceCheckSpec", "bench_device"]
