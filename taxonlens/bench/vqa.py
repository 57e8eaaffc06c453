"""Evidence for consistent decoding of hierarchical-VQA answers, measured on synthworld with a
tiny multimodal LLM fine-tuned from random weights (``taxonlens bench vqa``).

One run builds a small synthworld with held-out (novel) species, asks hierarchical-VQA
questions (:func:`~taxonlens.data.vqa_build.build_vqa`) about its photos, fine-tunes the LMM
with LoRA on the training photos (:func:`~taxonlens.train.sft.train_sft`) and answers the
test photos of the seen species and the photos of the novel ones three ways:

- ``independent``: the best option of every level on its own (per-level argmax);
- ``consistent``: the most probable path of offered options
  (:func:`~taxonlens.recognize.vqa.consistent_decode`) from the same per-level probabilities;
- ``blind_control``: consistent decoding with uniform probabilities
  (:func:`~taxonlens.recognize.vqa.blind_decode`), what the offered options alone reveal.

All three are scored by :func:`~taxonlens.recognize.vqa_answer.consistency_report` (HCA, leaf
accuracy, POR, S-POR, TOR, valid paths), on all records and on the leakage-free ones.

The model is trained as a random-weight tiny preset needs (see ``tests/train/test_sft.py``):
option names as answers, no system prompt, LoRA on the language model and its output layer,
lr 2e-3, alpha 32, batch 4. It is asked exactly as trained: the options' names scored by
:meth:`~taxonlens.models.mllm.LMM.option_logprobs` after the same question, without a system
prompt (the scoring of :func:`~taxonlens.train.sft.evaluate_sft` for ``answer="name"``), the
scores normalised over the offered options. The training questions are built over the
taxonomy of the seen species only, so no novel species' name is ever shown in training; the
test and novel questions over the whole world's taxonomy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import nonmember
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from taxonlens.bench import HardwareSpec, TinySFTSpec, WorldSpec, bench_run
from taxonlens.bench.cells import FIGURES, answers_table, figure_cells, figures_table
from taxonlens.choices import Choice
from taxonlens.data import Record, VQARecord, read_manifest
from taxonlens.data.vqa_build import build_vqa
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.recognize.vqa import blind_decode, consistent_decode, leakage
from taxonlens.recognize.vqa_answer import answer_records, consistency_report
from taxonlens.synthworld import SynthWorld
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.sft import check_records, image_loader, train_sft


class VQAMode(Choice):
    """Distractor modes the benchmark accepts (``similar`` needs embeddings it does not have)."""

    what = nonmember("distractor mode")
    path = "path"
    random = "random"

#: the answers compared, in table order
DECODERS = ("independent", "consistent", "blind_control")
#: the answers the evidence benchmarks score from a model's option probabilities (``bench vqa``'s
#: image-blind control is left out: it does not depend on the model)
SCORED_DECODERS = ("independent", "consistent")


def level_logprobs(lmm: LMM, records: Sequence[VQARecord], load: Callable[[VQARecord], Image.Image],
                   ranks: Sequence[str], organism: str = "organism", batch_size: int = 16
                   ) -> list[list[np.ndarray | None]]:
    """Per record and level, the log-probabilities of the offered options' names (normalised over
    them), asked as a model trained with ``answer="name"`` and ``system=False`` is asked
    (:func:`~taxonlens.recognize.vqa_answer.answer_records`, ``score`` mode); ``None`` on a level
    that offers one option."""
    check_records(records, ranks, "evaluation")
    rows = answer_records(lmm, records, load, "score", ranks=ranks, organism=organism, batch_size=batch_size,
                          system=None, answer="name")
    return [[None if lp is None else np.asarray(lp) for lp in row["logprobs"]] for row in rows]


def decode_rows(records: Sequence[VQARecord], logprobs: Sequence[Sequence[np.ndarray | None]],
                taxonomy: Taxonomy) -> dict[str, list[dict]]:
    """Answer rows (``image``, ``path``) of every decoder in :data:`DECODERS`."""
    rows: dict[str, list[dict]] = {name: [] for name in DECODERS}
    for r, lps in zip(records, logprobs):
        independent = [opts[int(np.argmax(lp))] if lp is not None else opts[0] for opts, lp in zip(r.choices, lps)]
        rows["independent"].append({"image": r.image, "path": independent})
        rows["consistent"].append({"image": r.image, "path": list(consistent_decode(r, taxonomy, list(lps)).path)})
        rows["blind_control"].append({"image": r.image, "path": list(blind_decode(r, taxonomy).path)})
    return rows


def question_accuracy(records: Sequence[VQARecord], rows: Sequence[dict]) -> float:
    """Percent of the questions (levels offering a choice) whose answer in ``rows`` is the truth."""
    hits = [row["path"][k].lower() == r.levels[k].lower() for r, row in zip(records, rows)
            for k in range(len(r.choices)) if len(r.choices[k]) > 1]
    return 100.0 * sum(hits) / len(hits) if hits else 0.0


def score_split(records: Sequence[VQARecord], logprobs: Sequence[Sequence[np.ndarray | None]],
                taxonomy: Taxonomy) -> dict[str, Any]:
    """Figures of every decoder on ``records``: ``{"all" | "leakage_free": {"n": count,
    decoder: {figure: percent}}}`` (a subset without records has only ``n``), plus the per-question
    accuracy of the independent answers, the consistent paths' validity and the leakage summary."""
    rows = decode_rows(records, logprobs, taxonomy)
    reports = {name: consistency_report(records, rows[name], taxonomy) for name in ("independent", "consistent")}
    out: dict[str, Any] = {}
    for subset in ("all", "leakage_free"):
        out[subset] = {"n": reports["independent"][subset]["n"]}
        if out[subset]["n"]:
            out[subset]["independent"] = reports["independent"][subset]["answers"]
            out[subset]["consistent"] = reports["consistent"][subset]["answers"]
            out[subset]["blind_control"] = reports["independent"][subset]["blind_control"]
    leak = leakage(records, taxonomy)
    out["records"] = len(records)
    out["questions"] = sum(len(c) > 1 for r in records for c in r.choices)
    out["question_acc"] = question_accuracy(records, rows["independent"])
    out["chance"] = 100.0 * float(np.mean([1 / len(c) for r in records for c in r.choices if len(c) > 1]))
    out["leakage"] = {"share_unique_pct": 100.0 * leak.share_unique, "blind_hca": leak.blind_hca,
                      "expected_blind_hca": leak.expected_blind_hca}
    return out


def vqa_scores(lmm, vw, ranks: Sequence[str]) -> dict[str, Any]:
    """:func:`score_split` of every non-empty question set of ``vw.asked`` (a
    :class:`VQAWorld`: ``seen``, ``novel``), the options of every level scored by
    :func:`level_logprobs` (names after the question, no system prompt)."""
    return {name: score_split(recs, level_logprobs(lmm, recs, vw.load, ranks), vw.taxonomy)
            for name, recs in vw.asked.items() if recs}


def vqa_figures(scores: Mapping[str, Any]) -> dict[tuple[str, ...], float]:
    """``(split, decoder, figure) -> percent`` of :func:`vqa_scores`' result on all records, for every
    decoder of :data:`SCORED_DECODERS` and figure of :data:`FIGURES` (a split
    without records left out)."""
    return {(split, decoder, figure): float(s["all"][decoder][figure]) for split, s in scores.items()
            if s["all"]["n"] for decoder in SCORED_DECODERS for figure in FIGURES}


@dataclass(frozen=True)
class VQASpec(HardwareSpec):
    """What ``bench vqa`` runs.

    Attributes:
        world: the synthworld (its seed seeds the questions and the fine-tuning too).
        n_options, mode: options per level and distractor mode of :func:`build_vqa`
            (``path``: leakage-free, ``random``).
        recipe: the fine-tuning.
        threads, device, precision: :class:`~taxonlens.bench.HardwareSpec`.
    """

    world: WorldSpec = field(default_factory=partial(WorldSpec, n_species=8, images_per_species=15, novel_fraction=0.25))
    n_options: int = 4
    mode: str = "path"
    recipe: TinySFTSpec = field(default_factory=partial(TinySFTSpec, epochs=40))


@dataclass
class VQAResult:
    """What ``bench vqa`` measured.

    Attributes:
        spec: what ran.
        world: species, novel species (names), records per split.
        training: questions, epochs, steps, seconds, first and last epoch loss.
        answer_seconds, total_seconds: answering, the whole run.
        splits: ``{"seen" | "novel": score_split(...)}``.
    """

    spec: VQASpec
    world: dict[str, Any]
    training: dict[str, Any]
    answer_seconds: float
    total_seconds: float
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """The fine-tuning run, the answers per split and subset, and per split its question
        accuracy and leakage."""
        from rich.console import Group

        training = self.training
        run = figures_table(f"fine-tuning {self.spec.recipe.model} ({self.spec.mode} distractors)", {
            "species (novel)": f"{self.world['species']} ({len(self.world['novel_species'])})",
            **{f"{split} records": n for split, n in self.world["records"].items()},
            "training questions": training["questions"], "epochs": training["epochs"], "steps": training["steps"],
            "first / last epoch loss": f"{training['first_loss']:.3f} / {training['last_loss']:.3f}",
            "training s": training["train_seconds"], "answering s": self.answer_seconds,
            "total s": self.total_seconds})
        answers = answers_table("answers per split and subset (percent)", ("species", "records", "n", "answers"), (
            ((split, subset.replace("_", "-"), str(r[subset]["n"]), decoder.replace("_", " ")),
             figure_cells(r[subset][decoder]))
            for split, r in self.splits.items() for subset in ("all", "leakage_free")
            for decoder in (DECODERS if r[subset]["n"] else ())), left=("species", "records", "answers"))
        lines = [f"{split}: {r['questions']} questions, independent per-question accuracy "
                 f"{r['question_acc']:.1f}% (chance {r['chance']:.1f}%); records answerable from the options "
                 f"alone {r['leakage']['share_unique_pct']:.1f}%" for split, r in self.splits.items()]
        return Group(run, answers, *lines)


def bench_vqa_evidence(spec: VQASpec = VQASpec(), workdir: str | Path | None = None,
                       progress: Callable[[str], None] | None = None) -> VQAResult:
    """Independent per-level answers vs consistent decoding vs the image-blind control, on the
    seen species' test photos (``seen``) and the novel species' photos (``novel``).

    Args:
        workdir: where the world and the fine-tuned model are written (a temporary folder if None).
        progress: called with a line at the start of each stage.

    Raises:
        TaxonlensError: an unknown distractor mode.
    """
    VQAMode(spec.mode)
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "vqa") as work:
        return _run(spec, work, say)


@dataclass
class VQAWorld:
    """A written synthworld with hierarchical-VQA questions about it.

    Attributes:
        world: the synthworld (``world.novel``: the held-out species).
        manifest: its manifest file.
        records: the manifest's records, by split (``train``, ``val``, ``test``, ``novel``).
        train: questions about the training photos, built over the seen species' taxonomy only
            (no novel species' name is ever shown in training).
        asked: questions about the seen species' test photos (``seen``) and the novel species'
            photos (``novel``), over the whole taxonomy.
        load: a record's image (cached in memory).
    """

    world: SynthWorld
    manifest: Path
    records: dict[str, list[Record]]
    train: list[VQARecord]
    asked: dict[str, list[VQARecord]]
    load: Callable[[VQARecord], Image.Image]

    @property
    def taxonomy(self) -> Taxonomy:
        return self.world.taxonomy


def vqa_world(spec: WorldSpec, n_options: int, mode: str, folder: Path) -> VQAWorld:
    """The world of ``spec`` written to ``folder``, and its questions (``n_options`` per level,
    distractor ``mode``, seeded by the world's seed)."""
    world = spec.create()
    taxonomy = world.taxonomy
    manifest = world.write(folder)
    root = manifest.parent
    # image paths relative to the world's folder: build_vqa seeds each record's options with its image
    # path, so the questions do not depend on where the world was written
    records = [replace(r, image=Path(r.image).relative_to(root).as_posix())
               for r in read_manifest(manifest, taxonomy)]
    by_split = {split: [r for r in records if r.split == split] for split in ("train", "val", "test", "novel")}
    seen_taxonomy = taxonomy.subset(i for i in range(taxonomy.n_leaves) if i not in world.novel)
    train = build_vqa(by_split["train"], seen_taxonomy, n_options, mode, spec.seed)
    asked = {"seen": build_vqa(by_split["test"], taxonomy, n_options, mode, spec.seed),
             "novel": build_vqa(by_split["novel"], taxonomy, n_options, mode, spec.seed)}
    cache: dict[str, Image.Image] = {}
    read = image_loader(root)

    def load(record: VQARecord) -> Image.Image:
        if record.image not in cache:
            cache[record.image] = read(record)
        return cache[record.image]

    return VQAWorld(world, manifest, by_split, train, asked, load)


def _run(s: VQASpec, work: Path, say: Callable[[str], None]) -> VQAResult:
    start = time.perf_counter()
    say(f"synthworld: {s.world.n_species} species x {s.world.images_per_species} photos")
    vw = vqa_world(s.world, s.n_options, s.mode, work / "world")
    world, taxonomy, train, asked, load = vw.world, vw.taxonomy, vw.train, vw.asked, vw.load
    by_split = {k: v for k, v in vw.records.items() if k != "val"}
    ranks = list(taxonomy.ranks)
    config = s.recipe.config(work / "sft", s, s.world.seed)
    n_questions = len(check_records(train, ranks))
    say(f"fine-tuning {s.recipe.model}: {n_questions} questions x {s.recipe.epochs} epochs")
    tick = time.perf_counter()
    result = train_sft(config, train, load, ranks)
    train_wall = time.perf_counter() - tick
    losses = [m["train_loss"] for m in result.metrics]
    training = {"records": len(train), "questions": n_questions, "epochs": s.recipe.epochs, "steps": result.steps,
                "train_seconds": sum(m["train_seconds"] for m in result.metrics), "wall_seconds": train_wall,
                "first_loss": losses[0], "last_loss": losses[-1]}
    splits: dict[str, Any] = {}
    tick = time.perf_counter()
    lmm = s.scored(result, load_lmm)
    for name, recs in asked.items():
        if not recs:
            continue
        say(f"answering {len(recs)} {name} records")
        lps = level_logprobs(lmm, recs, load, ranks)
        splits[name] = score_split(recs, lps, taxonomy)
    answer_seconds = time.perf_counter() - tick
    novel = sorted(taxonomy.names[taxonomy.leaves[i]] for i in world.novel)
    return VQAResult(spec=s, world={"species": taxonomy.n_leaves, "novel_species": novel,
                                    "records": {k: len(v) for k, v in by_split.items()}},
                     training=training, answer_seconds=answer_seconds, total_seconds=time.perf_counter() - start,
                     splits=splits)


__all__ = ["DECODERS", "FIGURES", "SCORED_DECODERS", "VQAMode", "VQAResult", "VQASpec", "VQAWorld", "bench_vqa_evidence", "decode_rows",
           "level_logprobs", "question_accuracy", "score_split", "vqa_figures", "vqa_scores", "vqa_world"]
