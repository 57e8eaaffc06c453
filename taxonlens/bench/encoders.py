"""Zero-shot prediction throughput: taxonlens (encode + classify + consistent decoding
+ back-off) against a plain open_clip loop (encode, matmul, argmax), same images, same run."""

from __future__ import annotations

import time

import open_clip
import torch

from taxonlens.models.encoders import load_encoder, resolve_precision
from taxonlens.predict import Recognizer
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.synthworld import SynthWorld, random_taxonomy


def bench_encode(arch: str = "ViT-B-16", n_images: int = 64, batch: int = 32, n_labels: int = 10_000,
                 seed: int = 0) -> dict[str, float | int | str]:
    """Images/s of a plain open_clip zero-shot loop and of taxonlens' recognizer (fp32 and
    the precision chosen for this CPU), on the same synthworld photos and label embeddings.

    Random weights are fine: speed does not depend on their values.
    """
    tax = random_taxonomy(n_labels, seed=seed)
    world = SynthWorld.create(tax, n_species=n_labels, images_per_species=1, size=224, seed=seed)
    images = [world.photo(leaf, 0).image for leaf in range(n_images)]
    dim = open_clip.get_model_config(arch)["embed_dim"]
    labels = torch.nn.functional.normalize(torch.randn(n_labels, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)

    # the plain loop: what a user writes with open_clip alone
    model, _, preprocess = open_clip.create_model_and_transforms(arch)
    model.eval()

    def plain() -> list[int]:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch):
                x = torch.stack([preprocess(img) for img in images[i : i + batch]])
                f = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
                out.extend((100.0 * f @ labels.T).argmax(dim=1).tolist())
        return out

    def ours(precision: str) -> float:
        enc = load_encoder(arch, precision=precision, seed=seed)
        rec = Recognizer(enc, ZeroShotClassifier(enc, tax, embeddings=labels), TreeDecoder(tax))
        rec.predict(images[:2])  # warm-up (one-off allocations)
        t = time.perf_counter()
        for i in range(0, len(images), batch):
            rec.predict(images[i : i + batch])
        return len(images) / (time.perf_counter() - t)

    plain()  # warm-up
    t = time.perf_counter()
    plain()
    plain_ips = len(images) / (time.perf_counter() - t)
    fast = resolve_precision("auto")
    ours_fp32 = ours("fp32")
    ours_fast = ours(fast) if fast != "fp32" else ours_fp32
    return {
        "arch": arch,
        "images": n_images,
        "labels": n_labels,
        "threads": torch.get_num_threads(),
        "plain_open_clip_fp32_images_per_s": plain_ips,
        "taxonlens_fp32_images_per_s": ours_fp32,
        f"taxonlens_{fast}_images_per_s": ours_fast,
        "ratio_fp32": ours_fp32 / plain_ips,
        f"ratio_{fast}": ours_fast / plain_ips,
        "auto_precision": fast,
    }
