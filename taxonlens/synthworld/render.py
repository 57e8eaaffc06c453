"""Draw one organism: a genome (what the taxon looks like) as a shot (how this photo of it
was taken: :mod:`taxonlens.synthworld.shot`).

Drawing happens at twice the output size and is downsampled, so edges are
antialiased. The organism is built in its own frame, ``u`` along the body and
``v`` across, both in [-1, 1]; the pose maps that frame into the picture, and
patterns are evaluated in the body frame so they turn with the organism.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from taxonlens.synthworld.shot import PLAIN_GREY, SUPERSAMPLE, Colour, Light, Occluder, Pose, Shot, fill
from taxonlens.synthworld.traits import BODY_TONE, MARK_TONE, PATTERN_TONE, TRAITS, Genome, n_parts, secondary_hue


def _ellipse(center: np.ndarray, a: float, b: float, angle: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack([a * np.cos(t), b * np.sin(t)], axis=1)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + center


def _bar(p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-9) * width / 2
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def body_shapes(genome: Genome) -> tuple[list[np.ndarray], np.ndarray]:
    """Polygons of the body (body frame) and the tips of its parts ``[n_tips, 2]``."""
    plan, _, _, parts, prop, _, _ = genome
    n = n_parts(parts)
    aspect, length = prop.params
    phase, wobble = plan.params
    kind = TRAITS[0].categories[plan.category]
    lengths = 1.0 + 0.35 * (wobble - 0.5) * np.cos(np.arange(n) * 2.4)  # uneven parts, per genus
    polys: list[np.ndarray] = []
    tips: list[np.ndarray] = []
    if kind == "radial":
        r0 = 0.28 + 0.1 * aspect
        for i in range(n):
            a = 2 * np.pi * (i + phase) / n
            d = np.array([np.cos(a), np.sin(a)])
            L = (0.3 + 0.35 * length) * lengths[i]
            polys.append(_ellipse(d * (r0 + L / 2), L / 2, min(0.28, 2.6 / n * r0), a, 14))
            tips.append(d * (r0 + L))
        polys.append(_ellipse(np.zeros(2), r0, r0, 0.0))
    elif kind == "elongated":
        b = 0.22 + 0.25 * aspect
        polys.append(_ellipse(np.zeros(2), 0.85, b, 0.0, 24))
        for i, u in enumerate(np.linspace(-0.55, 0.55, n)):
            L = (0.2 + 0.3 * length) * lengths[i]
            tilt = 0.3 * (phase - 0.5)
            for side in (-1, 1):
                p0 = np.array([u, side * b * 0.8])
                p1 = p0 + np.array([tilt, side * L])
                polys.append(_bar(p0, p1, 0.07))
                tips.append(p1)
    elif kind == "star":
        outer, inner = 0.62 + 0.3 * length, 0.2 + 0.2 * aspect
        ang = 2 * np.pi * (np.arange(2 * n) / (2 * n) + phase / n)
        rad = np.where(np.arange(2 * n) % 2 == 0, outer * np.repeat(lengths, 2)[: 2 * n], inner)
        pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)
        polys.append(pts)
        tips.extend(pts[::2])
    elif kind == "branching":
        width = 0.08 + 0.08 * aspect
        polys.append(_bar(np.array([0.0, 0.9]), np.array([0.0, -0.9]), width))
        for i, v in enumerate(np.linspace(0.6, -0.6, n)):
            side = 1 if i % 2 == 0 else -1
            L = (0.3 + 0.35 * length) * lengths[i]
            a = -np.pi / 2 + side * (0.5 + 0.6 * phase)
            p1 = np.array([0.0, v]) + L * np.array([np.cos(a), np.sin(a)])
            polys.append(_bar(np.array([0.0, v]), p1, width * 0.8))
            polys.append(_ellipse(p1, 0.1 + 0.06 * aspect, 0.1 + 0.06 * aspect, 0.0, 10))
            tips.append(p1)
    elif kind == "lobed":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        depth = 0.12 + 0.22 * length
        r = 0.55 + depth * np.cos(n * (t - 2 * np.pi * phase / n))
        squash = 0.6 + 0.4 * aspect
        polys.append(np.stack([r * np.cos(t), squash * r * np.sin(t)], axis=1))
        peaks = 2 * np.pi * (np.arange(n) + phase) / n
        tips.extend(np.stack([(0.55 + depth) * np.cos(peaks), squash * (0.55 + depth) * np.sin(peaks)], axis=1))
    else:  # fan: a scalloped sector opening upwards from a short stalk
        half = 0.45 + 0.6 * aspect
        edge = np.linspace(-half, half, 8 * n + 1)
        scallop = 1.0 + (0.06 + 0.08 * length) * np.abs(np.sin(n * np.pi * (edge + half) / (2 * half)))
        radius = 1.25 * scallop
        apex = np.array([0.0, 0.6])
        arc = apex + np.stack([radius * np.sin(edge), -radius * np.cos(edge)], axis=1)
        polys.append(np.vstack([apex[None], arc]))
        polys.append(_bar(np.array([0.0, 0.55]), np.array([0.0, 0.85]), 0.12))
        rib = np.linspace(-half, half, n)
        tips.extend(apex + 1.25 * np.stack([np.sin(rib), -np.cos(rib)], axis=1))
    return polys, np.asarray(tips, dtype=np.float64).reshape(-1, 2)


def pattern_mask(genome: Genome, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the secondary colour shows, ``[H, W]`` bool, from body-frame coordinates."""
    pattern = genome[2]
    kind = TRAITS[2].categories[pattern.category]
    freq, angle = 2.0 + 3.5 * pattern.params[0], np.pi * pattern.params[1]
    if kind == "plain":
        return np.zeros(u.shape, dtype=bool)
    if kind == "striped":
        return np.sin(np.pi * freq * (u * np.cos(angle) + v * np.sin(angle))) > 0.2
    if kind == "spotted":
        fu, fv = (u * freq) % 1.0 - 0.5, (v * freq + 0.5 * np.floor(u * freq)) % 1.0 - 0.5
        return fu * fu + fv * fv < 0.07
    if kind == "ringed":
        return np.sin(np.pi * freq * np.hypot(u, v) + angle) > 0.3
    if kind == "checkered":
        return np.sin(np.pi * freq * u) * np.sin(np.pi * freq * v) > 0
    return np.abs(np.sin(np.pi * 0.6 * freq * u + angle)) > 0.75  # banded: few broad bands across the body


def _marking_colour(genome: Genome) -> Colour:
    r, g, b = (int(c) for c in MARK_TONE.rgb(genome[6].params[0], 0.0))
    return r, g, b


def marking_polygons(genome: Genome, tips: np.ndarray) -> list[tuple[np.ndarray, Colour]]:
    """The markings' body-frame polygons ``[K, 2]`` and fill colours, in painting order; none
    for an ``edge band``, which follows the painted outline (:func:`_paint_edge_band`).

    Args:
        genome: the organism's traits.
        tips: ``[n_tips, 2]`` the tips of its parts (:func:`body_shapes`).
    """
    marks = genome[6]
    kind = TRAITS[6].categories[marks.category]
    _, size, place = marks.params
    colour = _marking_colour(genome)
    if kind == "edge band":
        return []
    if kind == "tip dots":
        return [(_ellipse(np.asarray(t), 0.07 + 0.05 * size, 0.07 + 0.05 * size, 0.0, 12), colour) for t in tips]
    if kind == "eye spot":
        c = np.array([-0.35 + 0.7 * place, 0.0])
        r_eye = 0.15 + 0.08 * size
        return [(_ellipse(c, r_eye, r_eye, 0.0, 16), colour), (_ellipse(c, r_eye * 0.45, r_eye * 0.45, 0.0, 12),
                                                              (15, 15, 15))]
    if kind == "centre bar":
        a = np.pi * place
        d = 0.45 * np.array([np.cos(a), np.sin(a)])
        return [(_bar(-d, d, 0.09 + 0.07 * size), colour)]
    off, r_spot = 0.18 + 0.25 * place, 0.08 + 0.05 * size  # paired spots
    return [(_ellipse(np.array([x, 0.12]), r_spot, r_spot, 0.0, 12), colour) for x in (-off, off)]


def _paint_edge_band(genome: Genome, mask: Image.Image, canvas: Image.Image) -> None:
    """An edge band around the painted outline ``mask``, 3 to 7 pixels wide."""
    width = 3 + 2 * int(genome[6].params[1] * 2)
    ring = np.asarray(mask.filter(ImageFilter.MaxFilter(width)), dtype=np.int16) - np.asarray(mask, dtype=np.int16)
    band = Image.fromarray((ring > 0).astype(np.uint8) * 255, "L")
    canvas.paste(Image.new("RGB", canvas.size, _marking_colour(genome)), (0, 0), band)


def paint(canvas: Image.Image, genome: Genome, pose: Pose, occluder: Occluder | None = None) -> Image.Image:
    """Paint an organism with ``genome`` at ``pose`` onto ``canvas`` (in place), then ``occluder``
    (a leaf or stone in front) if any.

    Returns:
        the organism's mask on the canvas (mode ``L``, 255 where its body is drawn).
    """
    width, height = canvas.size
    polys, tips = body_shapes(genome)
    mask = Image.new("L", (width, height), 0)
    mdraw = ImageDraw.Draw(mask)
    for poly in polys:
        mdraw.polygon(pose.to_image(poly), fill=255)
    body, pcol = genome[1], genome[5]
    u, v = pose.body_frame(width, height)
    second = pattern_mask(genome, u, v)[..., None]
    base_rgb = BODY_TONE.rgb(*body.params)
    pat_rgb = PATTERN_TONE.rgb(secondary_hue(body, pcol), pcol.params[1])
    skin = np.where(second, pat_rgb, base_rgb).astype(np.uint8)
    canvas.paste(Image.fromarray(skin, "RGB"), (0, 0), mask)
    draw = ImageDraw.Draw(canvas)
    marks = marking_polygons(genome, tips)
    if not marks:
        _paint_edge_band(genome, mask, canvas)
    for poly, colour in marks:
        draw.polygon(pose.to_image(poly), fill=colour)
    if occluder is not None:
        draw.ellipse(occluder.box(), fill=fill(occluder.hls))
    return mask


def develop(canvas: Image.Image, light: Light | None, rng: np.random.Generator) -> Image.Image:
    """The photo of a supersampled ``canvas``: downsampled by :data:`SUPERSAMPLE` (antialiased),
    then lit by ``light`` with sensor noise drawn from ``rng`` (as it is without a light)."""
    img = canvas.resize((canvas.width // SUPERSAMPLE, canvas.height // SUPERSAMPLE), Image.Resampling.BOX)
    if light is None:
        return img
    arr = light.apply(np.asarray(img, dtype=np.float32))
    arr += rng.normal(0.0, light.noise, arr.shape)  # sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(genome: Genome, shot: Shot, rng: np.random.Generator) -> Image.Image:
    """The RGB photo (``shot.side / SUPERSAMPLE`` square) of an organism with ``genome`` taken as
    ``shot`` (:func:`~taxonlens.synthworld.shot.draw_shot`), with sensor noise from ``rng``."""
    side = shot.side
    canvas = shot.backdrop.paint() if shot.backdrop is not None else Image.new("RGB", (side, side), PLAIN_GREY)
    paint(canvas, genome, shot.pose, shot.occluder)
    return develop(canvas, shot.light, rng)
