"""Append-only JSON-lines journals: how batch jobs keep each result as soon as it is known, so
a killed run resumes where it stopped.

A crash while appending can cut only the last line. :func:`read_journal` skips a line that is
not a JSON object; :func:`append_journal` removes a cut last line before appending, so the file
stays one whole object per line and a resumed run writes the same file as an uninterrupted one.
:func:`fill_journal` is the resumable loop: work on the items not yet in the file, a chunk at a
time, appending each chunk's rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, TypeVar

T = TypeVar("T")
_BLOCK = 1 << 16


def read_journal(path: str | Path) -> list[dict]:
    """The object of every whole line of a JSON-lines file, in file order; none for a missing
    file. A line that is not a JSON object (cut by a crash mid-write) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    return rows


def _drop_cut_last_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (nothing to do when it ends with one)."""
    with path.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - _BLOCK)
            f.seek(start)
            block = f.read(pos - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        else:
            keep = 0
        if keep != end:
            f.truncate(keep)


@contextmanager
def append_journal(path: str | Path) -> Iterator[TextIO]:
    """``path`` opened for appending UTF-8 text (created if missing), after removing a last line
    cut by a crash (any text after the last newline)."""
    path = Path(path)
    if path.is_file():
        _drop_cut_last_line(path)
    with path.open("a", encoding="utf-8") as f:
        yield f


def fill_journal(out: str | Path, items: Sequence[T], key: Callable[[T], str],
                 work: Callable[[Sequence[T]], list[dict]], chunk: int = 16,
                 progress: Callable[[int], None] | None = None, field: str = "image") -> Path:
    """Append to the JSON-lines file ``out`` the rows of every item not already in it.

    An item is done when some row of ``out`` has ``row[field] == key(item)``. The others (each
    key once) are
    handed to ``work`` ``chunk`` at a time in their given order; the rows it returns are appended
    and flushed before the next chunk. ``work`` may return fewer rows than items (an item it
    could not do is tried again on the next run). ``progress`` gets the number of items done
    (those already in the file first, in one call).

    Returns:
        ``out``.
    """
    out = Path(out)
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    done = {r[field] for r in read_journal(out) if field in r}
    todo = []
    for item in items:  # an item listed twice is done once
        if key(item) not in done:
            done.add(key(item))
            todo.append(item)
    if progress and len(items) > len(todo):
        progress(len(items) - len(todo))
    with append_journal(out) as log:
        for start in range(0, len(todo), chunk):
            batch = todo[start:start + chunk]
            log.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in work(batch))
            log.flush()
            if progress:
                progress(len(batch))
    return out
