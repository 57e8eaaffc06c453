"""Evidence for GRPO and TARA on synthworld (``taxonlens bench tara``): SFT only, + GRPO, + GRPO +
TARA, with the same budget, over several seeds.

One world (:func:`~taxonlens.bench.vqa.vqa_world`: seen species' training photos for training,
their test photos and the novel species' photos for evaluation, questions with ``path``
distractors) and one BFM for TARA: a tiny BioCLIP-style encoder trained contrastively with
taxonomic captions on the training photos (:func:`~taxonlens.train.contrastive.train_contrastive`).
Per seed, a tiny LMM is warm-started with SFT (the recipe
:class:`~taxonlens.bench.TinySFTSpec`, ``warm_start``; deliberately short, so that it still
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from taxonlens.bench import HardwareSpec, TinySFTSpec, WorldSpec, bench_run, seed_summary
from taxonlens.bench.cells import answers_table, dig, figure_cells, sd_cell
from taxonlens.bench.vqa import SCORED_DECODERS, vqa_figures, vqa_scores, vqa_world
from taxonlens.models.mllm import load_lmm
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive
from taxonlens.train.grpo import RFTConfig, train_grpo
from taxonlens.train.sft import train_sft

#: the trained models compared, in table order
ARMS = ("warm_start", "sft", "grpo", "grpo+tara")
#: the decoders scored
DECODERS = SCORED_DECODERS


@dataclass(frozen=True)
class TARASpec(HardwareSpec):
    """What ``bench tara`` runs.

    Attributes:
        world, n_options: the world and its questions (``path`` distractors; seeded by the
            world's seed, the same for every seed).
        warm_start: the SFT warm start (its seed: the run's); ``more SFT`` takes the same recipe
            for ``rl_epochs`` at batch ``questions_per_step``.
        rl_epochs, questions_per_step: the budget of every arm after the warm start.
        generations, rl_lr, beta: GRPO's group size, learning rate and KL weight.
        bfm_epochs: contrastive epochs of the tiny BFM (tiny-clip, taxonomic captions).
        seeds: one warm start and three arms per seed.
        threads, device, precision: :class:`~taxonlens.bench.HardwareSpec`.
    """

    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=8, images_per_species=10, novel_fraction=0.25))
    n_options: int = 4
    warm_start: TinySFTSpec = field(default_factory=partial(TinySFTSpec, epochs=10))
    rl_epochs: int = 6
    questions_per_step: int = 4
    generations: int = 4
    rl_lr: float = 5e-4
    beta: float = 0.04
    bfm_epochs: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass
class TARAResult:
    """What ``bench tara`` measured.

    Attributes:
        spec: what ran.
        world: species, novel species, records per split, questions per set.
        bfm: the BFM's epochs and last loss.
        runs: per seed, per arm ``{"scores": {"seen" | "novel": score_split(...)}}`` and training figures.
        summary: per arm, split, decoder and figure ``{"mean", "sd", "values"}`` over seeds.
        total_seconds: the whole run.
    """

    spec: TARASpec
    world: dict[str, Any]
    bfm: dict[str, Any]
    runs: dict[int, dict[str, Any]]
    summary: dict[str, Any]
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """Mean +- sd of the answer figures per split, arm and decoder; per seed the rewards and
        TARA's label loss."""
        from rich.console import Group

        summary = self.summary
        answers = answers_table(f"mean +- sd over {len(self.spec.seeds)} seeds (percent)", ("species", "arm", "answers"), (
            ((split, arm, decoder), figure_cells(dig(summary, arm, split, decoder), sd_cell))
            for split in ("seen", "novel") for arm in ARMS for decoder in DECODERS
            if dig(summary, arm, split, decoder)))
        lines = []
        for seed, run in self.runs.items():
            rl = {arm: f"reward {run[arm]['reward_first_epoch']:.2f} -> {run[arm]['reward_last_epoch']:.2f}"
                  for arm in ("grpo", "grpo+tara")}
            lines.append(f"seed {seed}: grpo {rl['grpo']}; grpo+tara {rl['grpo+tara']}, label loss "
                         f"{run['grpo+tara']['label_loss_first_last'][0]:.2f} -> "
                         f"{run['grpo+tara']['label_loss_first_last'][1]:.2f}")
        return Group(answers, *lines, f"total {self.total_seconds:.0f} s")


def bench_tara_evidence(spec: TARASpec = TARASpec(), workdir: str | Path | None = None,
                        progress: Callable[[str], None] | None = None) -> TARAResult:
    """Train and score the arms of :data:`ARMS` for every seed.

    Args:
        workdir: where the world and the models are written (a temporary folder if None).
        progress: called with a line at the start of each stage.
    """
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "tara") as work:
        return _run(spec, work, say)


def _run(s: TARASpec, work: Path, say: Callable[[str], None]) -> TARAResult:
    start = time.perf_counter()
    say(f"synthworld: {s.world.n_species} species x {s.world.images_per_species} photos")
    vw = vqa_world(s.world, s.n_options, "path", work / "world")
    ranks = list(vw.taxonomy.ranks)
    say(f"BFM: tiny-clip, {len(vw.records['train'])} photos x {s.bfm_epochs} epochs")
    bfm = train_contrastive(ContrastiveConfig(encoder="tiny-clip", text_type="taxonomic", epochs=s.bfm_epochs,
                                              seed=s.world.seed, out=str(work / "bfm"), eval_every=0,
                                              **s.train_settings),
                            [replace(r, image=str(vw.manifest.parent / r.image)) for r in vw.records["train"]],
                            taxonomy=vw.taxonomy)
    # the arms' budget: whole steps of training records (GRPO leaves out an incomplete last batch, SFT would not)
    budget = vw.train[: len(vw.train) // s.questions_per_step * s.questions_per_step]
    runs: dict[int, dict[str, Any]] = {}
    for seed in s.seeds:
        run: dict[str, Any] = {}
        say(f"seed {seed}: SFT warm start, {s.warm_start.epochs} epochs")
        warm = train_sft(s.warm_start.config(work / f"seed{seed}" / "warm", s, seed), vw.train, vw.load, ranks)
        run["warm_start"] = {"scores": vqa_scores(s.scored(warm, load_lmm), vw, ranks), "last_loss": warm.metrics[-1]["train_loss"]}
        say(f"seed {seed}: more SFT, {s.rl_epochs} epochs")
        recipe = replace(s.warm_start, epochs=s.rl_epochs, batch_size=s.questions_per_step)
        more = replace(recipe.config(work / f"seed{seed}" / "sft", s, seed), model=str(warm.model_dir),
                       questions_per_record=1)
        sft = train_sft(more, budget, vw.load, ranks)
        run["sft"] = {"scores": vqa_scores(s.scored(sft, load_lmm), vw, ranks), "steps": sft.steps,
                      "seconds": sum(m["train_seconds"] for m in sft.metrics)}
        for arm in ("grpo", "grpo+tara"):
            say(f"seed {seed}: {arm}, {s.rl_epochs} epochs")
            config = RFTConfig(model=str(warm.model_dir), out=work / f"seed{seed}" / arm, epochs=s.rl_epochs,
                               questions_per_step=s.questions_per_step, generations=s.generations,
                               lr=s.rl_lr, beta=s.beta, seed=seed, max_new_tokens=16,
                               tara=arm == "grpo+tara", bfm=str(bfm.model_dir), **s.train_settings)
            result = train_grpo(config, budget, vw.load, ranks)
            rows = result.metrics
            per_epoch = max(1, len(rows) // s.rl_epochs)
            run[arm] = {"scores": vqa_scores(s.scored(result, load_lmm), vw, ranks), "steps": result.steps, "seconds": result.seconds,
                        "reward_first_epoch": float(np.mean([r["reward"] for r in rows[:per_epoch]])),
                        "reward_last_epoch": float(np.mean([r["reward"] for r in rows[-per_epoch:]]))}
            if config.tara:
                for key in ("tara/visual_loss", "tara/label_loss"):
                    run[arm][key.split("/")[1] + "_first_last"] = [rows[0][key], rows[-1][key]]
        runs[seed] = run
    return TARAResult(
        spec=s, world={"species": vw.taxonomy.n_leaves, "novel_species": len(vw.world.novel),
                       "records": {k: len(v) for k, v in vw.records.items()},
                       "questions": {"train": len(vw.train), **{k: len(v) for k, v in vw.asked.items()}}},
        bfm={"epochs": s.bfm_epochs, "last_loss": bfm.metrics[-1].get("train_loss")},
        runs=runs, summary=summarize(runs), total_seconds=time.perf_counter() - start)


def summarize(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation (over seeds, ``ddof=1``; 0 for one seed) and the values of every
    figure: ``{arm: {split: {decoder: {figure: {"mean", "sd", "values"}}}}}`` on all records."""
    return seed_summary(runs, ARMS, lambda arm: vqa_figures(arm["scores"]))


__all__ = ["ARMS", "DECODERS", "TARAResult", "TARASpec", "bench_tara_evidence", "summarize"]
