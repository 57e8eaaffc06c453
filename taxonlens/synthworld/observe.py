"""What one photo shows of its organism: the attributes an observer reads from it.

A photo's attributes are evidence about its species, not the species' name in other words
(:func:`~taxonlens.synthworld.traits.attributes` gives that truth). From the genome and the
photo's :class:`~taxonlens.synthworld.shot.Shot`, without painting it:

- hidden parts are not described: the ``markings`` and ``marking colour`` are left out when at
  most half of the markings' outline points are in view (behind the occluder or out of frame),
  and the ``pattern colour`` of a plain organism, which no photo shows;
- colours are named as lit: the painted colour under the photo's colour cast and exposure, read
  with the observer's slips (hue :data:`HUE_SLIP`, HLS lightness :data:`LIGHTNESS_SLIP`, standard
  deviations), so a colour near a word's edge gets the neighbouring hue or lightness word;
- the parts are miscounted by one with probability :data:`MISCOUNT`, or one too few with
  :data:`MISCOUNT_HIDDEN` when a part's tip is out of view.

An attribute not shown is absent from the mapping (not empty), so
:func:`~taxonlens.knowledge.accuracy.extraction_accuracy` scores extractions only where the
photo shows the value.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np

from taxonlens.synthworld.render import body_shapes, marking_polygons
from taxonlens.synthworld.shot import Shot
from taxonlens.synthworld.traits import (
    BODY_TONE,
    MARK_TONE,
    PATTERN_TONE,
    TRAITS,
    Genome,
    Tone,
    attributes,
    n_parts,
    secondary_hue,
)

HUE_SLIP = 0.015
LIGHTNESS_SLIP = 0.04
MISCOUNT = 0.1
MISCOUNT_HIDDEN = 0.4


@lru_cache(maxsize=4096)
def landmarks(genome: Genome) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame points ``([M, 2], [T, 2])``: the outline of the markings (of the body for an
    edge band) and the tips of the parts. Cached per genome; read-only."""
    polys, tips = body_shapes(genome)
    marks = [poly for poly, _ in marking_polygons(genome, tips)] or polys
    points = np.concatenate(marks, axis=0)
    points.setflags(write=False)
    tips.setflags(write=False)
    return points, tips


def _seen_colour(tone: Tone, hue: float, p: float, shot: Shot, slip: np.ndarray) -> str:
    """The word for a colour of ``tone`` painted from ``(hue, p)`` as ``shot``'s light shows it,
    read with ``slip`` ``[2]`` (standard normal: hue, lightness)."""
    rgb = tone.rgb(hue, p) if shot.light is None else np.clip(shot.light.apply(tone.rgb(hue, p)), 0, 255)
    h, lightness, _ = colorsys.rgb_to_hls(*(rgb / 255.0).tolist())
    return tone.word(h + HUE_SLIP * slip[0], tone.level(lightness + LIGHTNESS_SLIP * slip[1]))


def observe(genome: Genome, shot: Shot, rng: np.random.Generator) -> dict[str, str]:
    """The attributes (name -> value) a photo taken as ``shot`` shows of an organism with
    ``genome``, in :func:`~taxonlens.synthworld.traits.attributes`' order, the observer's slips
    drawn from ``rng`` (see the module docstring)."""
    _, body, pattern, parts, _, pcol, marks = genome
    seen = attributes(genome)
    slip = rng.standard_normal(6)
    count_draw, sign_draw = rng.random(2)
    seen["body colour"] = _seen_colour(BODY_TONE, body.params[0], body.params[1], shot, slip[0:2])
    if TRAITS[2].categories[pattern.category] == "plain":
        del seen["pattern colour"]
    else:
        seen["pattern colour"] = _seen_colour(PATTERN_TONE, secondary_hue(body, pcol), pcol.params[1], shot, slip[2:4])
    mark_points, tips = landmarks(genome)
    in_view = shot.in_view(shot.pose.pixels(np.concatenate([mark_points, tips])))
    if in_view[: len(mark_points)].mean() <= 0.5:
        del seen["markings"], seen["marking colour"]
    else:
        seen["marking colour"] = _seen_colour(MARK_TONE, marks.params[0], 0.0, shot, slip[4:6])
    hidden = not in_view[len(mark_points):].all()
    n = n_parts(parts)
    if count_draw < (MISCOUNT_HIDDEN if hidden else MISCOUNT):
        n += -1 if hidden or sign_draw < 0.5 else 1
    seen["number of parts"] = str(n)
    return seen


__all__ = ["HUE_SLIP", "LIGHTNESS_SLIP", "MISCOUNT", "MISCOUNT_HIDDEN", "landmarks", "observe"]
