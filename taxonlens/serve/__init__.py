"""``taxonlens serve``: an HTTP API and a web page over the :class:`~taxonlens.predict.Recognizer`.

- :mod:`~taxonlens.serve.settings`: the service's limits and switches (:class:`ServeSettings`);
- :mod:`~taxonlens.serve.uploads`: reading uploaded photos with size and count limits;
- :mod:`~taxonlens.serve.batching`: dynamic micro-batching over a bounded queue;
- :mod:`~taxonlens.serve.answers`: leaf probabilities -> ``predict`` rows, within an optional subset;
- :mod:`~taxonlens.serve.taxa`: taxonomy search and taxon pages for ``/v1/taxa``;
- :mod:`~taxonlens.serve.metrics`: the Prometheus metrics;
- :mod:`~taxonlens.serve.page`: the web page's assets (``static/``, shipped in the package);
- :mod:`~taxonlens.serve.app`: the FastAPI application; :mod:`~taxonlens.serve.server`: uvicorn;
- :mod:`~taxonlens.serve.load`: ``taxonlens bench serve``, the load benchmark.

FastAPI, uvicorn and prometheus-client are imported only here, never when the CLI starts.
"""
