"""The service's limits and switches, checked before the port opens."""

from __future__ import annotations

from dataclasses import dataclass

from taxonlens.data.images import DEFAULT_MAX_PIXELS
from taxonlens.errors import TaxonlensError

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """How ``taxonlens serve`` answers.

    Attributes:
        host, port: where it listens (127.0.0.1 unless told otherwise).
        api_key: requests to ``/v1/...`` must carry it (``X-API-Key`` or ``Authorization: Bearer``);
            ``None``: no key.
        cors_origins: origins allowed to call the API from a browser; empty: CORS off.
        max_batch: photos encoded together at most (1: micro-batching off).
        max_wait_ms: how long the first photo of a batch waits for others.
        max_queue: photos waiting to be encoded at most; more answer 503 with ``Retry-After``.
        workers: batches run at once (threads sharing the one model).
        max_files: photos per request at most (more: 413).
        max_file_bytes: bytes per photo at most (more: 413).
        max_pixels: pixels per photo at most (a decompression bomb is that photo's error).
        max_top_k: the largest ``top_k`` a request may ask.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_queue: int = 256
    workers: int = 1
    max_files: int = 32
    max_file_bytes: int = 20 * MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_top_k: int = 100

    def __post_init__(self) -> None:
        counts = {"--port": self.port, "--max-batch": self.max_batch, "--max-queue": self.max_queue,
                  "--workers": self.workers, "--max-files": self.max_files, "--max-upload-mb": self.max_file_bytes}
        bad = [name for name, n in counts.items() if n < 1]
        if bad:
            raise TaxonlensError(f"{' and '.join(bad)} must be at least 1")
        if self.port > 65535:
            raise TaxonlensError(f"--port {self.port} is not a port number (1-65535)")
        if self.max_wait_ms < 0:
            raise TaxonlensError("--max-wait-ms must be 0 or more")
        if self.max_queue < self.max_files:
            raise TaxonlensError(f"--max-queue ({self.max_queue}) must hold one full request (--max-files "
                                 f"{self.max_files})")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: every photo at its limit, plus the multipart framing."""
        return self.max_files * self.max_file_bytes + MIB
