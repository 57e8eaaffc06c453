"""``taxonlens bench serve``: the service under load, on 127.0.0.1 only, bounded in requests.

One recognizer (a tiny preset over a synthworld's taxonomy by default) is served twice in this
process, with micro-batching on (``max_batch``, ``max_wait_ms``) and off (every photo alone), by
uvicorn on a free port of 127.0.0.1. For each number of concurrent clients (threads with a
keep-alive connection each) a fixed count of requests, one synthworld photo each, is sent; every
request must be answered exactly once, with 2xx or an intended 503 (a full queue), never 5xx.
Figures: throughput, p50 / p95 / p99 latency, the mean batch size (from the server's own
``/metrics``), and the process's memory (RSS) after warm-up and after the last level of each mode.
Clients and server share this process (and its GIL): the throughput is a lower bound.
"""

from __future__ import annotations

import http.client
import io
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import numpy as np

from taxonlens.errors import TaxonlensError
from taxonlens.predict.recognizer import Recognizer
from taxonlens.serve.settings import ServeSettings

HOST = "127.0.0.1"
MODES = ("on", "off")


@dataclass(frozen=True)
class LoadSpec:
    """What ``bench serve`` measures.

    Attributes:
        model: the encoder (speed only: its weights do not matter here).
        clients: the numbers of concurrent clients, one level each.
        requests: requests sent at every level, one photo each.
        species: species of the synthworld whose taxonomy labels the photos.
        size: photo side in pixels.
        max_batch, max_wait_ms, max_queue: the server's micro-batching when on (off: 1 photo, no wait).
        timeout: seconds a client waits for one answer.
        threads: torch threads of the model (0: leave as set); on a shared machine more threads than
            free cores make every small batch wait for the busiest one.
    """

    model: str = "tiny-clip"
    clients: tuple[int, ...] = (1, 4, 16, 64)
    requests: int = 256
    species: int = 16
    size: int = 64
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 256
    timeout: float = 120.0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.clients or min(self.clients) < 1:
            raise TaxonlensError("bench serve needs at least 1 request and 1 client per level")


#: the size for a test: two levels, few requests
QUICK = LoadSpec(clients=(1, 4), requests=12, species=4)


@dataclass(frozen=True)
class LoadLevel:
    """One level's figures (latencies in ms)."""

    batching: str
    clients: int
    sent: int
    ok: int
    refused: int
    server_errors: int
    other: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float

    @property
    def answered_once(self) -> bool:
        """Every request answered exactly once, with 2xx or an intended 503."""
        return self.ok + self.refused == self.sent and self.server_errors == 0 and self.other == 0


@dataclass
class LoadResult:
    """Every level of both modes, and the memory of the process per mode (MiB: after warm-up, at the end)."""

    spec: LoadSpec
    levels: list[LoadLevel] = field(default_factory=list)
    memory_mib: dict[str, dict[str, float]] = field(default_factory=dict)

    def level(self, batching: str, clients: int) -> LoadLevel:
        return next(x for x in self.levels if x.batching == batching and x.clients == clients)

    def speedup(self, clients: int) -> float:
        """Throughput with micro-batching over without, at ``clients``."""
        return self.level("on", clients).throughput / self.level("off", clients).throughput

    def to_dict(self) -> dict:
        return {"spec": asdict(self.spec), "levels": [asdict(x) for x in self.levels], "memory_mib": self.memory_mib,
                "speedup": {c: self.speedup(c) for c in self.spec.clients}}


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """A ``files`` upload of one photo: ``(body, content type)``."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _rss_mib() -> float:
    """This process's resident memory (MiB), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _batch_totals(port: int) -> tuple[float, float]:
    """``(photos, batches)`` the server has encoded so far (its ``/metrics``)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = re.search(r"^taxonlens_batch_size_sum (\S+)$", text, re.MULTILINE)
    count = re.search(r"^taxonlens_batch_size_count (\S+)$", text, re.MULTILINE)
    return float(total.group(1)), float(count.group(1))


def _drive(port: int, bodies: list[tuple[bytes, str]], clients: int, requests: int, timeout: float
           ) -> tuple[list[int], list[float], float]:
    """Send ``requests`` photo uploads from ``clients`` threads; ``(statuses, latencies s, seconds)``."""
    tickets = iter(range(requests))
    lock = threading.Lock()
    statuses: list[int] = []
    latencies: list[float] = []

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while True:
                with lock:
                    i = next(tickets, None)
                if i is None:
                    return
                body, ctype = bodies[i % len(bodies)]
                start = time.perf_counter()
                try:
                    conn.request("POST", "/v1/predict?top_k=1", body=body, headers={"Content-Type": ctype})
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
                    status = -1  # no answer
                with lock:
                    statuses.append(status)
                    latencies.append(time.perf_counter() - start)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, latencies, time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn serving ``create_app(recognizer, settings)`` in a thread, on 127.0.0.1."""

    def __init__(self, recognizer: Recognizer, settings: ServeSettings):
        import uvicorn

        from taxonlens.serve.app import create_app

        self.server = uvicorn.Server(uvicorn.Config(create_app(recognizer, settings), host=HOST, port=settings.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="taxonlens-bench-serve", daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise TaxonlensError("the benchmark's server did not start on 127.0.0.1")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def bench_serve(spec: LoadSpec | None = None, progress: Callable[[str], None] | None = None) -> LoadResult:
    """Measure the service under load (see the module docstring); ``spec`` defaults to :class:`LoadSpec`'s."""
    import torch

    from taxonlens.predict import build_recognizer
    from taxonlens.synthworld import SynthWorld, random_taxonomy

    spec = spec or LoadSpec()
    say = progress or (lambda message: None)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    world = SynthWorld.create(random_taxonomy(spec.species, seed=0), spec.species, 2, novel_fraction=0.0,
                              size=spec.size, seed=0)
    bodies = []
    for leaf, k in world.index()[:32]:
        buf = io.BytesIO()
        world.photo(leaf, k).image.save(buf, "PNG")
        bodies.append(_multipart(f"{leaf}-{k}.png", buf.getvalue()))
    say(f"loading {spec.model} over {world.taxonomy.n_leaves} species")
    recognizer = build_recognizer(spec.model, world.taxonomy, precision="fp32")
    result = LoadResult(spec)
    for mode in MODES:
        on = mode == "on"
        settings = ServeSettings(port=_free_port(), max_batch=spec.max_batch if on else 1,
                                 max_wait_ms=spec.max_wait_ms if on else 0.0, max_queue=spec.max_queue, max_files=1)
        with _Server(recognizer, settings):
            _drive(settings.port, bodies, 2, 8, spec.timeout)  # warm-up
            memory = {"after warm-up": _rss_mib()}
            for clients in spec.clients:
                say(f"micro-batching {mode}: {clients} clients, {spec.requests} requests")
                photos_before, batches_before = _batch_totals(settings.port)
                statuses, latencies, seconds = _drive(settings.port, bodies, clients, spec.requests, spec.timeout)
                photos, batches = _batch_totals(settings.port)
                ms = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
                ok = sum(200 <= s < 300 for s in statuses)
                refused = statuses.count(503)
                failed = sum(500 <= s < 600 and s != 503 for s in statuses)
                result.levels.append(LoadLevel(
                    mode, clients, spec.requests, ok, refused, failed, len(statuses) - ok - refused - failed, seconds,
                    ok / seconds, float(ms[0]), float(ms[1]), float(ms[2]),
                    (photos - photos_before) / max(1.0, batches - batches_before)))
            memory["at the end"] = _rss_mib()
        result.memory_mib[mode] = memory
    return result
