"""``taxonlens attributes``: Finedefics attribute knowledge (mine names, extract values, describe photos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from taxonlens.bench.cells import table
from taxonlens.cli.common import (
    DeviceOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuantizeOpt,
    SplitOpt,
    console,
    print_skipped,
    progress_bar,
    read_records,
)
from taxonlens.errors import TaxonlensError
from taxonlens.knowledge.descriptions import DescriptionMethod
from taxonlens.models.device import Device, Precision
from taxonlens.models.mllm import Quantization
from taxonlens.tables import check_writable

app = typer.Typer(no_args_is_help=True, help="Finedefics attribute knowledge: mine attribute names, "
                                             "extract their values per photo, describe each photo.")
OrganismOpt = Annotated[str, typer.Option(help="The word for what the photos show, used in the questions.")]
ManifestArg = Annotated[Path, typer.Argument(help="Labelled photos: a manifest or an image folder.")]


@app.command("mine")
def attributes_mine(
    out: Annotated[Path, typer.Option(help="Mined attributes JSON, for `attributes extract`.")],
    super_category: Annotated[str, typer.Option(help="What the photos show: birds, flowering plants, ...")
                              ] = "organisms",
    model: Annotated[str | None, typer.Option(help="Ask this multimodal LLM (preset, folder or hub name).")] = None,
    from_file: Annotated[Path | None, typer.Option(help="Names from a file: one per line, or a JSON list.")] = None,
    synthworld: Annotated[bool, typer.Option("--synthworld", help="synthworld's own factor names.")] = False,
    manifest: Annotated[Path | None, typer.Option(help="Photos shown with the question (--model; default: a "
                                                       "blank picture).")] = None,
    images: Annotated[int, typer.Option(help="Photos of different labels asked about (--model).")] = 4,
    n: Annotated[int, typer.Option("--n", help="Names kept, the most often given first (--model).")] = 10,
    max_new_tokens: Annotated[int, typer.Option()] = 160,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    quantize: QuantizeOpt = Quantization.none,
) -> None:
    """The attribute names that tell the species of a super-category apart, from one source: --model,
    --from-file or --synthworld."""
    from taxonlens.knowledge import attributes_from_file, example_images, mine_with_lmm
    from taxonlens.synthworld import synthworld_attributes

    if sum((model is not None, from_file is not None, synthworld)) != 1:
        raise TaxonlensError("give one source of attribute names: --model, --from-file or --synthworld")
    if from_file is not None:
        mined = attributes_from_file(from_file, super_category)
    elif synthworld:
        mined = synthworld_attributes(super_category)
    else:
        from taxonlens.models.mllm import load_lmm

        photos = example_images(read_records(manifest), images) if manifest is not None else []
        lmm = load_lmm(model, precision, device=device, quantize=quantize)
        mined = mine_with_lmm(lmm, super_category, photos, n, max_new_tokens)
    mined.save(out)
    console.print(f"{len(mined.attributes)} attributes of {mined.super_category} ({mined.source}) in {out}: "
                  f"{', '.join(mined.attributes)}", highlight=False)


@app.command("extract")
def attributes_extract(
    manifest: ManifestArg,
    attributes: Annotated[Path, typer.Option(help="Mined attributes JSON from `attributes mine`.")],
    model: Annotated[str, typer.Option(help="Multimodal LLM that answers (preset, folder or hub name).")],
    out: Annotated[Path, typer.Option(help="Extracted attributes JSONL; an interrupted run resumes.")],
    organism: OrganismOpt = "organism",
    split: SplitOpt = None,
    batch_size: Annotated[int, typer.Option(help="Questions per model call.")] = 32,
    max_new_tokens: Annotated[int, typer.Option()] = 16,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    quantize: QuantizeOpt = Quantization.none,
) -> None:
    """Ask the model one short question per attribute and photo; append one JSON line per photo. Where
    the photos carry known values (synthworld), print the accuracy per attribute."""
    from taxonlens.knowledge import MinedAttributes, extract_records, extraction_accuracy, read_attribute_rows
    from taxonlens.models.mllm import load_lmm

    check_writable(out)
    mined = MinedAttributes.load(attributes)  # first: a bad attributes file fails before the model loads
    records = read_records(manifest, split=split)
    lmm = load_lmm(model, precision, device=device, quantize=quantize)
    with progress_bar() as bar:
        task = bar.add_task("extracting", total=len(records))
        written, failures = extract_records(lmm, records, mined.attributes, out, organism, batch_size, max_new_tokens,
                                            progress=lambda k: bar.advance(task, k), overwrite=overwrite)
    print_skipped(failures)
    console.print(f"{len(records) - len(failures)} photos extracted, {len(failures)} unreadable: {written}")
    if any(name in r.attributes for r in records for name in mined.attributes):
        scores = extraction_accuracy(read_attribute_rows(written), records)
        accuracy = table("extraction accuracy against the photos' known values",
                         ("attribute", "photos", "correct", "accuracy %"), left=("attribute",))
        for name, s in scores.items():
            accuracy.add_row(name, str(s["n"]), str(s["correct"]), f"{s['accuracy']:.1f}")
        console.print(accuracy)


@app.command("describe")
def attributes_describe(
    manifest: ManifestArg,
    out: Annotated[Path, typer.Option(help="Described attributes JSONL; an interrupted run resumes. The manifest "
                                           "for training is written beside it (OUT_STEM.manifest.jsonl).")],
    extracted: Annotated[Path | None, typer.Option(help="Extracted attributes JSONL (default: the values the "
                                                        "manifest's records carry, as synthworld's).")] = None,
    method: Annotated[DescriptionMethod, typer.Option(help="template (deterministic) or lmm (asks --model).")
                      ] = DescriptionMethod.template,
    model: Annotated[str | None, typer.Option(help="Multimodal LLM for --method lmm.")] = None,
    organism: OrganismOpt = "organism",
    split: SplitOpt = None,
    manifest_out: Annotated[Path | None, typer.Option(help="Where to write the described manifest instead.")
                            ] = None,
    batch_size: Annotated[int, typer.Option(help="Photos per model call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option()] = 64,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    quantize: QuantizeOpt = Quantization.none,
) -> None:
    """One description per photo from its attribute values; writes the described JSONL and a manifest
    whose records carry the values and the description (what the Finedefics trainer reads)."""
    from taxonlens.knowledge import describe_manifest

    if model is not None and method != DescriptionMethod.lmm:
        raise TaxonlensError("--model is used by --method lmm only")
    check_writable(out)
    records = read_records(manifest, split=split)
    answerer = None
    if method == DescriptionMethod.lmm and model is not None:
        from taxonlens.models.mllm import load_lmm

        answerer = load_lmm(model, precision, device=device, quantize=quantize)
    with progress_bar() as bar:
        task = bar.add_task("describing", total=None)
        written, described, failures = describe_manifest(
            records, out, extracted, method, answerer, organism, manifest_out, batch_size, max_new_tokens,
            progress=lambda done, total: bar.update(task, completed=done, total=total), overwrite=overwrite)
    print_skipped(failures)
    console.print(f"{len(failures)} unreadable photos; descriptions in {written}; the manifest to train on: "
                  f"{described}", highlight=False)
