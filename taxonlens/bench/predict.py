"""``taxonlens bench predict``: file-to-row throughput of ``predict`` against the encoder alone.

On the same photo files, in one run, at fp32 and at the precision ``auto`` chooses here:

- ``encode only``: the open_clip model over pixels already in memory (the bound to approach);
- ``plain open_clip loop``: what a user writes with open_clip alone, files -> features (open,
  convert, the model's preprocess, stack, ``encode_image``), in one process;
- ``predict, 0 workers`` and ``predict, N workers``: :func:`~taxonlens.predict.files.predict_files`,
  files -> rows (reading, decoding, preprocessing, encoding, scoring over the labels, consistent
  decoding with back-off, the journal and the output table), photos read in this process or in
  ``N`` DataLoader workers.

Each rate is also given as a ratio to ``encode only`` at the same precision, and as the fraction of
this CPU's measured matrix-multiplication rate that the model's counted FLOPs per photo reach.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from taxonlens.models.device import DTYPES, resolve_precision
from taxonlens.models.encoders import load_encoder
from taxonlens.predict import Recognizer
from taxonlens.predict.files import predict_files
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.synthworld import SynthWorld, random_taxonomy


@dataclass(frozen=True)
class PredictBenchSpec:
    """What ``bench predict`` measures: ``photos`` synthworld JPEG files of ``photo_size`` pixels,
    ``batch`` at a time, scored over ``labels`` random label embeddings of a ``labels``-leaf 7-rank
    tree, by ``model`` (random weights for an open_clip architecture: speed does not depend on
    them), with ``workers`` loader processes in the worker arm; the matmul rate is measured on
    ``matmul_size`` square matrices."""

    model: str = "ViT-B-16"
    photos: int = 64
    batch: int = 32
    labels: int = 10_000
    photo_size: int = 320
    workers: int = 1
    matmul_size: int = 2048
    seed: int = 0


QUICK = PredictBenchSpec(model="tiny-clip", photos=4, batch=2, labels=32, photo_size=64, workers=1, matmul_size=256)
"""The ``--quick`` size: a tiny model and a few photos (checks the table, measures nothing useful)."""


@dataclass
class PredictBenchResult:
    """Rows ``{arm, precision, photos_per_s, ratio_to_encode, matmul_fraction}`` and the run's figures."""

    spec: PredictBenchSpec
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self):
        """The throughput table and the figures of the run."""
        from rich.console import Group

        from taxonlens.bench.cells import figures_table, table

        out = table(f"file-to-row throughput, {self.spec.model}, {self.spec.photos} photos, batch "
                    f"{self.spec.batch}", ["arm", "precision", "photos/s", "x encode only", "of matmul bound"],
                    left={"arm", "precision"})
        for r in self.rows:
            out.add_row(r["arm"], r["precision"], f"{r['photos_per_s']:.2f}", f"{r['ratio_to_encode']:.2f}",
                        f"{100 * r['matmul_fraction']:.0f}%")
        return Group(out, figures_table("the run", self.figures))


def matmul_rate(precision: str, size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of a ``size`` x ``size`` matrix product at ``precision`` on the CPU with torch's threads
    (the fastest of ``repeats`` after a warm-up): the bound a transformer's matmuls approach."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(DTYPES[precision]) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def image_flops(encoder) -> float:
    """FLOPs of the image tower on one photo, counted by torch's FLOP counter (matmuls and
    convolutions; ViT-B/16 at 224 px: about 35 GFLOP)."""
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(1, 3, encoder.image_size, encoder.image_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        encoder.model.encode_image(pixels)
    return float(counter.get_total_flops())


def _write_photos(spec: PredictBenchSpec, folder: Path) -> list[str]:
    world = SynthWorld.create(random_taxonomy(spec.photos, seed=spec.seed), n_species=spec.photos,
                              images_per_species=1, size=spec.photo_size, seed=spec.seed)
    files = []
    for leaf in range(spec.photos):
        path = folder / f"{leaf:05d}.jpg"
        world.photo(leaf, 0).image.save(path, quality=90)
        files.append(str(path))
    return files


def _rate(n: int, run) -> float:
    """Photos per second of one ``run()`` over ``n`` photos."""
    t = time.perf_counter()
    run()
    return n / (time.perf_counter() - t)


def _arms(spec: PredictBenchSpec, enc, precision: str, files: list[str], folder: Path) -> dict[str, float]:
    """Photos per second of every arm with the encoder ``enc`` at ``precision``."""
    from PIL import Image

    tax = random_taxonomy(spec.labels, seed=spec.seed)
    labels = torch.nn.functional.normalize(
        torch.randn(spec.labels, enc.embed_dim, generator=torch.Generator().manual_seed(spec.seed)), dim=-1)
    rec = Recognizer(enc, ZeroShotClassifier(enc, tax, embeddings=labels), TreeDecoder(tax))
    model, preprocess, dtype = enc.model.eval(), enc.preprocess, DTYPES[precision]
    pixels = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files])

    def encode_only() -> None:
        with torch.inference_mode():
            for i in range(0, len(pixels), spec.batch):
                model.encode_image(pixels[i:i + spec.batch].to(dtype))

    def plain_loop() -> None:
        with torch.inference_mode():
            for i in range(0, len(files), spec.batch):
                x = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files[i:i + spec.batch]])
                torch.nn.functional.normalize(model.encode_image(x.to(dtype)).float(), dim=-1)

    def predict(workers: int):
        return lambda: predict_files(rec, files, folder / f"rows-{precision}-{workers}.csv", batch_size=spec.batch,
                                     workers=workers)

    with torch.inference_mode():
        model.encode_image(pixels[:spec.batch].to(dtype))  # warm-up
    return {"encode only": _rate(len(files), encode_only),
            "plain open_clip loop": _rate(len(files), plain_loop),
            "predict, 0 workers": _rate(len(files), predict(0)),
            f"predict, {spec.workers} workers": _rate(len(files), predict(spec.workers))}


def bench_predict(spec: PredictBenchSpec = PredictBenchSpec()) -> PredictBenchResult:
    """Measure every arm (see the module docstring) at fp32 and at the ``auto`` precision."""
    result, flops = PredictBenchResult(spec), 0.0
    with tempfile.TemporaryDirectory(prefix="taxonlens-bench-predict-") as tmp:
        files = _write_photos(spec, Path(tmp))
        for precision in dict.fromkeys(["fp32", resolve_precision("auto")]):
            enc = load_encoder(spec.model, precision=precision, seed=spec.seed, device="cpu")
            flops = flops or image_flops(enc)  # counted at fp32
            bound = matmul_rate(precision, spec.matmul_size)
            rates = _arms(spec, enc, precision, files, Path(tmp))
            for arm, rate in rates.items():
                result.rows.append({"arm": arm, "precision": precision, "photos_per_s": rate,
                                    "ratio_to_encode": rate / rates["encode only"],
                                    "matmul_fraction": rate * flops / bound})
            result.figures[f"matmul GFLOP/s, {precision}"] = bound / 1e9
    result.figures.update({"GFLOP per photo (counted)": flops / 1e9, "labels": spec.labels,
                           "torch threads": torch.get_num_threads(), "cores": os.cpu_count() or 0,
                           "load average (1 min) at the end": os.getloadavg()[0]})
    return result
