"""Journals: a cut last line is skipped when read and removed before appending; the resumable loop."""

import json

import pytest

from taxonlens.journal import append_journal, fill_journal, read_journal


def test_read_skips_a_cut_line_and_a_missing_file_is_empty(tmp_path):
    path = tmp_path / "j.jsonl"
    assert read_journal(path) == []
    path.write_text('{"a": 1}\n[1, 2]\n{"a": 2}\n{"a": 3, "b"')
    assert read_journal(path) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(("before", "after"), [
    ('{"a": 1}\n{"a": 2', '{"a": 1}\n'),
    ('{"a": 1}\n', '{"a": 1}\n'),
    ('{"a": 1', ""),
    ("", ""),
])
def test_append_removes_a_cut_last_line_first(tmp_path, before, after):
    path = tmp_path / "j.jsonl"
    path.write_text(before)
    with append_journal(path) as f:
        f.write('{"z": 0}\n')
    assert path.read_text() == after + '{"z": 0}\n'


def test_append_finds_the_last_newline_beyond_one_block(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"a": 1}\n{"long": "' + "x" * 200_000)
    with append_journal(path):
        pass
    assert path.read_text() == '{"a": 1}\n'


def test_fill_journal_does_each_item_once_in_chunks(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps({"image": "b", "n": 0}) + "\n")
    chunks, progress = [], []

    def work(batch):
        chunks.append(list(batch))
        return [{"image": x, "n": 1} for x in batch if x != "d"]  # "d" fails: left for the next run

    fill_journal(path, ["a", "b", "c", "a", "d", "e"], str, work, chunk=2, progress=progress.append)
    assert chunks == [["a", "c"], ["d", "e"]] and progress == [2, 2, 2]
    assert [r["image"] for r in read_journal(path)] == ["b", "a", "c", "e"]
    chunks.clear()
    fill_journal(path, ["a", "b", "c", "d", "e"], str, work, chunk=2)
    assert chunks == [["d"]]
