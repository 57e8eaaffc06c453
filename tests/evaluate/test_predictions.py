"""Prediction files, alignment to a benchmark, and parity with the reference evaluation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from taxonlens.data import VQARecord, read_vqa_benchmark, write_manifest, write_vqa_benchmark
from taxonlens.data.records import Record
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.evaluate import Prediction, evaluate_files, read_predictions, write_predictions
from taxonlens.taxonomy import Taxonomy

DATA = Path(__file__).parent / "data"
FIGURES = json.loads((DATA / "reference_figures.json").read_text(encoding="utf-8"))

REPORT_KEYS = {"hca", "acc_leaf", "por", "s_por", "tor", "per_rank", "n", "valid_path_pct", "severity", "backoff",
               "missing", "extra"}


# ------------------------------------------------------------------ generator
def make_predictions(records: Sequence[VQARecord], params: dict) -> list[list[str | None]]:
    """Seeded random predictions for a VQA benchmark, one path per record (the golden
    fixture's generator: changing it invalidates ``data/reference_figures.json``).

    Per record: with ``p_other_leaf`` the whole path of a random record; else per level
    the truth with ``p_truth``, otherwise a random distractor among the choices. Then per
    level below the first: ``None`` (an unanswered level) with ``p_null``; per name:
    ``"Unknown"`` with ``p_unknown``, capitalised with ``p_upper``, a leading space with
    ``p_space``; finally, with ``p_stop``, the path stops early (at depth 2..len - 1).
    """
    rng = np.random.default_rng(params["seed"])
    out: list[list[str | None]] = []
    for r in records:
        if rng.random() < params.get("p_other_leaf", 0.0):
            path: list[str | None] = list(records[rng.integers(len(records))].levels)
        else:
            path = []
            for truth, choices in zip(r.levels, r.choices):
                distractors = [c for c in choices if c != truth]
                wrong = distractors and rng.random() >= params["p_truth"]
                path.append(distractors[rng.integers(len(distractors))] if wrong else truth)
        for k, name in enumerate(path):
            if k > 0 and rng.random() < params.get("p_null", 0.0):
                path[k] = None
            elif rng.random() < params.get("p_unknown", 0.0):
                path[k] = "Unknown"
            elif rng.random() < params.get("p_upper", 0.0):
                path[k] = name.capitalize()
            elif rng.random() < params.get("p_space", 0.0):
                path[k] = " " + name
        if len(path) > 2 and rng.random() < params.get("p_stop", 0.0):
            path = path[: rng.integers(2, len(path))]
        out.append(path)
    return out


def write_reference_result(records: Sequence[VQARecord], preds: Sequence[Sequence[str | None]], path: Path) -> Path:
    """Write predictions as the reference evaluation scripts' result JSON."""
    results = []
    for r, pred in zip(records, preds, strict=True):
        entry: dict[str, object] = {"image": r.image, "label": r.label}
        for k in range(1, max(len(r.levels), len(pred)) + 1):
            if k <= len(r.levels):
                letters = {chr(65 + i): c for i, c in enumerate(r.choices[k - 1])}
                entry[f"ground_truth_level{k}"] = r.levels[k - 1]
                entry[f"choices_level{k}"] = letters
                if k <= len(pred):
                    entry[f"predicted_level{k}_letter"] = next(
                        (a for a, c in letters.items() if c == pred[k - 1]), "Unknown")
            if k <= len(pred):
                entry[f"predicted_level{k}"] = pred[k - 1]
        results.append(entry)
    path.write_text(json.dumps(results), encoding="utf-8")
    return path


def write_jsonl_predictions(records: Sequence[VQARecord], preds: Sequence[Sequence[str | None]], path: Path) -> Path:
    """The same predictions as taxonlens JSONL, in reverse order (alignment is by image):
    an unanswered level is dropped and the deeper ones move up, as the reference reads them."""
    pairs = [(r.image, [x for x in p if x is not None]) for r, p in zip(records, preds, strict=True)]
    return write_predictions(pairs[::-1], path)


# ------------------------------------------------------------------- reading
def test_read_jsonl_predictions(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text('{"image": "a.jpg", "path": ["Plantae", "Rosa"], "confidence": [0.9, 0.5]}\n\n'
                 '{"image": "b.jpg", "path": []}\n', encoding="utf-8")
    assert read_predictions(f) == [Prediction("a.jpg", ("Plantae", "Rosa"), 1), Prediction("b.jpg", (), 3)]


def test_read_reference_result_json(tmp_path: Path) -> None:
    records = [{"image": "a.jpg", "label": "Rosa", "ground_truth_level1": "plantae", "predicted_level1": "plantae",
                "predicted_level1_letter": "A", "ground_truth_level2": "rosa", "predicted_level2": None,
                "ground_truth_level3": "rosa canina", "predicted_level3": "Rosa rubiginosa",
                "predicted_level5": "ignored: level4 is absent, so reading stops"},
               {"image": "b.jpg", "ground_truth_level1": "plantae", "predicted_level1": "Error"}]
    f = tmp_path / "result.json"
    f.write_text(json.dumps(records, indent=4), encoding="utf-8")
    assert read_predictions(f) == [
        Prediction("a.jpg", ("plantae", "Rosa rubiginosa"), 2, ("plantae", "rosa", "rosa canina")),
        Prediction("b.jpg", ("Error",), 14, ("plantae",)),
    ]
    assert f.read_text().splitlines()[13].strip() == "{"


def test_write_predictions_round_trip(tmp_path: Path) -> None:
    pairs = [("x/é.jpg", ("Plantae", "Crépis")), ("y.jpg", ())]
    out = write_predictions(pairs, tmp_path / "p.jsonl")
    assert [(p.image, p.path) for p in read_predictions(out)] == pairs
    assert "Crépis" in out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"image": "a.jpg", "path": ["x"]}\n{"image": "b.jpg", "path": [\n', r"p\.jsonl:2: not valid JSON"),
        ('{"image": "a.jpg", "path": ["x"]}\n\n{"image": "a.jpg", "path": ["y"]}\n',
         r"p\.jsonl:3: image 'a.jpg' is predicted again \(first at line 1\)"),
        ('{"path": ["x"]}\n', r"p\.jsonl:1: missing 'image'"),
        ('{"image": "a.jpg", "path": "plantae > rosa"}\n', r"p\.jsonl:1: 'path' must be a list of names"),
        ('{"image": "a.jpg", "path": ["x", 3]}\n', r"p\.jsonl:1: 'path' must be a list of names"),
        ('{"image": "a.jpg", "label": "rosa"}\n', r"p\.jsonl:1: no 'path'"),
        ('{"image": "a.jpg", "predicted_level1": 7}\n', r"p\.jsonl:1: predicted_level1 must be a name or null"),
        ('["a.jpg"]\n', r"p\.jsonl:1: expected a JSON object"),
        ("\n \n", r"p\.jsonl: empty predictions file"),
        ('[\n {"image": "a.jpg", "predicted_level1": "x"},\n {"image": "a.jpg", "predicted_level1": "y"}\n]',
         r"p\.jsonl:3: image 'a.jpg' is predicted again \(first at line 2\)"),
        ('[\n {"image": "a.jpg", "predicted_level1": "x"}\n {"image": "b.jpg"}\n]', r"p\.jsonl:3: not valid JSON"),
    ],
)
def test_bad_prediction_files(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_predictions(f)


def test_binary_files(tmp_path: Path) -> None:
    blob = tmp_path / "blob.jsonl"
    blob.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"blob\.jsonl:1: not UTF-8 text"):
        read_predictions(blob)
    with pytest.raises(DataError, match=r"blob\.jsonl:1: not UTF-8 text"):
        evaluate_files(blob, blob)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="predictions file .*nope.jsonl does not exist"):
        read_predictions(tmp_path / "nope.jsonl")
    bench = _vqa(tmp_path)
    with pytest.raises(DataError, match="predictions file .*nope.jsonl does not exist"):
        evaluate_files(bench, tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="benchmark file .*nope.jsonl does not exist"):
        evaluate_files(tmp_path / "nope.jsonl", bench)


# ---------------------------------------------------------------- evaluate
TRUTHS = {
    "a.jpg": ("plantae", "magnoliopsida", "rosaceae"),
    "b.jpg": ("plantae", "magnoliopsida", "fagaceae"),
    "c.jpg": ("plantae", "liliopsida", "poaceae"),
    "d.jpg": ("plantae", "liliopsida", "orchidaceae"),
}
CHOICES = {1: ("magnoliopsida", "liliopsida"), 2: ("rosaceae", "fagaceae", "poaceae", "orchidaceae")}


def _vqa(tmp_path: Path, level1_choices: tuple[str, ...] = ("plantae",)) -> Path:
    """A 3-level VQA benchmark of 4 images; level 1 offers ``level1_choices``."""
    records = [VQARecord(img, path[-1], "test", path, (level1_choices, CHOICES[1], CHOICES[2]), i)
               for i, (img, path) in enumerate(TRUTHS.items(), start=1)]
    return write_vqa_benchmark(records, tmp_path / "bench.jsonl")


def _predict(tmp_path: Path, pairs: dict[str, Sequence[str]], name: str = "pred.jsonl") -> Path:
    return write_predictions(pairs.items(), tmp_path / name)


def test_evaluate_skips_the_single_choice_level_and_scores_missing_as_wrong(tmp_path: Path) -> None:
    preds = _predict(tmp_path, {
        "a.jpg": ("Plantae", "Magnoliopsida", "Rosaceae"),      # all right
        "b.jpg": ("fungi", "magnoliopsida", "rosaceae"),        # level 1 wrong (not scored), leaf wrong
        "c.jpg": ("plantae", "liliopsida"),                     # stops at level 2 (back-off, right)
        "zzz.jpg": ("plantae",),                                # not in the benchmark
    })
    report = evaluate_files(_vqa(tmp_path), preds)
    d = report.to_dict()
    assert set(d) == REPORT_KEYS
    assert report.missing == ("d.jpg",) and report.extra == ("zzz.jpg",)
    assert (d["n"], d["missing"], d["extra"]) == (4, 1, 1)
    # scored lists: a [m, r] / [m, r]; b [m, f] / [m, r]; c [l, p] / [l]; d [l, o] / []
    assert d["hca"] == pytest.approx(25.0)
    assert d["acc_leaf"] == pytest.approx(25.0)
    assert d["por"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4 * 100)
    assert d["s_por"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 4 * 100)
    assert d["tor"] == pytest.approx(25.0)
    assert d["per_rank"] == pytest.approx({"level2": 75.0, "level3": 25.0})
    # b's path leaves the taxonomy at "fungi"; a and c are valid
    assert d["valid_path_pct"] == pytest.approx(200 / 3)
    # the one valid wrong leaf is c's back-off: liliopsida is 1 edge above poaceae, LCA liliopsida (depth 2)
    assert d["severity"] == {"n": 1, "mean_distance": 1.0, "mean_lca_depth": 2.0}
    assert d["backoff"] == {"n": 1, "accuracy": 100.0, "ranks": {"level2": 100.0}}


def test_evaluate_scores_level1_when_it_offers_a_choice(tmp_path: Path) -> None:
    """As the reference's --cub: a level with real options is scored."""
    preds = _predict(tmp_path, {img: ("fungi", *path[1:]) if img == "b.jpg" else path for img, path in TRUTHS.items()})
    d = evaluate_files(_vqa(tmp_path, level1_choices=("plantae", "fungi")), preds).to_dict()
    assert d["per_rank"] == {"level1": 75.0, "level2": 100.0, "level3": 100.0}
    assert d["hca"] == 75.0 and d["acc_leaf"] == 100.0 and d["s_por"] == 75.0
    assert d["severity"] == {"n": 0, "mean_distance": None, "mean_lca_depth": None}


def test_explicit_ranks(tmp_path: Path) -> None:
    preds = _predict(tmp_path, {
        "a.jpg": ("plantae", "liliopsida", "rosaceae"),
        "b.jpg": ("plantae", "magnoliopsida", "fagaceae"),
        "c.jpg": ("fungi",),
        "d.jpg": ("plantae", "liliopsida", "orchidaceae"),
    })
    bench = _vqa(tmp_path)
    by_number = evaluate_files(bench, preds, ranks=[3, 1]).to_dict()
    assert by_number == evaluate_files(bench, preds, ranks=["Level3", "level1"]).to_dict()
    assert by_number["per_rank"] == {"level1": 75.0, "level3": 75.0}
    # a is right at the scored levels 1 and 3 although its level 2 is wrong
    assert by_number["hca"] == 75.0 and by_number["acc_leaf"] == 75.0 and by_number["tor"] == 75.0
    # taxonomy-aware figures use the full paths: a and c are not paths of the tree
    assert by_number["valid_path_pct"] == 50.0 and by_number["severity"]["n"] == 0
    with pytest.raises(TaxonlensError, match=r"unknown rank 'genus'; the benchmark's ranks are \['level1'"):
        evaluate_files(bench, preds, ranks=["genus"])
    with pytest.raises(TaxonlensError, match=r"level 4 is outside the benchmark's levels 1..3"):
        evaluate_files(bench, preds, ranks=[4])


def test_deeper_prediction_is_wrong_like_the_reference(tmp_path: Path) -> None:
    """Levels below the benchmark's depth are scored: a too-deep path fails HCA and leaf."""
    preds = _predict(tmp_path, {img: (*path, "extra") for img, path in TRUTHS.items()})
    d = evaluate_files(_vqa(tmp_path), preds).to_dict()
    assert (d["hca"], d["acc_leaf"], d["por"], d["s_por"], d["tor"]) == (0.0, 0.0, 100.0, 100.0, 100.0)
    assert d["per_rank"] == {"level2": 100.0, "level3": 100.0}
    assert d["valid_path_pct"] == 0.0


def test_manifest_benchmark_scores_every_level_and_matches_relative_images(tmp_path: Path) -> None:
    tax = Taxonomy.from_paths([("Plantae", "Rosa", "Rosa canina"), ("Plantae", "Dryas", "Dryas octopetala"),
                               ("Animalia", "Corvus", "Corvus corax")], ranks=("kingdom", "genus", "species"))
    records = [Record(str(tmp_path / "img" / "a.jpg"), ("Plantae", "Rosa", "Rosa canina"), "test"),
               Record(str(tmp_path / "img" / "b.jpg"), ("Plantae", "Dryas", "Dryas octopetala"), "test"),
               Record(str(tmp_path / "img" / "c.jpg"), ("Animalia", "Corvus", "Corvus corax"), "test")]
    bench = write_manifest(records, tmp_path / "test.csv", ranks=tax.ranks)
    preds = _predict(tmp_path, {
        "img/a.jpg": ("Plantae", "Rosa", "Rosa canina"),                 # relative to the manifest
        str(tmp_path / "img" / "b.jpg"): ("Plantae", "Rosa", "Rosa canina"),  # absolute
        str(tmp_path / "img" / "c.jpg"): ("Plantae", "Dryas"),
    })
    d = evaluate_files(bench, preds, taxonomy=tax).to_dict()
    assert (d["n"], d["missing"], d["extra"]) == (3, 0, 0)
    assert d["per_rank"] == pytest.approx({"kingdom": 200 / 3, "genus": 100 / 3, "species": 100 / 3})
    assert d["hca"] == pytest.approx(100 / 3)
    # b: Rosa canina for Dryas octopetala: 4 edges, LCA Plantae (depth 1); c: Dryas for Corvus corax: 5 edges, root
    assert d["severity"] == {"n": 2, "mean_distance": 4.5, "mean_lca_depth": 0.5}
    assert d["backoff"] == {"n": 1, "accuracy": 0.0, "ranks": {"genus": 100.0}}
    same = _predict(tmp_path, {"img/a.jpg": ("Plantae",), str(tmp_path / "img" / "a.jpg"): ("Plantae",)},
                    "same.jsonl")
    with pytest.raises(DataError, match=r"same\.jsonl:2: image .* names the same benchmark image as line 1"):
        evaluate_files(bench, same)
    other = Taxonomy.from_paths([("Plantae", "Rosa", "Rosa canina")])
    with pytest.raises(DataError, match=r"record 2: true path Plantae > Dryas > Dryas octopetala is not in the given"):
        evaluate_files(bench, preds, taxonomy=other)


def test_reference_result_must_agree_with_the_benchmark(tmp_path: Path) -> None:
    bench = _vqa(tmp_path)
    records = read_vqa_benchmark(bench)
    result = write_reference_result(records, [list(r.levels) for r in records], tmp_path / "result.json")
    assert evaluate_files(bench, result).to_dict()["hca"] == 100.0
    wrong = [VQARecord(r.image, r.label, r.split, r.levels[::-1], r.choices[::-1], r.line) for r in records]
    result = write_reference_result(wrong, [list(r.levels) for r in records], tmp_path / "result.json")
    with pytest.raises(DataError, match=r"result\.json:1: ground truth .* of 'a.jpg' differs from .*/bench\.jsonl:1; score the results"):
        evaluate_files(bench, result)


def test_prediction_without_a_scored_level_counts_as_wrong(tmp_path: Path) -> None:
    """Deliberately unlike the reference, which drops such a record from N."""
    bench = _vqa(tmp_path)
    records = read_vqa_benchmark(bench)
    preds = [list(r.levels) for r in records[:3]] + [["plantae"]]
    d = evaluate_files(bench, write_reference_result(records, preds, tmp_path / "result.json")).to_dict()
    assert (d["n"], d["hca"], d["tor"], d["missing"]) == (4, 75.0, 75.0, 0)


def test_ranks_a_variable_depth_benchmark_reaches_only_in_part(tmp_path: Path) -> None:
    bench = DATA / "imagenet_animal_tiny.jsonl"
    records = read_vqa_benchmark(bench)
    truth = write_predictions([(r.image, r.levels) for r in records], tmp_path / "truth.jsonl")
    d = evaluate_files(bench, truth, ranks=["level2", 11]).to_dict()
    assert d["n"] == len(records) and d["per_rank"] == {"level2": 100.0, "level11": 100.0}
    # records shallower than 11 levels have one scored level, so no pair for TOR
    deep = sum(len(r.levels) == 11 for r in records)
    assert 0 < deep < len(records) and d["tor"] == pytest.approx(100 * deep / len(records))


def test_benchmark_errors(tmp_path: Path) -> None:
    bench = _vqa(tmp_path)
    lines = bench.read_text().splitlines()
    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join([*lines, lines[0]]) + "\n")
    preds = _predict(tmp_path, {"a.jpg": ("plantae",)})
    with pytest.raises(DataError, match=r"dup\.jsonl:5: image 'a.jpg' is listed again \(first at .*dup\.jsonl:1\)"):
        evaluate_files(dup, preds)
    flat = tmp_path / "flat.jsonl"
    flat.write_text(json.dumps({"image": "a.jpg", "level1": "p", "choices_level1": ["p"], "level2": "q",
                                "choices_level2": ["q"]}) + "\n")
    with pytest.raises(DataError, match="no level offers more than one choice.*pass the ranks"):
        evaluate_files(flat, preds)
    empty = tmp_path / "empty.csv"
    empty.write_text("image,kingdom,species\n")
    with pytest.raises(DataError, match=r"empty\.csv: no records"):
        evaluate_files(empty, preds)


# ------------------------------------------------------------------ parity
def _assert_reference_figures(d: dict, ref: dict, scored: Sequence[str]) -> None:
    assert d["n"] == ref["n_scored"]
    for ours, theirs in (("hca", "HCA"), ("acc_leaf", "leaf_acc"), ("por", "POR"), ("s_por", "S-POR"),
                         ("tor", "TOR")):
        assert d[ours] == pytest.approx(ref[theirs], abs=0.01), ours
    # the reference keys layers by 1-based position among the scored levels
    assert d["per_rank"] == pytest.approx({scored[int(j) - 1]: v for j, v in ref["layer_acc"].items()}, abs=0.01)


def _check_parity(bench: Path, name: str, tmp_path: Path) -> None:
    spec = FIGURES["benchmarks"][name]
    records = read_vqa_benchmark(bench)
    for label, case in spec["sets"].items():
        preds = make_predictions(records, case["params"])
        for fmt, write in (("reference", write_reference_result), ("jsonl", write_jsonl_predictions)):
            out = write(records, preds, tmp_path / f"{label}.{fmt}")
            d = evaluate_files(bench, out).to_dict()
            assert (d["missing"], d["extra"]) == (0, 0)
            try:
                _assert_reference_figures(d, case["reference"], spec["scored_ranks"])
            except AssertionError as e:
                raise AssertionError(f"{name} / {label} via {fmt}: {e}") from None


def test_parity_with_reference_on_inat21_plantae(real_data: Path, tmp_path: Path) -> None:
    _check_parity(real_data / FIGURES["benchmarks"]["inat21_plantae"]["file"], "inat21_plantae", tmp_path)


def test_parity_with_reference_on_variable_depth_imagenet(tmp_path: Path) -> None:
    _check_parity(DATA / FIGURES["benchmarks"]["imagenet_animal_tiny"]["file"], "imagenet_animal_tiny", tmp_path)


def test_a_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"image": "a.png", "path": ["A"]}\n')
    with pytest.raises(DataError, match="is a folder, not a benchmark file"):
        evaluate_files(tmp_path, tmp_path / "p.jsonl")
    with pytest.raises(DataError, match="is a folder, not a predictions file"):
        read_predictions(tmp_path)
