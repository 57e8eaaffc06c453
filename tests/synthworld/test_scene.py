"""Camera-trap scenes: organisms of known species inside their boxes, the truth of each photo, and
a MegaDetector file whose true boxes match the organisms and whose false boxes miss them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from taxonlens.data import load_image
from taxonlens.data.megadetector import read_detections
from taxonlens.errors import DataError
from taxonlens.synthworld import SynthWorld, random_taxonomy
from taxonlens.synthworld.scene import FALSE_CONF, TRUE_CONF, SceneSet, box_iou


@pytest.fixture(scope="module")
def scenes():
    world = SynthWorld.create(random_taxonomy(10, seed=2), 10, 2, novel_fraction=0.2, size=32, seed=2, nuisance=0.5)
    return SceneSet(world, n_scenes=12, width=96, height=72, false_boxes=1.0, seed=3)


@pytest.fixture(scope="module")
def written(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return out, scenes.write(out)


def test_scenes_hold_one_to_four_seen_organisms_with_their_truth(scenes):
    tax = scenes.world.taxonomy
    counts = []
    for i in range(scenes.n_scenes):
        scene = scenes.scene(i)
        assert scene.image.size == (96, 72) and 1 <= len(scene.organisms) <= 4
        leaves = {o.leaf for o in scene.organisms}
        assert not leaves & scenes.world.novel
        paths = [tax.path_names(int(tax.leaves[leaf])) for leaf in leaves]
        depth = next((d for d in range(len(paths[0])) if len({p[d] for p in paths}) > 1), len(paths[0]))
        assert scene.path == paths[0][:depth]  # the species, or the deepest taxon they share
        for a in scene.organisms:
            assert all(0 <= v <= 1 for v in a.bbox) and a.bbox[2] > 0 and a.bbox[3] > 0
            assert all(box_iou(a.bbox, b.bbox) < 0.2 for b in scene.organisms if b is not a)
        counts.append(len(scene.organisms))
    assert len(set(counts)) > 1
    again = scenes.scene(5)
    assert np.array_equal(np.asarray(again.image), np.asarray(scenes.scene(5).image))


def test_organisms_stand_out_inside_their_boxes(scenes):
    """A painted organism changes the pixels of its box: the box differs from the same scene's
    backdrop at the same place more than a random box of the backdrop does from itself."""
    scene = scenes.scene(0)
    img = np.asarray(scene.image, dtype=np.float32)
    h, w = img.shape[:2]
    for o in scene.organisms:
        x, y, bw, bh = o.bbox
        inside = img[int(y * h):int((y + bh) * h) + 1, int(x * w):int((x + bw) * w) + 1]
        assert inside.std(axis=(0, 1)).mean() > 10  # a patterned body, not a flat backdrop


def test_the_detector_file_matches_the_organisms(scenes, written):
    out, path = written
    md = read_detections(path)
    truth = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert len(md.images) == len(truth) == scenes.n_scenes and all(not im.problems for im in md.images)
    false = 0
    for image, t in zip(md.images, truth):
        assert image.file == t["file"] and load_image(out / image.file).size == (96, 72)
        confs = [d.conf for d in image.detections]
        assert confs == sorted(confs, reverse=True)
        mine = {o["detection"] for o in t["organisms"]}
        for o in t["organisms"]:
            det = image.detections[o["detection"]]
            assert box_iou(det.bbox, o["bbox"]) > 0.5 and TRUE_CONF[0] <= det.conf <= TRUE_CONF[1]
        for d in image.detections:
            if d.index not in mine:
                false += 1
                assert FALSE_CONF[0] <= d.conf <= FALSE_CONF[1]
                assert all(box_iou(d.bbox, o["bbox"]) < 0.05 for o in t["organisms"])
    assert false > 0


def test_rewriting_keeps_the_photos_and_bad_settings_are_refused(scenes, written):
    out, path = written
    before = (out / scenes.file_name(0)).stat().st_mtime_ns
    assert scenes.write(out) == path and (out / scenes.file_name(0)).stat().st_mtime_ns == before
    with pytest.raises(DataError, match="1 to 4 organisms"):
        SceneSet(scenes.world, max_organisms=5)
