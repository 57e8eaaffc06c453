"""MegaDetector's batch format: whole-file errors refuse the file; everything wrong with one photo
or one box is a problem of that photo, and the rest is kept."""

from __future__ import annotations

import json

import pytest

from taxonlens.data.megadetector import read_detections, write_detections
from taxonlens.errors import DataError

CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}


def write(tmp_path, doc) -> str:
    path = tmp_path / "md.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_valid_boxes_are_read_and_edges_within_rounding_are_clipped(tmp_path):
    doc = {"detection_categories": CATEGORIES, "images": [
        {"file": "a.jpg", "detections": [{"category": "1", "conf": 0.9, "bbox": [0.5, 0.5, 0.5004, 0.2]},
                                         {"category": 2, "conf": 0.3, "bbox": [0, 0, 0.1, 0.1]}]}]}
    md = read_detections(write(tmp_path, doc))
    (image,) = md.images
    assert image.file == "a.jpg" and image.problems == [] and md.animal == {"1"}
    first, second = image.detections
    assert first.bbox == (0.5, 0.5, 0.5, 0.2) and second.category == "2" and second.index == 1
    assert md.document == doc


def test_each_bad_box_or_photo_is_a_problem_of_that_photo_only(tmp_path):
    good = {"category": "1", "conf": 0.8, "bbox": [0.1, 0.1, 0.2, 0.2]}
    doc = {"detection_categories": CATEGORIES, "images": [
        {"file": "a.jpg", "detections": [good, {"category": "1", "conf": 0.8, "bbox": [0.9, 0.1, 0.3, 0.2]}]},
        {"file": "b.jpg", "detections": [{"category": "1", "conf": 0.8, "bbox": [0.2, 0.1, 0.0, 0.2]}, good]},
        {"file": "c.jpg", "detections": [{"category": "1", "bbox": [0.2, 0.1, 0.1, 0.2]}]},
        {"file": "d.jpg", "detections": [{"category": "9", "conf": 0.5, "bbox": [0.2, 0.1, 0.1, 0.2]}]},
        {"file": "e.jpg", "detections": [{"category": "1", "conf": 1.5, "bbox": [0.2, 0.1, 0.1]}]},
        {"detections": [good]},
        {"file": "f.jpg", "failure": "image access error"},
        {"file": "g.jpg"},
        "not an object",
    ]}
    md = read_detections(write(tmp_path, doc))
    problems = [image.problems for image in md.images]
    assert "outside [0, 1]" in problems[0][0] and len(md.images[0].detections) == 1
    assert "zero area" in problems[1][0] and [d.index for d in md.images[1].detections] == [1]
    assert problems[2] == ["detection 0 has no 'conf'"]
    assert "category '9'" in problems[3][0]
    assert "conf 1.5" in problems[4][0]
    assert problems[5] == ["images[5] has no 'file'"] and md.images[5].detections[0].conf == 0.8
    assert problems[6] == ["the detector failed: image access error"]
    assert problems[7] == ["images[7] has no 'detections' list"]
    assert problems[8] == ["images[8] is not an object"]


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not valid JSON"),
    ({"detection_categories": CATEGORIES}, "no 'images' list"),
    ({"images": []}, "no 'detection_categories'"),
])
def test_a_file_that_is_not_detector_output_is_refused(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_detections(write(tmp_path, text))


def test_written_files_read_back(tmp_path):
    doc = {"detection_categories": CATEGORIES, "images": [{"file": "x.png", "detections": []}]}
    assert read_detections(write_detections(doc, tmp_path / "out.json")).document == doc
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
