"""Evidence for GRPO and TARA (``taxonlens bench tara``): SFT vs + GRPO vs + GRPO + TARA from a
pretrained start, with the same budget, over seeds, judged claim by claim.

The start is :func:`~taxonlens.train.pretrain.pretrain`'s (``spec.start``): an LMM pretrained on
descriptions and taxonomic captions of its world (never the hierarchical questions) and a
BFM trained with taxonomic captions, which TARA aligns to. The questions are
:func:`~taxonlens.bench.vqa.vqa_world`'s over the start's world (``path`` distractors,
``n_options`` per level): the training photos of the seen species to train on, and
``records_per_split`` photos of the seen species' test split (``seen``) and of the novel
species (``novel``) to score, drawn once with the world's seed (the same for every seed and arm).

Per seed, ``shots`` training photos of every seen species are drawn
(:func:`~taxonlens.train.grpo.shots_per_species`; the paper trains on one shot per iNat21
species), and the pretrained LMM is warm-started with SFT on their questions (``warm_levels`` ranks of
each photo per epoch, ``warm_epochs``: short, so that it still makes mistakes for reinforcement
to correct). From
that warm start every arm then gets the same budget, ``epochs`` passes over those photos, each
asked at one rank drawn per epoch, ``questions_per_step`` questions per optimizer step:

- ``sft``: more SFT (its loss on the true option's name);
- ``grpo``: no-thinking GRPO (:func:`~taxonlens.train.grpo.train_grpo`; reward 1 for the true option);
- ``grpo+tara``: the same with TARA alignment to the start's BFM.

The arms train LoRA adapters on the language model (``language``: trl's GRPO cannot adapt the
output layer, so more SFT adapts the same weights and the arms differ only in their objective);
the warm start adapts the output layer too (``language+head``). Measured on the quick start
(:meth:`TARASpec.quick`, seed 0, 2 shots per species, lr 2e-3, scored on 12 seen test photos):
after 4 warm epochs ``language+head`` had brought the loss from 3.39 to 1.66 and the
per-question accuracy to 48.8% (chance about 27%), ``language`` only to 4.03 and 41.7%; lr 5e-3
reached loss 1.23 but 45.2%. GRPO's reward (one option named, exactly) needs well-formed names:
sampled answers after those 4 epochs earned 0.01 (every group all wrong: no advantage), after 10
epochs (loss 0.57, accuracy 46.4%: still many mistakes) 0.26 at temperature 0.5 and 0.10 at 1.0,
hence ``temperature`` 0.5 and the quick spec's 10 warm epochs. lr 1e-3, 2e-3 and 5e-3 of the arms
did not separate on those photos (within 2 points); 2e-3 is kept.

Every model is asked as it was trained (option names scored after the question, no system
prompt: :func:`~taxonlens.bench.vqa.level_logprobs`) and answered with independent per-level
choices and with consistent decoding (:func:`~taxonlens.bench.vqa.decode_rows`); each record's
HCA, leaf accuracy, POR, S-POR and TOR (:func:`~taxonlens.evaluate.metrics.per_record`) and its
correctness at every rank (``acc_<rank>``) are kept per seed and arm. :data:`CLAIMS` are the TARA
paper's, judged on the independent answers (the paper's protocol) by
:func:`~taxonlens.bench.claims.judge`.

Costs measured on the 2-core development machine, in CPU seconds of one torch thread (the machine
was shared, so wall times were 2-7 times longer): an SFT step of 4 questions takes 0.6 s, a GRPO
step (4 questions x 4 answers of at most 16 tokens) 3.3 s, with TARA about the same. The full size
(:class:`TARASpec`'s defaults: 300 + 300 records, 3 arms, 5 seeds: 63,000 questions) ran in 78
minutes on one thread beside two other benchmarks: per seed 534 s of training and 400 s of scoring
12,600 questions (31.5 questions/s, every question's options continuing its prompt's cache).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from taxonlens.bench import EvidenceSpec, bench_run
from taxonlens.bench.cells import table
from taxonlens.bench.claims import Claim, claims_table, estimates_json, interval_cell, judge, stack
from taxonlens.bench.vqa import SCORED_DECODERS, VQAWorld, decode_rows, level_logprobs, vqa_world
from taxonlens.data import VQARecord
from taxonlens.evaluate.metrics import per_record
from taxonlens.models.mllm import load_lmm
from taxonlens.train.grpo import RFTConfig, shots_per_species, train_grpo
from taxonlens.train.pretrain import PretrainSpec
from taxonlens.train.sft import SFTConfig, train_sft

#: the arms compared, in table order
ARMS = ("sft", "grpo", "grpo+tara")
#: the per-record figures of :func:`~taxonlens.evaluate.metrics.per_record`
RECORD_FIGURES = ("hca", "acc_leaf", "por", "s_por", "tor")
#: the TARA paper's claims (CVPR 2026): GRPO beats SFT and TARA adds to GRPO on the seen species'
#: hierarchical consistency (HCA, POR), and on the novel species' partial paths and the parent
#: categories (genus, family) of unseen species
CLAIMS = tuple(
    Claim("TARA", f"{arm} beats {base}: {what}", arm, base, key)
    for arm, base in (("grpo+tara", "grpo"), ("grpo", "sft"))
    for what, key in (("seen HCA", ("seen", "independent", "hca")),
                      ("seen POR", ("seen", "independent", "por")),
                      ("novel POR", ("novel", "independent", "por")),
                      ("novel genus accuracy", ("novel", "independent", "acc_genus")),
                      ("novel family accuracy", ("novel", "independent", "acc_family"))))


@dataclass(frozen=True)
class TARASpec(EvidenceSpec):
    """What ``bench tara`` runs.

    Attributes:
        start, start_folder: the pretrained start (``None``: the cache).
        records_per_split: seen test and novel photos scored (drawn once with the world's seed).
        n_options: options per level (``path`` distractors).
        shots: training photos per seen species (drawn per seed).
        warm_epochs, warm_levels, warm_lr: the SFT warm start on ``warm_levels`` levels of each
            shot per epoch (drawn anew each epoch; 0: every level).
        epochs, questions_per_step: every arm's budget after the warm start.
        sft_lr, rl_lr: the learning rates of more SFT and of GRPO (with or without TARA).
        generations, temperature, beta: GRPO's group size, sampling temperature and KL weight.
        seeds: one warm start and three arms per seed.
        threads, device, precision (and the start, records and seeds): :class:`~taxonlens.bench.EvidenceSpec`.
    """

    n_options: int = 4
    shots: int = 1
    warm_epochs: int = 2
    warm_levels: int = 2
    warm_lr: float = 2e-3
    epochs: int = 1
    questions_per_step: int = 4
    sft_lr: float = 2e-3
    rl_lr: float = 2e-3
    generations: int = 4
    temperature: float = 0.5
    beta: float = 0.04

    @classmethod
    def quick(cls, **changes: Any) -> TARASpec:
        """A few-minute run from :meth:`PretrainSpec.quick`'s start: 2 seeds, 12 records per split."""
        return replace(cls(start=PretrainSpec.quick(), records_per_split=12, shots=2, warm_epochs=10, warm_levels=0,
                           epochs=2, seeds=(0, 1)), **changes)


@dataclass
class TARAResult:
    """What ``bench tara`` measured.

    Attributes:
        spec: what ran.
        start: the pretrained start's folder and what its models know (:attr:`Pretrained.knowledge`).
        world: species, novel species, training photos (the shots' pool), records scored per split.
        training: per seed and arm (``warm_start`` too, with its shots), steps and seconds; GRPO's mean reward over
            the first and the last quarter of its steps; TARA's visual and label losses over those steps.
        runs: per seed and arm, ``{"split/decoder/figure": per-record values}`` (the same records
            for every seed and arm).
        estimates: per arm and figure, the mean and its 95% interval over seeds and records.
        claims: :func:`~taxonlens.bench.claims.judge`'s rows for :data:`CLAIMS`.
        seconds: per stage (``start``, ``world``, ``training``, ``scoring``) and ``total``.
    """

    spec: TARASpec
    start: dict[str, Any]
    world: dict[str, Any]
    training: dict[int, dict[str, dict[str, Any]]]
    runs: dict[int, dict[str, dict[str, list[float]]]]
    estimates: dict[str, dict[str, dict[str, float]]]
    claims: list[dict[str, Any]]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """Every arm's figures (``mean [low, high]``), the claims' verdicts, and per seed the
        rewards and TARA's losses."""
        from rich.console import Group

        figures = table(f"mean [95% interval] over {len(self.spec.seeds)} seeds and the records (percent)",
                        ("figure", *ARMS), left=("figure",), no_wrap=True)
        for key in self.estimates[ARMS[0]]:
            figures.add_row(key, *(interval_cell(self.estimates[arm].get(key)) for arm in ARMS))
        lines = []
        for seed, arms in self.training.items():
            grpo, tara = arms["grpo"], arms["grpo+tara"]
            lines.append(f"seed {seed}: reward grpo {grpo['reward'][0]:.2f} -> {grpo['reward'][1]:.2f}, grpo+tara "
                         f"{tara['reward'][0]:.2f} -> {tara['reward'][1]:.2f}; TARA visual loss "
                         f"{tara['visual_loss'][0]:.3f} -> {tara['visual_loss'][1]:.3f}, label loss "
                         f"{tara['label_loss'][0]:.3f} -> {tara['label_loss'][1]:.3f}")
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
        return Group(figures, claims_table("the TARA paper's claims", self.claims), *lines, stages)


def bench_tara_evidence(spec: TARASpec = TARASpec(), workdir: str | Path | None = None,
                        progress: Callable[[str], None] | None = None) -> TARAResult:
    """Train and score the arms of :data:`ARMS` for every seed and judge :data:`CLAIMS`.

    Args:
        workdir: where the world and the models are written (a temporary folder if None).
        progress: called with a line at the start of each stage.
    """
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "tara") as work:
        return _run(spec, work, say)


def drawn(records: Sequence[VQARecord], n: int, seed: int) -> list[VQARecord]:
    """Up to ``n`` of ``records``, drawn with ``seed``, in their original order."""
    keep = set(random.Random(f"taxonlens-bench-records:{seed}").sample(range(len(records)), min(n, len(records))))
    return [r for i, r in enumerate(records) if i in keep]


def record_figures(records: Sequence[VQARecord], logprobs: Sequence[Sequence[np.ndarray | None]], vw: VQAWorld
                   ) -> dict[str, list[float]]:
    """Per record (percent), ``decoder/figure`` of every decoder in
    :data:`~taxonlens.bench.vqa.SCORED_DECODERS`: :data:`RECORD_FIGURES` and ``acc_<rank>``
    (the answer's taxon at that rank is the true one)."""
    rows = decode_rows(records, logprobs, vw.taxonomy)
    truths = [list(r.levels) for r in records]
    out: dict[str, list[float]] = {}
    for decoder in SCORED_DECODERS:
        preds = [row["path"] for row in rows[decoder]]
        out |= {f"{decoder}/{k}": v.tolist() for k, v in per_record(truths, preds).items()}
        for level, rank in enumerate(vw.taxonomy.ranks):
            out[f"{decoder}/acc_{rank}"] = [100.0 * (p[level].lower() == t[level].lower()) for t, p in zip(truths, preds)]
    return out


def start_end_means(rows: Sequence[Mapping[str, float]], key: str, share: float = 0.25) -> list[float]:
    """The mean of ``key`` over the first and over the last ``share`` of the logged steps (at
    least one step each): how a run began and ended, whatever its number of epochs."""
    n = max(1, round(share * len(rows)))
    return [float(np.mean([r[key] for r in rows[:n]])), float(np.mean([r[key] for r in rows[-n:]]))]


def _run(s: TARASpec, work: Path, say: Callable[[str], None]) -> TARAResult:
    tick = start = time.perf_counter()
    seconds: dict[str, float] = {}
    say(f"pretrained start: {s.start.model}, {s.start.world.n_species} species")
    pre = s.pretrained(say)
    seconds["start"] = time.perf_counter() - tick
    tick = time.perf_counter()
    vw = vqa_world(s.start.world, s.n_options, "path", work / "world")
    asked = {split: drawn(recs, s.records_per_split, s.start.world.seed) for split, recs in vw.asked.items()}
    ranks = list(vw.taxonomy.ranks)
    seconds["world"] = time.perf_counter() - tick
    seconds["training"] = seconds["scoring"] = 0.0
    training: dict[int, dict[str, dict[str, Any]]] = {}
    runs: dict[int, dict[str, dict[str, list[float]]]] = {}
    settings = {"answer": "name", "system": False, **s.train_settings}
    for seed in s.seeds:
        folder = work / f"seed{seed}"
        shots = shots_per_species(vw.train, s.shots, seed)
        # whole steps of photos: GRPO leaves out an incomplete last batch, SFT would not
        budget = shots[: len(shots) // s.questions_per_step * s.questions_per_step]
        say(f"seed {seed}: SFT warm start, {len(shots)} photos x {s.warm_levels or 'all'} levels x {s.warm_epochs} epochs")
        tick = time.perf_counter()
        warm = train_sft(SFTConfig(model=str(pre.lmm), out=folder / "warm", epochs=s.warm_epochs,
                                   batch_size=s.questions_per_step, lr=s.warm_lr, lora_targets="language+head",
                                   questions_per_record=s.warm_levels, eval_every=0, seed=seed, **settings), shots, vw.load, ranks)
        models = {"sft": train_sft(SFTConfig(model=str(warm.model_dir), out=folder / "sft", epochs=s.epochs,
                                             batch_size=s.questions_per_step, lr=s.sft_lr, lora_targets="language",
                                             questions_per_record=1, eval_every=0, seed=seed, **settings),
                                   budget, vw.load, ranks)}
        trained = {"warm_start": {"photos": len(shots), "steps": warm.steps, "seconds": sum(m["train_seconds"] for m in warm.metrics)},
                   "sft": {"steps": models["sft"].steps,
                           "seconds": sum(m["train_seconds"] for m in models["sft"].metrics)}}
        for arm in ("grpo", "grpo+tara"):
            say(f"seed {seed}: {arm}, {len(budget)} photos x {s.epochs} epochs")
            config = RFTConfig(model=str(warm.model_dir), out=folder / arm, epochs=s.epochs,
                               questions_per_step=s.questions_per_step, generations=s.generations, lr=s.rl_lr,
                               temperature=s.temperature, beta=s.beta, seed=seed, tara=arm == "grpo+tara", bfm=str(pre.bfm), **settings)
            models[arm] = result = train_grpo(config, budget, vw.load, ranks)
            trained[arm] = {"steps": result.steps, "seconds": result.seconds,
                            "reward": start_end_means(result.metrics, "reward")}
            if config.tara:
                trained[arm] |= {k: start_end_means(result.metrics, f"tara/{k}")
                                 for k in ("visual_loss", "label_loss")}
        seconds["training"] += time.perf_counter() - tick
        tick = time.perf_counter()
        say(f"seed {seed}: scoring {len(ARMS)} arms on {sum(map(len, asked.values()))} records")
        runs[seed] = {arm: {f"{split}/{k}": v for split, recs in asked.items()
                            for k, v in record_figures(recs, level_logprobs(s.scored(models[arm], load_lmm), recs,
                                                                            vw.load, ranks), vw).items()}
                      for arm in ARMS}
        seconds["scoring"] += time.perf_counter() - tick
        training[seed] = trained
    values = stack(runs)
    seconds["total"] = time.perf_counter() - start
    return TARAResult(
        spec=s, start={"folder": str(pre.folder), "knowledge": pre.knowledge},
        world={"species": vw.taxonomy.n_leaves, "novel_species": len(vw.world.novel), "training_photos": len(vw.train),
               "records": {k: len(v) for k, v in asked.items()}},
        training=training, runs=runs,
        estimates=estimates_json(values),
        claims=judge(CLAIMS, values), seconds=seconds)


__all__ = ["ARMS", "CLAIMS", "RECORD_FIGURES", "TARAResult", "TARASpec", "bench_tara_evidence", "drawn",
           "record_figures", "start_end_means"]
