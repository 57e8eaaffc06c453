"""``predict --detections``: MegaDetector boxes in, named crops out: the detector's JSON with
classifications, a row per box and a rolled-up row per photo; bad boxes and photos are errors of
that photo only; persons and vehicles pass through; the run resumes."""

from __future__ import annotations

import copy
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from taxonlens.data import load_image
from taxonlens.errors import DataError
from taxonlens.predict.detections import crop_box, images_table, predict_detections
from taxonlens.predict.rollup import rollup
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.synthworld.scene import SceneSet
from taxonlens.tables import PATH_SEPARATOR


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    """Scenes of the conftest world (same taxonomy as the recognizer), with a person box, a weak
    animal box, and broken entries added to the detector's file (``md.json``)."""
    out = tmp_path_factory.mktemp("scenes")
    world = SynthWorld.create(random_taxonomy(12, seed=1), 12, 3, novel_fraction=0.0, size=64, seed=1)
    doc = json.loads(SceneSet(world, n_scenes=5, width=128, height=96, false_boxes=0.0).write(out).read_text())
    doc["images"][0]["detections"] += [{"category": "2", "conf": 0.8, "bbox": [0.0, 0.0, 0.2, 0.5]},
                                       {"category": "1", "conf": 0.1, "bbox": [0.7, 0.7, 0.2, 0.2]}]
    doc["images"][1]["detections"].append({"category": "1", "conf": 0.9, "bbox": [0.9, 0.1, 0.3, 0.2]})
    doc["images"][2]["detections"].append({"category": "1", "conf": 0.9, "bbox": [0.5, 0.1, 0.0, 0.2]})
    doc["images"] += [{"file": "scenes/missing.png", "detections": [{"category": "1", "conf": 0.9,
                                                                    "bbox": [0.1, 0.1, 0.2, 0.2]}]},
                      {"detections": []}]
    (out / "md.json").write_text(json.dumps(doc))
    return out


@pytest.fixture(scope="module")
def json_run(recognizer, scenes_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("json") / "classified.json"
    run = predict_detections(recognizer, scenes_dir / "md.json", out, top_k=3)
    return run, json.loads((scenes_dir / "md.json").read_text()), json.loads(out.read_text())


def test_crops_are_padded_squares_inside_the_photo():
    img = Image.new("RGB", (200, 100))
    assert crop_box(img, (0.25, 0.2, 0.1, 0.4), pad=0.0).size == (40, 40)  # 20 x 40 px -> square of 40
    assert crop_box(img, (0.25, 0.2, 0.1, 0.4), pad=0.25).size == (60, 60)
    assert crop_box(img, (0.0, 0.0, 0.5, 1.0), pad=0.1).size == (110, 100)  # clipped at the edges


def test_animal_boxes_get_the_recognizers_answer_and_the_rest_passes_through(json_run, recognizer, scenes_dir):
    run, before, after = json_run
    categories = after["classification_categories"]
    leaf_paths = {PATH_SEPARATOR.join(p) for p in recognizer.taxonomy.leaf_paths()}
    assert set(categories.values()) <= leaf_paths and list(categories) == [str(i + 1) for i in range(len(categories))]
    classified = 0
    for old, new in zip(before["images"], after["images"]):
        new = copy.deepcopy(new)
        for det in new.get("detections") or []:
            got = det.pop("classifications", None)
            meant = det["category"] == "1" and det["conf"] >= 0.2 and det["bbox"][2] > 0 and \
                det["bbox"][0] + det["bbox"][2] <= 1
            assert (got is not None) == (meant and "missing" not in old.get("file", "missing"))
            if got:
                classified += 1
                assert len(got) == 3 and [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        new.pop("failure", None)
        assert new == old  # nothing else changed
    assert classified == run.classified > 0
    # the first box of the first photo: the recognizer's answer for its crop
    det = after["images"][0]["detections"][0]
    crop = crop_box(load_image(scenes_dir / after["images"][0]["file"]), det["bbox"], 0.1)
    (answer,) = recognizer.predict([crop], top_k=3)
    cid, score = det["classifications"][0]
    assert categories[cid] == PATH_SEPARATOR.join(answer.path) and score == pytest.approx(
        answer.confidence["species"], abs=1e-4)


def test_bad_boxes_and_photos_are_failures_of_that_photo_only(json_run):
    run, before, after = json_run
    failures = [im.get("failure") for im in after["images"]]
    assert "outside [0, 1]" in failures[1] and "zero area" in failures[2]
    assert "no such file" in failures[5] and "has no 'file'" in failures[6]
    assert failures[0] is None and failures[3] is None
    for i in (1, 2):  # the photo's good boxes are still classified
        assert all("classifications" in d for d in after["images"][i]["detections"][:-1])
    assert len(run.problems) == 4 and len(after["images"]) == len(before["images"])


def test_tables_hold_a_row_per_box_and_a_rolled_up_row_per_photo(recognizer, scenes_dir, json_run, tmp_path):
    before = json_run[1]
    out = tmp_path / "boxes.parquet"
    run = predict_detections(recognizer, scenes_dir / "md.json", out, top_k=3)
    assert run.written == [out, images_table(out)] and images_table(out).name == "boxes.images.parquet"
    boxes = pq.read_table(out).to_pylist()
    photos = pq.read_table(images_table(out)).to_pylist()
    assert [p["file_name"] for p in photos] == [im.get("file", f"images[{i}]") for i, im in enumerate(before["images"])]
    person = [b for b in boxes if b["category"] == "person"]
    assert len(person) == 1 and person[0]["path"] == [] and person[0]["error"] == ""
    assert not any(b["detection_conf"] is not None and b["detection_conf"] < 0.2 for b in boxes)
    errors = [b for b in boxes if b["error"]]
    assert len(errors) == 4 and all(b["detection"] is None for b in errors)
    assert photos[0]["content"] == "animal" and photos[5]["content"] == "" and photos[5]["error"]
    decoder = recognizer.decoder
    for i, photo in enumerate(photos[:5]):
        mine = [b for b in boxes if b["file_name"] == photo["file_name"] and b["category"] == "animal" and b["path"]]
        assert photo["boxes"] == len(mine)
        # the rolled-up row is the rollup of the boxes' crops
        image = load_image(scenes_dir / photo["file_name"])
        probs = recognizer.leaf_probs([crop_box(image, b["bbox"], 0.1) for b in mine])
        expect = rollup(decoder, probs, decoder.decode(probs, top_k=3), [b["detection_conf"] for b in mine], 3)
        assert photo["path"] == (list(expect.prediction.path) if expect.prediction else [])  # [] : the root
        assert photo["agreeing"] == expect.agreeing
        if len({tuple(b["path"]) for b in mine}) == 1:  # agreeing boxes: the same answer, more confident
            assert photo["path"] == mine[0]["path"] and photo["score"] >= max(b["score"] for b in mine) - 1e-6


def test_a_rerun_resumes_and_other_settings_are_refused(recognizer, scenes_dir, json_run, tmp_path, monkeypatch):
    out = tmp_path / "again.json"
    predict_detections(recognizer, scenes_dir / "md.json", out, top_k=3)
    first = out.read_text()
    monkeypatch.setattr(recognizer, "leaf_probs", lambda images: pytest.fail("a finished photo was redone"))
    predict_detections(recognizer, scenes_dir / "md.json", out, top_k=3)
    assert out.read_text() == first == json.dumps(json_run[2], indent=1, ensure_ascii=False) + "\n"
    with pytest.raises(DataError, match="another min_conf"):
        predict_detections(recognizer, scenes_dir / "md.json", out, min_conf=0.5, top_k=3)
    with pytest.raises(DataError, match="unknown output format"):
        predict_detections(recognizer, scenes_dir / "md.json", tmp_path / "x.txt")
