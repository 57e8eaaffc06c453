"""The image-level rollup: agreeing boxes reinforce, disagreeing ones meet at their lowest common
ancestor, a box the detector doubts does not pull a confident answer up."""

from __future__ import annotations

import math

import pytest
import torch

from taxonlens.predict.rollup import rollup
from taxonlens.recognize.decode import TreeDecoder
from taxonlens.taxonomy import Taxonomy

TAX = Taxonomy.from_paths([("Rosaceae", "Rosa", "Rosa canina"), ("Rosaceae", "Rosa", "Rosa rugosa"),
                           ("Rosaceae", "Prunus", "Prunus avium"), ("Asteraceae", "Bellis", "Bellis perennis")],
                          ranks=["family", "genus", "species"])


def boxes(*rows: list[float], thresholds=None):
    decoder = TreeDecoder(TAX, thresholds)
    probs = torch.tensor(rows)
    return decoder, probs, decoder.decode(probs, top_k=3)


def test_agreeing_boxes_reinforce():
    decoder, probs, preds = boxes([0.6, 0.2, 0.1, 0.1], [0.6, 0.3, 0.05, 0.05])
    out = rollup(decoder, probs, preds, [0.9, 0.8])
    assert out.prediction.path == ("Rosaceae", "Rosa", "Rosa canina") and (out.boxes, out.agreeing) == (2, 2)
    assert out.prediction.confidence["species"] == pytest.approx(1 - 0.4 * 0.4)  # above either box's 0.6
    assert out.prediction.confidence["genus"] == pytest.approx(1 - 0.2 * 0.1)
    assert out.prediction.alternatives == []


def test_disagreeing_boxes_are_reported_at_their_lowest_common_ancestor():
    decoder, probs, preds = boxes([0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1])
    out = rollup(decoder, probs, preds, [0.8, 0.8])
    assert out.prediction.path == ("Rosaceae",) and out.agreeing == 2
    assert out.prediction.confidence == {"family": pytest.approx(1 - 0.1 * 0.1)}
    assert {a[0][-1] for a in out.prediction.alternatives} == {"Rosa canina", "Prunus avium"}
    alt = dict(out.prediction.alternatives)
    assert alt[("Rosaceae", "Rosa", "Rosa canina")] == pytest.approx(1 - 0.3 * 0.9)


def test_confident_boxes_that_disagree_meet_at_their_common_ancestor_whatever_their_confidences():
    decoder, probs, preds = boxes([0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1])
    assert rollup(decoder, probs[:2], preds[:2], [0.95, 0.6]).prediction.path == ("Rosaceae", "Rosa")
    all_sure = rollup(decoder, probs, preds, [1.0, 1.0, 1.0])  # no detector confidences: the LCA of all
    assert all_sure.prediction.path == ("Rosaceae", "Rosa") and all_sure.agreeing == 3


def test_a_box_the_detector_doubts_does_not_pull_the_answer_up():
    decoder, probs, preds = boxes([0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7])
    out = rollup(decoder, probs, preds, [0.9, 0.9, 0.3])  # the third: a box on the background
    assert out.prediction.path[-1] == "Rosa canina" and (out.boxes, out.agreeing) == (3, 2)
    assert out.prediction.confidence["species"] == pytest.approx(1 - 0.3 * 0.4)
    equal = rollup(decoder, probs[[0, 2]], [preds[0], preds[2]], [0.5, 0.5])
    assert equal.prediction is None and equal.agreeing == 2  # across families: only the root is shared


def test_back_off_applies_to_the_rolled_up_confidence():
    decoder, probs, preds = boxes([0.5, 0.3, 0.1, 0.1], [0.5, 0.3, 0.1, 0.1], thresholds={"species": 0.7})
    assert preds[0].rank_reached == "genus"  # each box alone: 0.5 < 0.7
    out = rollup(decoder, probs, preds, [1.0, 1.0])
    assert out.prediction.path == ("Rosaceae", "Rosa") and out.prediction.rank_reached == "genus"
    assert math.isclose(out.prediction.confidence["genus"], 1 - 0.2 * 0.2, rel_tol=1e-6)
    assert rollup(decoder, probs[:0], [], []).prediction is None
