"""The pretrained starting point of the method benchmarks (``taxonlens train pretrain-lmm``).

The four papers start from models that already see and speak (Qwen2.5-VL, Qwen3-VL, BioCLIP 2);
random weights cannot show their effects. This builds such a start once, on a large synthworld
(:attr:`PretrainSpec.world`: hundreds of species of a deep random tree), caches it by its
settings, and every benchmark reuses it:

- an LMM (:attr:`PretrainSpec.model`, the ``small-qwen2.5-vl`` preset by default) trained from
  its random weights, every weight, on the training photos of the seen species with two
  objectives only, never the benchmark's hierarchical questions: **description** (next-token
  prediction of the photo's own description, after Finedefics'
  :data:`~taxonlens.train.finedefics.DESCRIBE_QUESTION`) and **captioning** ("a photo of
  <kingdom> ... <taxon>." after :data:`CAPTION_QUESTION`, the taxon named down to a rank drawn
  per photo and epoch among kingdom ... genus: like web alt text, a caption names the group,
  never the species). Each epoch asks every photo one of the two, drawn with the seed;
- a BFM: tiny-clip trained with BioCLIP's taxonomic captions (down to the species) on the same
  photos (:func:`~taxonlens.train.contrastive.train_contrastive`): TARA's BFM "knows the tree".

:func:`knowledge` reports what the pretrained models know before any method runs, on the seen
species' test photos and the novel species' photos: species and genus retrieval inside the LLM
(image -> name by the global representations Finedefics aligns,
:func:`~taxonlens.train.finedefics_losses.image_reps`), what its captions name (kingdom ...
genus, and the species, which no caption taught), how much of each photo its description gets
right, and the BFM's zero-shot species accuracy.

The cache: ``$TAXONLENS_CACHE/pretrained/<key>/`` (``~/.cache/taxonlens`` by default; ``key``
is a hash of the settings and :data:`PRETRAIN_VERSION`) holds ``lmm/`` and ``bfm/`` (training
runs; their ``model/`` folders are the models), ``spec.json`` and ``knowledge.json``, written
last: a folder without it is unfinished, and the next call resumes both runs where they stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from taxonlens.data import Record
from taxonlens.errors import TaxonlensError
from taxonlens.knowledge.template import DESCRIPTION, clause, describe
from taxonlens.models.mllm import LMM
from taxonlens.models.text import label_prompts, taxon_text
from taxonlens.recognize.labels import default_cache_dir
from taxonlens.synthworld import SynthWorld
from taxonlens.synthworld.spec import WorldSpec
from taxonlens.train.checkpoint import torch_threads
from taxonlens.train.contrastive import ContrastiveConfig, train_contrastive
from taxonlens.train.finedefics import DESCRIBE_QUESTION
from taxonlens.train.finedefics_losses import image_reps, text_reps
from taxonlens.train.loop import MODEL_DIR, StepLog
from taxonlens.train.sft import SFTExample, TuneConfig, examples_by_record, examples_task, tune_lmm

#: bumped whenever the objectives change, so that a cached start is rebuilt
PRETRAIN_VERSION = 1
#: the captioning instruction
CAPTION_QUESTION = "Write a caption for this photo."
#: the file that marks a finished pretraining folder
KNOWLEDGE_FILE = "knowledge.json"


@dataclass(frozen=True)
class PretrainSpec:
    """What ``train pretrain-lmm`` builds.

    Attributes:
        world: the large world (its ``train`` split of the seen species is all that is trained on).
        model: the LMM preset trained from random weights, every weight.
        epochs, batch_size, lr: the LMM's training (AdamW, 5% warmup, cosine decay).
        bfm_epochs: the BFM's contrastive epochs.
        probe: photos per split (seen test, novel) :func:`knowledge` reads.
    """

    world: WorldSpec = field(default_factory=lambda: WorldSpec(
        n_species=400, images_per_species=20, novel_fraction=0.15, size=64, nuisance=0.6, seed=0))
    model: str = "small-qwen2.5-vl"
    epochs: int = 4
    batch_size: int = 16
    lr: float = 1e-3
    bfm_epochs: int = 10
    probe: int = 300

    def key(self) -> str:
        """A short hash of the settings and :data:`PRETRAIN_VERSION`: the cache folder's name."""
        blob = json.dumps({"version": PRETRAIN_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def quick(cls) -> PretrainSpec:
        """A minute-sized spec for tests and ``--quick``: 24 species, tiny-qwen2.5-vl, 2 epochs."""
        return cls(WorldSpec(n_species=24, images_per_species=8, novel_fraction=0.25, size=32, nuisance=0.3, seed=0),
                   model="tiny-qwen2.5-vl", epochs=2, batch_size=8, lr=2e-3, bfm_epochs=2, probe=24)


@dataclass(frozen=True)
class Pretrained:
    """A finished pretraining: its ``folder``, the LMM and BFM model folders, and what they know."""

    folder: Path
    spec: PretrainSpec
    knowledge: dict[str, Any]

    @property
    def lmm(self) -> Path:
        return self.folder / "lmm" / MODEL_DIR

    @property
    def bfm(self) -> Path:
        return self.folder / "bfm" / MODEL_DIR


# -------------------------------------------------------------------- data
def caption(path: Sequence[str], depth: int) -> str:
    """The taxonomic caption of ``path`` down to level ``depth`` (0-based): "a photo of Animalia
    Chordata ... <taxon>."."""
    return taxon_text(list(path[: depth + 1]), "taxonomic")


def pretrain_examples(lmm: LMM, records: Sequence[Record], organism: str = "organism") -> list[SFTExample]:
    """Every example the plan draws from, record by record: the description (``level`` -1), then
    one caption per rank from kingdom to genus (``level`` = that rank's index)."""
    describe_prompt = lmm.chat(DESCRIBE_QUESTION.format(organism=organism))
    caption_prompt = lmm.chat(CAPTION_QUESTION)
    out = []
    for i, r in enumerate(records):
        text = r.attributes.get(DESCRIPTION) or describe(r.attributes, organism)
        out.append(SFTExample(i, -1, describe_prompt, text + lmm.end_of_turn))
        out += [SFTExample(i, d, caption_prompt, caption(r.path, d) + lmm.end_of_turn) for d in range(len(r.path) - 1)]
    return out


def epoch_plan(examples: Sequence[SFTExample], seed: int, epoch: int) -> list[int]:
    """One example per record for ``epoch``: its description or, with the same chance, a caption
    at a rank drawn uniformly, from a stream seeded by ``(seed, epoch, record)``."""
    plan = []
    for rec, idx in examples_by_record(examples).items():
        rng = random.Random(f"taxonlens-pretrain:{seed}:{epoch}:{rec}")
        plan.append(idx[0] if rng.random() < 0.5 or len(idx) == 1 else rng.choice(idx[1:]))
    return plan


# ---------------------------------------------------------------- knowledge
def _names(text: str, name: str) -> bool:
    """Whether ``text`` names ``name`` as whole words (case ignored)."""
    return re.search(rf"(?<!\w){re.escape(name.lower())}(?!\w)", text.lower()) is not None


def description_recall(text: str, attributes: dict[str, str]) -> float:
    """Percent of a photo's described attributes that ``text`` states as the description template
    writes them (:func:`~taxonlens.knowledge.template.clause`: "body plan is radial")."""
    pairs = [(k, v) for k, v in attributes.items() if k != DESCRIPTION and str(v).strip()]
    if not pairs:
        return 0.0
    return 100.0 * sum(_names(text, clause(k, v)) for k, v in pairs) / len(pairs)


@torch.inference_mode()
def lmm_knowledge(lmm: LMM, world: SynthWorld, records: Sequence[Record], images: Sequence[Image.Image],
                  batch_size: int = 16) -> dict[str, float]:
    """What ``lmm`` knows of ``records`` (percent): ``species_retrieval`` / ``genus_retrieval``
    (the nearest of all the world's species names to the photo's global representation is its
    species / in its genus), ``caption_<rank>`` (its caption names the photo's true taxon at that
    rank, species included), ``description`` (:func:`description_recall` of its description)."""
    tax = world.taxonomy
    paths = [tax.path_names(int(leaf)) for leaf in tax.leaves]
    names = text_reps(lmm, [p[-1] for p in paths])  # [S, H]
    genus_of = [p[-2] for p in paths]
    found: dict[str, list[float]] = {}
    for start in range(0, len(records), batch_size):
        recs, imgs = records[start:start + batch_size], list(images[start:start + batch_size])
        sims = torch.nn.functional.normalize(image_reps(lmm, imgs), dim=-1) @ \
            torch.nn.functional.normalize(names, dim=-1).T  # [B, S]
        captions = lmm.generate(imgs, [CAPTION_QUESTION] * len(imgs), max_new_tokens=48)
        descriptions = lmm.generate(imgs, [DESCRIBE_QUESTION.format(organism="organism")] * len(imgs),
                                    max_new_tokens=96)
        for r, row, cap, desc in zip(recs, sims.argmax(dim=1).tolist(), captions, descriptions):
            found.setdefault("species_retrieval", []).append(100.0 * (paths[row][-1] == r.path[-1]))
            found.setdefault("genus_retrieval", []).append(100.0 * (genus_of[row] == r.path[-2]))
            for rank, name in zip(tax.ranks, r.path):
                found.setdefault(f"caption_{rank}", []).append(100.0 * _names(cap, name))
            found.setdefault("description", []).append(description_recall(desc, r.attributes))
    return {k: float(np.mean(v)) for k, v in found.items()}


@torch.inference_mode()
def bfm_knowledge(bfm: Path, world: SynthWorld, records: Sequence[Record], images: Sequence[Image.Image]
                  ) -> dict[str, float]:
    """The BFM's zero-shot species accuracy (percent) on ``records`` among all the world's species,
    by the taxonomic caption of each."""
    from taxonlens.models.encoders import load_encoder

    encoder = load_encoder(str(bfm))
    tax = world.taxonomy
    labels = encoder.encode_texts([label_prompts(tax.path_names(int(leaf)), "taxonomic")[0] for leaf in tax.leaves])
    feats = encoder.encode_images(torch.stack([encoder.preprocess(img) for img in images]))
    picked = (feats @ labels.T).argmax(dim=1).tolist()
    return {"species_zero_shot": float(100.0 * np.mean([tax.path_names(int(tax.leaves[p]))[-1] == r.path[-1]
                                                        for p, r in zip(picked, records)]))}


def knowledge(lmm: LMM, bfm: Path, world: SynthWorld, probe: int, seed: int = 0) -> dict[str, Any]:
    """:func:`lmm_knowledge` and :func:`bfm_knowledge` on up to ``probe`` seen test photos and
    ``probe`` novel photos (drawn with ``seed``), with the chance level of species retrieval."""
    load = world.image_source()
    out: dict[str, Any] = {"species": world.taxonomy.n_leaves, "chance": 100.0 / world.taxonomy.n_leaves}
    for label, split in (("seen", "test"), ("novel", "novel")):
        records = world.records(split)
        records = random.Random(f"taxonlens-probe:{seed}").sample(records, min(probe, len(records)))
        if not records:
            continue
        images = [load(r) for r in records]
        out[label] = {"photos": len(records), **lmm_knowledge(lmm, world, records, images),
                      **bfm_knowledge(bfm, world, records, images)}
    return out


# ---------------------------------------------------------------- training
def pretrain_folder(spec: PretrainSpec, cache: str | Path | None = None) -> Path:
    """Where ``spec``'s pretraining is cached: ``<cache>/pretrained/<spec.key()>`` (default cache:
    ``$TAXONLENS_CACHE`` or ``~/.cache/taxonlens``)."""
    return Path(cache if cache is not None else default_cache_dir()) / "pretrained" / spec.key()


def pretrain(spec: PretrainSpec = PretrainSpec(), folder: str | Path | None = None, threads: int | None = None,
             say: Callable[[str], None] | None = None, progress: Callable[[StepLog], None] | None = None
             ) -> Pretrained:
    """The pretrained LMM and BFM of ``spec``: loaded from ``folder`` (default
    :func:`pretrain_folder`) when finished there, else trained (resuming an interrupted run).

    Args:
        threads: torch CPU threads while training (``None``: as set).
        say: called with a line at the start of each stage.
        progress: called with every optimizer step's log of the LMM and the BFM.

    Raises:
        TaxonlensError: ``folder`` holds another spec's pretraining.
    """
    folder = Path(folder) if folder is not None else pretrain_folder(spec)
    say = say or (lambda _line: None)
    spec_file, done = folder / "spec.json", folder / KNOWLEDGE_FILE
    wanted = {"version": PRETRAIN_VERSION, **asdict(spec)}
    if spec_file.exists() and json.loads(spec_file.read_text()) != wanted:
        raise TaxonlensError(f"{folder} holds another pretraining (its spec.json differs); choose another folder")
    if done.exists():
        return Pretrained(folder, spec, json.loads(done.read_text()))
    folder.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(wanted, indent=1) + "\n")
    world = spec.world.create()
    records = world.records("train")
    load = world.image_source()
    with torch_threads(threads):
        say(f"BFM: tiny-clip, {len(records)} photos x {spec.bfm_epochs} epochs")
        train_contrastive(ContrastiveConfig(encoder="tiny-clip", text_type="taxonomic", epochs=spec.bfm_epochs,
                                            seed=spec.world.seed, out=str(folder / "bfm"), eval_every=0),
                          [(load(r), r.path) for r in records], taxonomy=world.taxonomy, resume=True,
                          progress=progress)
        say(f"LMM: {spec.model}, {len(records)} photos x {spec.epochs} epochs (descriptions and captions)")
        config = TuneConfig(model=spec.model, out=str(folder / "lmm"), epochs=spec.epochs,
                            batch_size=spec.batch_size, lr=spec.lr, eval_every=0, seed=spec.world.seed)

        def prepare(lmm: LMM) -> Any:
            examples = pretrain_examples(lmm, records)
            return examples_task(lmm, examples, lambda i: load(records[i]),
                                 lambda epoch: epoch_plan(examples, spec.world.seed, epoch))

        result = tune_lmm(config, prepare, spec.key(), resume=True, progress=progress, full=True)
        say(f"probing what the models know: {spec.probe} seen test photos and {spec.probe} novel photos")
        found = knowledge(result.model, folder / "bfm" / MODEL_DIR, world, spec.probe, spec.world.seed)
    found["lmm_parameters"] = sum(p.numel() for p in result.model.model.parameters())
    found["lmm_last_loss"] = result.metrics[-1]["train_loss"] if result.metrics else None
    done.write_text(json.dumps(found, indent=1) + "\n")
    return Pretrained(folder, spec, found)


__all__ = ["CAPTION_QUESTION", "KNOWLEDGE_FILE", "PRETRAIN_VERSION", "PretrainSpec", "Pretrained", "bfm_knowledge",
           "caption", "description_recall", "epoch_plan", "knowledge", "lmm_knowledge", "pretrain", "pretrain_examples",
           "pretrain_folder"]
