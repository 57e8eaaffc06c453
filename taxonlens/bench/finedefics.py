"""Evidence and cost of Finedefics on synthworld (``taxonlens bench finedefics [--cost]``).

Evidence (:func:`bench_finedefics_evidence`). One world (:func:`~taxonlens.bench.vqa.vqa_world`:
the seen species' training photos train every model, their test photos and the novel species'
photos are asked), and one notion of "similar species" for Stage I's hard negatives and Stage
II's distractors: the cosine of the text embeddings of the species' taxonomic label prompts by
``tiny-clip`` with its preset's random weights (:func:`~taxonlens.train.finedefics.leaf_embeddings`;
a random text tower ranks prompts that share more tokens, i.e. more of the lineage, as closer).
Training sees only the seen species' taxonomy, so no novel species' name is ever trained. Per
seed, the tiny LMM (the preset's random weights for that seed) is trained five ways, LoRA on the
language model and its output layer, lr 2e-3, alpha 32 (the recipe a random-weight tiny preset
learns with):

- ``stage2_only``: Stage II alone, from the preset;
- ``occ_only+stage2``: Stage I with the object-category contrast alone (not a term of the paper), then II;
- ``contrast_no_ntp+stage2``: Stage I with the paper's three contrasts OAC, ACC, CCC (``w_ntp = 0``), then II;
- ``occ_for_ccc+stage2``: Stage I with NTP, OAC, ACC and the object-category contrast in place of
  CCC, then II (how the full arm was before CCC);
- ``finedefics``: Stage I with NTP, OAC, ACC and CCC (the default weights), then II.

The same budget: one batch size for both stages and one item per training photo per epoch in
both (Stage I: the photo; Stage II: its open or its closed question), so an epoch is the same
number of optimizer steps in either stage; the arms with a Stage I train ``stage1_epochs`` +
``recipe.epochs`` (Stage II) epochs, and ``stage2_only`` gets Stage II for ``stage1_epochs +
recipe.epochs`` epochs. Every arm takes the same number of optimizer steps on the same photos (the result
records them). What differs besides the loss: two learning-rate schedules (warmup and cosine
decay per stage) against one, and a Stage I step costs more (see the cost benchmark).

Every trained model is asked as Stage II trains it: names as answers, no system prompt.

- closed set: the species-level 4-option question with the 3 most similar species as
  distractors (:func:`~taxonlens.train.finedefics.species_questions`, over the whole taxonomy),
  options scored by their names' likelihood (:func:`~taxonlens.train.sft.evaluate_sft`, ``name``);
- open set: "What is the species of the organism in this image?", greedy generation (16 tokens),
  the answer's first line cleaned (:func:`~taxonlens.knowledge.extract.clean_answer`) and
  compared with the true name exactly (case-insensitive); also the share of answers that name
  some species of the world;
- hierarchical: ``vqa_world``'s questions at every rank (``path`` distractors, as ``bench vqa``
  and ``bench tara``), scored by :func:`~taxonlens.bench.vqa.level_logprobs` (option names
  after the question, without a system prompt, as the Stage II model answers) and
  :func:`~taxonlens.bench.vqa.score_split` (HCA, leaf, POR, S-POR, TOR, valid paths) with
  independent and with consistent decoding. Stage II trains only the species question, so the
  ranks above are asked of a model never trained on them.

Alignment inside the LLM (:func:`~taxonlens.train.finedefics.measure_alignment`: image ->
category-name retrieval among the seen species for the seen species' test photos, among all
species for the novel photos, and the mean cosine gap true vs hardest wrong name) of the
starting model (``before``), after Stage I (each arm that has one) and after Stage II (every
arm); the 2-D projections of the first seed's seen test photos and names, before vs after
Stage I, are drawn side by side per arm in ``alignment.png``.

Cost (:func:`bench_finedefics_cost`): seconds per optimizer step (median over the steps of a
run) and peak memory of Stage I with the default terms (NTP, OAC, ACC, CCC), Stage I with
next-token prediction alone (every contrast weighted 0) and Stage II, on every tiny preset, same photos and batch size.
Memory is the growth of the peak resident set size (``resource.getrusage``'s ``ru_maxrss``)
during the run, each run in a fresh process forked from a clean server process
(multiprocessing ``forkserver``): torch's CPU tensors are not allocated through Python's
allocator, so ``tracemalloc`` does not see them, and a peak mark only tells something in a
process that has not already reached a higher one; torch's profiler would see every
allocation but slows the very steps being timed. Before the mark is read, the process loads
the preset with LoRA once and drops it (the modules imported on first use and the weights'
own memory, reported as ``model_mb``), so the figure is what training adds to a loaded model:
optimizer state and the largest step's activations and gradients (and the merged copy made
after the last step is not counted: the mark is read at the last step).
"""

from __future__ import annotations

import gc
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from taxonlens.bench import HardwareSpec, TinySFTSpec, WorldSpec, bench_run, seed_summary
from taxonlens.bench.cells import answers_table, dig, figure_cells, sd_cell, table
from taxonlens.bench.vqa import SCORED_DECODERS, VQAWorld, vqa_figures, vqa_scores, vqa_world
from taxonlens.data import Record, VQARecord
from taxonlens.data.records import record_leaves
from taxonlens.knowledge.extract import clean_answer
from taxonlens.models.device import peak_memory_mb
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.finedefics import (
    OPEN_QUESTION,
    AlignmentReport,
    Stage1Config,
    Stage2Config,
    leaf_embeddings,
    measure_alignment,
    species_questions,
    train_stage1,
    train_stage2,
)
from taxonlens.train.sft import evaluate_sft, image_loader

#: the arms, in table order, and their Stage I loss weights (``None``: no Stage I)
STAGE1_WEIGHTS: dict[str, dict[str, float] | None] = {
    "stage2_only": None,
    "occ_only+stage2": {"w_ntp": 0.0, "w_oac": 0.0, "w_acc": 0.0, "w_ccc": 0.0, "w_occ": 0.5},
    "contrast_no_ntp+stage2": {"w_ntp": 0.0, "w_oac": 0.5, "w_acc": 0.5, "w_ccc": 0.5, "w_occ": 0.0},
    "occ_for_ccc+stage2": {"w_ntp": 1.0, "w_oac": 0.5, "w_acc": 0.5, "w_ccc": 0.0, "w_occ": 0.5},
    "finedefics": {"w_ntp": 1.0, "w_oac": 0.5, "w_acc": 0.5, "w_ccc": 0.5, "w_occ": 0.0},
}
ARMS = tuple(STAGE1_WEIGHTS)
#: the splits asked: seen species' test photos, novel species' photos
SPLITS = ("seen", "novel")
#: the encoder whose text embeddings define similar species
SIMILAR_ENCODER = "tiny-clip"

#: the presets and stages of the cost benchmark, and the Stage I weights of each stage
COST_PRESETS = ("tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-idefics2")
COST_STAGES: dict[str, dict[str, float] | None] = {
    "stage1": STAGE1_WEIGHTS["finedefics"],
    "stage1_ntp": {"w_ntp": 1.0, "w_oac": 0.0, "w_acc": 0.0, "w_ccc": 0.0, "w_occ": 0.0},
    "stage2": None,
}
#: the ratios the cost benchmark reports, ``(numerator stage, denominator stage)``
COST_RATIOS = (("stage1", "stage1_ntp"), ("stage1", "stage2"), ("stage1_ntp", "stage2"))


# ------------------------------------------------------------------------ data
def seen_taxonomy(vw: VQAWorld) -> Taxonomy:
    """The taxonomy of the world's seen species (what the models are trained over)."""
    return vw.taxonomy.subset(i for i in range(vw.taxonomy.n_leaves) if i not in vw.world.novel)


def _leaf_names(taxonomy: Taxonomy) -> list[str]:
    return [taxonomy.names[taxonomy.leaves[leaf]] for leaf in range(taxonomy.n_leaves)]


def _alignment_sets(vw: VQAWorld, seen: Taxonomy) -> dict[str, tuple[list[Record], list[int], list[str]]]:
    """Per split, the photos, their categories and the category names retrieval chooses among:
    seen test photos among the seen species, novel photos among all species."""
    out = {}
    for split, records, taxonomy in (("seen", vw.records["test"], seen), ("novel", vw.records["novel"], vw.taxonomy)):
        if records:
            out[split] = (records, record_leaves(records, taxonomy), _leaf_names(taxonomy))
    return out


# ------------------------------------------------------------------ evaluation
def closed_set_accuracy(lmm: LMM, questions: Sequence[VQARecord], ranks: Sequence[str],
                        load: Callable[[Any], Any], organism: str = "organism", batch_size: int = 16
                        ) -> dict[str, Any]:
    """Option-scoring accuracy (names, no system prompt; :func:`~taxonlens.train.sft.evaluate_sft`)
    of one-level questions (:func:`~taxonlens.train.finedefics.species_questions`) of the given
    ranks, pooled over ranks: ``{"n", "acc", "chance"}`` (percent)."""
    parts = [evaluate_sft(lmm, [q for q, r in zip(questions, ranks) if r == rank], load, [rank], "name", False,
                          organism, batch_size) for rank in dict.fromkeys(ranks)]
    n = sum(p["n"] for p in parts)
    return {"n": n, "acc": sum(p["acc"] * p["n"] for p in parts) / n,
            "chance": sum(p["chance"] * p["n"] for p in parts) / n}


def open_set_accuracy(lmm: LMM, questions: Sequence[VQARecord], ranks: Sequence[str], load: Callable[[Any], Any],
                      names: Sequence[str], organism: str = "organism", batch_size: int = 16,
                      max_new_tokens: int = 16) -> dict[str, Any]:
    """The open question (:data:`~taxonlens.train.finedefics.OPEN_QUESTION`, no system prompt)
    answered by greedy generation: ``{"n", "acc": percent whose cleaned answer is the true name
    (case-insensitive), "named_pct": percent that name one of ``names``, "examples": the first 5
    (answer, truth) pairs}``."""
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        chunk = range(start, min(start + batch_size, len(questions)))
        answers += lmm.generate([load(questions[i]) for i in chunk],
                                [OPEN_QUESTION.format(rank=ranks[i], organism=organism) for i in chunk],
                                max_new_tokens)
    cleaned = [clean_answer(a).lower() for a in answers]
    known = {n.lower() for n in names}
    truth = [q.levels[0].lower() for q in questions]
    return {"n": len(questions), "acc": 100.0 * float(np.mean([a == t for a, t in zip(cleaned, truth)])),
            "named_pct": 100.0 * float(np.mean([a in known for a in cleaned])),
            "examples": [[a, t] for a, t in zip(answers, truth)][:5]}


def _alignment(lmm: LMM, sets: Mapping[str, tuple], load, batch_size: int) -> dict[str, AlignmentReport]:
    return {split: measure_alignment(lmm, records, labels, names, load, batch_size)
            for split, (records, labels, names) in sets.items()}


def plot_alignment(before: AlignmentReport, after: Mapping[str, AlignmentReport], labels: Sequence[int],
                   path: str | Path) -> Path:
    """A PNG with one row per arm of ``after``: the 2-D projection (images as dots, category names
    as stars, one colour per category) before Stage I beside the one after it."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    colours = colormaps["tab10"]
    fig = Figure(figsize=(10, 4.4 * max(1, len(after))))
    axes = fig.subplots(max(1, len(after)), 2, squeeze=False)
    for row, (arm, report) in enumerate(after.items()):
        for col, (title, r) in enumerate((("starting model", before), (f"{arm}: after Stage I", report))):
            ax = axes[row][col]
            ax.scatter(r.image_xy[:, 0], r.image_xy[:, 1], c=[colours(int(y) % 10) for y in labels], s=16, alpha=0.7)
            ax.scatter(r.category_xy[:, 0], r.category_xy[:, 1], c=[colours(k % 10) for k in range(len(r.names))],
                       marker="*", s=220, edgecolors="black", linewidths=0.8)
            for k, name in enumerate(r.names):
                ax.annotate(name, r.category_xy[k], fontsize=7, xytext=(4, 4), textcoords="offset points")
            ax.set_title(f"{title}\nimage->name retrieval {r.accuracy:.0f}%, cosine gap {r.gap:+.3f}", fontsize=9)
            ax.set_xlabel("PC 1", fontsize=8)
            ax.set_ylabel("PC 2", fontsize=8)
    fig.suptitle("inside the LLM: seen species' test photos (dots) and species names (stars), first two principal "
                 "components", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, format="png")
    return path


# ------------------------------------------------------------------- evidence
@dataclass(frozen=True)
class FinedeficsSpec(HardwareSpec):
    """What ``bench finedefics`` runs.

    Attributes:
        world, n_options: the world and its hierarchical questions (seeded by the world's seed,
            the same for every seed).
        recipe: the training of every arm: the tiny LMM preset, batch size, lr and LoRA alpha of
            both stages, and ``epochs``, those of Stage II (``stage2_only``: ``stage1_epochs +
            recipe.epochs`` epochs of Stage II).
        stage1_epochs: Stage I's epochs.
        similar, open_fraction: hard negatives / distractors per photo, share of open questions.
        seeds: one starting model and five arms per seed.
        threads, device, precision: :class:`~taxonlens.bench.HardwareSpec`.
    """

    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=8, images_per_species=15, novel_fraction=0.25))
    n_options: int = 4
    recipe: TinySFTSpec = field(default_factory=partial(TinySFTSpec, epochs=30))
    stage1_epochs: int = 10
    similar: int = 3
    open_fraction: float = 0.5
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass
class FinedeficsResult:
    """What ``bench finedefics`` measured.

    Attributes:
        spec: what ran.
        world: species, novel species, records per split, questions per set.
        runs: per seed ``start`` (the alignment before training) and per arm its steps, training
            figures, ``closed_set``, ``open_set`` and ``scores``
            (:func:`~taxonlens.bench.vqa.score_split`) per split, and ``alignment`` per stage and split.
        summary: :func:`~taxonlens.bench.seed_summary` of every figure, ``start`` and every arm.
        plot: the alignment PNG's path (None: none drawn).
        total_seconds: the whole run.
    """

    spec: FinedeficsSpec
    world: dict[str, Any]
    runs: dict[int, dict[str, Any]]
    summary: dict[str, Any]
    plot: str | None
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """Species-level and hierarchical accuracy per split and arm, alignment inside the LLM
        before and after each stage (mean +- sd), and the species-level accuracy of every seed."""
        from rich.console import Group

        summary = self.summary
        steps = {arm: sorted({run[arm]["steps"] for run in self.runs.values()}) for arm in ARMS}
        species = table(f"species level, mean +- sd over {len(self.spec.seeds)} seeds (percent; 4 options, similar "
                        "distractors)", ("species", "arm", "steps", "4-option", "open set", "open: names a species"),
                        left=("species", "arm"), no_wrap=True)
        for split in SPLITS:
            for arm in ARMS:
                species.add_row(split, arm, "/".join(map(str, steps[arm])),
                                *(sd_cell(dig(summary, arm, split, k)) for k in ("mc_acc", "open_acc", "open_named")))
        answers = answers_table("hierarchical questions (every rank, path distractors), mean +- sd (percent)",
                                ("species", "arm", "answers"),
                                (((split, arm, decoder), figure_cells(dig(summary, arm, split, decoder), sd_cell))
                                 for split in SPLITS for arm in ARMS for decoder in SCORED_DECODERS))
        alignment = table("alignment inside the LLM: image -> species-name retrieval (percent) and cosine gap true - "
                          "hardest wrong, mean +- sd",
                          ("model", "seen: retrieval", "seen: gap", "novel: retrieval", "novel: gap"),
                          left=("model",), no_wrap=True)
        rows = [("starting model", "start", "before")] + [
            (f"{arm}, after Stage {roman}", arm, stage) for arm in ARMS
            for stage, roman in (("after_stage1", "I"), ("after_stage2", "II"))]
        for label, arm, stage in rows:
            if dig(summary, arm, "alignment", stage):
                alignment.add_row(label, *(sd_cell(dig(summary, arm, "alignment", stage, split, k), digits)
                                           for split in SPLITS
                                           for k, digits in (("retrieval_acc", 1), ("cosine_gap", 3))))
        lines = []
        for arm in ARMS:
            per_seed = {f"{split} {name}": dig(summary, arm, split, key).get("values", [])
                        for split in SPLITS for key, name in (("mc_acc", "4-option"), ("open_acc", "open"))}
            lines.append(f"{arm}, per seed: " + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vals)}"
                                                          for k, vals in per_seed.items()))
        return Group(species, answers, alignment, *lines)


def bench_finedefics_evidence(spec: FinedeficsSpec = FinedeficsSpec(), workdir: str | Path | None = None,
                              out: str | Path | None = None,
                              progress: Callable[[str], None] | None = None) -> FinedeficsResult:
    """Train and score the arms of :data:`ARMS` for every seed (see the module docstring).

    Args:
        workdir: where the world and the models are written (a temporary folder if None).
        out: folder for ``alignment.png`` (no plot if None).
        progress: called with a line at the start of each stage.
    """
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "finedefics") as work:
        return _run(spec, work, Path(out) if out is not None else None, say)


def figures(arm: Mapping[str, Any]) -> dict[tuple[str, ...], float]:
    """The figures of one arm of one seed that the summary averages: ``(split, "mc_acc" |
    "open_acc" | "open_named")``, ``(split, decoder, figure)`` and ``("alignment", stage, split,
    "retrieval_acc" | "cosine_gap")``."""
    out: dict[tuple[str, ...], float] = {}
    for split, r in arm.get("closed_set", {}).items():
        out[(split, "mc_acc")] = r["acc"]
    for split, r in arm.get("open_set", {}).items():
        out[(split, "open_acc")] = r["acc"]
        out[(split, "open_named")] = r["named_pct"]
    out |= vqa_figures(arm.get("scores", {}))
    for stage, splits in arm.get("alignment", {}).items():
        for split, a in splits.items():
            out |= {("alignment", stage, split, k): a[k] for k in ("retrieval_acc", "cosine_gap")}
    return out


def summarize(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sd (``ddof=1``; 0 for one seed) and per-seed values of every figure of :func:`figures`,
    for the starting model (``start``) and every arm."""
    return seed_summary(runs, ("start", *ARMS), figures)


def _run(s: FinedeficsSpec, work: Path, out: Path | None, say: Callable[[str], None]) -> FinedeficsResult:
    from taxonlens.models.encoders import load_encoder

    start = time.perf_counter()
    say(f"synthworld: {s.world.n_species} species x {s.world.images_per_species} photos")
    vw = vqa_world(s.world, s.n_options, "path", work / "world")
    taxonomy, seen = vw.taxonomy, seen_taxonomy(vw)
    ranks, train = list(taxonomy.ranks), vw.records["train"]
    encoder = s.load(load_encoder, SIMILAR_ENCODER)
    emb_seen, emb_all = leaf_embeddings(encoder, seen), leaf_embeddings(encoder, taxonomy)
    asked = {split: species_questions(recs, taxonomy, emb_all, s.similar, s.world.seed)
             for split, recs in (("seen", vw.records["test"]), ("novel", vw.records["novel"])) if recs}
    sets = _alignment_sets(vw, seen)
    names = _leaf_names(taxonomy)
    recipe = s.recipe
    common = {"batch_size": recipe.batch_size, "lr": recipe.lr, "lora_alpha": recipe.lora_alpha,
              "lora_targets": "language+head", "encoder": SIMILAR_ENCODER, "similar": s.similar, "eval_every": 0,
              **s.train_settings}
    runs: dict[int, dict[str, Any]] = {}
    reports: dict[str, AlignmentReport] = {}
    before: AlignmentReport | None = None
    for seed in s.seeds:
        say(f"seed {seed}: alignment of the starting model")
        starting = _alignment(s.load(load_lmm, recipe.model, seed=seed), sets, vw.load, 16)
        if before is None:
            before = starting.get("seen")
        run: dict[str, Any] = {"start": {"alignment": {"before": {k: r.summary() for k, r in starting.items()}}}}
        for arm, weights in STAGE1_WEIGHTS.items():
            folder = work / f"seed{seed}" / arm
            row: dict[str, Any] = {"alignment": {}}
            stage2_model = recipe.model
            stage2_epochs = recipe.epochs + (0 if weights else s.stage1_epochs)
            if weights:
                say(f"seed {seed}: {arm}, Stage I, {s.stage1_epochs} epochs")
                st1 = train_stage1(Stage1Config(**common, **weights, model=recipe.model, epochs=s.stage1_epochs, seed=seed,
                                                out=str(folder / "stage1")), train, seen, vw.load, embeddings=emb_seen)
                aligned = _alignment(s.scored(st1, load_lmm), sets, vw.load, 16)
                if len(runs) == 0 and "seen" in aligned:
                    reports[arm] = aligned["seen"]
                row["alignment"]["after_stage1"] = {k: r.summary() for k, r in aligned.items()}
                row["stage1"] = {"steps": st1.steps, "first_loss": st1.metrics[0]["train_loss"],
                                 "last_loss": st1.metrics[-1]["train_loss"],
                                 "last_parts": {k[:-5]: v for k, v in st1.metrics[-1].items()
                                                if k.endswith("_loss") and k != "train_loss"},
                                 "temperature": st1.metrics[-1]["temperature"],
                                 "seconds": sum(m["train_seconds"] for m in st1.metrics)}
                stage2_model = str(st1.model_dir)
            say(f"seed {seed}: {arm}, Stage II, {stage2_epochs} epochs")
            st2 = train_stage2(Stage2Config(**common, model=stage2_model, epochs=stage2_epochs, seed=seed,
                                            open_fraction=s.open_fraction, out=str(folder / "stage2")),
                               train, seen, vw.load, embeddings=emb_seen)
            row["stage2"] = {"steps": st2.steps, "first_loss": st2.metrics[0]["train_loss"],
                             "last_loss": st2.metrics[-1]["train_loss"],
                             "seconds": sum(m["train_seconds"] for m in st2.metrics)}
            row["steps"] = st2.steps + row.get("stage1", {}).get("steps", 0)
            say(f"seed {seed}: {arm}, answering")
            tick = time.perf_counter()
            lmm = s.scored(st2, load_lmm)
            row["closed_set"] = {split: closed_set_accuracy(lmm, qs, rk, vw.load) for split, (qs, rk) in asked.items()}
            row["open_set"] = {split: open_set_accuracy(lmm, qs, rk, vw.load, names)
                               for split, (qs, rk) in asked.items()}
            row["scores"] = vqa_scores(lmm, vw, ranks)
            row["alignment"]["after_stage2"] = {k: r.summary() for k, r in _alignment(lmm, sets, vw.load, 16).items()}
            row["eval_seconds"] = time.perf_counter() - tick
            run[arm] = row
        runs[seed] = run
    plot = None
    if out is not None and before is not None and reports:
        plot = str(plot_alignment(before, reports, sets["seen"][1], out / "alignment.png"))
    return FinedeficsResult(
        spec=s, world={"species": taxonomy.n_leaves, "novel_species": len(vw.world.novel),
                       "records": {k: len(v) for k, v in vw.records.items()},
                       "questions": {"species_level": {k: len(q) for k, (q, _) in asked.items()},
                                     "hierarchical": {k: len(v) for k, v in vw.asked.items()}}},
        runs=runs, summary=summarize(runs), plot=plot, total_seconds=time.perf_counter() - start)


# ----------------------------------------------------------------------- cost
def _cost_run(stage: str, preset: str, records: list[Record], taxonomy: Taxonomy, embeddings: np.ndarray,
              root: str, s: FinedeficsCostSpec, out: str) -> dict[str, Any]:
    """One stage on one preset, in a fresh process: step times and peak RSS growth."""
    load = image_loader(root)
    common = {"model": preset, "epochs": s.epochs, "batch_size": s.batch_size, "lr": 2e-3, "lora_alpha": 32.0,
              "lora_targets": "language+head", "encoder": SIMILAR_ENCODER, "similar": s.similar, "eval_every": 0,
              "threads": s.threads, "seed": s.world.seed, "out": out}
    seconds: list[float] = []
    peaks: list[float] = []
    start = peak_memory_mb("cpu")
    warm = load_lmm(preset, seed=s.world.seed).add_lora(targets="language+head")  # first-use imports, model size
    del warm
    gc.collect()
    base = peak_memory_mb("cpu")

    def step(log) -> None:
        seconds.append(log.seconds)
        peaks.append(peak_memory_mb("cpu"))

    weights = COST_STAGES[stage]
    if weights is None:
        result = train_stage2(Stage2Config(**common), records, taxonomy, load, embeddings=embeddings, progress=step)
    else:
        result = train_stage1(Stage1Config(**common, **weights), records, taxonomy, load, embeddings=embeddings,
                              progress=step)
    return {"steps": result.steps, "seconds_per_step": float(np.median(seconds)), "step_seconds": seconds,
            "peak_mb": peaks[-1] - base, "model_mb": base - start}


@dataclass(frozen=True)
class FinedeficsCostSpec:
    """What ``bench finedefics --cost`` runs: every stage of :data:`COST_STAGES` on every preset of
    ``presets``, ``epochs`` epochs at ``batch_size`` on the training photos of ``world`` (no
    species held out), ``similar`` hard negatives / distractors per photo, ``threads`` torch threads."""

    presets: tuple[str, ...] = COST_PRESETS
    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=8, images_per_species=10, novel_fraction=0.0))
    epochs: int = 1
    batch_size: int = 4
    similar: int = 3
    threads: int | None = 1


@dataclass
class FinedeficsCostResult:
    """What ``bench finedefics --cost`` measured.

    Attributes:
        spec: what ran; photos: training photos per epoch.
        stages: ``{preset: {stage: {"steps", "seconds_per_step" (median), "step_seconds",
            "peak_mb" (peak RSS growth of the run over a loaded model, MiB), "model_mb" (that of
            loading the model with LoRA once, first-use imports included)}}}``.
        ratios: ``{preset: {"<a>/<b>": {"seconds_per_step", "peak_mb"}}}`` for
            :data:`COST_RATIOS`; None where the denominator is 0.
        total_seconds: the whole run.
    """

    spec: FinedeficsCostSpec
    photos: int
    stages: dict[str, dict[str, dict[str, Any]]]
    ratios: dict[str, dict[str, dict[str, float | None]]]
    total_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """Seconds per step and peak memory per preset and stage, and their ratios."""
        from rich.console import Group

        out = table(f"cost per optimizer step: {self.photos} photos at batch {self.spec.batch_size}, one epoch per "
                    f"run, a fresh process each ({self.spec.threads or 'default'} thread(s))",
                    ("preset", "stage", "steps", "s / step (median)", "x stage 2", "peak MiB over the loaded model",
                     "x stage 2"), left=("preset", "stage"), no_wrap=True)
        for preset, stages in self.stages.items():
            base = stages["stage2"]
            for stage, r in stages.items():
                out.add_row(preset, stage, str(r["steps"]), f"{r['seconds_per_step']:.4f}",
                            f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}", f"{r['peak_mb']:.1f}",
                            f"{r['peak_mb'] / base['peak_mb']:.2f}" if base["peak_mb"] else "-")
        ratios = table("ratios (time / memory)", ("preset", *(f"{a} / {b}" for a, b in COST_RATIOS)), left=("preset",))
        for preset, r in self.ratios.items():
            ratios.add_row(preset, *(" / ".join("-" if r[f"{a}/{b}"][k] is None else f"{r[f'{a}/{b}'][k]:.2f}"
                                                for k in ("seconds_per_step", "peak_mb")) for a, b in COST_RATIOS))
        return Group(out, ratios)


def bench_finedefics_cost(spec: FinedeficsCostSpec = FinedeficsCostSpec(), workdir: str | Path | None = None,
                          progress: Callable[[str], None] | None = None) -> FinedeficsCostResult:
    """Seconds per step and peak memory of every stage of :data:`COST_STAGES` on every preset
    (see the module docstring), on one world's training photos."""
    say = progress or (lambda _msg: None)
    start = time.perf_counter()
    with bench_run(workdir, spec.threads, "finedefics-cost") as work:
        from taxonlens.models.encoders import load_encoder

        vw = vqa_world(spec.world, 4, "path", work / "world")
        records = vw.records["train"]
        embeddings = leaf_embeddings(load_encoder(SIMILAR_ENCODER), vw.taxonomy)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        stages: dict[str, dict[str, Any]] = {}
        for preset in spec.presets:
            for stage in COST_STAGES:
                say(f"{preset}: {stage}, {len(records)} photos x {spec.epochs} epoch(s) at batch {spec.batch_size}")
                with ProcessPoolExecutor(1, mp_context=context) as pool:  # a fresh process per run
                    stages.setdefault(preset, {})[stage] = pool.submit(
                        _cost_run, stage, preset, records, vw.taxonomy, embeddings, str(vw.manifest.parent), spec,
                        str(work / preset / stage)).result()
    ratios = {preset: {f"{a}/{b}": {k: (runs[a][k] / runs[b][k] if runs[b][k] else None)
                                     for k in ("seconds_per_step", "peak_mb")} for a, b in COST_RATIOS}
              for preset, runs in stages.items()}
    return FinedeficsCostResult(spec=spec, photos=len(records), stages=stages, ratios=ratios,
                                total_seconds=time.perf_counter() - start)


__all__ = ["ARMS", "COST_PRESETS", "COST_RATIOS", "COST_STAGES", "SPLITS", "STAGE1_WEIGHTS", "FinedeficsCostResult",
           "FinedeficsCostSpec", "FinedeficsResult", "FinedeficsSpec", "bench_finedefics_cost",
           "bench_finedefics_evidence", "closed_set_accuracy", "figures", "open_set_accuracy", "plot_alignment",
           "seen_taxonomy", "summarize"]
