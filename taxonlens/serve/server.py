"""Running the service: uvicorn on the settings' host and port, until interrupted."""

from __future__ import annotations

import socket

from taxonlens.errors import TaxonlensError
from taxonlens.predict.recognizer import Recognizer
from taxonlens.serve.settings import ServeSettings


def check_port(host: str, port: int) -> None:
    """Fail early (before a model loads) when ``host:port`` cannot be bound.

    Raises:
        TaxonlensError: the address is in use or not this machine's.
    """
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise TaxonlensError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port or "
                             "--host") from None


def run_server(recognizer: Recognizer, settings: ServeSettings, about: str = "") -> None:
    """Serve ``recognizer`` (see :func:`~taxonlens.serve.app.create_app`) until interrupted."""
    import uvicorn

    from taxonlens.serve.app import create_app

    uvicorn.run(create_app(recognizer, settings, about), host=settings.host, port=settings.port,
                log_level="warning", access_log=False)
