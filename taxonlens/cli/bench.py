"""``taxonlens bench``: run a benchmark on this machine and print its figures (a benchmark's result
renders itself; the micro-benchmarks' flat figures print as a two-column table)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from taxonlens.bench.vqa import VQAMode
from taxonlens.cli.common import DeviceOpt, PrecisionOpt, console, print_figures, print_wide, say
from taxonlens.errors import TaxonlensError
from taxonlens.models.device import Device, Precision
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


@app.command("predict")
def bench_predict(
    model: Annotated[str, typer.Option(help="Encoder (an open_clip architecture gets random weights: speed "
                                            "only).")] = "ViT-B-16",
    photos: Annotated[int, typer.Option(help="Photo files (synthworld JPEGs) predicted in each arm.")] = 64,
    batch: Annotated[int, typer.Option(help="Photos per batch.")] = 32,
    labels: Annotated[int, typer.Option(help="Leaves scored and decoded.")] = 10_000,
    workers: Annotated[int, typer.Option(help="Loader workers of the worker arm.", min=1)] = 1,
    quick: Annotated[bool, typer.Option(help="A tiny model and 8 photos: checks the table, measures little.")
                     ] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")] = None,
) -> None:
    """File-to-row throughput of `predict` with and without loader workers, against a plain open_clip
    loop and the model's encode-only rate, at fp32 and the auto precision, with the fraction of this
    CPU's measured matmul rate reached."""
    from taxonlens.bench.predict import QUICK, PredictBenchSpec
    from taxonlens.bench.predict import bench_predict as run

    if out is not None:
        check_writable(out)
    spec = QUICK if quick else PredictBenchSpec(model=model, photos=photos, batch=batch, labels=labels,
                                                workers=workers)
    result = run(spec)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 100)


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
    model: Annotated[str, typer.Option(help="Multimodal LLM: a tiny preset, random:ARCHITECTURE (random:qwen2.5-vl-130m: "
                                            "a realistic width), a folder or a hub name.")] = "tiny-qwen2.5-vl",
    questions: Annotated[int, typer.Option()] = 64,
    options: Annotated[int, typer.Option()] = 4,
    threads: ThreadsOpt = 1,
    precision: PrecisionOpt = Precision.fp32,
    device: DeviceOpt = Device.cpu,
) -> None:
    """Asking a multimodal LLM: option scoring vs generation, questions per second."""
    from taxonlens.bench.lmm import bench_answering as run

    print_figures(f"answering multiple-choice questions, {model}", run(model, questions, options,
                                                                         threads=threads or None, precision=precision,
                                                                         device=device))


@app.command("rar")
def bench_rar(
    quick: Annotated[bool, typer.Option(help="The quick start (24 species), 2 seeds: checks the tables, decides "
                                             "nothing.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Ranker fine-tuning seeds (default 5; --quick 2).")] = None,
    records_per_split: Annotated[int | None, typer.Option(help="Test photos drawn per split (default 300 seen; "
                                                               "--quick 48 seen and novel).")] = None,
    start_folder: Annotated[Path | None, typer.Option(help="Folder of the pretrained start (default: the cache; "
                                                           "trained there if missing).")] = None,
    k: Annotated[list[int] | None, typer.Option("--k", help="Candidates retrieved per photo (repeat; default 3, 5, "
                                                            "10).")] = None,
    ranker_lists: Annotated[int | None, typer.Option(min=1, help="Retrieval lists the ranker learns from, of photos "
                                                                 "the memory never saw (default 200).")] = None,
    ranker_epochs: Annotated[int | None, typer.Option(min=1, help="The ranker's most epochs (default 3; it stops "
                                                                  "early on its validation lists).")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the result (per-photo values, claims) as JSON here.")
                   ] = None,
    threads: ThreadsOpt = 1,
    device: DeviceOpt = Device.cpu,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """RAR from the pretrained start: the encoder's top-1 vs retrieving its top k and reranking them with the
    pretrained LMM fine-tuned as a ranker (LoRA, early stopping), for each k, over seeds: species and genus
    top-1 and top-k recall on seen and novel test photos with 95% intervals, and RAR's claims judged."""
    from taxonlens.bench.rar import RarSpec
    from taxonlens.bench.rar import bench_rar_evidence as run

    if out is not None:
        check_writable(out)
    spec = RarSpec.quick() if quick else RarSpec()
    changes = {"seeds": tuple(range(seeds)) if seeds is not None else spec.seeds,
               "records_per_split": records_per_split if records_per_split is not None else spec.records_per_split,
               "start_folder": str(start_folder) if start_folder else None, "ks": tuple(k or spec.ks),
               "ranker_lists": ranker_lists or spec.ranker_lists, "ranker_epochs": ranker_epochs or spec.ranker_epochs,
               "threads": threads or None, "device": device, "precision": precision}
    result = run(replace(spec, **changes), progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 160)


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

    print_wide(run(species, images, arch, batch, ranks=ranks or STANDARD_RANKS[::-1], progress=say).render(), 130)


@app.command("vqa")
def bench_vqa(
    quick: Annotated[bool, typer.Option("--quick", help="The test size: the quick pretrained start (24 species, "
                                                        "tiny-qwen2.5-vl), 2 seeds, 48 records per split.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Seeds, one fine-tuning each (default: 5; --quick: 2).")] = None,
    records_per_split: Annotated[int | None, typer.Option(help="Seen test photos and novel photos answered "
                                                               "(default: 300; --quick: 48).")] = None,
    start_folder: Annotated[Path | None, typer.Option(help="The pretrained start's folder (default: the cache; "
                                                           "pretrained there if unfinished).")] = None,
    mode: Annotated[VQAMode, typer.Option(help="Distractors: path (leakage-free) or random.")] = VQAMode.path,
    options: Annotated[int, typer.Option(help="Options per level.")] = 4,
    threads: ThreadsOpt = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
    device: DeviceOpt = Device.cpu,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Hierarchical VQA from the pretrained start, LoRA fine-tuned per seed: independent per-level
    answers vs consistent decoding vs the image-blind control (HCA, leaf accuracy, POR, S-POR, TOR,
    valid paths; mean and 95% interval over seeds and records), seen and novel species, all and
    leakage-free records, and the verdict on each claim."""
    from taxonlens.bench.vqa import VQASpec
    from taxonlens.bench.vqa import bench_vqa_evidence as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    base = VQASpec.quick() if quick else VQASpec()
    spec = replace(base, seeds=tuple(range(seeds)) if seeds is not None else base.seeds,
                   records_per_split=records_per_split if records_per_split is not None else base.records_per_split,
                   start_folder=str(start_folder) if start_folder is not None else None, n_options=options, mode=mode,
                   threads=threads or None, device=device, precision=precision)
    result = run(spec, progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 160)


@app.command("tara")
def bench_tara(
    quick: Annotated[bool, typer.Option("--quick", help="The quick start (PretrainSpec.quick), 2 seeds, 12 records "
                                                        "per split: minutes.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Seeds (one warm start and three arms each; default 5, "
                                                   "--quick 2).")] = None,
    records_per_split: Annotated[int | None, typer.Option(help="Seen test and novel photos scored (default 300, "
                                                               "--quick 12).")] = None,
    start_folder: Annotated[Path | None, typer.Option(help="The pretrained start's folder (default: the cache, "
                                                           "pretrained there if missing).")] = None,
    shots: Annotated[int | None, typer.Option(help="Training photos per seen species.")] = None,
    warm_epochs: Annotated[int | None, typer.Option(help="Epochs of the SFT warm start.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Budget of every arm after the warm start, in epochs.")] = None,
    threads: ThreadsOpt = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
    device: DeviceOpt = Device.cpu,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """SFT vs + GRPO vs + GRPO + TARA from the pretrained start, same budget, over seeds: every
    arm's per-record figures (seen and novel species, independent and consistent answers) with
    95% intervals, and the TARA paper's claims judged."""
    from taxonlens.bench.tara import TARASpec
    from taxonlens.bench.tara import bench_tara_evidence as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    base = TARASpec.quick() if quick else TARASpec()
    changes = {"seeds": None if seeds is None else tuple(range(seeds)), "records_per_split": records_per_split,
               "start_folder": None if start_folder is None else str(start_folder), "shots": shots,
               "warm_epochs": warm_epochs, "epochs": epochs}
    spec = replace(base, **{k: v for k, v in changes.items() if v is not None}, threads=threads or None,
                   device=device, precision=precision)
    result = run(spec, progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 160)


@app.command("finedefics")
def bench_finedefics(
    quick: Annotated[bool, typer.Option("--quick", help="Minutes: the quick pretrained start, 2 seeds, 16 records "
                                                        "per split.")] = False,
    seeds: Annotated[int | None, typer.Option(help="Seeds (every arm once each; default 5, --quick 2).")] = None,
    records_per_split: Annotated[int | None, typer.Option(help="Held-out photos of seen species and novel photos asked (default "
                                                               "300, --quick 16).")] = None,
    start_folder: Annotated[Path | None, typer.Option(help="The pretrained start's folder (default: the cache; "
                                                           "built there if missing).")] = None,
    stage1_epochs: Annotated[int | None, typer.Option(help="Stage I epochs (stage2_only gets them as Stage II "
                                                           "epochs).")] = None,
    stage2_epochs: Annotated[int | None, typer.Option(help="Stage II epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Photos per step, both stages (default: the spec's; "
                                                        "--cost: 4).")] = None,
    species: Annotated[int, typer.Option(help="--cost: synthworld species (all seen).")] = 8,
    images_per_species: Annotated[int, typer.Option(help="--cost: photos per species.")] = 15,
    threads: ThreadsOpt = 1,
    out: Annotated[Path, typer.Option(help="Folder for result.json and alignment.png (cost.json with --cost).")
                   ] = Path("taxonlens-bench-finedefics"),
    cost: Annotated[bool, typer.Option("--cost", help="Instead: seconds per step and peak memory of Stage I (default "
                                                      "terms), Stage I (NTP only) and Stage II on every tiny preset, "
                                                      "one epoch each.")] = False,
    device: DeviceOpt = Device.cpu,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Finedefics from the pretrained start, same budget, 5 seeds: Stage II only vs Stage I (the three contrasts OAC,
    ACC, CCC; NTP + OAC + ACC + OCC; NTP + OAC + ACC + CCC) + Stage II. Species-level
    4-option and open-set accuracy on seen and novel species and image -> name alignment inside the LLM after each
    stage, per record: each arm's mean with its 95% interval, the paper's claims judged on paired differences, and an
    alignment plot. --cost: what each stage costs per step."""
    from taxonlens.bench import WorldSpec
    from taxonlens.bench import finedefics as fd

    if cost and (device, precision) != (Device.cpu, Precision.fp32):
        raise TaxonlensError("--cost measures the CPU in fp32 (its memory is the process's); leave --device and "
                             "--precision at cpu and fp32")
    out.mkdir(parents=True, exist_ok=True)
    if cost:
        cost_result = fd.bench_finedefics_cost(fd.FinedeficsCostSpec(
            world=WorldSpec(n_species=species, images_per_species=images_per_species, novel_fraction=0.0),
            batch_size=batch_size or 4, threads=threads or None), progress=say)
        (out / "cost.json").write_text(json.dumps(cost_result.to_dict(), indent=1))
        print_wide(cost_result.render(), 130)
        console.print(f"written {out / 'cost.json'}; total {cost_result.total_seconds:.0f} s")
        return
    chosen = {"seeds": tuple(range(seeds)) if seeds is not None else None, "records_per_split": records_per_split,
              "start_folder": str(start_folder) if start_folder is not None else None,
              "stage1_epochs": stage1_epochs, "stage2_epochs": stage2_epochs, "batch_size": batch_size}
    spec = replace(fd.FinedeficsSpec.quick() if quick else fd.FinedeficsSpec(),
                   **{k: v for k, v in chosen.items() if v is not None}, threads=threads or None, device=device,
                   precision=precision)
    result = fd.bench_finedefics_evidence(spec, out=out, progress=say)
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 160)
    console.print(f"plot {result.plot}; result {out / 'result.json'}; total {result.total_seconds:.0f} s")


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
    device: DeviceOpt = Device.cpu,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """BioCLIP's Rare-Species protocol on synthworld's novel species: zero-, one- and five-shot
    accuracy per rank (mean +- sd over the draws of the shots), with an encoder trained here."""
    from taxonlens.bench import WorldSpec
    from taxonlens.bench.fewshot import FewShotSpec
    from taxonlens.bench.fewshot import bench_fewshot as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    world = WorldSpec(n_species=species, images_per_species=images_per_species, novel_fraction=novel_fraction,
                      seed=seed)
    result = run(FewShotSpec(world=world, encoder_epochs=encoder_epochs, shots=tuple(shots or (1, 5)), method=method,
                             seeds=seeds, threads=threads or None, device=device, precision=precision), progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 120)


@app.command("device")
def bench_device(
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    quick: Annotated[bool, typer.Option(help="Tiny models only, few photos (a CPU, a test).")] = False,
    threads: ThreadsOpt = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """Every kind of model on one device: predict (ViT-B/16 with random weights, tiny-clip), LMM option
    scoring and one step each of SFT, GRPO, GRPO+TARA and Finedefics Stage I (a tiny preset and
    Qwen2.5-VL-3B's architecture with random weights): throughput and peak memory. scripts/gpu-check.sh
    runs it on a GPU."""
    from taxonlens.bench.device_check import DeviceCheckSpec
    from taxonlens.bench.device_check import bench_device as run

    if out is not None:
        check_writable(out)
    spec = DeviceCheckSpec(device=device, precision=precision, threads=threads or None)
    result = run(spec.quick() if quick else spec, progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 110)


@app.command("detections")
def bench_detections(
    species: Annotated[int, typer.Option(help="synthworld species (all seen).")] = 12,
    images_per_species: Annotated[int, typer.Option(help="Single-organism photos per species (training).")] = 16,
    scenes: Annotated[int, typer.Option(help="Camera-trap scenes of 1-4 organisms per seed.")] = 40,
    encoder_epochs: Annotated[int, typer.Option(help="Contrastive training epochs of the tiny encoder.")] = 30,
    ranker_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of the RAR ranker.")] = 20,
    seeds: Annotated[int, typer.Option(help="Worlds, trainings and scenes drawn.")] = 3,
    quick: Annotated[bool, typer.Option(help="A tiny size that runs in about a minute (checks, not figures); "
                                             "overrides the sizes above.")] = False,
    threads: ThreadsOpt = 1,
    seed: Annotated[int, typer.Option(help="Seed of the first world.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
    device: DeviceOpt = Device.cpu,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Camera-trap detections on synthworld scenes: accuracy per rank of classifying each box's crop vs
    the whole frame (per animal), of the rolled-up answer vs the whole frame (per photo), with and
    without RAR reranking of the crops; mean +- sd over seeds."""
    from taxonlens.bench import TinySFTSpec, WorldSpec
    from taxonlens.bench.detections import DetectionsSpec
    from taxonlens.bench.detections import bench_detections as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    spec = DetectionsSpec.quick() if quick else DetectionsSpec(
        world=WorldSpec(n_species=species, images_per_species=images_per_species, novel_fraction=0.0),
        scenes=scenes, encoder_epochs=encoder_epochs, ranker=TinySFTSpec(epochs=ranker_epochs), seeds=seeds)
    spec = replace(spec, world=replace(spec.world, seed=seed), threads=threads or None, device=device,
                   precision=precision)
    result = run(spec, progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 160)


@app.command("memory")
def bench_memory(
    batch: Annotated[int, typer.Option(help="Samples per GPU (the micro-batch).")] = 4,
    text_tokens: Annotated[int, typer.Option(help="Sequence length: text tokens per sample (prompt and answer) of "
                                                  "an LMM; CLIP's text tower always sees its context length.")] = 512,
    gpus: Annotated[int, typer.Option(help="Data-parallel GPUs ZeRO partitions over.")] = 8,
    models: Annotated[list[str] | None, typer.Option("--models", help="Models to estimate (repeat; default: all "
                                                                      "published architectures known).")] = None,
    check_presets: Annotated[bool, typer.Option(help="Check the activation formula on the tiny presets (a "
                                                     "training forward each, on the CPU).")] = True,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """Real model sizes on paper: parameters counted on the meta device beside the published counts,
    GPU memory of inference, LoRA and full fine-tuning per precision and ZeRO stage, and which GPU
    sizes each run fits."""
    from taxonlens.bench.memory import MemorySpec
    from taxonlens.bench.memory import bench_memory as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    spec = MemorySpec(batch_size=batch, text_tokens=text_tokens, gpus=gpus)
    if models:
        spec = replace(spec, models=tuple(models))
    if not check_presets:
        spec = replace(spec, check_presets=())
    result = run(spec)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 160)


@app.command("serve")
def bench_serve(
    model: Annotated[str, typer.Option(help="Encoder served (speed only; a tiny preset by default).")] = "tiny-clip",
    clients: Annotated[list[int] | None, typer.Option("--clients", help="Concurrent clients of a level (repeat; "
                                                                        "default 1, 4, 16 and 64).")] = None,
    requests: Annotated[int, typer.Option(help="Requests (one photo each) sent at every level.")] = 256,
    max_batch: Annotated[int, typer.Option(help="Photos encoded together with micro-batching on.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits for more photos, on (ms).")] = 10.0,
    quick: Annotated[bool, typer.Option(help="A small run: 1 and 4 clients, 12 requests each.")] = False,
    threads: ThreadsOpt = 1,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """`taxonlens serve` under load on 127.0.0.1: throughput, p50/p95/p99 latency and mean batch size
    at each number of concurrent clients, micro-batching on and off; every request answered once;
    memory after warm-up and at the end."""
    from taxonlens.bench.cells import table
    from taxonlens.serve.load import QUICK, LoadSpec
    from taxonlens.serve.load import bench_serve as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    spec = QUICK if quick else LoadSpec()
    spec = replace(spec, model=model, max_batch=max_batch, max_wait_ms=max_wait_ms, threads=threads,
                   **({} if quick else {"requests": requests}), **({"clients": tuple(clients)} if clients else {}))
    result = run(spec, progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    columns = ["batching", "clients", "sent", "2xx", "503", "5xx", "other", "req/s", "p50", "p95", "p99", "batch"]
    levels = table(f"taxonlens serve on 127.0.0.1, {spec.model}, one photo per request (latency in ms, mean batch "
                   "size)", columns, left=["batching"])
    for x in result.levels:
        levels.add_row(x.batching, str(x.clients), str(x.sent), str(x.ok), str(x.refused), str(x.server_errors),
                       str(x.other), f"{x.throughput:.1f}", f"{x.p50_ms:.1f}", f"{x.p95_ms:.1f}", f"{x.p99_ms:.1f}",
                       f"{x.mean_batch:.2f}")
    print_wide(levels, 120)
    print_figures("memory of the process (MiB) and the gain of micro-batching", {
        **{f"batching {mode}, {when}": mib for mode, m in result.memory_mib.items() for when, mib in m.items()},
        **{f"throughput on / off at {c} clients": result.speedup(c) for c in spec.clients},
        "every request answered once, no 5xx": str(all(x.answered_once for x in result.levels)).lower()})


@app.command("scale")
def bench_scale(
    photos: Annotated[int, typer.Option(help="Photos on disk every engine predicts.")] = 512,
    workers: Annotated[list[int] | None, typer.Option("--workers", help="Encoder actors of the Ray runs (repeat; "
                                                                        "default 1 and 2).")] = None,
    project_model: Annotated[str, typer.Option(help="Architecture projected: bioclip (ViT-B/16) or bioclip-2 "
                                                    "(ViT-L/14).")] = "bioclip",
    gpu_tflops: Annotated[float, typer.Option(help="Assumed dense bf16 peak of a GPU.")] = 989.0,
    gpu_utilisation: Annotated[float, typer.Option(help="Assumed share of that peak an inference batch reaches.")
                               ] = 0.35,
    quick: Annotated[bool, typer.Option(help="The smallest run that fills every figure (a test's size).")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the full result as JSON here.")] = None,
) -> None:
    """Images/s of the local engine and the Ray engine (1 and 2 workers) on this machine from the same
    photos, Ray's overhead per photo, and the hours for 1M and 10M photos on 1, 8 and 64 GPUs or
    32-core CPU nodes, projected from the measured costs and `bench memory`'s figures."""
    from taxonlens.bench.scale import ScaleSpec
    from taxonlens.bench.scale import bench_scale as run

    if out is not None:
        check_writable(out)  # before the run, not after it
    spec = ScaleSpec.quick() if quick else ScaleSpec(photos=photos)
    spec = replace(spec, workers=tuple(workers or spec.workers), project_model=project_model, gpu_tflops=gpu_tflops,
                   gpu_utilisation=gpu_utilisation)
    result = run(spec, progress=say)
    if out is not None:
        out.write_text(json.dumps(result.to_dict(), indent=1))
    print_wide(result.render(), 120)
