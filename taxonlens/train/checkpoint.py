"""Checkpoints that resume a training loop exactly, for every trainer.

A checkpoint holds the model's state dict, the optimizer's and the scheduler's,
where the loop stands (:class:`LoopState`: optimizer steps, epochs, batches of
the current epoch), the Python / NumPy / torch (and CUDA) random states, the
run's configuration and any trainer-specific extras. It is written to a
temporary file beside the target and renamed over it, so a run killed while
saving leaves the previous checkpoint intact.

Everything is stored as tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: opening a checkpoint never runs code.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taxonlens.errors import TaxonlensError

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 1


class CheckpointError(TaxonlensError):
    """A checkpoint is unreadable, or does not belong to the run resuming from it."""


@dataclass
class LoopState:
    """Where a training loop stands.

    Attributes:
        step: optimizer steps taken so far.
        epoch: epochs completed.
        batch: batches of epoch ``epoch`` (0-based) already taken; 0 at an epoch boundary.
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` read (the states themselves are already loaded into
    the objects passed to it).

    Attributes:
        state: where the loop stood when it was saved.
        config: the run's configuration, as saved.
        extra: trainer-specific values (running sums, data fingerprint, ...).
        rng: the random states, as saved (see :func:`capture_rng_state`).
    """

    state: LoopState
    config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy (legacy global) and torch CPU/CUDA random states, as plain values and tensors."""
    np_state = np.random.get_state(legacy=False)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the random states captured by :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state({
        "bit_generator": npy["bit_generator"],
        "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
        "has_gauss": npy["has_gauss"],
        "gauss": npy["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    state: LoopState | None = None,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename over ``path``).

    Args:
        path: the checkpoint file (conventionally ``<out>/checkpoint.pt``).
        config: JSON-like run configuration, compared on resume (see :func:`check_config`).
        extra: tensors and plain values the trainer needs to resume.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "loop": asdict(state or LoopState()),
        "rng": capture_rng_state(),
        "config": dict(config or {}),
        "extra": dict(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    restore_rng: bool = True,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint and load its states into the objects given.

    Args:
        model, optimizer, scheduler: built as for a fresh run; their states are replaced.
        restore_rng: also set the global random states (what an exact resume needs).

    Raises:
        CheckpointError: the file is missing, unreadable, or its states do not fit the objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:  # truncated, not torch
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a taxonlens checkpoint (format {payload.get('format')!r}, "
                              f"expected {FORMAT_VERSION})" if isinstance(payload, dict) else
                              f"{path}: not a taxonlens checkpoint")
    try:
        if model is not None:
            model.load_state_dict(payload["model"])
        if optimizer is not None:
            if payload["optimizer"] is None:
                raise CheckpointError(f"{path} holds no optimizer state")
            optimizer.load_state_dict(payload["optimizer"])
        if scheduler is not None:
            if payload["scheduler"] is None:
                raise CheckpointError(f"{path} holds no scheduler state")
            scheduler.load_state_dict(payload["scheduler"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path} does not fit this model or optimizer: {e}") from None
    if restore_rng:
        restore_rng_state(payload["rng"])
    return Checkpoint(LoopState(**payload["loop"]), payload["config"], payload["extra"], payload["rng"])


def check_config(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = (),
                 where: str = "checkpoint") -> None:
    """Refuse to resume a run under a configuration that changes its trajectory.

    Raises:
        CheckpointError: listing every key (outside ``ignore``) whose value differs.
    """
    skip = set(ignore)
    keys = sorted((set(saved) | set(current)) - skip)
    diff = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
    if diff:
        raise CheckpointError(f"{where} was written by a different run ({'; '.join(diff)}); resume with the "
                              "same settings, or start a new output folder")


def read_metrics(path: Path, upto: int, key: str = "epoch") -> list[dict[str, Any]]:
    """Lines of a run's ``metrics.jsonl`` whose ``key`` (epoch or step) is ``<= upto`` (later
    ones came from a run that was killed before its checkpoint)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get(key, 0) <= upto]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` as JSON lines, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def open_run(out: Path, run_config: dict[str, Any], resume: bool, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
             ignore: Iterable[str], identities: Mapping[str, tuple[str, str]],
             metrics_file: str = "metrics.jsonl", writer: bool = True) -> tuple[Checkpoint | None, list[dict[str, Any]]]:
    """Prepare a run folder for a trainer: resume ``out/checkpoint.pt`` when asked (its states are
    loaded into the objects), write ``config.json``, and keep the metrics of the epochs the
    checkpoint covers.

    Args:
        ignore: settings that may change on resume (see :func:`check_config`).
        identities: name -> ``(what it is now, how to fix a mismatch)`` of what a resumed run must
            share with its checkpoint besides the settings (``data``: a fingerprint of the training
            items; ``base model``: of the weights it starts from), stored in the checkpoint's extras.
        writer: write ``config.json`` and the kept metrics (the main process of a data-parallel run;
            the others only read).

    Returns:
        the checkpoint (``None`` for a fresh run) and the metrics rows kept.

    Raises:
        CheckpointError: the settings or an identity differ from the checkpoint's.
    """
    ckpt_path = out / CHECKPOINT_FILE
    ckpt = None
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, model, optimizer, scheduler)
        check_config(ckpt.config, run_config, ignore=ignore, where=str(ckpt_path))
        for name, (now, fix) in identities.items():
            if ckpt.extra.get(name) != now:
                raise CheckpointError(f"{ckpt_path} was trained with other {name} (fingerprint "
                                      f"{ckpt.extra.get(name)}, now {now}); {fix}")
    metrics = read_metrics(out / metrics_file, ckpt.state.epoch if ckpt else 0)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(run_config, indent=1) + "\n")
        write_jsonl(out / metrics_file, metrics)
    return ckpt, metrics


@contextmanager
def isolated_run(out: Path, resume: bool, threads: int | None) -> Iterator[Path]:
    """The frame of a training run in ``out``: an existing checkpoint is refused unless the run
    resumes; torch uses ``threads`` (if given) for the run; the thread count and the caller's
    random states are given back after (a run seeds the global generators). Yields the
    checkpoint's path.

    Raises:
        CheckpointError: a checkpoint exists and ``resume`` is off.
    """
    ckpt_path = out / CHECKPOINT_FILE
    if ckpt_path.exists() and not resume:
        raise CheckpointError(f"{ckpt_path} exists: resume that run, or choose another output folder")
    rng_before = capture_rng_state()
    try:
        with torch_threads(threads):
            yield ckpt_path
    finally:
        restore_rng_state(rng_before)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch uses ``threads`` CPU threads for the duration (``None`` or 0: as set), then the count
    it had before. With tiny models one thread is often the steadiest choice."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
