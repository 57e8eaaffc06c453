"""How one photo is taken: its nuisance, drawn apart from the picture.

A :class:`Shot` holds everything random about a photo but its sensor noise: the pose, the
backdrop, a leaf or stone in front and the light. :func:`draw_shot` draws one from the photo's
generator in a few dozen scalar draws;
:func:`~taxonlens.synthworld.render.render` paints a genome under it and then draws the sensor
noise from the same generator. So what a photo shows
(:func:`~taxonlens.synthworld.observe.observe`) is known without painting it, and the pixels
are those the generator always gave.

Coordinates are canvas pixels: the photo's side times :data:`SUPERSAMPLE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from taxonlens.synthworld.traits import hls_rgb

SUPERSAMPLE = 2
OCCLUSION = 0.35  # chance of a leaf or stone in front, at full nuisance
PLAIN_GREY = (200, 200, 200)  # the backdrop without nuisance

Colour = tuple[int, int, int]
HLS = tuple[float, float, float]  # hue, lightness, saturation in [0, 1]


def fill(hls: HLS) -> Colour:
    """The RGB fill (0..255 integers) of an HLS colour."""
    r, g, b = (int(c) for c in hls_rgb(*hls))
    return r, g, b


@dataclass(frozen=True)
class Pose:
    """Where the organism sits: rotation (radians), scale (fraction of the frame) and centre (pixels)."""

    angle: float
    scale: float
    cx: float
    cy: float
    radius: float  # pixels per body unit

    def pixels(self, pts: np.ndarray) -> np.ndarray:
        """Body-frame points ``[N, 2]`` -> image pixel coordinates ``[N, 2]``."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        x = self.cx + self.radius * (c * pts[:, 0] - s * pts[:, 1])
        y = self.cy + self.radius * (s * pts[:, 0] + c * pts[:, 1])
        return np.stack([x, y], axis=1)

    def to_image(self, pts: np.ndarray) -> list[tuple[float, float]]:
        """Body-frame points ``[N, 2]`` -> image pixel coordinates, as PIL takes them."""
        return [(x, y) for x, y in self.pixels(pts).tolist()]

    def body_frame(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Body-frame coordinates ``(u, v)``, each ``[height, width]``, of every pixel."""
        y, x = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
        dx, dy = (x - self.cx) / self.radius, (y - self.cy) / self.radius
        c, s = np.cos(self.angle), np.sin(self.angle)
        return c * dx + s * dy, -s * dx + c * dy


@dataclass(frozen=True)
class Clutter:
    """A piece of backdrop clutter: a pebble or leaf (an ellipse in the box ``points``
    ``(x0, y0, x1, y1)``) when ``width`` is 0, else a twig (a line from ``(x0, y0)`` to
    ``(x1, y1)``, ``width`` pixels wide); coloured ``hls``."""

    points: tuple[float, float, float, float]
    hls: HLS
    width: int


@dataclass(frozen=True)
class Backdrop:
    """A ``size`` (width, height) backdrop: a ramp from ``base`` (top) to ``tilt`` (bottom), HLS
    colours, under ``clutter``. Colours are kept as drawn and turned into RGB when painted."""

    size: tuple[int, int]
    base: HLS
    tilt: HLS
    clutter: tuple[Clutter, ...]

    def paint(self) -> Image.Image:
        """The backdrop as an RGB image."""
        width, height = self.size
        base, tilt = hls_rgb(*self.base), hls_rgb(*self.tilt)
        ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        img = Image.fromarray((base * (1 - ramp) + tilt * ramp).repeat(width, axis=1).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for c in self.clutter:
            if c.width:
                draw.line([c.points[:2], c.points[2:]], fill=fill(c.hls), width=c.width)
            else:
                draw.ellipse(list(c.points), fill=fill(c.hls))
        return img


@dataclass(frozen=True)
class Occluder:
    """A leaf or stone in front of the organism: an ellipse centred at ``(cx, cy)``, ``r`` pixels
    wide and ``0.6 r`` high (half-axes), coloured ``hls``."""

    cx: float
    cy: float
    r: float
    hls: HLS

    def box(self) -> list[float]:
        """Its bounding box ``[x0, y0, x1, y1]``."""
        return [self.cx - self.r, self.cy - self.r * 0.6, self.cx + self.r, self.cy + self.r * 0.6]

    def hides(self, xy: np.ndarray) -> np.ndarray:
        """Which pixel positions ``[N, 2]`` it covers, bool ``[N]``."""
        dx, dy = (xy[:, 0] - self.cx) / self.r, (xy[:, 1] - self.cy) / (self.r * 0.6)
        return dx * dx + dy * dy < 1.0


@dataclass(frozen=True)
class Light:
    """The photo's light: a per-channel colour ``cast`` ``[3]`` times an ``exposure``, and the
    sensor ``noise`` (standard deviation, 0..255 units)."""

    cast: tuple[float, float, float]
    exposure: float
    noise: float

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Colours ``[..., 3]`` (0..255) as this light shows them, float64, before noise and
        clipping."""
        return rgb * np.asarray(self.cast) * self.exposure


@dataclass(frozen=True)
class Shot:
    """How one photo was taken: everything drawn about it but its sensor noise.

    Attributes:
        side: canvas side in pixels (the photo's side x :data:`SUPERSAMPLE`).
        pose: where the organism sits.
        backdrop: behind it (``None``: plain grey, no nuisance).
        occluder: a leaf or stone in front of it, or ``None``.
        light: exposure, colour cast and noise (``None``: as painted, no noise).
    """

    side: int
    pose: Pose
    backdrop: Backdrop | None
    occluder: Occluder | None
    light: Light | None

    def in_view(self, xy: np.ndarray) -> np.ndarray:
        """Which pixel positions ``[N, 2]`` the photo shows (inside the frame, not behind the
        occluder), bool ``[N]``."""
        inside = ((xy >= 0) & (xy < self.side)).all(axis=1)
        return inside & ~self.occluder.hides(xy) if self.occluder is not None else inside


def _colour(rng: np.random.Generator, lightness: tuple[float, float], saturation: tuple[float, float]) -> HLS:
    """A random hue at a random lightness and saturation in the given ranges."""
    return float(rng.random()), float(rng.uniform(*lightness)), float(rng.uniform(*saturation))


def _uniform(low: float, high: float, u: float) -> float:
    """``rng.uniform(low, high)`` from the ``rng.random()`` draw ``u`` (numpy's own arithmetic), so
    several uniform draws can be taken as one ``rng.random(n)``."""
    return low + (high - low) * u


def draw_backdrop(rng: np.random.Generator, width: int, height: int) -> Backdrop:
    """A ``width x height`` backdrop: a colour ramp from top to bottom and 4 to 12 pieces of
    clutter (leaves, pebbles, twigs) sized to the shorter side.

    Each piece takes its draws a few at a time (the same stream as one draw each, faster)."""
    scale = min(width, height)
    base = _colour(rng, (0.3, 0.75), (0.05, 0.4))
    tilt = _colour(rng, (0.3, 0.75), (0.05, 0.4))
    clutter = []
    for _ in range(int(rng.integers(4, 13))):
        hue, light, sat, x, y, kind = rng.random(6).tolist()
        colour = (hue, _uniform(0.2, 0.8, light), _uniform(0.1, 0.7, sat))
        x, y = x * width, y * height
        a, b = rng.random(2).tolist()
        if kind < 0.5:  # a pebble or leaf
            r = _uniform(0.03, 0.12, a) * scale
            clutter.append(Clutter((x - r, y - r * _uniform(0.4, 1, b), x + r, y + r), colour, 0))
        else:  # a twig
            end = (x + _uniform(-0.25, 0.25, a) * scale, y + _uniform(-0.25, 0.25, b) * scale)
            clutter.append(Clutter((x, y, *end), colour, int(rng.integers(1, 4)) * SUPERSAMPLE))
    return Backdrop((width, height), base, tilt, tuple(clutter))


def draw_occluder(rng: np.random.Generator, pose: Pose, nuisance: float = 1.0) -> Occluder | None:
    """A leaf or stone in front of an organism at ``pose``, with probability
    ``OCCLUSION * nuisance`` (none and no draw at nuisance 0)."""
    if nuisance <= 0 or rng.random() >= OCCLUSION * nuisance:
        return None
    c = np.array([pose.cx, pose.cy]) + rng.uniform(-0.45, 0.45, 2) * pose.radius * 2
    r = rng.uniform(0.15, 0.3) * pose.radius * 2
    return Occluder(float(c[0]), float(c[1]), float(r), _colour(rng, (0.2, 0.6), (0.1, 0.5)))


def draw_light(rng: np.random.Generator, nuisance: float = 1.0) -> Light | None:
    """A random colour cast (each channel x 1 +- 0.15 nuisance), exposure (x 1 +- 0.2 nuisance)
    and noise level (1 to 8 x nuisance); ``None`` and no draw at nuisance 0."""
    if nuisance <= 0:
        return None
    k = nuisance
    cast = rng.uniform(1 - 0.15 * k, 1 + 0.15 * k, 3)
    exposure = float(rng.uniform(1 - 0.2 * k, 1 + 0.2 * k))
    r, g, b = cast.tolist()
    return Light((r, g, b), exposure, float(rng.uniform(1.0, 8.0) * k))


def draw_shot(rng: np.random.Generator, size: int, nuisance: float = 1.0) -> Shot:
    """The nuisance of one ``size x size`` photo: 0 gives a centred organism on a plain
    background in plain light; 1 the full variation of pose, backdrop, occlusion and light."""
    res = size * SUPERSAMPLE
    k = nuisance
    pose = Pose(
        angle=float(rng.uniform(-0.7, 0.7) * k),
        scale=(s := float(1.0 - rng.uniform(0.0, 0.35) * k)),
        cx=float(res / 2 + rng.uniform(-0.12, 0.12) * res * k),
        cy=float(res / 2 + rng.uniform(-0.12, 0.12) * res * k),
        radius=0.4 * res * s,
    )
    backdrop = draw_backdrop(rng, res, res) if k > 0 else None
    return Shot(res, pose, backdrop, draw_occluder(rng, pose, k), draw_light(rng, k))


__all__ = ["SUPERSAMPLE", "Backdrop", "Clutter", "Light", "Occluder", "Pose", "Shot", "draw_backdrop",
           "draw_light", "draw_occluder", "draw_shot"]
