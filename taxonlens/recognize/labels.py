"""Label embeddings: one unit vector per taxon from its text, cached on disk.

The cache key hashes the encoder's fingerprint and the exact prompts, so it
covers the model, the taxonomy, the rank, the text type and the templates; a
450,000-taxon label set is embedded once and loaded in seconds after.
Embedding is written in chunks, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from taxonlens.models.encoders import Encoder
from taxonlens.models.text import label_prompts
from taxonlens.taxonomy import Taxonomy

log = logging.getLogger(__name__)
CHUNK = 2048


def default_cache_dir() -> Path:
    """``$TAXONLENS_CACHE`` or ``~/.cache/taxonlens``."""
    return Path(os.environ.get("TAXONLENS_CACHE", Path.home() / ".cache" / "taxonlens"))


def taxon_prompts(taxonomy: Taxonomy, nodes: Sequence[int], text_type: str = "taxonomic",
                  templates: str = "photo", common_names: dict[int, str] | None = None) -> list[list[str]]:
    """Prompts of each node (see :func:`taxonlens.models.text.label_prompts`)."""
    names = common_names or {}
    return [label_prompts(taxonomy.path_names(int(n)), text_type, names.get(int(n)), templates) for n in nodes]


def embed_prompts(encoder: Encoder, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """One label embedding per prompt list: each prompt embedded and L2-normalised, the
    mean taken and renormalised (open_clip's zero-shot recipe). Returns float32 ``[N, D]``."""
    flat = [p for group in prompts for p in group]
    emb = encoder.encode_texts(flat)
    sizes = torch.tensor([len(g) for g in prompts], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(prompts)), sizes)
    mean = torch.zeros(len(prompts), emb.shape[1]).index_add_(0, owner, emb) / sizes[:, None]
    return torch.nn.functional.normalize(mean, dim=-1)


def label_embeddings(encoder: Encoder, prompts: Sequence[Sequence[str]], cache_dir: str | Path | None = None,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Embeddings ``[N, D]`` of ``prompts`` (one list per label), from the cache when present.

    Args:
        cache_dir: where ``<key>.npy`` lives (default :func:`default_cache_dir`/labels); ``None``
            uses the default, and the cache is skipped only when the directory cannot be written.
        progress: called with the number of labels embedded after each chunk.
    """
    key = hashlib.sha256(encoder.fingerprint().encode() + json.dumps(list(map(list, prompts))).encode()).hexdigest()[:24]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "labels"
    final = folder / f"{key}.npy"
    if final.is_file():
        if progress:
            progress(len(prompts))
        return torch.from_numpy(np.load(final))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        log.warning("label-embedding cache %s cannot be written; embedding %d labels without it", folder, len(prompts))
        parts = []
        for start in range(0, len(prompts), CHUNK):
            parts.append(embed_prompts(encoder, prompts[start : start + CHUNK]))
            if progress:
                progress(len(parts[-1]))
        return torch.cat(parts) if parts else torch.zeros(0, encoder.embed_dim)
    partial, done_file = folder / f"{key}.partial.npy", folder / f"{key}.done"
    n, d = len(prompts), encoder.embed_dim
    done = int(done_file.read_text()) if done_file.is_file() and partial.is_file() else 0
    out = np.lib.format.open_memmap(partial, mode="r+" if done else "w+", dtype=np.float32, shape=(n, d))
    if progress and done:
        progress(done)
    for start in range(done, n, CHUNK):
        stop = min(n, start + CHUNK)
        out[start:stop] = embed_prompts(encoder, prompts[start:stop]).numpy()
        out.flush()
        done_file.write_text(str(stop))
        if progress:
            progress(stop - start)
    del out
    os.replace(partial, final)
    done_file.unlink(missing_ok=True)
    return torch.from_numpy(np.load(final))
