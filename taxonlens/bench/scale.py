"""``bench scale``: the local engine and the Ray engine (1 and 2 encoder workers) on this machine,
from the same photo files, and a projection to millions of photos on GPUs and CPU nodes.

Measured here:

- each engine's images/s over the same synthworld photos written to disk (``predict``'s whole job:
  read, decode, preprocess, encode, classify, tree decoding, rows written). A Ray run starts its
  actors (a process each, the model loaded in each) before its first row: that start-up is
  measured on its own (a run over two batches) and the rate compared is the steady one, the full
  run's time less the short run's (:func:`engine_figures`), as it is over millions of photos; the
  local engine is measured the same way. Ray's overhead per image is ``1 / rate_ray - 1 / rate_local``;
- the CPU stage's cost per photo: read, decode and preprocess at the projected model's input size,
  in core-seconds (one thread);
- the projected architecture's image tower on this CPU (random weights; only speed matters), in
  core-seconds per photo (torch on every core, times the cores).

Taken from ``bench memory`` (:func:`~taxonlens.bench.memory.bench_memory`): the projected model's
image-tower parameters and tokens (FLOPs per photo ``~ 2 * parameters * tokens``: the matrix
products; attention's ``tokens^2`` term is left out, a few percent at 197-257 tokens) and its bf16
inference memory at the batch given, which must fit on the GPU.

Projection: a GPU encodes ``gpu_tflops * gpu_utilisation / FLOPs`` photos/s, unless its
``cpu_cores_per_gpu`` cores cannot read and preprocess that many; a CPU node of ``node_cores``
cores does ``node_cores / (CPU stage + encoder)`` photos/s; both times the Ray engine's measured
efficiency (its 2-worker rate over the local one, at most 1), with units scaling linearly (Ray
Data's actor pool is data-parallel; the driver only gathers rows).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taxonlens.bench import bench_run
from taxonlens.bench.cells import figures_table, table
from taxonlens.errors import TaxonlensError

#: (hardware, units) of the projection table
UNITS = (("GPU", 1), ("GPU", 8), ("GPU", 64), ("CPU node", 1), ("CPU node", 8), ("CPU node", 64))
PHOTOS = (1_000_000, 10_000_000)


@dataclass(frozen=True)
class ScaleSpec:
    """What ``bench scale`` measures and projects.

    Attributes:
        photos: synthworld photos written to disk (``size`` pixels square, 16 species) that every engine predicts.
        model: the encoder the engines run (a tiny preset: the engines' overhead shows, not the model).
        batch_size: photos per batch, in every engine.
        workers: encoder actors of the Ray runs.
        project_model: the architecture projected (a :data:`~taxonlens.bench.memory_models.ARCHITECTURES`
            CLIP: ``bioclip`` or ``bioclip-2``); ``cpu_photos``: photos its image tower encodes on this CPU.
        gpu_tflops, gpu_utilisation: the GPU's dense bf16 peak and the share of it an inference batch
            reaches (assumed); gpu_batch: photos per GPU batch (its memory from ``bench memory``).
        cpu_cores_per_gpu: CPU cores beside each GPU that read and preprocess; node_cores: a CPU node's cores.
    """

    photos: int = 512
    size: int = 224
    model: str = "tiny-clip-224"
    batch_size: int = 32
    workers: tuple[int, ...] = (1, 2)
    project_model: str = "bioclip"
    cpu_photos: int = 8
    gpu_tflops: float = 989.0
    gpu_utilisation: float = 0.35
    gpu_batch: int = 256
    cpu_cores_per_gpu: int = 8
    node_cores: int = 32
    seed: int = 0

    @classmethod
    def quick(cls) -> ScaleSpec:
        """The smallest run that fills every field (for tests)."""
        return cls(photos=24, size=64, model="tiny-clip", batch_size=4, cpu_photos=1, gpu_batch=8)

    def __post_init__(self) -> None:
        if self.photos < 2 * self.batch_size or self.batch_size < 1:
            raise TaxonlensError(f"--photos must be at least two batches ({2 * self.batch_size}), got {self.photos}")
        if not self.workers or min(self.workers) < 1:
            raise TaxonlensError(f"Ray workers must be at least 1, got {self.workers}")
        if not 0 < self.gpu_utilisation <= 1:
            raise TaxonlensError(f"--gpu-utilisation must lie in (0, 1], got {self.gpu_utilisation}")


@dataclass
class ScaleResult:
    """What ``bench scale`` measured and projected.

    Attributes:
        engines: per engine ``{"engine", "workers", "photos", "seconds", "startup_s", "images_per_s",
            "steady"}`` (see :func:`engine_figures`).
        overhead_ms: workers -> Ray's overhead per photo against the local engine (ms).
        ratio: workers -> Ray's steady rate over the local engine's; ``goal_met``: 2 workers >= 0.9.
        costs: per photo: ``cpu_stage_core_ms`` (read, decode, preprocess), ``encoder_core_ms``
            (the projected tower on this CPU), ``gflops`` (the tower, from ``bench memory``'s counts),
            ``inference_gb`` (bf16, ``gpu_batch`` photos), ``vision_parameters``, ``vision_tokens``.
        projection: per hardware and units ``{"hardware", "units", "images_per_s", "bound",
            "hours": {photos: hours}}``.
        assumptions: the stated assumptions, as text.
        seconds: per stage.
    """

    spec: ScaleSpec
    engines: list[dict[str, Any]]
    overhead_ms: dict[int, float]
    ratio: dict[int, float]
    goal_met: bool
    costs: dict[str, float]
    projection: list[dict[str, Any]]
    assumptions: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        out = asdict(self)
        out["projection"] = [p | {"hours": {str(k): v for k, v in p["hours"].items()}} for p in self.projection]
        return out

    def render(self):
        """A rich group: the engines, the costs per photo, the projection and the assumptions."""
        from rich.console import Group
        from rich.text import Text

        engines = table(f"predict on this machine ({os.cpu_count()} cores), {self.spec.photos} photos of "
                        f"{self.spec.size} px, {self.spec.model}",
                        ["engine", "workers", "2-batch run s", "images/s (steady)", "x local", "overhead ms/photo"],
                        left=["engine"])
        for e in self.engines:
            w = e["workers"]
            ray = e["engine"] == "ray"
            engines.add_row(e["engine"], str(w), f"{e['startup_s']:.1f}", f"{e['images_per_s']:.1f}",
                            f"{self.ratio[w]:.2f}" if ray else "1.00", f"{self.overhead_ms[w]:+.2f}" if ray else "")
        costs = figures_table(f"cost per photo, {self.spec.project_model}", self.costs)
        hours = table(f"projected hours, {self.spec.project_model}",
                      ["hardware", "units", "images/s", "bound by", *(f"{n:,} photos" for n in PHOTOS)],
                      left=["hardware", "bound by"])
        for p in self.projection:
            hours.add_row(p["hardware"], str(p["units"]), f"{p['images_per_s']:,.0f}", p["bound"],
                          *(f"{p['hours'][n]:,.2f}" for n in PHOTOS))
        goal = "met" if self.goal_met else "NOT met"
        notes = Text("\n".join([f"goal (Ray with 2 workers >= 0.9x local): {goal}",
                                *(f"- {a}" for a in self.assumptions)]))
        return Group(engines, costs, hours, notes)


def engine_figures(run: Callable[[list[str], str], object], files: list[str], batch_size: int) -> dict[str, Any]:
    """One engine's figures: ``run(photos, name)`` over the first two batches (start-up: processes,
    models, the first batches), then over every photo; the steady rate is the difference,
    ``(photos - 2 batches) / (seconds - startup_s)``, which leaves the start-up out. When noise makes
    the full run no slower than the short one, the rate is the full run's own (``steady`` false)."""
    short = files[: 2 * batch_size]
    t = time.perf_counter()
    run(short, "startup")
    startup = time.perf_counter() - t
    t = time.perf_counter()
    run(files, "full")
    seconds = time.perf_counter() - t
    steady = seconds > startup
    rate = (len(files) - len(short)) / (seconds - startup) if steady else len(files) / seconds
    return {"photos": len(files), "seconds": seconds, "startup_s": startup, "images_per_s": rate, "steady": steady}


def _cpu_costs(spec: ScaleSpec, files: list[str]) -> dict[str, float]:
    """Core-milliseconds per photo of the CPU stage (one thread) and of the projected tower (every core)."""
    import torch

    from taxonlens.bench.memory_models import ARCHITECTURES
    from taxonlens.data.images import load_image
    from taxonlens.models.encoders import load_encoder
    from taxonlens.train.checkpoint import torch_threads

    encoder = load_encoder(str(ARCHITECTURES[spec.project_model].config), precision="fp32", seed=spec.seed)
    sample = files[: max(spec.cpu_photos, min(len(files), 32))]
    with torch_threads(1):
        t = time.perf_counter()
        pixels = torch.stack([encoder.preprocess(load_image(f)) for f in sample])
        stage = (time.perf_counter() - t) / len(sample)
    cores = os.cpu_count() or 1
    with torch_threads(cores):
        encoder.encode_images(pixels[:1])  # warm-up
        t = time.perf_counter()
        encoder.encode_images(pixels[: spec.cpu_photos])
        tower = (time.perf_counter() - t) / spec.cpu_photos * cores
    return {"cpu_stage_core_ms": 1000 * stage, "encoder_core_ms": 1000 * tower}


def _memory_figures(spec: ScaleSpec) -> dict[str, float]:
    """The projected tower's parameters, tokens, GFLOPs per photo and bf16 inference memory (``bench memory``)."""
    from taxonlens.bench.memory import MemorySpec, bench_memory

    result = bench_memory(MemorySpec(models=(spec.project_model,), batch_size=spec.gpu_batch, image_side=224,
                                     check_presets=()))
    p = result.parameters[0]
    gb = next(r.total_gb for r in result.rows if r.run == "inference" and r.precision == "bf16")
    return {"vision_parameters": float(p["vision"]), "vision_tokens": float(p["vision_tokens"]),
            "gflops": 2 * p["vision"] * p["vision_tokens"] / 1e9, "inference_gb": gb}


def projection_table(spec: ScaleSpec, costs: dict[str, float], efficiency: float) -> list[dict[str, Any]]:
    """Photos/s and hours for :data:`PHOTOS` on each of :data:`UNITS` (see the module docstring)."""
    gpu_encode = spec.gpu_tflops * 1e12 * spec.gpu_utilisation / (costs["gflops"] * 1e9)
    gpu_cpu = spec.cpu_cores_per_gpu / (costs["cpu_stage_core_ms"] / 1000)
    node = spec.node_cores / ((costs["cpu_stage_core_ms"] + costs["encoder_core_ms"]) / 1000)
    rows = []
    for hardware, units in UNITS:
        if hardware == "GPU":
            rate, bound = min(gpu_encode, gpu_cpu), "GPU" if gpu_encode <= gpu_cpu else "CPU stage"
        else:
            rate, bound = node, "CPU"
        total = rate * units * efficiency
        rows.append({"hardware": hardware, "units": units, "images_per_s": total, "bound": bound,
                     "hours": {n: n / total / 3600 for n in PHOTOS}})
    return rows


def bench_scale(spec: ScaleSpec = ScaleSpec(), workdir: str | Path | None = None,
                progress: Callable[[str], None] | None = None) -> ScaleResult:
    """Measure the engines and project (see the module docstring)."""
    from taxonlens.bench.memory_models import ARCHITECTURES
    from taxonlens.predict import build_recognizer, expand_inputs, predict_files
    from taxonlens.predict.ray_engine import EngineOptions, predict_ray, ray_cluster
    from taxonlens.synthworld import SynthWorld, random_taxonomy

    arch = ARCHITECTURES.get(spec.project_model)
    if arch is None or arch.builder != "open_clip":
        clips = [a.name for a in ARCHITECTURES.values() if a.builder == "open_clip"]
        raise TaxonlensError(f"--project-model {spec.project_model!r}: give a CLIP architecture ({', '.join(clips)})")
    say = progress or (lambda _: None)
    seconds: dict[str, float] = {}
    with bench_run(workdir, None, "scale") as work:
        t = time.perf_counter()
        species = 16
        world = work / "world"
        SynthWorld.create(random_taxonomy(species, spec.seed), species, math.ceil(spec.photos / species), 0.0,
                          spec.size, spec.seed).write(world)
        files = expand_inputs([world / "images"])[: spec.photos]
        recognizer = build_recognizer(spec.model, world / "taxonomy.json", precision="fp32", cache_dir=work / "labels")
        seconds["setup"] = time.perf_counter() - t
        say(f"local engine, {len(files)} photos")
        local = engine_figures(lambda photos, name: predict_files(recognizer, photos, work / f"local-{name}.parquet",
                                                                  spec.batch_size, overwrite=True),
                               files, spec.batch_size)
        engines = [{"engine": "local", "workers": 0, **local}]
        seconds["local"] = local["startup_s"] + local["seconds"]
        t = time.perf_counter()
        with ray_cluster():
            seconds["ray_start"] = time.perf_counter() - t
            for w in spec.workers:
                say(f"Ray engine, {w} workers")
                options = EngineOptions(engine="ray", num_workers=w, shard_size=len(files))
                ray = engine_figures(lambda photos, name, o=options, w=w: predict_ray(
                    recognizer, photos, work / f"ray-{w}-{name}", o, spec.batch_size, overwrite=True),
                    files, spec.batch_size)
                engines.append({"engine": "ray", "workers": w, **ray})
                seconds[f"ray_{w}"] = ray["startup_s"] + ray["seconds"]
        say(f"costs per photo of {spec.project_model}")
        t = time.perf_counter()
        costs = {**_cpu_costs(spec, files), **_memory_figures(spec)}
        seconds["costs"] = time.perf_counter() - t
    local_rate = engines[0]["images_per_s"]
    ratio = {e["workers"]: e["images_per_s"] / local_rate for e in engines[1:]}
    overhead = {e["workers"]: 1000 * (1 / e["images_per_s"] - 1 / local_rate) for e in engines[1:]}
    efficiency = min(1.0, ratio.get(2, max(ratio.values())))
    assumptions = [
        (f"GPU: {spec.gpu_tflops:g} TFLOPS dense bf16 peak (H100 SXM) at {spec.gpu_utilisation:.0%} of it; "
        f"{costs['gflops']:.1f} GFLOPs per photo (2 x {costs['vision_parameters'] / 1e6:.0f} M image-tower "
        f"parameters x {costs['vision_tokens']:.0f} tokens, bench memory); a batch of {spec.gpu_batch} needs "
        f"{costs['inference_gb']:.1f} GB in bf16"),
        (f"{spec.cpu_cores_per_gpu} CPU cores per GPU read, decode and preprocess at this machine's "
        f"{costs['cpu_stage_core_ms']:.1f} core-ms per photo"),
        (f"CPU node: {spec.node_cores} cores like this machine's, {costs['encoder_core_ms']:.0f} core-ms per photo "
        f"for the tower (measured here, fp32) plus the CPU stage"),
        (f"units scale linearly, at the Ray engine's measured efficiency here ({efficiency:.2f}); reading photos "
        "from shared storage and the driver's row writing are not limits (a driver writes tens of thousands of "
        "rows/s)"),
        (f"Ray's start-up (a process and a model load per worker; a two-batch run took up to "
         f"{max(e['startup_s'] for e in engines[1:]):.0f} s here) is left out: minutes at most against hours"),
    ]
    return ScaleResult(spec, engines, overhead, ratio, ratio.get(2, 0.0) >= 0.9, costs,
                       projection_table(spec, costs, efficiency), assumptions, seconds)


__all__ = ["PHOTOS", "UNITS", "ScaleResult", "ScaleSpec", "bench_scale", "engine_figures", "projection_table"]
