"""``--engine ray``: ``predict``, ``embed`` and ``index build`` over millions of photos on a Ray
cluster (Ray Data), written as Parquet shards that resume shard by shard.

The pipeline: the photo paths (each resolved path once, in the given order) are cut into shards of
``shard_size`` photos -> a Ray dataset of ``(path, shard)`` rows -> CPU tasks read, decode and
preprocess each photo (:func:`~taxonlens.data.images.load_image` and the encoder's preprocess; an
unreadable photo keeps its reason) -> an actor pool of ``num_workers`` encoders: each loads the
model by name once; the rest of the job (label embeddings, classifier, the decoder's tree) is put
in the object store once, as bytes every actor unpickles with its own model in place of the
driver's -> tree decoding and back-off in the actor, with the local engine's row function
(:meth:`Recognizer.row <taxonlens.predict.recognizer.Recognizer.row>`,
:func:`~taxonlens.index.embeddings.embedding_row`) -> the driver gathers the rows of each shard
and writes the shard (``OUT/shard-00000.parquet``) atomically once all its photos are in, then the
manifest of shards (``OUT/shards.parquet``: shard, file, photos, errors, inputs).

Resume: ``OUT/shards.parquet.run.json`` records the settings, as the local engine's run file; a
rerun with the same settings skips every shard whose file is there and whose inputs (each photo's
resolved path, size and modification time) are unchanged; other settings are refused unless
``overwrite``. A worker killed mid-run is restarted by Ray, which redoes its batches; rows are
keyed by photo in the driver and a shard is written once, whole, so the shards hold every photo
exactly once. Unreadable photos are error rows (kept in a finished shard), never a failed job.

Ray is imported inside functions only: the command line starts without it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import nonmember
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from taxonlens.choices import Choice
from taxonlens.data.images import load_image
from taxonlens.errors import DataError, ImageError
from taxonlens.index.embeddings import COLUMNS as EMBEDDING_COLUMNS
from taxonlens.index.embeddings import embedding_row
from taxonlens.journal import claim_run
from taxonlens.models.encoders import Encoder, load_encoder
from taxonlens.predict.files import output_rows, photo_key, run_settings
from taxonlens.predict.recognizer import Recognizer
from taxonlens.predict.rows import RowFormat
from taxonlens.tables import TABLE_SUFFIXES, read_table, write_table

SHARDS = "shards.parquet"
"""The manifest of shards inside an output folder: one row per finished shard."""
SHARD_COLUMNS = ("shard", "file", "photos", "errors", "inputs")
_LOCAL_OBJECT_STORE = 2 * 1024**3
_READ_CPUS = 0.25  # logical CPUs a read task asks for: the encoders hold most of a CPU-only machine


class Engine(Choice):
    """Where ``predict``, ``embed`` and ``index build`` run: in this process (``local``) or on Ray."""

    what = nonmember("engine")
    local = "local"
    ray = "ray"


@dataclass(frozen=True)
class EngineOptions:
    """How a photo job runs: the engine and, on Ray, the cluster and its workers. Each field's
    help is the command line's."""

    engine: Engine = field(default=Engine.local, metadata={
        "help": "local (this process) or ray (a Ray Data pipeline; --out is then a folder of Parquet shards that "
                "resumes shard by shard)"})
    address: str | None = field(default=None, metadata={
        "help": "with --engine ray: join this Ray cluster (auto or ray://HOST:PORT); default: start a local Ray "
                "sized for this machine"})
    num_workers: int | None = field(default=None, metadata={
        "help": "with --engine ray: encoder actors (default: one per GPU with --gpus-per-worker, else 2)"})
    gpus_per_worker: float = field(default=0.0, metadata={
        "help": "with --engine ray: GPUs per encoder actor (0: encode on CPUs)"})
    shard_size: int = field(default=10_000, metadata={
        "help": "with --engine ray: photos per Parquet shard (the unit of resume)"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", Engine(self.engine))
        if self.num_workers is not None and self.num_workers < 1:
            raise DataError(f"--num-workers must be at least 1, got {self.num_workers}")
        if self.gpus_per_worker < 0:
            raise DataError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.shard_size < 1:
            raise DataError(f"--shard-size must be at least 1, got {self.shard_size}")
        if self.engine == Engine.local and (self.address is not None or self.num_workers is not None
                                            or self.gpus_per_worker):
            raise DataError("--address, --num-workers and --gpus-per-worker apply to --engine ray")


def check_shard_folder(out: str | Path) -> Path:
    """``out`` when it can be a folder of shards (a folder, or a new name in a writable folder):
    commands check it before any model loads.

    Raises:
        DataError: ``out`` is a file, or its parent folder is missing or not writable.
    """
    out = Path(out)
    if (out.exists() and not out.is_dir()) or out.suffix.lower() in TABLE_SUFFIXES:
        raise DataError(f"--out {out} names a table; with --engine ray name a folder for the Parquet shards")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise DataError(f"cannot write {out}: folder {parent} does not exist; create it or choose another path")
    if not os.access(out if out.is_dir() else parent, os.W_OK):
        raise DataError(f"cannot write {out}: not writable")
    return out


def _quiet_ray() -> None:
    """Ray's and Ray Data's own log lines and progress bars stay out of the command's output (they
    are still in Ray's session logs)."""
    for name in ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")  # Ray Data's tuning hints


@contextmanager
def ray_cluster(address: str | None = None) -> Iterator[None]:
    """Run on Ray: the Ray this process already started (left running), else a local one sized for
    this machine (``address`` ``None``: every CPU, a 2 GiB object store, no dashboard), else the
    cluster at ``address`` (``auto`` or ``ray://HOST:PORT``) joined. A Ray started here is shut
    down after.

    Raises:
        DataError: the cluster at ``address`` cannot be joined.
    """
    import ray
    from ray.data import DataContext

    _quiet_ray()
    started = not ray.is_initialized()
    if started:
        # Ray's C++ core logs to the driver's stderr (e.g. a warning on every actor pool): fatal errors only
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address is None:
            ray.init(num_cpus=os.cpu_count(), object_store_memory=_LOCAL_OBJECT_STORE, include_dashboard=False,
                     **quiet)
        else:
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise DataError(f"cannot join the Ray cluster at {address} ({e}); start it (`ray start --head`) "
                                "or leave out --address to run a local Ray") from None
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    _quiet_ray()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class _ModelPickler(pickle.Pickler):
    """Pickles a job with its models left out, each named by a token (see :func:`_pack`)."""

    def __init__(self, file: io.BytesIO, models: dict[int, str]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.models = models

    def persistent_id(self, obj: object) -> str | None:
        return self.models.get(id(obj))


class _ModelUnpickler(pickle.Unpickler):
    """Unpickles a job made by :class:`_ModelPickler`, putting ``models[token]`` in each model's place."""

    def __init__(self, file: io.BytesIO, models: dict[str, object]):
        super().__init__(file)
        self.models = models

    def persistent_load(self, pid: str) -> object:
        return self.models[pid]


def _pack(job: object, models: dict[str, object]) -> bytes:
    """``job`` pickled without the objects of ``models`` (token -> model): what goes in the object
    store once, however many actors read it; each actor loads its own models."""
    buf = io.BytesIO()
    _ModelPickler(buf, {id(m): token for token, m in models.items()}).dump(job)
    return buf.getvalue()


def _unpack(data: bytes, models: dict[str, object]) -> object:
    return _ModelUnpickler(io.BytesIO(data), models).load()


@dataclass
class PredictJob:
    """What an encoder actor does for ``predict``: the recognizer's predictions and rows."""

    recognizer: Recognizer
    top_k: int
    rank: str | None

    def rows(self, names: list[str], pixels: torch.Tensor) -> list[dict]:
        """Rows of the photos ``names``, preprocessed as ``pixels`` ``[B, 3, H, W]``."""
        predictions = self.recognizer.predict_pixels(pixels, (), self.top_k, self.rank)
        return [self.recognizer.row(n, p) for n, p in zip(names, predictions)]

    def error_row(self, name: str, reason: str) -> dict:
        return self.recognizer.row(name, None, reason)


@dataclass
class EmbedJob:
    """What an encoder actor does for ``embed`` and ``index build``: one embedding row per photo."""

    encoder: Encoder
    model: str

    def rows(self, names: list[str], pixels: torch.Tensor) -> list[dict]:
        """Rows of the photos ``names``, preprocessed as ``pixels`` ``[B, 3, H, W]``."""
        return [embedding_row(n, self.model, f) for n, f in zip(names, self.encoder.encode_images(pixels).numpy())]

    def error_row(self, name: str, reason: str) -> dict:
        return embedding_row(name, self.model, None, reason)


def _read_photos(batch: dict[str, np.ndarray], preprocess: Callable[[Image.Image], torch.Tensor],
                 shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The CPU stage: read, decode and preprocess a batch of photos -> ``pixels`` float32
    ``[B, *shape]`` (zeros where unreadable) and ``error`` (the reason, or ``""``)."""
    pixels = np.zeros((len(batch["path"]), *shape), dtype=np.float32)
    errors = []
    for i, path in enumerate(batch["path"]):
        try:
            pixels[i] = preprocess(load_image(str(path))).numpy()
            errors.append("")
        except ImageError as e:
            errors.append(e.reason)
    return {"path": batch["path"], "shard": batch["shard"], "error": np.array(errors, dtype=object),
            "pixels": pixels}


class _EncodeWorker:
    """An encoder actor: loads the model once, unpacks the job from the object store once, then
    turns batches of preprocessed photos into rows (JSON text: nested values cross Arrow as is)."""

    def __init__(self, payload: list, model: str, precision: str, fingerprint: str, device: str, threads: int):
        import ray

        torch.set_num_threads(threads)
        encoder = load_encoder(model, precision=precision, device=device)
        if encoder.fingerprint() != fingerprint:
            raise DataError(f"the model {model!r} loaded on a Ray worker differs from the driver's; give every node "
                            "the same weights")
        self.job = _unpack(ray.get(payload[0]), {"encoder": encoder})

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [str(p) for p in batch["path"]]
        errors = [str(e) for e in batch["error"]]
        ok = [i for i, e in enumerate(errors) if not e]
        rows: list[dict | None] = [None] * len(names)
        if ok:
            pixels = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok]))
            for i, row in zip(ok, self.job.rows([names[i] for i in ok], pixels)):
                rows[i] = row
        for i, e in enumerate(errors):
            if e:
                rows[i] = self.job.error_row(names[i], e)
        return {"path": batch["path"], "shard": batch["shard"],
                "row": np.array([json.dumps(r, ensure_ascii=False) for r in rows], dtype=object)}


def _worker_plan(options: EngineOptions) -> tuple[int, dict, int]:
    """``(actors, their Ray resources, torch threads each)`` on the cluster joined."""
    import ray

    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 1.0))
    if options.gpus_per_worker:
        gpus = float(resources.get("GPU", 0.0))
        if gpus < options.gpus_per_worker:
            raise DataError(f"--gpus-per-worker {options.gpus_per_worker:g}: the Ray cluster has {gpus:g} GPUs")
        n = options.num_workers or max(1, int(gpus // options.gpus_per_worker))
        return n, {"num_cpus": 1, "num_gpus": options.gpus_per_worker}, 1
    n = options.num_workers or 2
    share = max(_READ_CPUS, (cpus - _READ_CPUS) / n)  # the encoders hold the CPUs the read tasks leave
    return n, {"num_cpus": share}, max(1, math.floor(share + 0.5))


def _rows(paths: Sequence[tuple[str, int]], job: object, encoder: Encoder, options: EngineOptions,
          batch_size: int) -> Iterator[tuple[str, int, dict]]:
    """``(path, shard, row)`` of every ``(path, shard)`` of ``paths``, as the pipeline of the module
    docstring makes them (in no set order). Needs a running Ray (:func:`ray_cluster`)."""
    import ray

    workers, resources, threads = _worker_plan(options)
    payload = ray.put(_pack(job, {"encoder": encoder}))
    shape = tuple(encoder.preprocess(Image.new("RGB", (8, 8))).shape)
    blocks = min(len(paths), max(2 * workers, math.ceil(len(paths) / (4 * batch_size))))  # every actor busy
    ds = ray.data.from_items([{"path": p, "shard": s} for p, s in paths], override_num_blocks=blocks)
    ds = ds.map_batches(_read_photos, fn_kwargs={"preprocess": encoder.preprocess, "shape": shape},
                        batch_size=batch_size, batch_format="numpy", num_cpus=_READ_CPUS)
    model = Path(encoder.name).expanduser()  # a model folder, named the same on every worker
    ds = ds.map_batches(_EncodeWorker, batch_size=batch_size, batch_format="numpy", concurrency=workers,
                        fn_constructor_kwargs={"payload": [payload],
                                               "model": str(model.resolve()) if model.is_dir() else encoder.name,
                                               "precision": encoder.precision, "fingerprint": encoder.fingerprint(),
                                               "device": "cuda" if options.gpus_per_worker else "cpu",
                                               "threads": threads}, **resources)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for path, shard, row in zip(batch["path"], batch["shard"], batch["row"]):
            yield str(path), int(shard), json.loads(row)


def _shard_file(i: int) -> str:
    return f"shard-{i:05d}.parquet"


def _inputs_hash(keys: Sequence[list]) -> str:
    """What a shard was made from: the sha256 of its photos' keys (path, size, modification time)."""
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def _sharded(paths: Sequence[str], out: Path, settings: dict, job: object, encoder: Encoder,
             options: EngineOptions, batch_size: int, write: Callable[[list[dict], Path], None],
             progress: Callable[[int], None] | None, overwrite: bool) -> tuple[Path, list[ImageError]]:
    """The resumable shard loop of ``predict`` and ``embed`` on Ray (see the module docstring):
    ``write(rows, file)`` writes one finished shard."""
    out = check_shard_folder(out)
    out.mkdir(exist_ok=True)
    manifest = out / SHARDS
    claim_run(manifest, settings, overwrite, companions=sorted(out.glob("shard-*.parquet")))
    keys, seen = [], set()
    for path in paths:
        key = photo_key(path)
        if key[0] not in seen:  # the same file named twice is one photo
            seen.add(key[0])
            keys.append((path, key))
    shards = [keys[i:i + options.shard_size] for i in range(0, len(keys), options.shard_size)]
    inputs = [_inputs_hash([k for _, k in shard]) for shard in shards]
    recorded = {int(r["shard"]): r for _, r in read_table(manifest, "shard manifest")} if manifest.is_file() else {}
    finished = {i: recorded[i] for i in range(len(shards))
                if i in recorded and recorded[i]["inputs"] == inputs[i] and (out / _shard_file(i)).is_file()}
    for stale in sorted(out.glob("shard-*.parquet")):
        if stale.name not in {_shard_file(i) for i in finished}:
            stale.unlink()
    if progress and finished:
        progress(sum(len(shards[i]) for i in finished))
    todo = [(path, i) for i, shard in enumerate(shards) if i not in finished for path, _ in shard]
    pending: dict[int, dict[str, dict]] = {}
    failures: list[ImageError] = []
    if todo:
        for path, i, row in _rows(todo, job, encoder, options, batch_size):
            rows = pending.setdefault(i, {})
            if i in finished or path in rows:  # a batch redone after a worker died: its photo is already in
                continue
            rows[path] = row
            if progress:
                progress(1)
            if len(rows) < len(shards[i]):
                continue
            ordered = [rows.pop(p) for p, _ in shards[i]]
            del pending[i]
            write(ordered, out / _shard_file(i))
            failures += [ImageError(r["file_name"], r["error"]) for r in ordered if r["error"]]
            finished[i] = {"shard": i, "file": _shard_file(i), "photos": len(ordered),
                           "errors": sum(bool(r["error"]) for r in ordered), "inputs": inputs[i]}
            write_table([finished[k] for k in sorted(finished)], manifest, "shard manifest", SHARD_COLUMNS)
    if pending:
        raise RuntimeError(f"the Ray pipeline ended with shards {sorted(pending)} incomplete")
    write_table([finished[k] for k in sorted(finished)], manifest, "shard manifest", SHARD_COLUMNS)
    return out, failures


def predict_ray(recognizer: Recognizer, paths: Sequence[str], out: str | Path, options: EngineOptions,
                batch_size: int = 32, top_k: int = 5, rank: str | None = None,
                progress: Callable[[int], None] | None = None, overwrite: bool = False,
                output_format: str = "taxonlens") -> tuple[Path, list[ImageError]]:
    """:func:`~taxonlens.predict.files.predict_files` on Ray: the same rows, written as Parquet
    shards in the folder ``out`` (see the module docstring). Needs a running Ray (:func:`ray_cluster`).

    Returns:
        the folder, and the photos that could not be read in this run (also rows with an ``error``).

    Raises:
        DataError: ``out`` is not a folder or was written with other settings; a reranker (``--rerank``
            reads whole photos, which the pipeline does not carry to the encoders: use the local engine).
    """
    output_format = RowFormat(output_format)
    if recognizer.reranker is not None:
        raise DataError("--rerank runs with --engine local only (the Ray pipeline carries preprocessed pixels, "
                        "not the photos the ranker reads)")
    settings = {**run_settings(recognizer, top_k, rank, output_format), "shard_size": options.shard_size}
    ranks = recognizer.taxonomy.ranks

    def write(rows: list[dict], file: Path) -> None:
        rows_out, columns = output_rows(rows, file, output_format, ranks)
        write_table(rows_out, file, "shard", columns)

    return _sharded(paths, Path(out), settings, PredictJob(recognizer, top_k, rank), recognizer.encoder, options,
                    batch_size, write, progress, overwrite)


def embed_ray(encoder: Encoder, paths: Sequence[str], out: str | Path, options: EngineOptions,
              batch_size: int = 32, progress: Callable[[int], None] | None = None, overwrite: bool = False
              ) -> tuple[Path, list[ImageError]]:
    """:func:`~taxonlens.predict.embed.embed_files` on Ray: the same rows, as Parquet shards in the
    folder ``out``. Needs a running Ray (:func:`ray_cluster`)."""
    model = encoder.fingerprint()
    settings = {"model": model, "what": "embeddings", "shard_size": options.shard_size}
    return _sharded(paths, Path(out), settings, EmbedJob(encoder, model), encoder, options, batch_size,
                    lambda rows, file: write_table(rows, file, "shard", EMBEDDING_COLUMNS), progress, overwrite)


def encode_ray(encoder: Encoder, paths: Sequence[str], options: EngineOptions, batch_size: int = 32,
               progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Resolved path -> float32 unit feature ``[D]`` of every readable photo of ``paths``, encoded
    on Ray (what ``index build --engine ray`` hands to the memory, as ``known`` features). Needs a
    running Ray (:func:`ray_cluster`)."""
    unique = list(dict.fromkeys(str(Path(p).resolve()) for p in paths))
    features: dict[str, np.ndarray] = {}
    for path, _, row in _rows([(p, 0) for p in unique], EmbedJob(encoder, encoder.fingerprint()), encoder, options,
                              batch_size):
        if not row["error"]:
            features[path] = np.asarray(row["embedding"], dtype=np.float32)
        if progress:
            progress(1)
    return features


def read_shards(out: str | Path) -> list[dict]:
    """Every row of a folder of shards, in shard order (the shards its manifest lists).

    Raises:
        DataError: ``out`` holds no manifest of shards.
    """
    out = Path(out)
    rows: list[dict] = []
    for _, entry in sorted(read_table(out / SHARDS, "shard manifest"), key=lambda e: int(e[1]["shard"])):
        rows += [row for _, row in read_table(out / entry["file"], "shard")]
    return rows
