"""The service's Prometheus metrics, in a registry of their own (one per application)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Requests by route and status, latency per route, batch sizes and seconds, queue depth,
    photos predicted, and errors by kind: ``unreadable_photo``, ``too_large``, ``too_many_files``,
    ``bad_multipart``, ``no_photos``, ``bad_option``, ``unauthorized``, ``queue_full``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("taxonlens_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.latency = Histogram("taxonlens_request_seconds", "Time to answer a request", ["route"], registry=r)
        self.batch_size = Histogram("taxonlens_batch_size", "Photos encoded together", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_seconds = Histogram("taxonlens_batch_seconds", "Time to run the model on one batch", registry=r)
        self.queue_depth = Gauge("taxonlens_queue_depth", "Photos waiting to be encoded", registry=r)
        self.photos = Counter("taxonlens_photos_predicted", "Photos answered with a prediction", registry=r)
        self.errors = Counter("taxonlens_errors", "Refused requests and unreadable photos, by kind", ["kind"],
                              registry=r)

    def batch(self, size: int, seconds: float) -> None:
        """Record one batch run by the model."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
