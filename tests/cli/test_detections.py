"""``synthworld --scene`` and ``predict --detections`` end to end on the command line, and their
usage errors: one line, exit 2, before any model loads."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from taxonlens.cli import app, main
from taxonlens.data.megadetector import read_detections

runner = CliRunner()


@pytest.fixture(scope="module")
def scene_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene-world")
    result = runner.invoke(app, ["synthworld", "--out", str(out), "--random-tree", "--species", "6",
                                 "--images-per-species", "1", "--size", "32", "--scene", "--scenes", "3"])
    assert result.exit_code == 0, result.output
    return out


def _main(monkeypatch, capsys, argv):
    monkeypatch.setattr("sys.argv", ["taxonlens", *argv])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


def test_synthworld_scene_writes_photos_a_detector_file_and_the_truth(scene_world):
    md = read_detections(scene_world / "detections.json")
    assert len(md.images) == 3 and all((scene_world / im.file).is_file() and im.detections for im in md.images)
    assert len((scene_world / "scenes.jsonl").read_text().splitlines()) == 3
    assert (scene_world / "manifest.jsonl").is_file()  # the single-organism world beside it


def test_predict_detections_writes_the_detector_file_with_classifications(scene_world, tmp_path, monkeypatch):
    monkeypatch.setenv("TAXONLENS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "classified.json"
    result = runner.invoke(app, ["predict", "--detections", str(scene_world / "detections.json"), "--model",
                                 "tiny-clip", "--precision", "fp32", "--taxonomy", str(scene_world / "taxonomy.json"),
                                 "--min-conf", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    dets = [d for im in doc["images"] for d in im["detections"]]
    assert all(("classifications" in d) == (d["conf"] >= 0.5) for d in dets) and doc["classification_categories"]
    assert "boxes classified in 3 photos, 0 problems" in " ".join(result.output.split())


@pytest.mark.parametrize(("extra", "message"), [
    ([], "give photo PATHS or --detections FILE"),
    (["photos/", "--detections", "md.json"], "give photo PATHS or --detections FILE"),
    (["--detections", "md.json", "--format", "pybioclip"], "--format pybioclip does not apply"),
    (["--detections", "md.json", "--out", "x.txt"], "unknown output format '.txt'"),
    (["--detections", "missing.json", "--out", "x.json"], "missing.json"),  # before the (unknown) model loads
])
def test_usage_errors_are_one_line(monkeypatch, capsys, extra, message):
    code, err = _main(monkeypatch, capsys, ["predict", "--model", "no-such-model", *extra])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
