"""Reading the photos of a ``POST /v1/predict``: multipart field ``files``, with limits.

Every way a request can be refused before any photo is decoded is an :class:`UploadRejected`
with its HTTP status, the kind counted in the metrics, and a message that says what to do. The
photos stay in memory: no request names a path the server would read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from taxonlens.errors import TaxonlensError
from taxonlens.serve.settings import MIB, ServeSettings

FIELD = "files"


class UploadRejected(TaxonlensError):
    """A request refused as a whole: ``status`` (4xx) and ``kind`` (for the metrics)."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass(frozen=True)
class Upload:
    """One uploaded photo: its file name as uploaded, and its bytes."""

    name: str
    data: bytes


class _TooLarge(Exception):
    pass


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """``stream``, stopped with :class:`_TooLarge` once more than ``limit`` bytes have come."""
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > limit:
            raise _TooLarge
        yield chunk


def _too_large(settings: ServeSettings) -> UploadRejected:
    return UploadRejected(413, "too_large", f"the request is larger than {settings.max_body_bytes / MIB:.0f} MiB: "
                                            f"send at most {settings.max_files} photos of at most "
                                            f"{settings.max_file_bytes / MIB:g} MiB each")


async def read_uploads(request: Request, settings: ServeSettings) -> list[Upload]:
    """The photos of the field ``files``, in upload order.

    Raises:
        UploadRejected: not multipart or malformed (400), too large or too many files (413), no photo (422).
    """
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise UploadRejected(400, "bad_multipart", "send the photos as multipart/form-data, in the repeatable field "
                                                   f"{FIELD!r}")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > settings.max_body_bytes:
        raise _too_large(settings)
    parser = MultiPartParser(request.headers, _limited(request.stream(), settings.max_body_bytes),
                             max_files=settings.max_files, max_fields=16, max_part_size=64 * 1024)
    try:
        form = await parser.parse()
    except _TooLarge:
        raise _too_large(settings) from None
    except MultiPartException as e:
        if e.message.startswith("Too many files"):
            raise UploadRejected(413, "too_many_files", f"more than {settings.max_files} photos in one request: "
                                                        "send them in several requests") from None
        raise UploadRejected(400, "bad_multipart", f"malformed multipart body ({e.message})") from None
    try:
        parts = form.getlist(FIELD)
        if not parts:
            raise UploadRejected(422, "no_photos", f"no photos: send one or more files in the field {FIELD!r}")
        if not all(isinstance(p, UploadFile) for p in parts):
            raise UploadRejected(400, "bad_multipart", f"the field {FIELD!r} holds files, not text")
        uploads = []
        for i, part in enumerate(parts):
            data = await part.read()
            name = part.filename or f"photo {i + 1}"
            if len(data) > settings.max_file_bytes:
                raise UploadRejected(413, "too_large", f"{name}: {len(data) / MIB:.1f} MiB is over the limit of "
                                                       f"{settings.max_file_bytes / MIB:g} MiB per photo")
            uploads.append(Upload(name, data))
        return uploads
    finally:
        await form.close()
