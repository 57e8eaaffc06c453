"""``taxonlens serve``: the recognizer over HTTP, with a web page (see :mod:`taxonlens.serve`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from taxonlens.cli.common import console, progress_bar
from taxonlens.cli.config_options import ConfigValues, config_options
from taxonlens.cli.predict import PANEL
from taxonlens.errors import TaxonlensError
from taxonlens.predict.recognizer import RecognizerOptions

#: options that choose the labels, which need --model (without it the demo's model and labels are served)
LABEL_SOURCES = ("taxonomy", "labels", "memory", "classifier")


@config_options(RecognizerOptions, panel=PANEL, optional=("model",))
def serve(
    settings: ConfigValues,
    thresholds: Annotated[Path | None, typer.Option(help="Back-off thresholds JSON from `taxonlens calibrate` (made "
                                                         "with the same recognizer options).")] = None,
    demo: Annotated[Path, typer.Option(help="Without --model: the folder of `taxonlens demo` whose model and "
                                            "thresholds are served.")] = Path("taxonlens-demo"),
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_env: Annotated[str | None, typer.Option(help="Name of an environment variable holding an API key: "
                                                         "requests to /v1/ must send it (X-API-Key header).")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(help="An origin allowed to call the API from a browser "
                                                               "(repeat for more); CORS is off without it.")] = None,
    workers: Annotated[int, typer.Option(help="Batches the model runs at once (threads sharing one model).")] = 1,
    max_batch: Annotated[int, typer.Option(help="Photos of concurrent requests encoded together at most (1: "
                                                "micro-batching off).")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long a batch waits for more photos (ms).")] = 10.0,
    max_queue: Annotated[int, typer.Option(help="Photos waiting at most; beyond it requests get 503 with "
                                                "Retry-After.")] = 256,
    max_files: Annotated[int, typer.Option(help="Photos per request at most (more: 413).")] = 32,
    max_upload_mb: Annotated[float, typer.Option(help="Size of one photo at most, in MiB (more: 413).")] = 20.0,
    threads: Annotated[int, typer.Option(help="torch threads of the model (0: as torch sets them); on a shared CPU, "
                                              "no more than its free cores.")] = 0,
) -> None:
    """Serve the recognizer over HTTP: POST /v1/predict, taxonomy search, health, Prometheus metrics,
    OpenAPI at /docs and a web page at /. Without --model, serves the model `taxonlens demo` trained."""
    from taxonlens.predict import read_thresholds
    from taxonlens.serve.server import check_port, run_server
    from taxonlens.serve.settings import MIB, ServeSettings

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise TaxonlensError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    serve_settings = ServeSettings(host=host, port=port, api_key=api_key, cors_origins=tuple(cors_origin or ()),
                                   max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, workers=workers,
                                   max_files=max_files, max_file_bytes=int(max_upload_mb * MIB))
    cache_dir, demo_thresholds = None, None
    if settings["model"] is None:
        given = [f"--{name}" for name in LABEL_SOURCES if settings[name] is not None]
        if given or thresholds is not None:
            given += ["--thresholds"] if thresholds is not None else []
            raise TaxonlensError(f"{', '.join(given)} needs --model; without --model the demo's model and labels are "
                                 "served")
        from taxonlens.demo import demo_model

        served = demo_model(demo)
        options, demo_thresholds, cache_dir = served.options, served.thresholds, served.cache_dir
        about = f"the demo's model ({demo})"
    else:
        options = settings.build(RecognizerOptions)
        about = f"model {options.model}"
        if thresholds is not None:
            read_thresholds(thresholds)  # a malformed file fails before the model loads
    if options.rerank_k < 1:
        raise TaxonlensError("--rerank-k must be at least 1")
    check_port(host, port)
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    with progress_bar() as bar:
        task = bar.add_task("loading the model and embedding labels", total=None)
        recognizer = options.build(cache_dir=cache_dir, progress=lambda n: bar.advance(task, n))
        bar.update(task, visible=False)
    if thresholds is not None:
        recognizer.decoder.thresholds = read_thresholds(thresholds, recognizer)
    elif demo_thresholds is not None:
        recognizer.decoder.thresholds = demo_thresholds
    console.print(f"serving {about}: {recognizer.taxonomy.n_leaves} labels; page http://{host}:{port}/ , API docs "
                  f"http://{host}:{port}/docs (Ctrl+C stops)", highlight=False)
    run_server(recognizer, serve_settings, about)
