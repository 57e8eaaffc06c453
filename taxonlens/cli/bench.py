"""``taxonlens bench``: run a benchmark on this machine and print its figures (printing lives in
:mod:`taxonlens.cli.render`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from taxonlens.bench.vqa import VQAMode
from taxonlens.cli import render
from taxonlens.cli.common import print_figures, print_wide, say
from taxonlens.recognize.fewshot import FewShotMethod
from taxonlens.tables import check_writable

app = typer.Typer(no_args_is_help=True, help="Benchmarks: print figures and ratios measured on this machine.")
LeavesOpt = Annotated[int, typer.Option(help="Leaves of the synthetic 7-rank taxonomy.")]
ThreadsOpt = Annotated[int, typer.Option(help="torch threads (0: leave as set).")]
SpeciesHeldOutOpt = Annotated[int, typer.Option(help="synthworld species (some held out as novel).")]


@app.command("taxonomy")
def bench_taxonomy(
    leaves: LeavesOpt = 450_000,
    batch: Annotated[int, typer.Option(help="Images in the marginals batch.")] = 256,
) -> None:
    """Build, save, load and index a synthetic TreeOfLife-sized taxonomy."""
    from taxonlens.bench.foundation import bench_taxonomy as run

    print_figures(f"taxonomy with {leaves:,} leaves (seconds)", run(leaves, batch))


@app.command("synthworld")
def bench_synthworld(
    species: Annotated[int, typer.Option()] = 100,
    images_per_species: Annotated[int, typer.Option()] = 10,
    size: Annotated[int, typer.Option()] = 64,
) -> None:
    """synthworld generation speed (images/s), in memory and written to disk."""
    from taxonlens.bench.foundation import bench_synthworld as run

    print_figures("synthworld generation", run(species, images_per_species, size))


@app.command("decode")
def bench_decode(
    leaves: LeavesOpt = 450_000,
    batch: Annotated[int, typer.Option(help="Images decoded at once.")] = 256,
) -> None:
    """Tree-consistent decoding of a batch over a TreeOfLife-sized taxonomy: seconds per stage."""
    from taxonlens.bench.decode import bench_decode as run

    print_figures(f"decoding {batch} images over {leaves:,} leaves", run(leaves, batch))


@app.command("encode")
def bench_encode(
    arch: Annotated[str, typer.Option(help="open_clip architecture (random weights: speed only).")] = "ViT-B-16",
    images: Annotated[int, typer.Option()] = 64,
    batch: Annotated[int, typer.Option()] = 32,
    labels: Annotated[int, typer.Option(help="Label embeddings scored and decoded.")] = 10_000,
) -> None:
    """Zero-shot prediction throughput: taxonlens (with consistent decoding and back-off) against a
    plain open_clip loop (encode, matmul, argmax), same photos, same run."""
    from taxonlens.bench.encoders import bench_encode as run

    print_figures(f"zero-shot prediction, {arch}", run(arch, images, batch, labels))


@app.command("labels")
def bench_labels(
    labels: Annotated[int, typer.Option(help="Labels to embed.")] = 100_000,
    model: Annotated[str, typer.Option(help="Encoder whose text tower embeds them.")] = "tiny-clip",
) -> None:
    """Label-embedding cache: build once, load afterwards."""
    from taxonlens.bench.labels import bench_label_cache as run

    print_figures(f"label-embedding cache, {labels:,} labels", run(labels, model))


@app.command("index")
def bench_index(
    vectors: Annotated[int, typer.Option(help="Stored unit vectors.")] = 1_000_000,
    dim: Annotated[int, typer.Option()] = 256,
    queries: Annotated[int, typer.Option()] = 200,
    k: Annotated[int, typer.Option(help="Neighbours per query (recall@k).")] = 10,
) -> None:
    """Vector memory: build time, query latency and recall@k, exact vs HNSW vs IVF."""
    from taxonlens.bench.index import bench_index as run

    print_figures(f"vector memory, {vectors:,} vectors of {dim} dimensions", run(vectors, dim, queries, k))


@app.command("lmm")
def bench_lmm(
    model: Annotated[str, typer.Option(help="Multimodal LLM (a tiny preset by default).")] = "tiny-qwen2.5-vl",
    questions: Annotated[int, typer.Option()] = 64,
    options: Annotated[int, typer.Option()] = 4,
    threads: ThreadsOpt = 1,
) -> None:
    """Asking a multimodal LLM: option scoring vs generation, questions per second."""
    from taxonlens.bench.lmm import bench_answering as run

    print_figures(f"answering multiple-choice questions, {model}", run(model, questions, options,
                                                                         threads=threads or None))


@app.command("rar")
def bench_rar(
    species: Annotated[int, typer.Option(help="synthworld species (all seen; at least the largest k).")] = 16,
    images_per_species: Annotated[int, typer.Option()] = 20,
    k: Annotated[list[int] | None, typer.Option("--k", help="Candidates retrieved per photo (repeat; default 3, 5, "
                                                            "10).")] = None,
    encoder_epochs: Annotated[int, typer.Option(help="Contrastive training epochs of the tiny encoder.")] = 30,
    model: Annotated[str, typer.Option(help="Multimodal LLM fine-tuned as the ranker (a tiny preset by default).")
                     ] = "tiny-qwen2.5-vl",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of the ranker.")] = 40,
    threads: ThreadsOpt = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """RAR on synthworld with tiny models trained here: the encoder's top-1 vs retrieving its top k and
    reranking them with a LoRA-fine-tuned LMM, for each k: top-1, HCA, leaf and per-rank accuracy of the
    consistent path, and the encoder's top-k recall."""
    from taxonlens.bench.rar import RAR_KS
    from taxonlens.bench.rar import bench_rar_evidence as run

    render.print_rar(run(species, images_per_species, ks=tuple(k or RAR_KS), encoder_epochs=encoder_epochs,
                         model=model, epochs=epochs, threads=threads or None, seed=seed, progress=say), model)


@app.command("pybioclip")
def bench_pybioclip(
    species: Annotated[int, typer.Option(help="Synthetic TreeOfLife labels.")] = 100_000,
    images: Annotated[int, typer.Option(help="Photo files predicted at every rank.")] = 8,
    arch: Annotated[str, typer.Option(help="Model architecture (random weights), BioCLIP's by default.")
                    ] = "ViT-B-16",
    batch: Annotated[int, typer.Option()] = 8,
    ranks: Annotated[list[str] | None, typer.Option("--ranks", help="Ranks to compare (default: all).")] = None,
) -> None:
    """pybioclip and taxonlens side by side, offline, same weights, labels and photos: seconds per
    rank, the speed-up, and agreement of the top-5 answers and probabilities."""
    from taxonlens.bench.pybioclip import bench_pybioclip as run
    from taxonlens.taxonomy.tree import STANDARD_RANKS

    render.print_pybioclip(run(species, images, arch, batch, ranks=ranks or STANDARD_RANKS[::-1], progress=say))


@app.command("vqa")
def bench_vqa(
    species: SpeciesHeldOutOpt = 8,
    images_per_species: Annotated[int, typer.Option()] = 15,
    novel_fraction: Annotated[float, typer.Option(help="Share of the species held out (novel).")] = 0.25,
    mode: Annotated[VQAMode, typer.Option(help="Distractors: path (leakage-free) or random.")] = VQAMode.path,
    options: Annotated[int, typer.Option(help="Options per level.")] = 4,
    model: Annotated[str, typer.Option(help="Multimodal LLM fine-tuned (a tiny preset by default).")
                     ] = "tiny-qwen2.5-vl",
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs.")] = 40,
    threads: ThreadsOpt = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Hierarchical VQA on synthworld after LoRA fine-tuning of a tiny LMM: independent per-level
    answers vs consistent decoding vs the image-blind control (HCA, leaf accuracy, POR, S-POR,
    TOR, valid paths), seen and novel species, all and leakage-free records."""
    from taxonlens.bench.vqa import bench_vqa_evidence as run

    render.print_vqa(run(species, images_per_species, novel_fraction, n_options=options, mode=mode, model=model,
                         epochs=epochs, threads=threads or None, seed=seed, progress=say), model, mode)


@app.command("tara")
def bench_tara(
    species: SpeciesHeldOutOpt = 8,
    images_per_species: Annotated[int, typer.Option()] = 10,
    model: Annotated[str, typer.Option(help="Tiny LMM preset.")] = "tiny-qwen2.5-vl",
    sft_epochs: Annotated[int, typer.Option(help="Epochs of the SFT warm start.")] = 10,
    rl_epochs: Annotated[int, typer.Option(help="Budget of every arm after the warm start, in epochs.")] = 6,
    seeds: Annotated[int, typer.Option(help="Seeds (one warm start and three arms each).")] = 3,
    threads: ThreadsOpt = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """SFT only vs + GRPO vs + GRPO + TARA on synthworld, same budget, several seeds: HCA, leaf
    accuracy, POR, S-POR and TOR (mean +- sd over seeds) of independent and consistent answers
    on seen and novel species."""
    from taxonlens.bench.tara import bench_tara_evidence as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    result = run(species, images_per_species, model=model, sft_epochs=sft_epochs, rl_epochs=rl_epochs,
                 seeds=tuple(range(seeds)), threads=threads or None, progress=say)
    if out is not None:
        out.write_text(json.dumps(result, indent=1))
    render.print_tara(result, seeds)


@app.command("finedefics")
def bench_finedefics(
    species: Annotated[int, typer.Option(help="synthworld species (some held out as novel; all seen with --cost).")
                       ] = 8,
    images_per_species: Annotated[int, typer.Option()] = 15,
    model: Annotated[str, typer.Option(help="Tiny LMM preset (the evidence; --cost runs every tiny preset).")
                     ] = "tiny-qwen2.5-vl",
    stage1_epochs: Annotated[int, typer.Option(help="Stage I epochs (stage2_only gets them as Stage II epochs).")
                             ] = 10,
    stage2_epochs: Annotated[int, typer.Option(help="Stage II epochs.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Photos per step, both stages.")] = 4,
    seeds: Annotated[int, typer.Option(help="Seeds (one starting model and four arms each).")] = 3,
    threads: ThreadsOpt = 1,
    out: Annotated[Path, typer.Option(help="Folder for result.json and alignment.png (cost.json with --cost).")
                   ] = Path("taxonlens-bench-finedefics"),
    cost: Annotated[bool, typer.Option("--cost", help="Instead: seconds per step and peak memory of Stage I (all "
                                                      "terms), Stage I (NTP only) and Stage II on every tiny preset, "
                                                      "one epoch each.")] = False,
) -> None:
    """Finedefics on synthworld, same budget, several seeds: Stage II only vs Stage I (object-category contrast
    only; the three contrasts; all four terms) + Stage II. Species-level 4-option and open-set accuracy, HCA, leaf,
    POR, S-POR, TOR (mean +- sd over seeds) on seen and novel species, and image -> name alignment inside the LLM
    before and after Stage I, with a plot. --cost: what each stage costs per step."""
    from taxonlens.bench import finedefics as fd

    out.mkdir(parents=True, exist_ok=True)
    if cost:
        result = fd.bench_finedefics_cost(n_species=species, images_per_species=images_per_species,
                                          batch_size=batch_size, threads=threads or None, progress=say)
        (out / "cost.json").write_text(json.dumps(result, indent=1))
        render.print_finedefics_cost(result, batch_size, threads, out / "cost.json")
        return
    result = fd.bench_finedefics_evidence(species, images_per_species, model=model, stage1_epochs=stage1_epochs,
                                          stage2_epochs=stage2_epochs, batch_size=batch_size,
                                          seeds=tuple(range(seeds)), threads=threads or None, out=out, progress=say)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    render.print_finedefics(result, seeds, out / "result.json")


@app.command("fewshot")
def bench_fewshot(
    species: SpeciesHeldOutOpt = 24,
    images_per_species: Annotated[int, typer.Option()] = 20,
    novel_fraction: Annotated[float, typer.Option(help="Share of species held out of training (the rare ones).")
                              ] = 0.34,
    encoder_epochs: Annotated[int, typer.Option(help="Contrastive training epochs of the tiny encoder.")] = 30,
    shots: Annotated[list[int] | None, typer.Option("--shots", help="k of the k-shot arms (repeat; default 1 "
                                                                    "and 5).")] = None,
    method: Annotated[FewShotMethod, typer.Option(help="simpleshot (BioCLIP's) or linear.")
                      ] = FewShotMethod.simpleshot,
    seeds: Annotated[int, typer.Option(help="Draws of the shots (BioCLIP: 5).")] = 5,
    threads: ThreadsOpt = 1,
    seed: Annotated[int, typer.Option(help="Seed of the world and of the training.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """BioCLIP's Rare-Species protocol on synthworld's novel species: zero-, one- and five-shot
    accuracy per rank (mean +- sd over the draws of the shots), with an encoder trained here."""
    from taxonlens.bench.fewshot import FewShotSpec
    from taxonlens.bench.fewshot import bench_fewshot as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    result = run(FewShotSpec(n_species=species, images_per_species=images_per_species, novel_fraction=novel_fraction,
                             encoder_epochs=encoder_epochs, shots=tuple(shots or (1, 5)), method=method, seeds=seeds,
                             threads=threads or None, seed=seed), progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 120)
