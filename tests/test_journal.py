"""Journals: a cut last line is skipped when read and removed before appending; the resumable loop."""

import json

import pytest

from taxonlens.errors import DataError
from taxonlens.journal import append_journal, claim_run, fill_journal, read_journal, run_file


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


def test_a_run_resumes_only_what_the_same_settings_wrote(tmp_path):
    out = tmp_path / "rows.jsonl"
    calls = []

    def work(batch):
        calls.extend(batch)
        return [{"image": x} for x in batch]

    fill_journal(out, ["a", "b"], str, work, settings={"model": "m1", "k": (1, 2)})
    assert json.loads(run_file(out).read_text())["settings"] == {"model": "m1", "k": [1, 2]}
    fill_journal(out, ["a", "b", "c"], str, work, settings={"model": "m1", "k": [1, 2]})  # a tuple equals its list
    assert calls == ["a", "b", "c"]
    with pytest.raises(DataError, match=r"rows\.jsonl was written with another model, k; pass --overwrite"):
        fill_journal(out, ["a"], str, work, settings={"model": "m2", "k": [3]})
    assert [r["image"] for r in read_journal(out)] == ["a", "b", "c"]  # refused: nothing touched
    fill_journal(out, ["a"], str, work, settings={"model": "m2"}, overwrite=True)
    assert [r["image"] for r in read_journal(out)] == ["a"] and calls[-1] == "a"


def test_an_output_without_recorded_settings_is_refused(tmp_path):
    out = tmp_path / "old.jsonl"
    out.write_text('{"image": "a"}\n')
    with pytest.raises(DataError, match=r"old\.jsonl exists but records no settings"):
        claim_run(out, {"model": "m"})
    run_file(out).write_text("{not json")
    with pytest.raises(DataError, match="unreadable run settings"):
        claim_run(out, {"model": "m"})
    claim_run(out, {"model": "m"}, overwrite=True)
    assert not out.exists() and json.loads(run_file(out).read_text()) == {"settings": {"model": "m"}}
