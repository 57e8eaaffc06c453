"""Draw one organism: a genome (what the taxon looks like) under a random
nuisance (how this photo of it was taken).

Drawing happens at twice the output size and is downsampled, so edges are
antialiased. The organism is built in its own frame, ``u`` along the body and
``v`` across, both in [-1, 1]; the pose maps that frame into the picture, and
patterns are evaluated in the body frame so they turn with the organism.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from taxonlens.synthworld.traits import TRAITS, Genome, n_parts, secondary_hue

SUPERSAMPLE = 2


@dataclass(frozen=True)
class Pose:
    """Where the organism sits: rotation (radians), scale (fraction of the frame) and centre (pixels)."""

    angle: float
    scale: float
    cx: float
    cy: float
    radius: float  # pixels per body unit

    def to_image(self, pts: np.ndarray) -> list[tuple[float, float]]:
        """Body-frame points ``[N, 2]`` -> image pixel coordinates."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        x = self.cx + self.radius * (c * pts[:, 0] - s * pts[:, 1])
        y = self.cy + self.radius * (s * pts[:, 0] + c * pts[:, 1])
        return list(zip(x.tolist(), y.tolist()))

    def body_frame(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Body-frame coordinates ``(u, v)``, each ``[height, width]``, of every pixel."""
        y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
        dx, dy = (x - self.cx) / self.radius, (y - self.cy) / self.radius
        c, s = np.cos(self.angle), np.sin(self.angle)
        return c * dx + s * dy, -s * dx + c * dy


def _rgb(h: float, lightness: float, saturation: float) -> np.ndarray:
    return np.asarray(colorsys.hls_to_rgb(h % 1.0, lightness, saturation), dtype=np.float32) * 255.0


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


def _draw_markings(draw: ImageDraw.ImageDraw, genome: Genome, pose: Pose, tips: np.ndarray,
                   mask: Image.Image, canvas: Image.Image) -> None:
    marks = genome[6]
    kind = TRAITS[6].categories[marks.category]
    hue, size, place = marks.params
    colour = tuple(int(c) for c in _rgb(hue, 0.5, 1.0))
    if kind == "edge band":
        width = 3 + 2 * int(size * 2)
        ring = np.asarray(mask.filter(ImageFilter.MaxFilter(width)), dtype=np.int16) - np.asarray(mask, dtype=np.int16)
        band = Image.fromarray((ring > 0).astype(np.uint8) * 255, "L")
        canvas.paste(Image.new("RGB", canvas.size, colour), (0, 0), band)
        return
    if kind == "tip dots":
        spots = [(t, 0.07 + 0.05 * size) for t in tips]
    elif kind == "eye spot":
        c = np.array([-0.35 + 0.7 * place, 0.0])
        r = 0.15 + 0.08 * size
        draw.polygon(pose.to_image(_ellipse(c, r, r, 0.0, 16)), fill=colour)
        spots, colour = [(c, r * 0.45)], (15, 15, 15)
    elif kind == "centre bar":
        a = np.pi * place
        d = 0.45 * np.array([np.cos(a), np.sin(a)])
        draw.polygon(pose.to_image(_bar(-d, d, 0.09 + 0.07 * size)), fill=colour)
        return
    else:  # paired spots
        off = 0.18 + 0.25 * place
        spots = [(np.array([-off, 0.12]), 0.08 + 0.05 * size), (np.array([off, 0.12]), 0.08 + 0.05 * size)]
    for c, r in spots:
        draw.polygon(pose.to_image(_ellipse(np.asarray(c), r, r, 0.0, 12)), fill=colour)


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A ``width x height`` backdrop: a colour ramp from top to bottom and 4 to 12 pieces of
    clutter (leaves, pebbles, twigs) sized to the shorter side."""
    scale = min(width, height)
    base = _rgb(rng.random(), rng.uniform(0.3, 0.75), rng.uniform(0.05, 0.4))
    tilt = _rgb(rng.random(), rng.uniform(0.3, 0.75), rng.uniform(0.05, 0.4))
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = Image.fromarray((base * (1 - ramp) + tilt * ramp).repeat(width, axis=1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 13))):  # clutter: leaves, pebbles, twigs
        colour = tuple(int(c) for c in _rgb(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.7)))
        c = rng.uniform(0, 1, 2) * np.array([width, height])
        if rng.random() < 0.5:
            r = rng.uniform(0.03, 0.12) * scale
            draw.ellipse([c[0] - r, c[1] - r * rng.uniform(0.4, 1), c[0] + r, c[1] + r], fill=colour)
        else:
            e = c + rng.uniform(-0.25, 0.25, 2) * scale
            draw.line([tuple(c), tuple(e)], fill=colour, width=int(rng.integers(1, 4)) * SUPERSAMPLE)
    return img


def paint(canvas: Image.Image, genome: Genome, pose: Pose, rng: np.random.Generator,
          nuisance: float = 1.0) -> Image.Image:
    """Paint an organism with ``genome`` at ``pose`` onto ``canvas`` (in place), partly hidden by a
    leaf or stone in front with probability ``0.35 * nuisance``.

    Returns:
        the organism's mask on the canvas (mode ``L``, 255 where its body is drawn).
    """
    k = nuisance
    width, height = canvas.size
    polys, tips = body_shapes(genome)
    mask = Image.new("L", (width, height), 0)
    mdraw = ImageDraw.Draw(mask)
    for poly in polys:
        mdraw.polygon(pose.to_image(poly), fill=255)
    body, pcol = genome[1], genome[5]
    u, v = pose.body_frame(width, height)
    second = pattern_mask(genome, u, v)[..., None]
    base_rgb = _rgb(body.params[0], 0.3 + 0.4 * body.params[1], 0.75)
    pat_rgb = _rgb(secondary_hue(body, pcol), 0.2 + 0.6 * pcol.params[1], 0.8)
    skin = np.where(second, pat_rgb, base_rgb).astype(np.uint8)
    canvas.paste(Image.fromarray(skin, "RGB"), (0, 0), mask)
    draw = ImageDraw.Draw(canvas)
    _draw_markings(draw, genome, pose, tips, mask, canvas)
    if k > 0 and rng.random() < 0.35 * k:  # partial occlusion by a leaf or stone in front
        c = np.array([pose.cx, pose.cy]) + rng.uniform(-0.45, 0.45, 2) * pose.radius * 2
        r = rng.uniform(0.15, 0.3) * pose.radius * 2
        colour = tuple(int(x) for x in _rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.1, 0.5)))
        draw.ellipse([c[0] - r, c[1] - r * 0.6, c[0] + r, c[1] + r * 0.6], fill=colour)
    return mask


def develop(canvas: Image.Image, rng: np.random.Generator, nuisance: float = 1.0) -> Image.Image:
    """The photo of a supersampled ``canvas``: downsampled by :data:`SUPERSAMPLE` (antialiased),
    then, under nuisance, a random exposure and colour cast and sensor noise."""
    k = nuisance
    img = canvas.resize((canvas.width // SUPERSAMPLE, canvas.height // SUPERSAMPLE), Image.Resampling.BOX)
    if k == 0:
        return img
    arr = np.asarray(img, dtype=np.float32)
    arr = arr * rng.uniform(1 - 0.15 * k, 1 + 0.15 * k, 3) * rng.uniform(1 - 0.2 * k, 1 + 0.2 * k)  # light
    arr += rng.normal(0.0, rng.uniform(1.0, 8.0) * k, arr.shape)  # sensor noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(genome: Genome, rng: np.random.Generator, size: int = 64, nuisance: float = 1.0) -> Image.Image:
    """An RGB image ``size x size`` of an organism with ``genome`` under random nuisance.

    Args:
        genome: the organism's traits (see :mod:`taxonlens.synthworld.traits`).
        rng: source of this photo's nuisance (pose, background, lighting, noise, occlusion).
        size: output side in pixels.
        nuisance: 0 gives a centred organism on a plain background; 1 the full variation.
    """
    res = size * SUPERSAMPLE
    k = nuisance
    pose = Pose(
        angle=float(rng.uniform(-0.7, 0.7) * k),
        scale=(s := float(1.0 - rng.uniform(0.0, 0.35) * k)),
        cx=float(res / 2 + rng.uniform(-0.12, 0.12) * res * k),
        cy=float(res / 2 + rng.uniform(-0.12, 0.12) * res * k),
        radius=0.4 * res * s,
    )
    canvas = background(rng, res, res) if k > 0 else Image.new("RGB", (res, res), (200, 200, 200))
    paint(canvas, genome, pose, rng, k)
    return develop(canvas, rng, k)
