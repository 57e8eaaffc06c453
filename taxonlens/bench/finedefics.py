"""Evidence and cost of Finedefics on synthworld (``taxonlens bench finedefics [--cost]``).

Evidence (:func:`bench_finedefics_evidence`), from a pretrained start (:mod:`taxonlens.train.pretrain`:
an LMM that describes photos and captions them down to the genus, never naming a species, and a
BFM trained with taxonomic captions), on the start's own world (:attr:`FinedeficsSpec.start`):

- the records asked (:func:`draw_data`, drawn once with the world's seed, the same for every seed
  and arm): ``records_per_split`` held-out photos of seen species (the ``val`` and ``test`` splits,
  which neither the start nor any arm trains on), taken genus by genus (the genera in a random
  order, every held-out photo of their seen species) so that the species trained come with their
  siblings, the look-alikes the paper's hard negatives and distractors are about, and the fewest
  species carry the records; and ``records_per_split`` photos of the novel species, drawn at
  random. The species of the seen records are the **trained species**: every arm trains on all
  their training photos and never meets another species' name (at full size about 38 species,
  8 held-out and 12 training photos each: a record's species is shared by 7 others, which the
  per-record bootstrap treats as independent);
- similar species (Stage I's hard negatives, the 4-option questions' distractors): the cosine of
  the pretrained BFM's text embeddings of the species' taxonomic label prompts
  (:func:`~taxonlens.train.finedefics.leaf_embeddings`), among the trained species for the seen
  questions (as in Stage II) and among the trained and the novel species for the novel ones.

Per seed, the start is trained four ways (LoRA on the ``lora_targets`` of the language model,
the same lr, alpha and batch size for both stages):

- ``stage2_only``: Stage II alone;
- ``contrast_no_ntp+stage2``: Stage I with the paper's three contrasts OAC, ACC, CCC (``w_ntp = 0``), then II;
- ``occ_for_ccc+stage2``: Stage I with NTP, OAC, ACC and the object-category contrast in place of
  CCC, then II;
- ``finedefics``: Stage I with NTP, OAC, ACC and CCC (the paper's weights), then II.

(``occ_only+stage2``, Stage I with the object-category contrast alone, is left out: not a term of
the paper, and a fifth arm does not fit the 90 minutes of the full size.)

The same budget: one item per training photo per epoch in both stages (Stage I: the photo;
Stage II: its open or its closed question), so an epoch is the same number of optimizer steps;
the arms with a Stage I train ``stage1_epochs`` + ``stage2_epochs`` epochs, ``stage2_only`` gets
Stage II for as many. What differs besides the loss: two learning-rate schedules against one,
and a Stage I step costs more (the cost benchmark).

Every record's own value (percent: 100 right, 0 wrong) of every figure, per seed and arm:

- ``4-option``: the species question with the 3 most similar species as distractors
  (:func:`~taxonlens.train.finedefics.species_questions`), the options' names scored after it
  (:func:`~taxonlens.bench.vqa.level_logprobs`, no system prompt, as Stage II trains);
- ``open set``: "What is the species of the organism in this image?", greedy generation (16
  tokens), the first line cleaned (:func:`~taxonlens.knowledge.extract.clean_answer`) equal to
  the true name (case ignored); ``open: names a species``: it names one of the asked species;
- ``alignment/<stage>``: inside the LLM (:func:`~taxonlens.train.finedefics.measure_alignment`),
  whether the photo's nearest species name (among the trained species for the seen photos,
  among the trained and novel species for the novel ones) is its own: ``stage1`` is the model
  Stage II starts from (after Stage I; for ``stage2_only``, the start itself, so the claim
  finedefics vs stage2_only on it is "after Stage I vs the start"), ``stage2`` after Stage II.

The result keeps them (``records[seed][arm]``) and gives each arm's mean with its 95% bootstrap
interval over records and seeds, and the verdict on each of :data:`CLAIMS` on the paired
differences (:mod:`taxonlens.bench.claims`). The 2-D projections of the first seed's seen
photos and names, the start vs after Stage I, are drawn per arm in ``alignment.png``.

The recipe and the size (:class:`FinedeficsSpec`) were set by measurement. LoRA on
``language+head`` at lr 2e-3: on the quick start, Stage II alone for 3 epochs took its training
loss from 3.96 to 2.12 where ``language`` alone went from 4.98 to 4.32 (neither beat chance on its
held-out photos: that start knows nothing yet; its probe is 0 everywhere). The full size is sized
to 90 minutes on one thread from CPU seconds measured on ``small-qwen2.5-vl`` (batch 8, the start's
world): a Stage I step 1.31 s (0.85 without NTP), a Stage II step 0.51 s, a 4-option record
0.099 s, an open-set record 0.018 s (16 tokens), an alignment record 0.019 s (4.3x, 4.8x, 4.6x,
3.6x, 2.6x and 1.9x those of ``tiny-qwen2.5-vl``): 300 + 300 records are about 360 s of scoring per
seed, 1 + 3 epochs of the 456 training photos (57 steps each) about 576 s of training per seed,
5 seeds about 78 minutes. The epochs are the budget's, not a learning measurement: the full start
was not built yet when they were set.

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
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from taxonlens.bench import EvidenceSpec, WorldSpec, bench_run
from taxonlens.bench.cells import table
from taxonlens.bench.claims import Claim, Key, claims_table, estimates_json, interval_cell, judge, stack
from taxonlens.bench.vqa import level_logprobs, vqa_world
from taxonlens.data import Record, VQARecord
from taxonlens.data.records import record_leaves
from taxonlens.knowledge.extract import clean_answer
from taxonlens.models.device import peak_memory_mb
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.synthworld import SynthWorld
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
from taxonlens.train.pretrain import Pretrained, PretrainSpec
from taxonlens.train.sft import image_loader

#: the arms, in table order, and their Stage I loss weights (``None``: no Stage I)
STAGE1_WEIGHTS: dict[str, dict[str, float] | None] = {
    "stage2_only": None,
    "contrast_no_ntp+stage2": {"w_ntp": 0.0, "w_oac": 0.5, "w_acc": 0.5, "w_ccc": 0.5, "w_occ": 0.0},
    "occ_for_ccc+stage2": {"w_ntp": 1.0, "w_oac": 0.5, "w_acc": 0.5, "w_ccc": 0.0, "w_occ": 0.5},
    "finedefics": {"w_ntp": 1.0, "w_oac": 0.5, "w_acc": 0.5, "w_ccc": 0.5, "w_occ": 0.0},
}
ARMS = tuple(STAGE1_WEIGHTS)
#: the splits asked: seen species' test photos, novel species' photos
SPLITS = ("seen", "novel")
#: the per-record species-level figures of each split
SPECIES_FIGURES = ("4-option", "open set", "open: names a species")
#: the models whose alignment is measured: the one Stage II starts from, the one it ends with
ALIGNMENT_STAGES = ("stage1", "stage2")
#: the encoder whose text embeddings define similar species in the cost benchmark
SIMILAR_ENCODER = "tiny-clip"
#: the paper's claims (Finedefics, ICLR 2025), each on the seen and on the novel species
CLAIMS = tuple(
    claim for split in SPLITS for claim in (
        Claim("Finedefics", "Stage I + II beats II alone", "finedefics", "stage2_only", (split, "4-option")),
        Claim("Finedefics", "Stage I + II beats II alone", "finedefics", "stage2_only", (split, "open set")),
        Claim("Finedefics", "Stage I aligns photos and names (vs the start)", "finedefics", "stage2_only",
              (split, "alignment", "stage1")),
    ))

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
def leaf_names(taxonomy: Taxonomy) -> list[str]:
    """``[n_leaves]`` the leaves' names, in leaf order."""
    return [taxonomy.names[taxonomy.leaves[leaf]] for leaf in range(taxonomy.n_leaves)]


@dataclass(frozen=True)
class FinedeficsData:
    """What the arms train on and are asked (:func:`draw_data`).

    Attributes:
        trained: the taxonomy of the trained species (those of the seen records).
        asked_over: the taxonomy of the trained and the novel species of the novel records.
        train: ``[T]`` the trained species' training photos.
        asked: ``{split: [N] records}``, the seen and the novel records.
        load: a record's image (rendered once, kept in memory).
    """

    trained: Taxonomy
    asked_over: Taxonomy
    train: list[Record]
    asked: dict[str, list[Record]]
    load: Callable[[Any], Any]

    def taxonomy(self, split: str) -> Taxonomy:
        """The species a split's questions and alignment choose among."""
        return self.trained if split == "seen" else self.asked_over


def draw_data(world: SynthWorld, records_per_split: int) -> FinedeficsData:
    """The records of a bench on ``world`` (see the module docstring), drawn with the world's seed:
    the first ``records_per_split`` held-out photos (``val``, ``test``) of the seen species genus by
    genus, genera in a random order, and ``records_per_split`` novel photos at random (fewer where
    the world has fewer)."""
    tax = world.taxonomy
    rng = random.Random(f"taxonlens-bench-finedefics:{world.seed}")
    genera: dict[tuple[str, ...], list[int]] = {}
    for leaf in range(tax.n_leaves):
        if leaf not in world.novel:
            genera.setdefault(tuple(tax.path_names(int(tax.leaves[leaf]))[:-1]), []).append(leaf)
    order = list(genera.values())
    rng.shuffle(order)
    seen = [(leaf, k) for group in order for leaf in group for k in range(world.images_per_species)
            if world.split_of(leaf, k) in ("val", "test")][:records_per_split]
    novel = world.index("novel")
    novel = sorted(rng.sample(novel, min(records_per_split, len(novel))))
    trained = sorted({leaf for leaf, _ in seen})
    asked_over = sorted(set(trained) | {leaf for leaf, _ in novel})
    return FinedeficsData(
        trained=tax.subset(trained), asked_over=tax.subset(asked_over),
        train=[world.record(leaf, k) for leaf in trained for k in range(world.images_per_species)
               if world.split_of(leaf, k) == "train"],
        asked={"seen": [world.record(leaf, k) for leaf, k in seen],
               "novel": [world.record(leaf, k) for leaf, k in novel]},
        load=world.image_source())


# ------------------------------------------------------------------ evaluation
def closed_set_correct(lmm: LMM, questions: Sequence[VQARecord], ranks: Sequence[str], load: Callable[[Any], Any],
                       organism: str = "organism", batch_size: int = 16) -> np.ndarray:
    """``[N]`` bool: whether the best-scored option name (:func:`~taxonlens.bench.vqa.level_logprobs`,
    no system prompt) of each one-level question
    (:func:`~taxonlens.train.finedefics.species_questions`) is its truth."""
    correct = np.zeros(len(questions), dtype=bool)
    for rank in dict.fromkeys(ranks):
        idx = [i for i, r in enumerate(ranks) if r == rank]
        scored = level_logprobs(lmm, [questions[i] for i in idx], load, [rank], organism, batch_size)
        for i, (lp,) in zip(idx, scored):
            options = [o.lower() for o in questions[i].choices[0]]
            correct[i] = options[int(np.argmax(lp))] == questions[i].levels[0].lower()
    return correct


def open_set_answers(lmm: LMM, questions: Sequence[VQARecord], ranks: Sequence[str], load: Callable[[Any], Any],
                     names: Sequence[str], organism: str = "organism", batch_size: int = 16,
                     max_new_tokens: int = 16) -> dict[str, Any]:
    """The open question (:data:`~taxonlens.train.finedefics.OPEN_QUESTION`, no system prompt)
    answered by greedy generation: ``{"correct": [N] bool (the cleaned answer is the true name,
    case ignored), "named": [N] bool (it is one of ``names``), "answers": [N] raw answers}``."""
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        chunk = range(start, min(start + batch_size, len(questions)))
        answers += lmm.generate([load(questions[i]) for i in chunk],
                                [OPEN_QUESTION.format(rank=ranks[i], organism=organism) for i in chunk],
                                max_new_tokens)
    cleaned = [clean_answer(a).lower() for a in answers]
    known = {n.lower() for n in names}
    return {"correct": np.array([a == q.levels[0].lower() for a, q in zip(cleaned, questions)], dtype=bool),
            "named": np.array([a in known for a in cleaned], dtype=bool), "answers": answers}


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
class FinedeficsSpec(EvidenceSpec):
    """What ``bench finedefics`` runs.

    Attributes:
        start: the pretrained start (:func:`~taxonlens.train.pretrain.pretrain`); its world is the bench's.
        start_folder: where it is (or is built); ``None``: the cache.
        records_per_split: held-out photos of seen species and novel photos asked (see :func:`draw_data`).
        seeds: one run of every arm per seed (LoRA initialisation, data order, Stage II's question mix).
        stage1_epochs, stage2_epochs: each stage's epochs (``stage2_only``: their sum of Stage II).
        batch_size, lr, lora_alpha, lora_targets: both stages' recipe (AdamW, 5% warmup, cosine decay).
        similar: hard negatives per photo (Stage I), distractors per question (Stage II, 4-option).
        open_fraction: Stage II's share of open questions.
        threads, device, precision: :class:`~taxonlens.bench.EvidenceSpec`.
    """

    stage1_epochs: int = 1
    stage2_epochs: int = 3
    batch_size: int = 8
    lr: float = 2e-3
    lora_alpha: float = 32.0
    lora_targets: str = "language+head"
    similar: int = 3
    open_fraction: float = 0.5

    @classmethod
    def quick(cls, **overrides: Any) -> FinedeficsSpec:
        """Minutes: the quick start (:meth:`PretrainSpec.quick`), 2 seeds, 16 records per split."""
        return cls(**{"start": PretrainSpec.quick(), "records_per_split": 16, "seeds": (0, 1), "stage1_epochs": 2,
                      "stage2_epochs": 4, "batch_size": 4, **overrides})


@dataclass
class FinedeficsResult:
    """What ``bench finedefics`` measured.

    Attributes:
        spec: what ran; start: the start's folder and what it knows (``knowledge``).
        data: trained species, novel species, training photos, records per split.
        runs: per seed and arm, its optimizer steps and each stage's steps, losses and seconds
            (Stage I: the last epoch's loss parts and temperatures), scoring seconds and the first
            open answers per split.
        records: per seed and arm, every per-record figure, ``{"<split>/<figure>": [N] percent}``
            (``<split>/alignment/<stage>`` for the alignment).
        estimates: per arm and figure, the mean with its 95% interval (``mean, low, high, se``).
        claims: :func:`~taxonlens.bench.claims.judge`'s rows for :data:`CLAIMS`.
        plot: the alignment PNG's path (None: none drawn).
        total_seconds: the whole run.
    """

    spec: FinedeficsSpec
    start: dict[str, Any]
    data: dict[str, Any]
    runs: dict[int, dict[str, Any]]
    records: dict[int, dict[str, dict[str, list[float]]]]
    estimates: dict[str, dict[str, dict[str, float]]]
    claims: list[dict[str, Any]]
    plot: str | None
    total_seconds: float

    def values(self) -> dict[str, dict[Key, np.ndarray]]:
        """``{arm: {figure key: [S, N]}}`` of :attr:`records` (:func:`~taxonlens.bench.claims.stack`)."""
        return stack(self.records)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """Every arm's species-level figures and alignment (``mean [95% interval]``, percent), and
        the claims' verdicts."""
        from rich.console import Group

        e = self.estimates
        n = {split: self.data["records"][split] for split in SPLITS}
        title = f"{len(self.spec.seeds)} seeds x {n['seen']} seen / {n['novel']} novel records"
        species = table(f"species level, mean [95% interval], percent ({title}; 4 options, similar distractors)",
                        ("species", "arm", "steps", *SPECIES_FIGURES), left=("species", "arm"), no_wrap=True)
        alignment = table(f"alignment inside the LLM: the photo's nearest species name is its own, percent ({title})",
                          ("species", "arm", "after Stage I (stage2_only: the start)", "after Stage II"),
                          left=("species", "arm"), no_wrap=True)
        for split in SPLITS:
            for arm in ARMS:
                steps = "/".join(str(s) for s in sorted({run[arm]["steps"] for run in self.runs.values()}))
                species.add_row(split, arm, steps, *(interval_cell(e[arm].get(f"{split}/{figure}"))
                                                     for figure in SPECIES_FIGURES))
                alignment.add_row(split, arm, *(interval_cell(e[arm].get(f"{split}/alignment/{stage}"))
                                                for stage in ALIGNMENT_STAGES))
        return Group(species, alignment, claims_table(f"claims: paired difference arm - baseline ({title})",
                                                      self.claims))


def bench_finedefics_evidence(spec: FinedeficsSpec = FinedeficsSpec(), workdir: str | Path | None = None,
                              out: str | Path | None = None,
                              progress: Callable[[str], None] | None = None) -> FinedeficsResult:
    """Train and score the arms of :data:`ARMS` for every seed from the pretrained start (see the
    module docstring); the start is built first if it is not there.

    Args:
        workdir: where the models are written (a temporary folder if None).
        out: folder for ``alignment.png`` (no plot if None).
        progress: called with a line at the start of each stage.
    """
    say = progress or (lambda _msg: None)
    start = spec.pretrained(say)
    with bench_run(workdir, spec.threads, "finedefics") as work:
        return _run(spec, start, work, Path(out) if out is not None else None, say)


def _alignment(lmm: LMM, data: FinedeficsData, batch_size: int = 16) -> dict[str, AlignmentReport]:
    """Per split, image -> species-name retrieval among :meth:`FinedeficsData.taxonomy`'s species."""
    out = {}
    for split, records in data.asked.items():
        if records:
            tax = data.taxonomy(split)
            out[split] = measure_alignment(lmm, records, record_leaves(records, tax), leaf_names(tax), data.load,
                                           batch_size)
    return out


def _stage_log(result, stage1: bool) -> dict[str, Any]:
    """Steps, first and last loss and seconds of a training run (Stage I: the last epoch's parts and temperatures)."""
    first, last = result.metrics[0], result.metrics[-1]
    row = {"steps": result.steps, "first_loss": first["train_loss"], "last_loss": last["train_loss"],
           "seconds": sum(m["train_seconds"] for m in result.metrics)}
    if stage1:
        row["last_parts"] = {k[:-5]: v for k, v in last.items() if k.endswith("_loss") and k != "train_loss"}
        row["temperature"] = last["temperature"]
    return row


def _percent(hits: np.ndarray) -> list[float]:
    return (100.0 * np.asarray(hits, dtype=np.float64)).tolist()


def _run(s: FinedeficsSpec, start: Pretrained, work: Path, out: Path | None,
         say: Callable[[str], None]) -> FinedeficsResult:
    from taxonlens.models.encoders import load_encoder

    tick = time.perf_counter()
    world = s.start.world.create()
    data = draw_data(world, s.records_per_split)
    say(f"{len(data.asked['seen'])} seen records of {data.trained.n_leaves} trained species ({len(data.train)} training "
        f"photos), {len(data.asked['novel'])} novel records")
    encoder = s.load(load_encoder, start.bfm)
    emb = {split: leaf_embeddings(encoder, data.taxonomy(split)) for split in SPLITS}
    asked = {split: species_questions(recs, data.taxonomy(split), emb[split], s.similar, world.seed)
             for split, recs in data.asked.items() if recs}
    names = {split: leaf_names(data.taxonomy(split)) for split in SPLITS}
    common = {"batch_size": s.batch_size, "lr": s.lr, "lora_alpha": s.lora_alpha, "lora_targets": s.lora_targets,
              "encoder": str(start.bfm), "similar": s.similar, "eval_every": 0, **s.train_settings}
    say("alignment of the start")
    before = _alignment(s.load(load_lmm, start.lmm), data)
    runs: dict[int, dict[str, Any]] = {}
    records: dict[int, dict[str, dict[str, list[float]]]] = {}
    reports: dict[str, AlignmentReport] = {}
    for seed in s.seeds:
        for arm, weights in STAGE1_WEIGHTS.items():
            folder = work / f"seed{seed}" / arm
            row: dict[str, Any] = {}
            values: dict[str, list[float]] = {}
            aligned, stage2_model = before, str(start.lmm)
            if weights:
                say(f"seed {seed}: {arm}, Stage I, {s.stage1_epochs} epoch(s)")
                st1 = train_stage1(Stage1Config(**common, **weights, model=str(start.lmm), epochs=s.stage1_epochs,
                                                seed=seed, out=str(folder / "stage1")),
                                   data.train, data.trained, data.load, embeddings=emb["seen"])
                row["stage1"] = _stage_log(st1, True)
                aligned, stage2_model = _alignment(s.scored(st1, load_lmm), data), str(st1.model_dir)
                if seed == s.seeds[0] and "seen" in aligned:
                    reports[arm] = aligned["seen"]
            epochs = s.stage2_epochs + (0 if weights else s.stage1_epochs)
            say(f"seed {seed}: {arm}, Stage II, {epochs} epoch(s)")
            st2 = train_stage2(Stage2Config(**common, model=stage2_model, epochs=epochs, seed=seed,
                                            open_fraction=s.open_fraction, out=str(folder / "stage2")),
                               data.train, data.trained, data.load, embeddings=emb["seen"])
            row["stage2"] = _stage_log(st2, False)
            row["steps"] = st2.steps + row.get("stage1", {}).get("steps", 0)
            say(f"seed {seed}: {arm}, answering")
            scoring = time.perf_counter()
            lmm = s.scored(st2, load_lmm)
            after = _alignment(lmm, data)
            row["open_answers"] = {}
            for split, (questions, ranks) in asked.items():
                opened = open_set_answers(lmm, questions, ranks, data.load, names[split])
                values[f"{split}/4-option"] = _percent(closed_set_correct(lmm, questions, ranks, data.load))
                values[f"{split}/open set"] = _percent(opened["correct"])
                values[f"{split}/open: names a species"] = _percent(opened["named"])
                values[f"{split}/alignment/stage1"] = _percent(aligned[split].correct)
                values[f"{split}/alignment/stage2"] = _percent(after[split].correct)
                row["open_answers"][split] = [[a, q.levels[0]] for a, q in zip(opened["answers"], questions)][:5]
            row["scoring_seconds"] = time.perf_counter() - scoring
            runs.setdefault(seed, {})[arm] = row
            records.setdefault(seed, {})[arm] = values
    result = FinedeficsResult(
        spec=s, start={"folder": str(start.folder), "knowledge": start.knowledge},
        data={"trained_species": data.trained.n_leaves,
              "novel_species": data.asked_over.n_leaves - data.trained.n_leaves, "training_photos": len(data.train),
              "records": {split: len(recs) for split, recs in data.asked.items()}},
        runs=runs, records=records, estimates={}, claims=[], plot=None, total_seconds=0.0)
    values = result.values()
    result.estimates = estimates_json(values)
    result.claims = judge(CLAIMS, values)
    if out is not None and "seen" in before and reports:
        result.plot = str(plot_alignment(before["seen"], reports, record_leaves(data.asked["seen"], data.trained),
                                         out / "alignment.png"))
    result.total_seconds = time.perf_counter() - tick
    return result


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


__all__ = ["ALIGNMENT_STAGES", "ARMS", "CLAIMS", "COST_PRESETS", "COST_RATIOS", "COST_STAGES", "SPECIES_FIGURES", "SPLITS",
           "STAGE1_WEIGHTS", "FinedeficsCostResult", "FinedeficsCostSpec", "FinedeficsData", "FinedeficsResult",
           "FinedeficsSpec", "bench_finedefics_cost", "bench_finedefics_evidence", "closed_set_correct", "draw_data",
           "leaf_names", "open_set_answers", "plot_alignment"]
