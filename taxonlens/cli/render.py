"""Printing benchmark results: one function per benchmark, from the result dict its ``bench_*``
function returns, built from a few table helpers (answer figures, mean +- sd cells)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from taxonlens.cli.common import console, print_figures, print_wide, table

#: column headers of the answer figures (:data:`taxonlens.bench.vqa.FIGURES`, in that order)
FIGURE_HEADERS = ("HCA", "leaf", "POR", "S-POR", "TOR", "valid")


def percent(value: float | None) -> str:
    """A percentage to one decimal; "-" for none."""
    return "-" if value is None else f"{value:.1f}"


def figure_cells(scores: Mapping[str, Any], cell: Callable[[Any], str] = percent) -> list[str]:
    """The answer figures of ``scores`` (a :func:`~taxonlens.recognize.vqa_answer.consistency_report`
    answer, or a summary of them over seeds), one cell each by ``cell`` (``None`` where missing)."""
    from taxonlens.bench.vqa import FIGURES

    return [cell(scores.get(k)) for k in FIGURES]


def mean_sd(node: Mapping[str, Any] | None, digits: int = 1) -> str:
    """``mean +- sd`` of a summary node ``{mean, sd, ...}``; empty where there is none."""
    return f"{node['mean']:.{digits}f} +- {node['sd']:.{digits}f}" if node else ""


def dig(tree: Mapping[str, Any], *path: str) -> Any:
    """``tree[path[0]][path[1]]...``, or ``{}`` where a key is missing."""
    for k in path:
        tree = tree.get(k, {})
    return tree


def print_answers(title: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], list[str]]],
                  min_width: int, left: Collection[str] | None = None) -> None:
    """A table of answer figures, one row per ``(label cells, figure cells)``; the ``left`` label
    columns (default: all) are left-justified."""
    out = table(title, (*labels, *FIGURE_HEADERS), left=labels if left is None else left, no_wrap=True)
    for cells, figures in rows:
        out.add_row(*cells, *figures)
    print_wide(out, min_width)


def print_rar(result: dict, model: str) -> None:
    """``bench rar``: the runs' sizes and costs, then top-1, HCA, leaf and per-rank accuracy per arm."""
    enc, ranker, seconds = result["encoder_training"], result["ranker_training"], result["seconds"]
    print_figures(f"tiny-clip retrieves, {model} reranks", {
        "species": result["world"]["species"],
        **{f"{split} records": n for split, n in result["world"]["records"].items()},
        "encoder steps": enc["steps"], "encoder first / last loss": f"{enc['first_loss']:.3f} / {enc['last_loss']:.3f}",
        "ranker questions": ranker["questions"], "ranker steps": ranker["steps"],
        "ranker first / last loss": f"{ranker['first_loss']:.3f} / {ranker['last_loss']:.3f}",
        **{f"{stage.replace('_', ' ')} s": v for stage, v in seconds.items()}, "total s": result["total_seconds"]})
    ranks = list(result["encoder"]["per_rank"])
    out = table(f"test photos ({result['n_test']}; chance {result['chance']:.1f}%), percent",
                ("answer", "top-k recall", "top-1", "HCA", "leaf", *ranks), left=("answer",), no_wrap=True)
    arms = [("encoder top-1", "", result["encoder"]),
            *((f"top-{n} + rerank", f"{result['top_k_recall'][n]:.1f}", r) for n, r in result["rerank"].items())]
    for name, recall, r in arms:
        out.add_row(name, recall, *(f"{r[f]:.1f}" for f in ("top1", "hca", "acc_leaf")),
                    *(f"{r['per_rank'][rank]:.1f}" for rank in ranks))
    print_wide(out, 100)


def print_pybioclip(result: dict) -> None:
    """``bench pybioclip``: the overall figures, then seconds, speed-ups and agreement per rank."""
    result = dict(result)
    per_rank = result.pop("ranks")
    print_figures("pybioclip vs taxonlens", result)
    out = table("per rank: seconds for all photos from their files, and for the rank step alone (same probabilities)",
                ("rank", "pybioclip s", "taxonlens s", "speed-up", "same top-5", "max |p diff|",
                 "rank step: pybioclip s", "taxonlens s", "speed-up"))
    for rank, r in per_rank.items():
        out.add_row(rank, f"{r['pybioclip_s']:.2f}", f"{r['taxonlens_s']:.2f}", f"{r['speedup']:.1f}x",
                    f"{100 * r['same_top_k']:.0f}%", f"{r['max_abs_prob_diff']:.1e}",
                    f"{r['pybioclip_rank_step_s']:.3f}", f"{r['taxonlens_rank_step_s']:.3f}",
                    f"{r['rank_step_speedup']:.0f}x")
    print_wide(out, 130)


def print_vqa(result: dict, model: str, mode: str) -> None:
    """``bench vqa``: the fine-tuning run, the answers per split and subset, and per split its question
    accuracy and leakage."""
    from taxonlens.bench.vqa import DECODERS

    training = result["training"]
    print_figures(f"fine-tuning {model} ({mode} distractors)", {
        "species (novel)": f"{result['world']['species']} ({len(result['world']['novel_species'])})",
        **{f"{split} records": n for split, n in result["world"]["records"].items()},
        "training questions": training["questions"], "epochs": training["epochs"], "steps": training["steps"],
        "first / last epoch loss": f"{training['first_loss']:.3f} / {training['last_loss']:.3f}",
        "training s": training["train_seconds"], "answering s": result["answer_seconds"],
        "total s": result["total_seconds"]})
    print_answers("answers per split and subset (percent)", ("species", "records", "n", "answers"), (
        ((split, subset.replace("_", "-"), str(r[subset]["n"]), decoder.replace("_", " ")),
         figure_cells(r[subset][decoder]))
        for split, r in result["splits"].items() for subset in ("all", "leakage_free")
        for decoder in (DECODERS if r[subset]["n"] else ())), 100, left=("species", "records", "answers"))
    for split, r in result["splits"].items():
        console.print(f"{split}: {r['questions']} questions, independent per-question accuracy "
                      f"{r['question_acc']:.1f}% (chance {r['chance']:.1f}%); records answerable from the options "
                      f"alone {r['leakage']['share_unique_pct']:.1f}%")


def print_tara(result: dict, seeds: int) -> None:
    """``bench tara``: mean +- sd of the answer figures per split, arm and decoder; per seed the rewards
    and TARA's label loss."""
    from taxonlens.bench.tara import ARMS, DECODERS

    summary = result["summary"]
    print_answers(f"mean +- sd over {seeds} seeds (percent)", ("species", "arm", "answers"), (
        ((split, arm, decoder), figure_cells(dig(summary, arm, split, decoder), mean_sd))
        for split in ("seen", "novel") for arm in ARMS for decoder in DECODERS if dig(summary, arm, split, decoder)),
        140)
    for seed, run in result["runs"].items():
        rl = {arm: f"reward {run[arm]['reward_first_epoch']:.2f} -> {run[arm]['reward_last_epoch']:.2f}"
              for arm in ("grpo", "grpo+tara")}
        console.print(f"seed {seed}: grpo {rl['grpo']}; grpo+tara {rl['grpo+tara']}, label loss "
                      f"{run['grpo+tara']['label_loss_first_last'][0]:.2f} -> "
                      f"{run['grpo+tara']['label_loss_first_last'][1]:.2f}")
    console.print(f"total {result['total_seconds']:.0f} s")


def print_finedefics_cost(result: dict, batch_size: int, threads: int, written: Path) -> None:
    """``bench finedefics --cost``: seconds per step and peak memory per preset and stage, and their ratios."""
    from taxonlens.bench.finedefics import COST_RATIOS

    out = table(f"cost per optimizer step: {result['photos']} photos at batch {batch_size}, one epoch per run, a "
                f"fresh process each ({threads or 'default'} thread(s))",
                ("preset", "stage", "steps", "s / step (median)", "x stage 2", "peak MiB over the loaded model",
                 "x stage 2"), left=("preset", "stage"), no_wrap=True)
    for preset, stages in result["stages"].items():
        base = stages["stage2"]
        for stage, r in stages.items():
            out.add_row(preset, stage, str(r["steps"]), f"{r['seconds_per_step']:.4f}",
                        f"{r['seconds_per_step'] / base['seconds_per_step']:.2f}", f"{r['peak_mb']:.1f}",
                        f"{r['peak_mb'] / base['peak_mb']:.2f}" if base["peak_mb"] else "-")
    print_wide(out, 130)
    ratios = table("ratios (time / memory)", ("preset", *(f"{a} / {b}" for a, b in COST_RATIOS)), left=("preset",))
    for preset, r in result["ratios"].items():
        ratios.add_row(preset, *(" / ".join("-" if r[f"{a}/{b}"][k] is None else f"{r[f'{a}/{b}'][k]:.2f}"
                                            for k in ("seconds_per_step", "peak_mb")) for a, b in COST_RATIOS))
    print_wide(ratios, 130)
    console.print(f"written {written}; total {result['total_seconds']:.0f} s")


def print_finedefics(result: dict, seeds: int, written: Path) -> None:
    """``bench finedefics``: species-level and hierarchical accuracy per split and arm, alignment inside the
    LLM before and after each stage (mean +- sd), and the species-level accuracy of every seed."""
    from taxonlens.bench.finedefics import ARMS, SPLITS
    from taxonlens.bench.tara import DECODERS

    summary = result["summary"]
    steps = {arm: sorted({run[arm]["steps"] for run in result["runs"].values()}) for arm in ARMS}
    out = table(f"species level, mean +- sd over {seeds} seeds (percent; 4 options, similar distractors)",
                ("species", "arm", "steps", "4-option", "open set", "open: names a species"), left=("species", "arm"),
                no_wrap=True)
    for split in SPLITS:
        for arm in ARMS:
            out.add_row(split, arm, "/".join(map(str, steps[arm])),
                        *(mean_sd(dig(summary, arm, split, k)) for k in ("mc_acc", "open_acc", "open_named")))
    print_wide(out, 120)
    print_answers("hierarchical questions (every rank, path distractors), mean +- sd (percent)",
                  ("species", "arm", "answers"),
                  (((split, arm, decoder), figure_cells(dig(summary, arm, split, decoder), mean_sd))
                   for split in SPLITS for arm in ARMS for decoder in DECODERS), 150)
    out = table("alignment inside the LLM: image -> species-name retrieval (percent) and cosine gap true - hardest "
                "wrong, mean +- sd", ("model", "seen: retrieval", "seen: gap", "novel: retrieval", "novel: gap"),
                left=("model",), no_wrap=True)
    rows = [("starting model", "start", "before")] + [(f"{arm}, after Stage {roman}", arm, stage) for arm in ARMS
                                                      for stage, roman in (("after_stage1", "I"), ("after_stage2", "II"))]
    for label, arm, stage in rows:
        if dig(summary, arm, "alignment", stage):
            out.add_row(label, *(mean_sd(dig(summary, arm, "alignment", stage, split, k), digits) for split in SPLITS
                                 for k, digits in (("retrieval_acc", 1), ("cosine_gap", 3))))
    print_wide(out, 120)
    for arm in ARMS:
        per_seed = {f"{split} {name}": dig(summary, arm, split, key).get("values", [])
                    for split in SPLITS for key, name in (("mc_acc", "4-option"), ("open_acc", "open"))}
        console.print(f"{arm}, per seed: " + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vals)}"
                                                       for k, vals in per_seed.items()))
    console.print(f"plot {result['plot']}; result {written}; total {result['total_seconds']:.0f} s")
