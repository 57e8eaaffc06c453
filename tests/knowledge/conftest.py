"""A small written synthworld and a scripted answerer that knows its true attribute values."""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import pytest

from taxonlens.data import load_image, read_manifest
from taxonlens.synthworld import SynthWorld, random_taxonomy

_ASKED = re.compile(r"^What is the (.+) of the \w+ in this image\?")


@pytest.fixture(scope="session")
def world_manifest(tmp_path_factory) -> Path:
    """Manifest of 6 species x 2 photos of 32 px, every record with what its photo shows."""
    world = SynthWorld.create(random_taxonomy(6, seed=3), 6, 2, 0.0, 32, seed=3)
    return world.write(tmp_path_factory.mktemp("world"))


def pixels_key(image) -> str:
    return hashlib.blake2b(image.tobytes(), digest_size=8).hexdigest()


class ScriptedAnswerer:
    """Answers extraction questions from what the photo it is shown shows (its record's values).

    Args:
        manifest: the photos it knows (by their pixels).
        style: how an answer is phrased from the truth, ``style(attribute, value) -> text``.
        fail_after: raise after this many ``generate`` calls (a crash mid-run).
    """

    def __init__(self, manifest: Path, style=lambda a, v: v, fail_after: int | None = None):
        self.truth = {pixels_key(load_image(r.image)): dict(r.attributes) for r in read_manifest(manifest)}
        self.style, self.fail_after = style, fail_after
        self.calls: list[int] = []  # questions per call

    def fingerprint(self):
        return "scripted"

    def generate(self, images, questions, max_new_tokens=16, system=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        assert len(images) == len(questions)
        self.calls.append(len(questions))
        answers = []
        for image, q in zip(images, questions):
            asked = _ASKED.match(q)
            truth = self.truth[pixels_key(image)]
            answers.append(self.style(asked.group(1), truth.get(asked.group(1), "unknown")) if asked else "")
        return answers


@pytest.fixture
def scripted(world_manifest):
    """``scripted(style=..., fail_after=...)``: a :class:`ScriptedAnswerer` of the world's photos."""
    return functools.partial(ScriptedAnswerer, world_manifest)
