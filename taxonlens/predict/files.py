"""``taxonlens predict`` over files: photos in, a table of rows out, resumable.

:func:`predict_files` runs a :class:`~taxonlens.predict.recognizer.Recognizer` over files in
batches and appends each photo's row to a journal beside the output (``OUT.journal.jsonl``), so a
killed run resumes and skips the photos already done; the output table (CSV, TSV, JSON lines or
Parquet, see :mod:`taxonlens.predict.rows`) is written from the journal at the end, atomically.

What a row depends on is recorded in ``OUT.run.json`` (:func:`~taxonlens.journal.claim_run`): the
model's and the labels' fingerprints, the decoding method, ``top_k``, the rank, the thresholds
and the format. A run with other settings refuses to touch the output unless told to overwrite
it. A photo is known by its resolved path, size and modification time: the same file named two
ways is one photo, and a file changed since its row was made is predicted again. Unreadable files
become rows with an ``error``, are never fatal, and are tried again on the next run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from taxonlens.data.images import IMAGE_SUFFIXES
from taxonlens.data.loader import PhotoBatch, PhotoLoader
from taxonlens.errors import DataError, ImageError
from taxonlens.journal import append_journal, claim_run, read_journal
from taxonlens.predict.recognizer import Recognizer
from taxonlens.predict.rows import RowFormat, flat_row, pybioclip_columns, pybioclip_rows
from taxonlens.tables import TABLE_SUFFIXES, check_writable, read_table, table_format, write_table

OUTPUT_FORMATS = TABLE_SUFFIXES


def expand_inputs(paths: Iterable[str | Path]) -> list[str]:
    """Image files named directly, every image file under named folders (sorted), and the photos
    of named manifests (a ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` table with an ``image``
    column, relative to the manifest's folder or absolute; in row order).

    Raises:
        DataError: a path that does not exist, a manifest without ``image`` values, or no images at all.
    """
    files: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(str(f) for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.suffix.lower() in TABLE_SUFFIXES:
            for where, row in read_table(p, "manifest"):
                image = row.get("image")
                if not isinstance(image, str) or not image.strip():
                    raise DataError(f"{where}: no 'image' (a manifest lists one photo path per row)")
                files.append(str(p.parent / image))
        elif p.exists():
            files.append(str(p))
        else:
            raise DataError(f"{p} does not exist")
    if not files:
        raise DataError("no image files found in the given paths")
    return files


def check_output(out: str | Path) -> Path:
    """``out`` when a table of photo rows can be written there (its folder exists and is writable,
    its suffix is one of :data:`OUTPUT_FORMATS`): commands check it before any model loads.

    Raises:
        DataError: what is wrong with ``out``.
    """
    out = check_writable(out)
    table_format(out, "output", OUTPUT_FORMATS)
    return out


def photo_key(path: str | Path) -> list:
    """``[resolved path, size, modification time in ns]`` of a photo file (size and time ``None``
    when it cannot be read): what tells one photo from another across runs."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return [str(p.resolve()), None, None]
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def journal_of(out: str | Path) -> Path:
    """The journal of the rows of ``out``: ``OUT.journal.jsonl``."""
    out = Path(out)
    return out.with_name(out.name + ".journal.jsonl")


def run_settings(recognizer: Recognizer, top_k: int, rank: str | None, output_format: str) -> dict:
    """Everything that determines a row of ``predict`` (recorded beside its output)."""
    thresholds = {r: None if math.isinf(t) else t for r, t in recognizer.decoder.thresholds.items()}
    return {**recognizer.settings, "top_k": top_k, "rank": rank, "thresholds": thresholds, "format": output_format}


def output_rows(rows: Sequence[dict], out: Path, output_format: str, ranks: Sequence[str]
                 ) -> tuple[list[dict], list[str] | None]:
    """The rows as written to ``out`` in ``output_format``, and their columns."""
    if output_format == "pybioclip":
        return [r for row in rows for r in pybioclip_rows(row, ranks)], pybioclip_columns(ranks)
    if out.suffix.lower() in (".csv", ".tsv"):
        return [flat_row(r) for r in rows], None
    return list(rows), None


def journal_photos(paths: Sequence[str], out: Path, settings: dict, overwrite: bool, loader: PhotoLoader,
                   work: Callable[[PhotoBatch], list[dict]],
                   error_row: Callable[[str, str], dict],
                   progress: Callable[[int], None] | None = None) -> tuple[list[dict], list[ImageError]]:
    """The resumable loop over photo files that ``predict`` and ``embed`` share.

    Claims ``out`` for ``settings`` (:func:`~taxonlens.journal.claim_run`), then reads every photo
    not yet in ``out``'s journal (new, changed since, or unreadable before) with ``loader`` (in its
    workers, a batch at a time), and appends one entry per photo: ``work(batch)`` gives the rows of
    the batch's readable photos, ``error_row(path, reason)`` the row of an unreadable one (every
    row has an ``error``).

    Returns:
        every photo's latest row, in journal order, and the files that could not be read now.
    """
    journal = journal_of(out)
    claim_run(out, settings, overwrite, companions=[journal])
    entries = {e["photo"][0]: e for e in read_journal(journal) if "photo" in e and "row" in e}
    todo, seen = [], set()
    for path in paths:
        key = photo_key(path)
        if key[0] in seen:  # the same file named twice
            continue
        seen.add(key[0])
        done = entries.get(key[0])
        if done is None or done["photo"] != key or done["row"]["error"]:  # new, changed or unreadable before
            todo.append((path, key))
    if progress and len(seen) > len(todo):
        progress(len(seen) - len(todo))
    failures: list[ImageError] = []
    with append_journal(journal) as log:  # a line cut by a crash is removed first
        start = 0
        for batch in loader.batches([path for path, _ in todo]):
            keys = [key for _, key in todo[start:start + len(batch.paths)]]
            start += len(batch.paths)
            rows = dict(zip(batch.read, loader.run(work, batch) if batch.read else []))
            unread = (k for k in range(len(keys)) if k not in rows)
            for k, e in zip(unread, batch.failures):
                failures.append(e)
                rows[k] = error_row(e.path, e.reason)
            for k, key in enumerate(keys):
                entry = {"photo": key, "row": rows[k]}
                entries[key[0]] = entry  # a redone photo keeps its place, with its new row
                log.write(json.dumps(entry, ensure_ascii=False) + "\n")
            log.flush()
            if progress:
                progress(len(keys))
    return [e["row"] for e in entries.values()], failures


def predict_files(
    recognizer: Recognizer,
    paths: Sequence[str],
    out: str | Path,
    batch_size: int = 32,
    top_k: int = 5,
    rank: str | None = None,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    output_format: str = "taxonlens",
    workers: int = 0,
) -> tuple[Path, list[ImageError]]:
    """Predict every file of ``paths`` into ``out`` (see the module docstring).

    Args:
        output_format: ``taxonlens`` (one row per photo) or ``pybioclip`` (pybioclip's rows).
        workers: processes that read and preprocess the photos (0: this one; see
            :class:`~taxonlens.data.loader.PhotoLoader`).
        overwrite: start afresh instead of resuming an output written with other settings.
        progress: called with the number of photos done (those done before first, in one call).

    Returns:
        the output path, and the files that could not be read (also rows with an ``error``).

    Raises:
        DataError: an unknown format, an unwritable ``out``, or ``out`` written with other settings.
        TaxonlensError: a ``batch_size`` too large for the device's memory (naming one that fits).
    """
    out = check_output(out)
    output_format = RowFormat(output_format)
    loader = PhotoLoader.of(recognizer.encoder, batch_size, workers, recognizer.needs_images)

    def work(batch: PhotoBatch) -> list[dict]:
        names = [batch.paths[k] for k in batch.read]
        predictions = recognizer.predict_pixels(batch.pixels, batch.images, top_k, rank)
        return [recognizer.row(n, p) for n, p in zip(names, predictions)]

    rows, failures = journal_photos(paths, out, run_settings(recognizer, top_k, rank, output_format), overwrite,
                                    loader, work, lambda path, reason: recognizer.row(path, None, reason), progress)
    rows_out, columns = output_rows(rows, out, output_format, recognizer.taxonomy.ranks)
    write_table(rows_out, out, "output", columns)
    return out, failures
