"""Reading text files with errors that name the file and line: the one place
every reader of JSON lines, CSV and JSON goes through."""

from __future__ import annotations

import json
from pathlib import Path

from taxonlens.errors import DataError, TaxonlensError


def read_text(path: str | Path, kind: str, error: type[TaxonlensError] = DataError) -> str:
    """The UTF-8 text of ``path``; ``kind`` ("manifest", "benchmark", ...) names it in errors.

    Raises:
        ``error``: the file is missing, a folder, or not UTF-8 text.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{kind} file {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text; is this a {kind} file?") from None


def read_jsonl(path: str | Path, kind: str, error: type[TaxonlensError] = DataError) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file.

    Raises:
        ``error``: missing file, non-UTF-8 text, a line that is not a JSON object, or no lines.
    """
    items = []
    for i, line in enumerate(read_text(path, kind, error).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{i}: not valid JSON ({e.msg}); a {kind} has one JSON object per line") from None
        if not isinstance(obj, dict):
            raise error(f"{path}:{i}: expected a JSON object per line, got {type(obj).__name__}")
        items.append((i, obj))
    if not items:
        raise error(f"{path}: empty {kind} file")
    return items
