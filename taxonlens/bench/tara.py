"""Evidence for GRPO and TARA on synthworld (``taxonlens bench tara``): SFT only, + GRPO, + GRPO +
TARA, with the same budget, over several seeds.

One world (:func:`~taxonlens.bench.vqa.vqa_world`: seen species' training photos for training,
their test photos and the novel species' photos for evaluation, questions with ``path``
distractors) and one BFM for TARA: a tiny BioCLIP-style encoder trained contrastively with
taxonomic captions on the training photos (:func:`~taxonlens.train.contrastive.train_contrastive`).
Per seed, a tiny LMM is warm-started with SFT (the recipe of
:func:`~taxonlens.bench.tiny_sft_config`, ``sft_epochs``; deliberately short, so that it still
makes mistakes for reinforcement to correct), and then trained three ways from that warm start
with the same budget: ``rl_epochs`` passes over the training records (the first multiple of
``questions_per_step`` of them), each asked at one random rank, ``questions_per_step`` questions
per optimizer step:

- ``sft``: more SFT on those questions (the same steps and questions per step);
- ``grpo``: no-thinking GRPO (:func:`~taxonlens.train.grpo.train_grpo`);
- ``grpo+tara``: the same with TARA alignment to the BFM.

The warm start itself is scored too (``warm_start``). Every model is asked as it was trained
(option names scored after the question, no system prompt;
:func:`~taxonlens.bench.vqa.level_logprobs`) and scored by
:func:`~taxonlens.bench.vqa.score_split` (HCA, leaf accuracy, POR, S-POR, TOR, valid paths) with
independent and with consistent decoding, on the seen and the novel species. The result gives
every seed's figures and their mean and standard deviation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from taxonlens.bench import bench_run, seed_summary, tiny_sft_config
from taxonlens.bench.vqa import SCORED_DECODERS, vqa_figures, vqa_scores, vqa_world
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive
from taxonlens.train.grpo import RFTConfig, train_grpo
from taxonlens.train.sft import train_sft

#: the trained models compared, in table order
ARMS = ("warm_start", "sft", "grpo", "grpo+tara")
#: the decoders scored
DECODERS = SCORED_DECODERS


def bench_tara_evidence(
    n_species: int = 8,
    images_per_species: int = 10,
    novel_fraction: float = 0.25,
    size: int = 32,
    nuisance: float = 0.2,
    n_options: int = 4,
    model: str = "tiny-qwen2.5-vl",
    sft_epochs: int = 10,
    rl_epochs: int = 6,
    questions_per_step: int = 4,
    generations: int = 4,
    rl_lr: float = 5e-4,
    beta: float = 0.04,
    bfm_epochs: int = 20,
    seeds: Sequence[int] = (0, 1, 2),
    threads: int | None = 1,
    world_seed: int = 0,
    workdir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and score the arms of :data:`ARMS` for every seed.

    Args:
        n_species, images_per_species, novel_fraction, size, nuisance, n_options: the world and
            its questions (seeded by ``world_seed``, the same for every seed).
        model: the tiny LMM preset.
        sft_epochs: epochs of the SFT warm start (lr 2e-3, batch 4, LoRA with the output layer).
        rl_epochs, questions_per_step: the budget of every arm after the warm start.
        generations, rl_lr, beta: GRPO's group size, learning rate and KL weight.
        bfm_epochs: contrastive epochs of the tiny BFM (tiny-clip, taxonomic captions).
        seeds: one warm start and three arms per seed.
        threads: torch CPU threads during the run.
        workdir: where the world and the models are written (a temporary folder if None).
        progress: called with a line at the start of each stage.

    Returns:
        ``settings``, ``world``, ``bfm`` (training figures), ``runs`` (per seed: per arm
        ``{"seen" | "novel": score_split(...)}`` and training figures), ``summary`` (per arm,
        split, decoder and figure: ``{"mean", "sd", "values"}`` over seeds) and ``total_seconds``.
    """
    settings = {"n_species": n_species, "images_per_species": images_per_species, "novel_fraction": novel_fraction,
                "size": size, "nuisance": nuisance, "n_options": n_options, "mode": "path", "model": model,
                "sft_epochs": sft_epochs, "rl_epochs": rl_epochs, "questions_per_step": questions_per_step,
                "generations": generations, "rl_lr": rl_lr, "beta": beta, "bfm_epochs": bfm_epochs,
                "seeds": list(seeds), "threads": threads, "seed": world_seed}
    say = progress or (lambda _msg: None)
    with bench_run(workdir, threads, "tara") as work:
        return _run(settings, work, say)


def _run(s: dict[str, Any], work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    start = time.perf_counter()
    say(f"synthworld: {s['n_species']} species x {s['images_per_species']} photos")
    vw = vqa_world(s, work / "world")
    ranks = list(vw.taxonomy.ranks)
    say(f"BFM: tiny-clip, {len(vw.records['train'])} photos x {s['bfm_epochs']} epochs")
    bfm = train_contrastive(ContrastiveConfig(encoder="tiny-clip", text_type="taxonomic", epochs=s["bfm_epochs"],
                                              seed=s["seed"], out=str(work / "bfm"), eval_every=0,
                                              threads=s["threads"]),
                            [replace(r, image=str(vw.manifest.parent / r.image)) for r in vw.records["train"]],
                            taxonomy=vw.taxonomy)
    # the arms' budget: whole steps of training records (GRPO leaves out an incomplete last batch, SFT would not)
    budget = vw.train[: len(vw.train) // s["questions_per_step"] * s["questions_per_step"]]
    runs: dict[int, dict[str, Any]] = {}
    for seed in s["seeds"]:
        run: dict[str, Any] = {}
        say(f"seed {seed}: SFT warm start, {s['sft_epochs']} epochs")
        warm = train_sft(tiny_sft_config({**s, "epochs": s["sft_epochs"], "batch_size": 4, "lr": 2e-3,
                                          "lora_alpha": 32.0, "seed": seed}, work / f"seed{seed}" / "warm"),
                         vw.train, vw.load, ranks)
        run["warm_start"] = {"scores": vqa_scores(warm.model, vw, ranks), "last_loss": warm.metrics[-1]["train_loss"]}
        say(f"seed {seed}: more SFT, {s['rl_epochs']} epochs")
        more = replace(tiny_sft_config({**s, "epochs": s["rl_epochs"], "batch_size": s["questions_per_step"],
                                        "lr": 2e-3, "lora_alpha": 32.0, "seed": seed}, work / f"seed{seed}" / "sft"),
                       model=str(warm.model_dir), questions_per_record=1)
        sft = train_sft(more, budget, vw.load, ranks)
        run["sft"] = {"scores": vqa_scores(sft.model, vw, ranks), "steps": sft.steps,
                      "seconds": sum(m["train_seconds"] for m in sft.metrics)}
        for arm in ("grpo", "grpo+tara"):
            say(f"seed {seed}: {arm}, {s['rl_epochs']} epochs")
            config = RFTConfig(model=str(warm.model_dir), out=work / f"seed{seed}" / arm, epochs=s["rl_epochs"],
                               questions_per_step=s["questions_per_step"], generations=s["generations"],
                               lr=s["rl_lr"], beta=s["beta"], seed=seed, threads=s["threads"], max_new_tokens=16,
                               tara=arm == "grpo+tara", bfm=str(bfm.model_dir))
            result = train_grpo(config, budget, vw.load, ranks)
            rows = result.metrics
            per_epoch = max(1, len(rows) // s["rl_epochs"])
            run[arm] = {"scores": vqa_scores(result.model, vw, ranks), "steps": result.steps, "seconds": result.seconds,
                        "reward_first_epoch": float(np.mean([r["reward"] for r in rows[:per_epoch]])),
                        "reward_last_epoch": float(np.mean([r["reward"] for r in rows[-per_epoch:]]))}
            if config.tara:
                for key in ("tara/visual_loss", "tara/label_loss"):
                    run[arm][key.split("/")[1] + "_first_last"] = [rows[0][key], rows[-1][key]]
        runs[seed] = run
    return {"settings": s,
            "world": {"species": vw.taxonomy.n_leaves, "novel_species": len(vw.world.novel),
                      "records": {k: len(v) for k, v in vw.records.items()},
                      "questions": {"train": len(vw.train), **{k: len(v) for k, v in vw.asked.items()}}},
            "bfm": {"epochs": s["bfm_epochs"], "last_loss": bfm.metrics[-1].get("train_loss")},
            "runs": runs, "summary": summarize(runs), "total_seconds": time.perf_counter() - start}


def summarize(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation (over seeds, ``ddof=1``; 0 for one seed) and the values of every
    figure: ``{arm: {split: {decoder: {figure: {"mean", "sd", "values"}}}}}`` on all records."""
    return seed_summary(runs, ARMS, lambda arm: vqa_figures(arm["scores"]))


__all__ = ["ARMS", "DECODERS", "bench_tara_evidence", "summarize"]
