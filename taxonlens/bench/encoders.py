"""Zero-shot prediction throughput: taxonlens (encode + classify + consistent decoding
+ back-off) against a plain open_clip loop (encode, matmul, argmax), same images, same run."""

from __future__ import annotations

import torch

from taxonlens.bench import timed
from taxonlens.models.device import resolve_precision
from taxonlens.models.encoders import load_encoder
from taxonlens.predict import Recognizer
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.recognize.zeroshot import ZeroShotClassifier
from taxonlens.synthworld import SynthWorld, random_taxonomy


def bench_encode(arch: str = "ViT-B-16", n_images: int = 64, batch: int = 32, n_labels: int = 10_000,
                 seed: int = 0, repeats: int = 3) -> dict[str, float | int | str]:
    """Images/s of a plain open_clip zero-shot loop and of taxonlens' recognizer (fp32 and
    the precision chosen for this CPU), on the same synthworld photos and label embeddings.

    ``arch``: anything :func:`~taxonlens.models.encoders.load_encoder` builds (an open_clip
    architecture gets random weights: speed does not depend on their values).
    """
    tax = random_taxonomy(n_labels, seed=seed)
    world = SynthWorld.create(tax, n_species=n_labels, images_per_species=1, size=224, seed=seed)
    images = [world.photo(leaf, 0).image for leaf in range(n_images)]
    # the plain loop: what a user writes with open_clip alone, on the same open_clip model
    plain_encoder = load_encoder(arch, precision="fp32", seed=seed)
    model, preprocess = plain_encoder.model.eval(), plain_encoder.preprocess
    gen = torch.Generator().manual_seed(seed)
    labels = torch.nn.functional.normalize(torch.randn(n_labels, plain_encoder.embed_dim, generator=gen), dim=-1)

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

        def run() -> None:
            for i in range(0, len(images), batch):
                rec.predict(images[i : i + batch])

        return len(images) / timed(run, repeats)[1]

    plain_ips = len(images) / timed(plain, repeats)[1]
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
