"""``predict``: photos on disk -> one row per photo with a consistent path, pybioclip's
columns, back-off and alternatives; resumes after a crash; bad files are rows, not failures."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.data import load_image, read_manifest
from taxonlens.data.treeoflife import read_treeoflife, write_treeoflife
from taxonlens.errors import DataError
from taxonlens.predict import build_recognizer, calibrate_thresholds, expand_inputs, plain_labels, predict_files
from taxonlens.synthworld import random_taxonomy

PYBIOCLIP_COLUMNS = ["file_name", "kingdom", "phylum", "class", "order", "family", "genus", "species_epithet",
                     "species", "common_name", "score"]


def photos(world_dir: Path) -> list[str]:
    return expand_inputs([world_dir])


def read_csv(path: Path):
    import csv

    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def test_rows_carry_pybioclip_columns_and_a_consistent_path(recognizer, world_dir, tmp_path):
    files = photos(world_dir)
    out, failures = predict_files(recognizer, files, tmp_path / "p.csv", batch_size=8, top_k=3)
    assert [f.path for f in failures] == [str(world_dir / "broken.png")]
    rows = list(read_csv(out))
    assert len(rows) == len(files) and list(rows[0])[: len(PYBIOCLIP_COLUMNS)] == PYBIOCLIP_COLUMNS
    tax = recognizer.taxonomy
    leaf_paths = {" > ".join(p) for p in tax.leaf_paths()}
    for r in rows:
        if r["file_name"].endswith("broken.png"):
            assert r["error"] and r["path"] == "" and r["score"] == ""
            continue
        assert r["path"] in leaf_paths and r["error"] == ""
        assert r["species"] == r["path"].split(" > ")[-1] == f"{r['genus']} {r['species_epithet']}"
        conf = [float(r[f"confidence_{k}"]) for k in tax.ranks]
        assert all(a >= b - 1e-6 for a, b in itertools.pairwise(conf))  # marginals shrink down the path
        assert math.isclose(float(r["score"]), conf[-1], rel_tol=1e-6)
        alts = json.loads(r["alternatives"])
        assert len(alts) == 2 and all(a["path"] in leaf_paths and a["path"] != r["path"] for a in alts)
        assert float(r["score"]) >= alts[0]["score"] >= alts[1]["score"]
        assert r["rank_reached"] == "species" and r["reached_path"] == r["path"]  # no thresholds: no back-off


def test_rank_answers_take_the_best_taxon_of_that_rank(recognizer, world_dir, tmp_path):
    files = [f for f in photos(world_dir) if not f.endswith("broken.png")][:6]
    out, _ = predict_files(recognizer, files, tmp_path / "g.jsonl", rank="genus", top_k=2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    probs = recognizer.leaf_probs([load_image(f) for f in files])
    marg, nodes = recognizer.decoder.rank_marginals(probs, "genus")
    tax = recognizer.taxonomy
    for r, m in zip(rows, marg):
        best = int(nodes[int(m.argmax())])
        assert r["path"] == list(tax.path_names(best)) and r["species"] == "" and r["species_epithet"] == ""
        assert math.isclose(r["score"], float(m.max()), rel_tol=1e-5) and r["confidence_species"] is None
        assert len(r["alternatives"][0]["path"]) == 6  # another genus; JSON lines hold paths as lists


class Killed(Exception):
    """A run stopped from outside (the process killed) after some batches."""


def _counting(recognizer, seen: list[int], kill_after: int | None = None):
    """``recognizer``, counting the photos it predicts into ``seen``; raises :class:`Killed` once
    ``kill_after`` batches are done."""

    class Counting:
        def __getattr__(self, name):
            return getattr(recognizer, name)

        def predict_pixels(self, pixels, images=(), top_k=5, rank=None):
            if kill_after is not None and len(seen) >= kill_after:
                raise Killed
            seen.append(len(pixels))
            return recognizer.predict_pixels(pixels, images, top_k, rank)

    return Counting()


def test_an_interrupted_run_resumes_and_skips_finishedphotos(recognizer, world_dir, tmp_path):
    files = [f for f in photos(world_dir) if not f.endswith("broken.png")]
    out = tmp_path / "p.parquet"
    journal = tmp_path / "p.parquet.journal.jsonl"
    seen: list[int] = []
    with pytest.raises(Killed):
        predict_files(_counting(recognizer, seen, kill_after=2), files, out, batch_size=4)
    assert not out.exists() and len(journal.read_text().splitlines()) == 8
    with journal.open("a") as f:
        f.write('{"photo": ["cut mid-wr')
    seen.clear()
    predict_files(_counting(recognizer, seen), files, out, batch_size=4)
    assert sum(seen) == len(files) - 8  # the eight journaled photos were not predicted again
    table = pq.read_table(out).to_pylist()
    assert sorted(r["file_name"] for r in table) == sorted(files)
    whole = tmp_path / "whole.parquet"
    predict_files(recognizer, files, whole, batch_size=4)
    assert pq.read_table(whole).to_pylist() == table  # the resumed run wrote what an uninterrupted one writes
    seen.clear()
    predict_files(_counting(recognizer, seen), files, out)  # all done: nothing to predict
    assert seen == []


def test_resume_knows_a_photo_by_its_file_not_by_how_it_is_named(recognizer, world_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(world_dir.parent)
    relative = [str(Path(world_dir.name) / Path(f).relative_to(world_dir)) for f in photos(world_dir)]
    out = tmp_path / "a.csv"
    seen: list[int] = []
    with pytest.raises(Killed):
        predict_files(_counting(recognizer, seen, kill_after=1), relative, out, batch_size=2)
    seen.clear()
    absolute = [str(Path(f).resolve()) for f in relative]
    predict_files(_counting(recognizer, seen), absolute + relative[:3], out, batch_size=2)
    rows = list(read_csv(out))
    assert len(rows) == len(relative) and sum(seen) == len(relative) - 2
    changed = Path(absolute[5])
    changed.write_bytes(changed.read_bytes())  # same content, new modification time: predicted again
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    seen.clear()
    predict_files(_counting(recognizer, seen), absolute, out, batch_size=2)
    assert seen == [1] and len(list(read_csv(out))) == len(relative)


def test_rows_made_with_other_settings_are_never_served(recognizer, world_dir, tmp_path):
    files = [f for f in photos(world_dir) if "broken" not in f][:4]
    out = tmp_path / "k.csv"
    predict_files(recognizer, files, out)
    with pytest.raises(DataError, match=r"k\.csv was written with another top_k; pass --overwrite or another --out"):
        predict_files(recognizer, files, out, top_k=3)
    recognizer.decoder.thresholds = {r: 0.99 for r in recognizer.taxonomy.ranks}
    try:
        with pytest.raises(DataError, match="written with another thresholds"):
            predict_files(recognizer, files, out)
        predict_files(recognizer, files, out, overwrite=True)
        assert {r["rank_reached"] for r in read_csv(out)} != {"species"}  # the new thresholds made these rows
    finally:
        recognizer.decoder.thresholds = {}
    other = build_recognizer("tiny-clip-rn", world_dir / "taxonomy.json", precision="fp32")
    with pytest.raises(DataError, match="written with another model"):
        predict_files(other, files, out)
    out.with_name("k.csv.run.json").unlink()
    with pytest.raises(DataError, match="records no settings"):
        predict_files(recognizer, files, out)


def test_unreadable_photos_are_retried_on_the_next_run(recognizer, tmp_path, world_dir):
    good = next(f for f in photos(world_dir) if f.endswith(".png") and "broken" not in f)
    bad = tmp_path / "later.png"
    bad.write_bytes(b"")
    out = tmp_path / "p.jsonl"
    _, failures = predict_files(recognizer, [good, str(bad)], out)
    assert len(failures) == 1 and "empty file" in failures[0].reason
    bad.write_bytes(Path(good).read_bytes())
    _, failures = predict_files(recognizer, [good, str(bad)], out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert failures == [] and len(rows) == 2 and all(r["error"] == "" for r in rows)


def test_treeoflife_labels_with_a_subset(tmp_path, world_dir):
    tax = random_taxonomy(40, seed=2)
    paths = tax.leaf_paths()
    emb = np.random.default_rng(0).normal(size=(len(paths) + 1, 128)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    names_file = write_treeoflife(tmp_path / "tol", [*paths, paths[0]], emb, [f"common {i}" for i in range(41)])
    rec = build_recognizer("tiny-clip", names_file, precision="fp32")
    assert rec.taxonomy.n_leaves == 40 and rec.classifier.embeddings.shape == (41, 128)
    phylum = tax.names[int(tax.nodes_at_rank("phylum")[0])]
    sub = build_recognizer("tiny-clip", names_file, subset=f"phylum={phylum}", precision="fp32")
    assert 0 < sub.taxonomy.n_leaves < 40
    assert {p[1] for p in sub.taxonomy.leaf_paths()} == {phylum}
    out, _ = predict_files(sub, [f for f in photos(world_dir) if "broken" not in f][:3], tmp_path / "s.csv")
    rows = list(read_csv(out))
    assert all(r["phylum"] == phylum and r["common_name"].startswith("common ") for r in rows)
    with pytest.raises(DataError, match="128 dimensions|belong to another model"):
        wrong = write_treeoflife(tmp_path / "wrong", paths, emb[:40, :64])
        build_recognizer("tiny-clip", wrong, precision="fp32")
    assert read_treeoflife(names_file).taxonomy == rec.taxonomy


def test_plain_labels(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("# my classes\nduck\n\ngoose\nswan\n")
    tax = plain_labels(f)
    assert tax.ranks == ("label",) and [p[-1] for p in tax.leaf_paths()] == ["duck", "goose", "swan"]
    f.write_text("duck\nduck\n")
    with pytest.raises(DataError, match="listed twice: duck"):
        plain_labels(f)
    with pytest.raises(DataError, match="does not exist"):
        plain_labels(tmp_path / "none.txt")


def test_calibrated_thresholds_meet_the_precision_on_theirphotos(recognizer, world_dir):
    thresholds = calibrate_thresholds(recognizer, world_dir / "manifest.jsonl", precision=0.9, batch_size=16).thresholds
    assert list(thresholds) == list(recognizer.taxonomy.ranks)
    records = [r for r in read_manifest(world_dir / "manifest.jsonl") if r.split == "val"]
    preds = recognizer.predict([load_image(r.image) for r in records])
    for rank in recognizer.taxonomy.ranks:
        d = recognizer.taxonomy.ranks.index(rank)
        reported = [(p, r) for p, r in zip(preds, records) if len(p.reached_path) > d]
        if reported:
            right = sum(p.path[d].lower() == r.path[d].lower() for p, r in reported)
            assert right / len(reported) >= 0.9
    recognizer.decoder.thresholds = {}


def test_leaf_probabilities_sum_to_one_and_the_answer_is_the_most_probable_leaf(recognizer, world_dir):
    files = [f for f in photos(world_dir) if "broken" not in f][:4]
    probs = recognizer.leaf_probs([load_image(f) for f in files])
    assert torch.allclose(probs.sum(dim=1), torch.ones(len(files)), atol=1e-5)
    for p, pred in zip(probs, recognizer.predict([load_image(f) for f in files])):
        assert pred.leaf == int(p.argmax())


# ------------------------------------------------------------------------- CLI
runner = CliRunner()


def test_cli_predict_and_calibrate(world_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    thresholds = tmp_path / "t.json"
    args = ["--model", "tiny-clip", "--taxonomy", str(world_dir / "taxonomy.json"), "--precision", "fp32"]
    result = runner.invoke(app, ["calibrate", str(world_dir / "manifest.jsonl"), *args, "--target-precision", "0.5",
                                 "--precision-at", "species=0.9", "--out", str(thresholds)])
    assert result.exit_code == 0, result.output
    doc = json.loads(thresholds.read_text())
    assert set(doc["thresholds"]) == {"kingdom", "phylum", "class", "order", "family", "genus", "species"}
    assert doc["precision_target"]["species"] == 0.9 and doc["precision_target"]["genus"] == 0.5
    assert (tmp_path / "t.reliability.png").is_file()
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(world_dir), *args, "--out", str(out), "--thresholds", str(thresholds),
                                 "--top-k", "2"])
    assert result.exit_code == 0, result.output
    assert "1 unreadable" in result.output and "broken.png" in result.output
    rows = list(read_csv(out))
    assert len(rows) == len(photos(world_dir))
    # three kingdoms: a photo may be trusted at no rank (a one-kingdom tree always reaches its kingdom: test_trust)
    assert {r["rank_reached"] for r in rows} <= {"", "kingdom", "phylum", "class", "order", "family", "genus",
                                                 "species"}


def test_cli_refuses_stale_rows_and_thresholds_of_another_model(world_dir, tmp_path, monkeypatch, capsys):
    """The issue's reproduction: rows written without thresholds are not served to a run with them."""
    from taxonlens.cli import main

    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    args = ["--model", "tiny-clip", "--taxonomy", str(world_dir / "taxonomy.json"), "--precision", "fp32"]
    out, th = tmp_path / "k.csv", tmp_path / "th.json"

    def run(*argv):
        monkeypatch.setattr("sys.argv", ["taxonlens", *argv])
        try:
            main()
        except SystemExit as e:
            return e.code, capsys.readouterr().err
        return 0, capsys.readouterr().err

    assert run("predict", str(world_dir), *args, "--out", str(out))[0] == 0
    assert run("calibrate", str(world_dir / "manifest.jsonl"), *args, "--target-precision", "0.8",
               "--out", str(th))[0] == 0
    code, err = run("predict", str(world_dir), *args, "--thresholds", str(th), "--out", str(out))
    assert code == 2 and "k.csv was written with another thresholds; pass --overwrite or another --out" in err
    assert len(err.strip().splitlines()) == 1
    assert run("predict", str(world_dir), *args, "--thresholds", str(th), "--out", str(out), "--overwrite")[0] == 0
    code, err = run("predict", str(world_dir), "--model", "tiny-clip-rn", "--taxonomy",
                    str(world_dir / "taxonomy.json"), "--precision", "fp32", "--thresholds", str(th),
                    "--out", str(tmp_path / "rn.csv"))
    assert code == 2 and "th.json was calibrated with another model" in err


@pytest.mark.parametrize("command", ["predict", "calibrate"])
def test_cli_an_unwritable_out_fails_before_any_work(world_dir, tmp_path, monkeypatch, capsys, command):
    from taxonlens.cli import main

    source = str(world_dir) if command == "predict" else str(world_dir / "manifest.jsonl")
    monkeypatch.setattr("sys.argv", ["taxonlens", command, source, "--model", "no-such-model",
                                     "--out", str(tmp_path / "nonexistent" / "dir" / "p.csv")])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "folder" in err and "does not exist" in err and "no-such-model" not in err


def test_cli_predict_output_is_read_by_evaluate(world_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "p.jsonl"
    result = runner.invoke(app, ["predict", str(world_dir / "images"), "--model", "tiny-clip", "--taxonomy",
                                 str(world_dir / "taxonomy.json"), "--precision", "fp32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["evaluate", str(world_dir / "manifest.jsonl"), str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["missing"] == 0 and report["extra"] == 0 and report["n"] == len(photos(world_dir)) - 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "tiny-clip", "--rank", "tribe"], "unknown rank 'tribe'"),
    (["--model", "tiny-clip", "--subset", "genus=Nothing"], "unknown genus in the subset"),
    (["--model", "tiny-clip", "--out", "x.xlsx"], "unknown output format"),
])
def test_cli_predict_errors_are_one_line(world_dir, tmp_path, monkeypatch, capsys, argv, message):
    from taxonlens.cli import main

    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["taxonlens", "predict", str(world_dir), "--taxonomy",
                                     str(world_dir / "taxonomy.json"), *argv])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err


def test_cli_predict_without_weights_names_them(world_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    from taxonlens.cli import main

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("sys.argv", ["taxonlens", "predict", str(world_dir)])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "imageomics/bioclip-2" in err and "huggingface-cli download" in err


def test_photos_read_in_worker_processes_give_the_same_rows(recognizer, photo_files, tmp_path):
    """Two loader workers (decoding and preprocessing in other processes) against none: the same
    rows in the same order, the corrupt file an error row in both, and the same journal."""
    rows = {}
    for workers in (0, 2):
        out, failures = predict_files(recognizer, photo_files, tmp_path / f"w{workers}.jsonl", batch_size=4,
                                      workers=workers)
        assert [f.path for f in failures] == [f for f in photo_files if f.endswith("broken.png")]
        rows[workers] = out.read_text()
    assert rows[2] == rows[0]
    errors = [json.loads(line)["error"] for line in rows[2].splitlines()]
    assert sum(bool(e) for e in errors) == 1 and len(errors) == len(photo_files)
    assert (tmp_path / "w2.jsonl.journal.jsonl").read_text() == (tmp_path / "w0.jsonl.journal.jsonl").read_text()


def test_a_manifest_lists_photos_to_predict(world_dir, tmp_path):
    from taxonlens.tables import write_table

    files = photos(world_dir)[:3]
    rows = [{"image": os.path.relpath(files[0], tmp_path)}, {"image": files[1]}, {"image": files[2]}]
    manifest = write_table(rows, tmp_path / "list.parquet", "manifest")
    listed = expand_inputs([manifest, files[0]])
    assert [str(Path(f).resolve()) for f in listed] == [str(Path(f).resolve()) for f in [*files, files[0]]]
    bad = write_table([{"file": "a.png"}], tmp_path / "bad.csv", "manifest")
    with pytest.raises(DataError, match="bad.csv:2: no 'image'"):
        expand_inputs([bad])
