"""Append-only JSON-lines journals: how batch jobs keep each result as soon as it is known, so
a killed run resumes where it stopped.

A crash while appending can cut only the last line. :func:`read_journal` skips a line that is
not a JSON object; :func:`append_journal` removes a cut last line before appending, so the file
stays one whole object per line and a resumed run writes the same file as an uninterrupted one.
:func:`fill_journal` is the resumable loop: work on the items not yet in the file, a chunk at a
time, appending each chunk's rows.

A journal is only resumed by a run that would write the same rows: :func:`claim_run` records,
beside the output ``OUT``, the settings that determine its rows (``OUT.run.json``: model and
label-set fingerprints, options) and refuses to add to an output written with other settings,
unless told to start afresh.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, TypeVar

from taxonlens.errors import DataError

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


def run_file(out: str | Path) -> Path:
    """Where the settings of the run that writes ``out`` are recorded: ``OUT.run.json``."""
    out = Path(out)
    return out.with_name(out.name + ".run.json")


def differing_settings(recorded: Mapping[str, object], settings: Mapping[str, object]) -> list[str]:
    """The names whose values differ between settings recorded in a file and ``settings`` (as
    they would be written: tuples and lists compare alike), in order of first appearance."""
    now = json.loads(json.dumps(settings))
    return [k for k in dict.fromkeys([*recorded, *now]) if recorded.get(k) != now.get(k)]


def claim_run(out: str | Path, settings: Mapping[str, object], overwrite: bool = False,
              companions: Sequence[Path] = ()) -> None:
    """Make ``out`` the output of a run with ``settings``, before any row is written.

    When ``out`` (or one of its ``companions``, such as its journal) already exists, its rows may
    be resumed only if they were made with the same settings (as recorded in :func:`run_file`);
    ``overwrite`` deletes them instead, so the run starts afresh. The settings are then recorded.

    Args:
        settings: everything that determines a row (JSON values: fingerprints, names, numbers).

    Raises:
        DataError: ``out`` holds rows made with other settings, or by a run that recorded none.
    """
    out, record = Path(out), run_file(out)
    files = [out, *companions]
    settings = json.loads(json.dumps(settings))  # tuples and lists compare alike once written
    if overwrite:
        for f in (*files, record):
            f.unlink(missing_ok=True)
    elif any(f.exists() for f in files):
        if not record.is_file():
            raise DataError(f"{out} exists but records no settings ({record.name} is missing), so its rows "
                            "cannot be trusted to match this run; pass --overwrite or another --out")
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{record}: unreadable run settings ({e}); pass --overwrite or another --out") from None
        differ = differing_settings(saved, settings)
        if differ:
            raise DataError(f"{out} was written with another {', '.join(differ)}; pass --overwrite or another --out")
    tmp = record.with_name(f".{record.name}.tmp")
    tmp.write_text(json.dumps({"settings": settings}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, record)


def fill_journal(out: str | Path, items: Sequence[T], key: Callable[[T], str],
                 work: Callable[[Sequence[T]], list[dict]], chunk: int = 16,
                 progress: Callable[[int], None] | None = None, field: str = "image",
                 settings: Mapping[str, object] | None = None, overwrite: bool = False) -> Path:
    """Append to the JSON-lines file ``out`` the rows of every item not already in it.

    With ``settings``, the run first claims ``out`` (:func:`claim_run`): rows written with other
    settings are never resumed (``overwrite`` starts afresh instead).

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
    if settings is not None:
        claim_run(out, settings, overwrite)
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
