"""The web page's assets: ``static/`` of this package (HTML, CSS, JavaScript; no CDN), served
at ``/`` and ``/static/NAME``. Only the files listed in :data:`ASSETS` are served."""

from __future__ import annotations

from functools import cache
from importlib import resources

#: file name -> media type of every asset the page loads
ASSETS = {"page.css": "text/css; charset=utf-8", "page.js": "text/javascript; charset=utf-8"}


@cache
def _read(name: str) -> bytes:
    return (resources.files("taxonlens.serve") / "static" / name).read_bytes()


def index_html() -> str:
    """The page (``static/index.html``)."""
    return _read("index.html").decode("utf-8")


def asset(name: str) -> tuple[bytes, str] | None:
    """``(content, media type)`` of an asset of :data:`ASSETS`; ``None`` for any other name."""
    return (_read(name), ASSETS[name]) if name in ASSETS else None
