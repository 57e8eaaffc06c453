"""taxonlens beside pybioclip, offline, on the same weights, labels and photos.

:func:`write_bioclip_cache` lays a Hugging Face cache out as pybioclip expects it: the
model repository ``imageomics/bioclip`` (an open_clip config and random weights of the
chosen architecture, ViT-B/16 as BioCLIP) and the dataset ``imageomics/TreeOfLife-10M``
with a synthetic TreeOfLife label file of realistic shape (:func:`synthetic_lineages`).
:func:`bench_pybioclip` then predicts the same photo files at every rank with both tools
in one process, and reports seconds per rank, the ratio, and how far the top-k answers and
probabilities of the two agree. pybioclip sums species probabilities per lineage in a
Python loop; taxonlens takes every rank's marginals from one pass over the leaves.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taxonlens.bench import timed
from taxonlens.bench.cells import figures_table, table
from taxonlens.data.treeoflife import EMBEDDINGS_FILE, NAMES_FILE, TOL_REPOS, bioclip_name, write_treeoflife
from taxonlens.errors import TaxonlensError
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.taxonomy.tree import STANDARD_RANKS

MODEL = "hf-hub:imageomics/bioclip"


def synthetic_lineages(n_species: int, seed: int = 0) -> list[tuple[str, ...]]:
    """About ``n_species`` distinct 7-name TreeOfLife lineages (``""`` for a missing rank) shaped
    like the real file: heavy-tailed families and genera (:func:`~taxonlens.synthworld.random_taxonomy`),
    2% of genera renamed after a genus of another family (homonyms), a genus-only label (empty
    epithet) in place of a species for about 1% of genera, and 0.5% of species with an empty
    class or order between named ranks. Every lineage is listed once, as in the real file
    (a repeated lineage would be one answer to taxonlens and several rows to pybioclip)."""
    tax = random_taxonomy(n_species, seed=seed)
    rng = np.random.default_rng(seed)
    genera = tax.nodes_at_rank("genus")
    pairs = zip(rng.choice(genera, len(genera) // 50, replace=False), rng.choice(genera, len(genera) // 50))
    renamed = {int(g): tax.names[int(o)] for g, o in pairs if tax.parent[g] != tax.parent[o]}
    genus_only = set(rng.choice(genera, len(genera) // 100, replace=False).tolist())
    out = []
    for leaf in tax.leaves:
        path = list(tax.path_names(int(leaf)))
        genus = int(tax.parent[leaf])
        epithet = path[6].split(" ", 1)[1]
        path[5] = renamed.get(genus, path[5])
        if genus in genus_only:
            genus_only.discard(genus)  # its first species becomes the genus-only label
            epithet = ""
        elif (u := rng.random()) < 0.0025:
            path[2] = ""
        elif u < 0.005:
            path[3] = ""
        path[6] = f"{path[5]} {epithet}" if epithet else ""
        out.append(tuple(path))
    return list(dict.fromkeys(out))


def write_bioclip_cache(cache: str | Path, n_species: int, arch: str = "ViT-B-16", seed: int = 0) -> dict[str, Path]:
    """Write ``imageomics/bioclip`` (random weights of ``arch``: an open_clip architecture or a
    preset) and ``imageomics/TreeOfLife-10M`` (``n_species`` synthetic labels with unit random
    embeddings) into the hub cache folder ``cache``. Returns the snapshot folders."""
    from taxonlens.models.encoders import CONFIG_FILE, WEIGHTS_FILE, load_encoder
    from taxonlens.models.hub import write_snapshot

    cache = Path(cache)
    with tempfile.TemporaryDirectory() as tmp:
        encoder = load_encoder(arch, seed=seed)
        model_dir = encoder.save(Path(tmp) / "model")
        model = write_snapshot(MODEL.removeprefix("hf-hub:"), {f: model_dir / f for f in (CONFIG_FILE, WEIGHTS_FILE)},
                               cache=cache)
        paths = synthetic_lineages(n_species, seed)
        emb = np.random.default_rng(seed).standard_normal((len(paths), encoder.embed_dim), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        folder = Path(tmp) / "tol"
        write_treeoflife(folder, paths, emb, [f"common {i}" if i % 3 == 0 else "" for i in range(len(paths))])
        labels = write_snapshot(TOL_REPOS[MODEL], {f: folder / f for f in (NAMES_FILE, EMBEDDINGS_FILE)},
                                repo_type="dataset", cache=cache)
    return {"model": model, "labels": labels}


def _key_of_path(path: Sequence[str], depth: int) -> tuple[str, ...]:
    """The names pybioclip prints for an answer (kingdom .. genus, species epithet), to ``depth``."""
    names = [bioclip_name(n) for n in path] + [""] * (7 - len(path))
    epithet = names[6][len(names[5]) + 1:] if names[5] and names[6].startswith(names[5] + " ") else names[6]
    return (*names[:6], epithet)[:depth]


def _key_of_row(row: dict, depth: int) -> tuple[str, ...]:
    return (*(row.get(r, "") for r in STANDARD_RANKS[:6]), row.get("species_epithet", ""))[:depth]


def _compare_rank(theirs, ours, files: Sequence[str], rank: str, top_k: int, batch_size: int,
                  features: torch.Tensor) -> dict:
    """Time both tools at one rank on ``files`` and compare their top-k answers; then time the
    rank step alone, from the same probabilities of the image ``features [B, D]``
    (see :func:`bench_pybioclip`)."""
    from bioclip import Rank

    from taxonlens.data import load_image

    depth = STANDARD_RANKS.index(rank) + 1
    rows, their_s = timed(lambda: theirs.predict(files, Rank[rank.upper()], k=top_k, batch_size=batch_size,
                                                 callback=lambda *_: None))
    at = None if rank == "species" else rank  # pybioclip's species answers are its labels: our leaves
    preds, our_s = timed(lambda: [p for i in range(0, len(files), batch_size)
                                  for p in ours.predict([load_image(f) for f in files[i:i + batch_size]], top_k, at)])
    same, diff = 0, 0.0
    for f, pred in zip(files, preds):
        their_rows = [r for r in rows if r["file_name"] == f]
        mine = [(pred.path, pred.confidence[ours.taxonomy.ranks[len(pred.path) - 1]]), *pred.alternatives]
        same += [_key_of_row(r, depth) for r in their_rows] == [_key_of_path(p, depth) for p, _ in mine]
        diff = max([diff, *(abs(float(r["score"]) - p) for r, (_, p) in zip(their_rows, mine))])
    column_probs = theirs.create_probabilities(features, theirs.get_txt_embeddings())  # [B, N labels]
    if rank == "species":
        _, their_step = timed(lambda: [theirs.format_species_probs(str(i), p, top_k) for i, p in enumerate(column_probs)])
    else:
        _, their_step = timed(lambda: [theirs.format_grouped_probs(str(i), p, Rank[rank.upper()], k=top_k)
                                       for i, p in enumerate(column_probs)])
    leaf_probs = ours.classifier.predict_proba(features)
    _, our_step = timed(lambda: ours.decoder.decode(leaf_probs, top_k=top_k, rank=at))
    return {"pybioclip_s": their_s, "taxonlens_s": our_s, "speedup": their_s / our_s,
            "same_top_k": same / len(files), "max_abs_prob_diff": diff,
            "pybioclip_rank_step_s": their_step, "taxonlens_rank_step_s": our_step,
            "rank_step_speedup": their_step / our_step}


@dataclass
class PybioclipResult:
    """What ``bench pybioclip`` measured.

    Attributes:
        species, images, arch, batch_size, top_k: what ran; labels: the labels taxonlens read
            (distinct lineages); threads: torch threads.
        pybioclip_load_s, taxonlens_load_s: loading each tool (model + labels);
            pybioclip_compile_warmup_s: pybioclip's one-off ``torch.compile`` warm-up.
        ranks: per rank ``pybioclip_s``, ``taxonlens_s``, ``speedup`` (pybioclip / taxonlens),
            ``same_top_k`` (share of images whose top-k answers are the same taxa in the same
            order) and ``max_abs_prob_diff`` (largest difference of a top-k probability); and
            the rank step alone, from the same probabilities of all photos:
            ``pybioclip_rank_step_s`` (its top-k, or its loop that sums species into lineages),
            ``taxonlens_rank_step_s`` (marginals, consistent path, back-off, top-k) and
            ``rank_step_speedup``.
    """

    species: int
    labels: int
    images: int
    arch: str
    threads: int
    batch_size: int
    top_k: int
    pybioclip_load_s: float
    taxonlens_load_s: float
    pybioclip_compile_warmup_s: float
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)

    def render(self):
        """The overall figures, then seconds, speed-ups and agreement per rank."""
        from rich.console import Group

        overall = figures_table("pybioclip vs taxonlens", {k: v for k, v in self.to_dict().items() if k != "ranks"})
        out = table("per rank: seconds for all photos from their files, and for the rank step alone (same "
                    "probabilities)", ("rank", "pybioclip s", "taxonlens s", "speed-up", "same top-5", "max |p diff|",
                                       "rank step: pybioclip s", "taxonlens s", "speed-up"))
        for rank, r in self.ranks.items():
            out.add_row(rank, f"{r['pybioclip_s']:.2f}", f"{r['taxonlens_s']:.2f}", f"{r['speedup']:.1f}x",
                        f"{100 * r['same_top_k']:.0f}%", f"{r['max_abs_prob_diff']:.1e}",
                        f"{r['pybioclip_rank_step_s']:.3f}", f"{r['taxonlens_rank_step_s']:.3f}",
                        f"{r['rank_step_speedup']:.0f}x")
        return Group(overall, out)


def bench_pybioclip(n_species: int = 100_000, n_images: int = 8, arch: str = "ViT-B-16", batch_size: int = 8,
                    top_k: int = 5, ranks: Sequence[str] = STANDARD_RANKS[::-1], seed: int = 0,
                    workdir: str | Path | None = None, compile_pybioclip: bool = True,
                    progress: Callable[[str], None] | None = None) -> PybioclipResult:
    """Predict ``n_images`` photo files at each rank with pybioclip and with taxonlens (fp32,
    same weights and labels, same process and threads) and compare (see :class:`PybioclipResult`).

    Args:
        compile_pybioclip: leave pybioclip's ``torch.compile`` on (as its users run it); off,
            its model runs eagerly (tests).
    """
    try:
        import huggingface_hub.constants as hub_constants
        from bioclip import Rank, TreeOfLifeClassifier
    except ImportError as e:
        raise TaxonlensError(f"the comparison needs pybioclip ({e}): pip install pybioclip") from None
    from taxonlens.data import load_image
    from taxonlens.predict import build_recognizer

    say = progress or (lambda _msg: None)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        say(f"writing a hub cache: {arch} and {n_species:,} TreeOfLife labels")
        write_bioclip_cache(tmp / "hub", n_species, arch, seed)
        world = SynthWorld.create(random_taxonomy(max(n_images, 2), seed=seed), max(n_images, 2), 1, novel_fraction=0,
                                  size=224, seed=seed)
        files = []
        for i, (leaf, k) in enumerate(world.index()[:n_images]):
            files.append(str(tmp / f"photo{i}.png"))
            world.photo(leaf, k).image.save(files[-1])
        saved = (hub_constants.HF_HUB_CACHE, hub_constants.HF_HUB_OFFLINE)
        hub_constants.HF_HUB_CACHE, hub_constants.HF_HUB_OFFLINE = str(tmp / "hub"), True
        dynamo_was_disabled = torch._dynamo.config.disable
        torch._dynamo.config.disable = not compile_pybioclip or dynamo_was_disabled
        try:
            say("loading both tools")
            theirs, their_load = timed(lambda: TreeOfLifeClassifier(model_str=MODEL))
            ours, our_load = timed(lambda: build_recognizer("bioclip", precision="fp32"))
            _, warmup = timed(lambda: theirs.predict(files[:1], Rank.SPECIES, k=1, batch_size=1,
                                                     callback=lambda *_: None))
            ours.predict([load_image(files[0])], top_k=1)
            result = PybioclipResult(species=n_species, labels=ours.taxonomy.n_leaves, images=n_images, arch=arch,
                                     threads=torch.get_num_threads(), batch_size=batch_size, top_k=top_k,
                                     pybioclip_load_s=their_load, taxonlens_load_s=our_load,
                                     pybioclip_compile_warmup_s=warmup)
            features = ours.encoder.encode_images(torch.stack([ours.encoder.preprocess(load_image(f)) for f in files]))
            for rank in ranks:
                say(f"rank {rank}: both tools")
                result.ranks[rank] = _compare_rank(theirs, ours, files, rank, top_k, batch_size, features)
        finally:
            hub_constants.HF_HUB_CACHE, hub_constants.HF_HUB_OFFLINE = saved
            torch._dynamo.config.disable = dynamo_was_disabled
    return result
