"""Evidence for consistent decoding of hierarchical-VQA answers, from the pretrained start
(``taxonlens bench vqa``).

The start (:func:`~taxonlens.train.pretrain.pretrain`: ``small-qwen2.5-vl`` pretrained on the
descriptions and taxonomic captions of a 400-species synthworld, never on these questions) is
fine-tuned once per seed with LoRA (:func:`~taxonlens.train.sft.train_sft`) on the hierarchical
questions (:func:`~taxonlens.data.vqa_build.build_vqa`, ``path`` distractors by default) of the
start world's training photos, built over the seen species' taxonomy only (no novel species' name
is ever shown in training). Each seed's model then answers ``records_per_split`` test photos of
the seen species (``seen``) and as many photos of the novel species (``novel``), drawn once with
the world's seed (the same records for every seed and answer), three ways from the same
per-level option probabilities:

- ``independent``: the best option of every level on its own (per-level argmax);
- ``consistent``: the most probable path of offered options
  (:func:`~taxonlens.recognize.vqa.consistent_decode`);
- ``blind_control``: consistent decoding with uniform probabilities
  (:func:`~taxonlens.recognize.vqa.blind_decode`), what the offered options alone reveal.

Every record's own figures (:func:`record_figures`: HCA, leaf accuracy, POR, S-POR, TOR on the
levels that offer a choice, and whether the answer is a path of the taxonomy) are kept per seed
and answer, on all records of each split and on its leakage-free ones (``<split>-leakage-free``:
the options spell more than one path of the taxonomy, so they do not give the answer away); each
answer's mean has a 95% bootstrap interval over records and seeds, and the claims
(:data:`CLAIMS`) are judged on the paired differences (:func:`~taxonlens.bench.claims.judge`).

The model is asked exactly as trained: the options' names scored by
:meth:`~taxonlens.models.mllm.LMM.option_logprobs` after the question, without a system prompt,
normalised over the offered options (:func:`level_logprobs`).

The recipe (:class:`~taxonlens.bench.TinySFTSpec`: option names as answers, LoRA on the language
model and its output layer, alpha 32, batch 4, lr 2e-3) was measured on the quick start (90
training photos, 622 questions per epoch, every question for 5 epochs; per-question accuracy on
the 126 seen test questions, chance 35.5%): LoRA on ``language+head`` brings the training loss
from 2.6 to 1.2 in two epochs, the accuracy to 46.0% there (44.4% after five: overfitting; at lr
5e-4 it needs four epochs for 44.4%), while LoRA on ``language`` alone barely moves the loss
(4.4 to 3.9 at lr 2e-3, to 3.6 at 5e-3) for 40-42%. Hence two epochs at the quick size; the full size trains one epoch of one question per
training photo (4,080 questions, drawn anew per seed), the most the 90-minute budget leaves after
answering (see the README).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from enum import nonmember
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from taxonlens.bench import EvidenceSpec, TinySFTSpec, WorldSpec, bench_run, mean_sd
from taxonlens.bench.cells import FIGURES, answers_table, figure_cells, figures_table, sd_cell
from taxonlens.bench.claims import Claim, Key, claims_table, estimates, estimates_json, interval_cell, judge, stack
from taxonlens.choices import Choice
from taxonlens.data import Record, VQARecord, read_manifest
from taxonlens.data.vqa_build import build_vqa
from taxonlens.data.vqa_options import consistent_path_count
from taxonlens.evaluate.metrics import per_record, select_levels, valid_per_record
from taxonlens.models.mllm import LMM, load_lmm
from taxonlens.recognize.vqa import blind_decode, consistent_decode, leakage
from taxonlens.recognize.vqa_answer import answer_records, consistency_report, scored_levels
from taxonlens.synthworld import SynthWorld
from taxonlens.taxonomy import Taxonomy
from taxonlens.train.pretrain import Pretrained, PretrainSpec
from taxonlens.train.sft import check_records, image_loader, train_sft

T = TypeVar("T")
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




def drawn(items: Sequence[T], n: int, seed: int) -> list[T]:
    """``n`` of ``items`` (all when fewer) drawn with ``seed``, in their order: a benchmark's test
    records, the same for every seed and arm of a run."""
    keep = random.Random(f"taxonlens-bench-records:{seed}").sample(range(len(items)), min(n, len(items)))
    return [items[i] for i in sorted(keep)]


def leakage_free(records: Sequence[VQARecord], taxonomy: Taxonomy) -> np.ndarray:
    """bool ``[N]``: the records whose options spell more than one path of ``taxonomy`` (the
    ``leakage_free`` subset of :func:`~taxonlens.recognize.vqa_answer.consistency_report`)."""
    return np.asarray([consistent_path_count(r, taxonomy) > 1 for r in records], dtype=bool)


def record_figures(records: Sequence[VQARecord], rows: Sequence[dict], taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    """Each record's own figures of the answers ``rows`` (one per record, in order), float64
    ``[N]`` in percent, keyed as :data:`FIGURES`: ``hca``, ``acc_leaf``, ``por``, ``s_por``, ``tor``
    (:func:`~taxonlens.evaluate.metrics.per_record` on the levels that offer a choice somewhere)
    and ``valid_path_pct`` (100 when the full answer is a path of ``taxonomy``); their means are
    :func:`~taxonlens.recognize.vqa_answer.consistency_report`'s figures on all records."""
    levels = scored_levels(records)
    out = per_record([select_levels(r.levels, levels) for r in records],
                     [select_levels(row["path"], levels) for row in rows])
    out["valid_path_pct"] = valid_per_record([row["path"] for row in rows], taxonomy)
    return out


def split_records(records: Sequence[VQARecord], logprobs: Sequence[Sequence[np.ndarray | None]],
                  taxonomy: Taxonomy) -> dict[str, dict[str, np.ndarray]]:
    """:func:`record_figures` of every decoder of :data:`DECODERS` from the same per-level
    log-probabilities (:func:`level_logprobs`): ``{decoder: {figure: [N]}}``."""
    rows = decode_rows(records, logprobs, taxonomy)
    return {name: record_figures(records, rows[name], taxonomy) for name in DECODERS}


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


#: the answers' figures per record are kept on these subsets of each split's records
SUBSETS = ("", "-leakage-free")
#: what is judged: consistent decoding helps (this repository's claim), and its gain over the
#: image-blind control, on all records and where the options do not give the answer away, is the image's
CLAIMS = (
    Claim("taxonlens", "consistent decoding raises seen HCA", "consistent", "independent", ("seen", "hca")),
    Claim("taxonlens", "consistent decoding raises seen POR", "consistent", "independent", ("seen", "por")),
    Claim("taxonlens", "consistent decoding raises novel POR", "consistent", "independent", ("novel", "por")),
    Claim("taxonlens", "the image adds to the options (seen HCA)", "consistent", "blind_control", ("seen", "hca")),
    Claim("taxonlens", "the image adds to the options (seen, leakage-free HCA)", "consistent", "blind_control",
          ("seen-leakage-free", "hca")),
    Claim("taxonlens", "the image adds to the options (novel, leakage-free HCA)", "consistent", "blind_control",
          ("novel-leakage-free", "hca")),
)


@dataclass(frozen=True)
class VQASpec(EvidenceSpec):
    """What ``bench vqa`` runs.

    Attributes:
        start: the pretrained start; its world is the benchmark's, and that world's seed seeds
            the questions and draws the answered records.
        start_folder: the start's folder (``None``: the cache,
            :func:`~taxonlens.train.pretrain.pretrain_folder`); pretrained there if unfinished.
        records_per_split: seen species' test photos and novel species' photos answered (all
            when fewer), the same for every seed and answer.
        seeds: one fine-tuning per seed.
        n_options, mode: options per level and distractor mode of :func:`build_vqa`
            (``path``: leakage-free, ``random``).
        epochs, questions_per_record, batch_size, lr, lora_alpha: the LoRA fine-tuning of the
            start's LMM (:class:`~taxonlens.bench.TinySFTSpec`; ``questions_per_record`` levels
            of each training photo per epoch, drawn anew each epoch, 0: all).
        threads, device, precision (and the start, records and seeds): :class:`~taxonlens.bench.EvidenceSpec`.
    """

    n_options: int = 4
    mode: str = "path"
    epochs: int = 1
    questions_per_record: int = 1
    batch_size: int = 4
    lr: float = 2e-3
    lora_alpha: float = 32.0

    @classmethod
    def quick(cls) -> VQASpec:
        """The size of ``--quick``: :meth:`PretrainSpec.quick`'s start, 2 seeds, 48 records per
        split, every question of its 90 training photos for 2 epochs."""
        return cls(start=PretrainSpec.quick(), records_per_split=48, seeds=(0, 1), epochs=2, questions_per_record=0)

    def recipe(self, model: str | Path) -> TinySFTSpec:
        """The fine-tuning of ``model`` (the start's LMM)."""
        return TinySFTSpec(str(model), self.epochs, self.batch_size, self.lr, self.lora_alpha)


@dataclass
class VQAResult:
    """What ``bench vqa`` measured.

    Attributes:
        spec: what ran.
        start: the start's folder and LMM size.
        world: species, novel species, training photos and questions, and per split the records
            answered, the leakage-free ones, the questions and the chance per question.
        seeds: per seed, the fine-tuning (steps, seconds, first and last epoch loss), the
            answering (seconds, questions per second) and the independent answers' per-question
            accuracy per split.
        runs: ``runs[seed][decoder]["<split>[-leakage-free]/<figure>"]``: every record's value.
        claims: :func:`~taxonlens.bench.claims.judge` of :data:`CLAIMS`.
        total_seconds: the whole run.
    """

    spec: VQASpec
    start: dict[str, Any]
    world: dict[str, Any]
    seeds: dict[int, dict[str, Any]]
    runs: dict[int, dict[str, dict[str, list[float]]]]
    claims: list[dict[str, Any]]
    total_seconds: float

    def values(self) -> dict[str, dict[Key, np.ndarray]]:
        """``{decoder: {(split, figure): [S, N]}}`` over the seeds and records."""
        return stack(self.runs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, with each answer's estimates (``{decoder: {"split/figure": {mean,
        low, high, se}}}``)."""
        return asdict(self) | {"estimates": estimates_json(self.values())}

    def render(self):
        """The run, every answer's figures (mean [95% interval]) per split and subset, the claims,
        and per split the independent answers' question accuracy."""
        from rich.console import Group

        w, seeds = self.world, list(self.seeds.values())
        run = figures_table(f"bench vqa: LoRA from the pretrained {self.start['model']} ({self.spec.mode} distractors)", {
            "species (novel)": f"{w['species']} ({w['novel_species']})",
            "training photos / questions per epoch": f"{w['train_records']} / {w['train_questions']}",
            "epochs": self.spec.epochs, "seeds": len(seeds),
            **{f"{split} records (leakage-free)": f"{n} ({w['leakage_free'][split]})" for split, n in w["records"].items()},
            "training s per seed": float(np.mean([r["train_seconds"] for r in seeds])),
            "answering s per seed": float(np.mean([r["answer_seconds"] for r in seeds])),
            "answered questions / s": float(np.mean([r["questions_per_second"] for r in seeds])),
            "total s": self.total_seconds})
        found = estimates(self.values())
        answers = answers_table("answers per split: mean [95% interval over seeds and records] (percent)",
                                ("records", "answers"), (
            ((f"{split}{subset}", decoder.replace("_", " ")),
             figure_cells({k[1]: e for k, e in found[decoder].items() if k[0] == f"{split}{subset}"}, interval_cell))
            for split in w["records"] for subset in SUBSETS for decoder in DECODERS
            if (f"{split}{subset}", "hca") in found[decoder]))
        lines = [f"{split}: {w['questions'][split]} questions, independent per-question accuracy "
                 f"{sd_cell(mean_sd([r['question_acc'][split] for r in seeds]))}% (chance {w['chance'][split]:.1f}%)"
                 for split in w["records"]]
        return Group(run, answers, claims_table("claims: paired differences over seeds and records", self.claims),
                     *lines)


def bench_vqa_evidence(spec: VQASpec = VQASpec(), workdir: str | Path | None = None,
                       progress: Callable[[str], None] | None = None) -> VQAResult:
    """Independent per-level answers vs consistent decoding vs the image-blind control, from the
    pretrained start fine-tuned per seed, on the seen species' test photos (``seen``) and the
    novel species' photos (``novel``).

    Args:
        workdir: where the world and the fine-tuned models are written (a temporary folder if None).
        progress: called with a line at the start of each stage.

    Raises:
        TaxonlensError: an unknown distractor mode.
    """
    VQAMode(spec.mode)
    say = progress or (lambda _msg: None)
    with bench_run(workdir, spec.threads, "vqa") as work:
        return _run(spec, work, say)


def _run(s: VQASpec, work: Path, say: Callable[[str], None]) -> VQAResult:
    tick = time.perf_counter()
    start = s.pretrained(say)
    w = s.start.world
    say(f"the start's synthworld: {w.n_species} species x {w.images_per_species} photos")
    vw = vqa_world(w, s.n_options, s.mode, work / "world")
    taxonomy = vw.taxonomy
    asked = {name: drawn(recs, s.records_per_split, w.seed) for name, recs in vw.asked.items() if recs}
    free = {name: leakage_free(recs, taxonomy) for name, recs in asked.items()}
    runs: dict[int, dict[str, dict[str, list[float]]]] = {}
    seeds: dict[int, dict[str, Any]] = {}
    for seed in s.seeds:
        runs[seed], seeds[seed] = _seed_run(s, start, vw, asked, free, seed, work / f"seed-{seed}", say)
    world = {"species": taxonomy.n_leaves, "novel_species": len(vw.world.novel), "train_records": len(vw.train),
             "train_questions": len(check_records(vw.train, taxonomy.ranks)),
             "records": {name: len(recs) for name, recs in asked.items()},
             "leakage_free": {name: int(mask.sum()) for name, mask in free.items()},
             "questions": {name: sum(len(c) > 1 for r in recs for c in r.choices) for name, recs in asked.items()},
             "chance": {name: 100.0 * float(np.mean([1 / len(c) for r in recs for c in r.choices if len(c) > 1]))
                        for name, recs in asked.items()}}
    return VQAResult(spec=s, start={"folder": str(start.folder), "model": s.start.model,
                                    "lmm_parameters": start.knowledge.get("lmm_parameters")},
                     world=world, seeds=seeds, runs=runs, claims=judge(CLAIMS, stack(runs)),
                     total_seconds=time.perf_counter() - tick)


def _seed_run(s: VQASpec, start: Pretrained, vw: VQAWorld, asked: Mapping[str, Sequence[VQARecord]],
              free: Mapping[str, np.ndarray], seed: int, out: Path, say: Callable[[str], None]
              ) -> tuple[dict[str, dict[str, list[float]]], dict[str, Any]]:
    """One seed: the start's LMM fine-tuned, then every drawn record answered and scored per
    decoder; ``(runs[seed], what the seed's fine-tuning and answering took)``."""
    ranks = list(vw.taxonomy.ranks)
    config = replace(s.recipe(start.lmm).config(out, s, seed), questions_per_record=s.questions_per_record)
    say(f"seed {seed}: fine-tuning {s.start.model} on {len(vw.train)} training photos x {s.epochs} epochs")
    trained = train_sft(config, vw.train, vw.load, ranks)
    losses = [m["train_loss"] for m in trained.metrics]
    lmm = s.scored(trained, load_lmm)
    run: dict[str, dict[str, list[float]]] = {decoder: {} for decoder in DECODERS}
    question_acc, tick, questions = {}, time.perf_counter(), 0
    for name, recs in asked.items():
        say(f"seed {seed}: answering {len(recs)} {name} records")
        rows = decode_rows(recs, level_logprobs(lmm, recs, vw.load, ranks), vw.taxonomy)
        question_acc[name] = question_accuracy(recs, rows["independent"])
        questions += sum(len(c) > 1 for r in recs for c in r.choices)
        for decoder in DECODERS:
            figures = record_figures(recs, rows[decoder], vw.taxonomy)
            for subset, keep in zip(SUBSETS, (np.ones(len(recs), dtype=bool), free[name])):
                if keep.any():
                    run[decoder] |= {f"{name}{subset}/{k}": v[keep].tolist() for k, v in figures.items()}
    answer_seconds = time.perf_counter() - tick
    return run, {"steps": trained.steps, "train_seconds": trained.seconds, "first_loss": losses[0],
                 "last_loss": losses[-1], "answer_seconds": answer_seconds,
                 "questions_per_second": questions / answer_seconds, "question_acc": question_acc}


__all__ = ["CLAIMS", "DECODERS", "FIGURES", "SCORED_DECODERS", "VQAMode", "VQAResult", "VQASpec", "VQAWorld",
           "bench_vqa_evidence", "decode_rows", "drawn", "leakage_free", "level_logprobs", "question_accuracy",
           "record_figures", "score_split", "vqa_figures", "vqa_scores", "vqa_world"]
