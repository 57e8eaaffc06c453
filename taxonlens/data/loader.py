"""Photo files to model inputs in batches, read, decoded and preprocessed in DataLoader workers.

:class:`PhotoLoader` is the one loading path of ``predict``, ``embed``, ``calibrate`` and
``index build``: a torch :class:`~torch.utils.data.DataLoader` whose workers (``workers`` of them;
0 reads in this process) decode each file with :func:`~taxonlens.data.images.load_image` and run
the encoder's transform, while the model encodes the batch before. Batches come back in file
order; an unreadable file travels back as its reason (a worker never raises for it), so a bad
file is a row with an error as before, never the end of a run. Batches are pinned in page-locked
memory when the model is on a CUDA GPU, so that their copy to it can overlap the next batch.

:meth:`PhotoLoader.run` turns an out-of-memory failure of a batch into an error that names the
largest batch size that does fit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch
from PIL import Image

from taxonlens.data.images import load_image
from taxonlens.errors import ImageError, TaxonlensError
from taxonlens.models.device import release_memory
from taxonlens.models.encoders import Encoder

T = TypeVar("T")


def default_workers() -> int:
    """Loader workers for this machine: half the cores this process may use (the other half
    encode), at most 8; 0 (read in this process) on a single core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cores // 2)


class PhotoBatch(NamedTuple):
    """One batch of :meth:`PhotoLoader.batches`.

    Attributes:
        paths: the batch's files, in the order given.
        read: positions in ``paths`` of the files that could be read, in order.
        pixels: float ``[len(read), 3, H, W]``: their model inputs (pinned for a CUDA model).
        images: their decoded RGB images when asked for (a reranker looks at them), else empty.
        failures: one :class:`~taxonlens.errors.ImageError` per unreadable file, in order.
    """

    def head(self, n: int) -> PhotoBatch:
        """The batch cut after its first ``n`` readable photos (what :meth:`PhotoLoader.run` tries)."""
        read = self.read[:n]
        end = read[-1] + 1 if read else 0
        unread = [k for k in range(len(self.paths)) if k not in set(self.read)]  # the failures' positions
        return PhotoBatch(self.paths[:end], read, self.pixels[:n], self.images[:n],
                          [f for k, f in zip(unread, self.failures) if k < end])

    paths: list[str]
    read: list[int]
    pixels: torch.Tensor
    images: list[Image.Image]
    failures: list[ImageError]


class _Photos(torch.utils.data.Dataset):
    """Item ``i``: ``(i, pixels [3, H, W] or None, image or None, reason or None)`` of ``paths[i]``."""

    def __init__(self, paths: Sequence[str], preprocess: Callable[[Image.Image], torch.Tensor] | None,
                 keep_images: bool):
        self.paths, self.preprocess, self.keep_images = [str(p) for p in paths], preprocess, keep_images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, Image.Image | None, str | None]:
        try:
            image = load_image(self.paths[i])
        except ImageError as e:  # the reason, not the exception, crosses back from the worker
            return i, None, None, e.reason
        pixels = self.preprocess(image) if self.preprocess is not None else torch.zeros(0)
        return i, pixels, image if self.keep_images else None, None


class _Collate:
    """Items of consecutive files -> :class:`PhotoBatch` (an object, so that workers can be sent it)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = [str(p) for p in paths]

    def __call__(self, items: list[tuple[int, torch.Tensor | None, Image.Image | None, str | None]]) -> PhotoBatch:
        paths = [self.paths[i] for i, *_ in items]
        read = [k for k, (_, pixels, _, _) in enumerate(items) if pixels is not None]
        pixels = torch.stack([items[k][1] for k in read]) if read else torch.zeros(0, 3, 1, 1)
        images = [items[k][2] for k in read if items[k][2] is not None]
        failures = [ImageError(paths[k], reason) for k, (*_, reason) in enumerate(items) if reason is not None]
        return PhotoBatch(paths, read, pixels, images, failures)


@dataclass(frozen=True)
class PhotoLoader:
    """How photo files become model inputs: the encoder's transform, ``batch_size`` photos at a
    time, read by ``workers`` loader processes (0: in this process, between batches), for a model
    on ``device`` (batches are pinned for a CUDA device); ``keep_images`` also hands back the
    decoded images (a reranker looks at them). Without ``preprocess`` the loader reads and decodes
    only (``pixels`` is ``[n, 0]``): the caller makes its own inputs from the images (crops of boxes).
    """

    preprocess: Callable[[Image.Image], torch.Tensor] | None
    batch_size: int = 32
    workers: int = 0
    device: str | torch.device = "cpu"
    keep_images: bool = False

    @classmethod
    def of(cls, encoder: Encoder, batch_size: int = 32, workers: int = 0, keep_images: bool = False) -> PhotoLoader:
        """The loader of ``encoder``'s inputs (its transform, for its device)."""
        return cls(encoder.preprocess, batch_size, workers, encoder.device, keep_images)

    def batches(self, paths: Sequence[str]) -> Iterator[PhotoBatch]:
        """The files of ``paths``, :attr:`batch_size` at a time and in order, read and preprocessed."""
        if not paths:
            return
        yield from torch.utils.data.DataLoader(
            _Photos(paths, self.preprocess, self.keep_images), batch_size=self.batch_size, shuffle=False,
            num_workers=self.workers, collate_fn=_Collate(paths),
            pin_memory=torch.device(self.device).type == "cuda", prefetch_factor=2 if self.workers else None)

    def run(self, work: Callable[[PhotoBatch], T], batch: PhotoBatch) -> T:
        """``work(batch)``; when that runs out of the device's memory, the largest half, quarter, ...
        of :attr:`batch_size` that does run is found and named in the error (the device's memory is the test:
        there is no estimate to go wrong).

        Raises:
            TaxonlensError: ``--batch-size B does not fit in the memory of DEVICE; b does`` (or not
                even one photo does).
        """
        try:
            return work(batch)
        except torch.OutOfMemoryError:
            release_memory(self.device)
        fits = self.batch_size // 2
        while fits >= len(batch.read):  # a batch with unreadable photos holds fewer
            fits //= 2
        while fits >= 1:
            try:
                work(batch.head(fits))
                break
            except torch.OutOfMemoryError:
                release_memory(self.device)
                fits //= 2
        release_memory(self.device)
        if fits < 1:
            raise TaxonlensError(f"--batch-size {self.batch_size} does not fit in the memory of {self.device}, nor "
                                 "does a single photo; use a smaller model, a lower --precision or another --device")
        raise TaxonlensError(f"--batch-size {self.batch_size} does not fit in the memory of {self.device}; {fits} "
                             f"does: use --batch-size {fits}")
