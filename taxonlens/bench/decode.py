"""Decoder benchmark: tree-consistent decoding of a batch over a 450,000-leaf tree.

:func:`bench_decode` returns seconds per stage (and the float32 marginals' error)
for ``taxonlens bench decode``; it prints nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from taxonlens.bench import timed
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.synthworld import random_taxonomy


def _leaf_probs(batch: int, n_leaves: int, seed: int) -> torch.Tensor:
    """float32 ``[batch, n_leaves]`` softmax of Gaussian logits (std 2): dense mass everywhere,
    as a zero-shot classifier's output, with a few hundred leaves above 1e-4."""
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(2.0 * torch.randn(batch, n_leaves, generator=gen), dim=1)


def _back_off(decoder: TreeDecoder, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The back-off pipeline: marginals, exact leaf, confidence per rank, rank reached."""
    internal = decoder.internal_marginals(probs)
    leaves = decoder.exact(probs)
    conf = decoder.path_confidence(probs, leaves, internal)
    return leaves, conf, decoder.reached(conf)


def bench_decode(n_leaves: int = 450_000, batch: int = 256, seed: int = 0, repeats: int = 3) -> dict[str, float | int]:
    """Seconds per decoding stage (the fastest of ``repeats`` after a warm-up) for ``batch`` images
    over a random ``n_leaves`` 7-rank tree (:func:`taxonlens.synthworld.random_taxonomy`), with
    the threads torch is set to use.

    Keys: ``leaves``, ``taxa``, ``batch``, ``threads``; ``build_decoder_s`` (structure tables
    and decoder, on a freshly generated taxonomy); ``backoff_float32_s`` / ``backoff_float64_s``
    (marginals + ``exact`` + ``path_confidence`` + ``reached``, thresholds 0.5 at every rank);
    ``decode_top5_s`` (:meth:`TreeDecoder.decode` to Prediction objects, top-5); ``greedy_s``
    (marginals + :meth:`TreeDecoder.greedy`); ``rank_marginals_genus_s``; and
    ``marginals_float32_max_abs_err`` / ``marginals_float64_max_abs_err``: largest error of any
    node's marginal on 8 rows against a float64 sparse product with the leaf-ancestor matrix.
    """
    tax = random_taxonomy(n_leaves, seed=seed)
    with warnings.catch_warnings():  # torch's "sparse CSR is beta" notice
        warnings.simplefilter("ignore", UserWarning)
        dec32, t_build = timed(lambda: TreeDecoder(tax))
        dec64 = TreeDecoder(tax, float64=True)
    thresholds = dict.fromkeys(tax.ranks, 0.5)
    dec32.thresholds = dec64.thresholds = thresholds
    probs = _leaf_probs(batch, tax.n_leaves, seed)

    _, t_back32 = timed(lambda: _back_off(dec32, probs), repeats)
    _, t_back64 = timed(lambda: _back_off(dec64, probs), repeats)
    _, t_decode = timed(lambda: dec32.decode(probs, "exact", top_k=5), repeats)
    _, t_greedy = timed(lambda: dec32.greedy(probs), repeats)
    _, t_genus = timed(lambda: dec32.rank_marginals(probs, "genus"), repeats)

    rows = probs[:8]
    m = tax.leaf_ancestor_matrix().astype(np.float64)
    ref = np.asarray((m.T @ rows.double().numpy().T).T)  # [8, n_nodes], root column 0
    ref[:, 0] = 1.0
    err32 = float(np.abs(dec32.marginals(rows).double().numpy() - ref).max())
    err64 = float(np.abs(dec64.marginals(rows).double().numpy() - ref).max())
    return {
        "leaves": tax.n_leaves,
        "taxa": len(tax) - 1,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "build_decoder_s": t_build,
        "backoff_float32_s": t_back32,
        "backoff_float64_s": t_back64,
        "decode_top5_s": t_decode,
        "greedy_s": t_greedy,
        "rank_marginals_genus_s": t_genus,
        "marginals_float32_max_abs_err": err32,
        "marginals_float64_max_abs_err": err64,
    }
