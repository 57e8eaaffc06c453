"""The FastAPI application of ``taxonlens serve`` (see :func:`create_app`).

Routes: ``POST /v1/predict`` (photos -> ``predict`` rows), ``GET /v1/model``, ``GET
/v1/taxa/search``, ``GET /v1/taxa/{id}``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``,
the web page at ``/`` with its assets under ``/static/``, and the OpenAPI pages at ``/docs``.
"""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations, which use local names
import hmac
import math
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from taxonlens.data.images import load_image_bytes
from taxonlens.errors import ImageError, TaxonlensError, TaxonNotFoundError
from taxonlens.predict.recognizer import Recognizer
from taxonlens.serve.answers import Answerer, full_answerer, subset_answerer
from taxonlens.serve.batching import MicroBatcher, QueueFull
from taxonlens.serve.metrics import ServeMetrics
from taxonlens.serve.page import asset, index_html
from taxonlens.serve.settings import ServeSettings
from taxonlens.serve.taxa import TaxonIndex
from taxonlens.serve.uploads import FIELD, UploadRejected, read_uploads

#: subsets whose decoders are kept (a subset's tree is built once)
SUBSETS_KEPT = 32

_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD],
    "properties": {FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "photos (repeat the field for several)"}}}}}}}


class _Answerers:
    """The full label set's :class:`Answerer` and the last :data:`SUBSETS_KEPT` subsets' ones."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer, self.full = recognizer, full_answerer(recognizer)
        self.kept: OrderedDict[str, Answerer] = OrderedDict()

    def get(self, subset: str | None) -> Answerer:
        if not subset:
            return self.full
        key = subset.strip()
        if key not in self.kept:
            self.kept[key] = subset_answerer(self.recognizer, key)
            if len(self.kept) > SUBSETS_KEPT:
                self.kept.popitem(last=False)
        self.kept.move_to_end(key)
        return self.kept[key]


def _decode_uploads(uploads, max_pixels: int) -> tuple[list[Image.Image], list[int], dict[int, str]]:
    """The readable photos, their positions, and each unreadable photo's reason by position."""
    images, where, errors = [], [], {}
    for i, up in enumerate(uploads):
        try:
            images.append(load_image_bytes(up.data, up.name, max_pixels))
            where.append(i)
        except ImageError as e:
            errors[i] = e.reason
    return images, where, errors


def create_app(recognizer: Recognizer, settings: ServeSettings | None = None, about: str = "") -> FastAPI:
    """The service over ``recognizer`` (loaded, thresholds set); ``about`` says what model it is
    (shown on the page and at ``/v1/model``); ``settings`` default to :class:`ServeSettings`' defaults."""
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    batcher = MicroBatcher(recognizer.leaf_probs, settings.max_batch, settings.max_wait_ms / 1000,
                           settings.max_queue, settings.workers, on_batch=metrics.batch)
    metrics.queue_depth.set_function(lambda: batcher.depth)
    answerers = _Answerers(recognizer)
    taxa = TaxonIndex(recognizer.taxonomy)
    tax = recognizer.taxonomy

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        app.state.ready = True
        yield
        app.state.ready = False
        await batcher.stop()

    app = FastAPI(title="taxonlens", lifespan=lifespan, version="1",
                  description="Name the organism in photos: a consistent taxonomy path, a confidence per rank, "
                              "back-off and alternatives.")
    app.state.ready, app.state.batcher = False, batcher
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key"])

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        metrics.requests.labels(name, str(response.status_code)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, e: UploadRejected):
        metrics.errors.labels(e.kind).inc()
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        metrics.errors.labels("bad_option").inc()
        return await request_validation_exception_handler(request, e)

    @app.exception_handler(QueueFull)
    async def full(request: Request, e: QueueFull):
        metrics.errors.labels("queue_full").inc()
        return JSONResponse({"detail": f"busy: {e}"}, status_code=503, headers={"Retry-After": str(e.retry_after)})

    def api_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            metrics.errors.labels("unauthorized").inc()
            raise HTTPException(401, "an API key is needed: send it in the X-API-Key header",
                                headers={"WWW-Authenticate": "Bearer"})

    def bad_option(e: TaxonlensError) -> HTTPException:
        metrics.errors.labels("bad_option").inc()
        return HTTPException(422, str(e))

    v1 = [Depends(api_key)]

    @app.post("/v1/predict", dependencies=v1, openapi_extra=_UPLOAD_SCHEMA)
    async def predict(request: Request,
                      rank: Annotated[str | None, Query(description="answer at this rank (default: the deepest)")
                                      ] = None,
                      top_k: Annotated[int, Query(ge=1, le=settings.max_top_k,
                                                  description="answers per photo: the best and top_k - 1 "
                                                              "alternatives")] = 5,
                      subset: Annotated[str | None, Query(description="only these taxa: RANK=NAME[,NAME...]")
                                        ] = None) -> dict:
        """Name the organism in each photo (multipart, the repeatable field ``files``): one ``predict``
        row per photo, in upload order; an unreadable photo's row carries the reason in ``error``."""
        try:
            if rank is not None:
                tax.rank_depth(rank)
            answerer = answerers.get(subset)
        except TaxonlensError as e:
            raise bad_option(e) from None
        uploads = await read_uploads(request, settings)
        images, where, errors = await run_in_threadpool(_decode_uploads, uploads, settings.max_pixels)
        if errors:
            metrics.errors.labels("unreadable_photo").inc(len(errors))
        rows: list[dict | None] = [None] * len(uploads)
        for i, reason in errors.items():
            rows[i] = answerer.unreadable(uploads[i].name, reason)
        if not images:
            return JSONResponse({"detail": "no photo could be read", "predictions": rows}, status_code=422)
        probs = await batcher.submit(images)
        answered = await run_in_threadpool(answerer.rows, probs, [uploads[i].name for i in where], top_k, rank)
        metrics.photos.inc(len(answered))
        for i, row in zip(where, answered):
            rows[i] = row
        return {"predictions": rows}

    @app.get("/v1/model", dependencies=v1)
    def model() -> dict:
        """What answers: the model, its labels, ranks and back-off thresholds, and the limits."""
        thresholds = {r: None if math.isinf(t) else t for r, t in (recognizer.decoder.thresholds or {}).items()}
        return {"about": about, "settings": recognizer.settings, "ranks": list(tax.ranks), "leaves": tax.n_leaves,
                "thresholds": thresholds, "max_files": settings.max_files, "max_file_bytes": settings.max_file_bytes,
                "max_top_k": settings.max_top_k}

    @app.get("/v1/taxa/search", dependencies=v1)
    def search(q: Annotated[str, Query(min_length=1, description="the first letters of a name, any rank")],
               limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict:
        """Taxa whose name starts with ``q`` (case-insensitive), with their paths (homonyms show their parents)."""
        return {"query": q, "taxa": taxa.search(q, limit)}

    @app.get("/v1/taxa/{taxon_id}", dependencies=v1)
    def taxon(taxon_id: int) -> dict:
        """A taxon: its path, its children and how many leaves (labels) lie under it."""
        try:
            return taxa.taxon(taxon_id)
        except TaxonNotFoundError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/healthz")
    def healthz() -> dict:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(request: Request) -> Response:
        """The model is loaded and the batcher runs."""
        ready = bool(request.app.state.ready)
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(index_html())

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        found = asset(name)
        if found is None:
            raise HTTPException(404, f"no asset {name!r}")
        return Response(found[0], media_type=found[1])

    return app
