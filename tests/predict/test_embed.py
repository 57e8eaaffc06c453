"""``taxonlens embed``: one unit vector per photo, resumable, bad files as rows, read back by
``index build --embeddings`` instead of encoding again."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.data import load_image, read_manifest
from taxonlens.errors import DataError, TaxonlensError
from taxonlens.index.embeddings import read_embeddings
from taxonlens.index.memory import VectorMemory
from taxonlens.models.encoders import load_encoder
from taxonlens.predict.embed import embed_files


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny-clip", precision="fp32")


def test_rows_are_unit_vectors_with_the_model_and_bad_files_are_rows(encoder, photo_files, tmp_path):
    out, failures = embed_files(encoder, photo_files, tmp_path / "e.parquet", batch_size=8)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(photo_files) and len(failures) == 1
    good = [r for r in rows if not r["error"]]
    assert all(r["dim"] == encoder.embed_dim and r["model"] == encoder.fingerprint() for r in good)
    first = next(r for r in good)
    expected = encoder.encode_images(encoder.preprocess(load_image(first["file_name"]))[None])[0]
    torch.testing.assert_close(torch.tensor(first["embedding"]), expected, rtol=0, atol=1e-6)
    bad = next(r for r in rows if r["error"])
    assert bad["file_name"].endswith("broken.png") and bad["embedding"] == [] and bad["dim"] == 0


def test_an_interrupted_run_resumes_to_the_same_table(encoder, photo_files, tmp_path):
    whole, _ = embed_files(encoder, photo_files, tmp_path / "whole.jsonl", batch_size=8)

    class Killed(Exception):
        pass

    calls = []

    class Dying:
        def __getattr__(self, name):
            return getattr(encoder, name)

        def encode_images(self, pixels):
            if calls:
                raise Killed
            calls.append(len(pixels))
            return encoder.encode_images(pixels)

    cut = tmp_path / "cut.jsonl"
    with pytest.raises(Killed):
        embed_files(Dying(), photo_files, cut, batch_size=8)
    assert not cut.exists()
    embed_files(encoder, photo_files, cut, batch_size=8)
    resumed, once = [json.loads(line) for line in cut.read_text().splitlines()], \
        [json.loads(line) for line in whole.read_text().splitlines()]
    assert [(r["file_name"], r["error"], r["dim"]) for r in resumed] == [(r["file_name"], r["error"], r["dim"])
                                                                         for r in once]
    # the same vectors to float32 rounding: after the exception the CPU kernels may round the last bit
    # otherwise (measured: up to 6e-8 on an AMD EPYC whose uninterrupted runs are bit-identical)
    np.testing.assert_allclose([r["embedding"] for r in resumed if r["dim"]],
                               [r["embedding"] for r in once if r["dim"]], rtol=0, atol=1e-6)
    with pytest.raises(DataError, match="written with another model"):
        embed_files(load_encoder("tiny-clip-rn", precision="fp32"), photo_files, cut)


def test_index_build_reads_the_embeddings_instead_of_encoding(world_dir, photo_files, tmp_path, monkeypatch):
    runner = CliRunner()
    emb = tmp_path / "e.parquet"
    result = runner.invoke(app, ["embed", str(world_dir / "images"), "--model", "tiny-clip", "--precision", "fp32",
                                 "--out", str(emb)])
    assert result.exit_code == 0, result.output
    args = [str(world_dir / "manifest.jsonl"), "--model", "tiny-clip", "--precision", "fp32", "--split", "train"]
    assert runner.invoke(app, ["index", "build", *args, "--out", str(tmp_path / "plain")]).exit_code == 0
    from taxonlens.models.encoders import OpenCLIPEncoder

    encoded = []
    original = OpenCLIPEncoder.encode_images
    monkeypatch.setattr(OpenCLIPEncoder, "encode_images",
                        lambda self, pixels: encoded.append(len(pixels)) or original(self, pixels))
    result = runner.invoke(app, ["index", "build", *args, "--out", str(tmp_path / "cached"), "--embeddings", str(emb)])
    assert result.exit_code == 0, result.output
    assert encoded == []  # every training photo was in the table
    plain, cached = VectorMemory.load(tmp_path / "plain"), VectorMemory.load(tmp_path / "cached")
    assert np.array_equal(plain.labels, cached.labels) and len(plain) == len(cached)
    train = [r for r in read_manifest(world_dir / "manifest.jsonl") if r.split == "train"]
    assert len(plain) == len(train)
    other = load_encoder("tiny-clip-rn", precision="fp32")
    with pytest.raises(DataError, match="embedded by another encoder"):
        read_embeddings(emb, other.fingerprint())
    json_rows = tmp_path / "not.jsonl"
    json_rows.write_text(json.dumps({"image": "a.png"}) + "\n")
    with pytest.raises(DataError, match="written by `taxonlens embed`"):
        read_embeddings(json_rows)


def test_a_batch_size_too_large_for_the_device_names_one_that_fits(encoder, photo_files, tmp_path):
    """The device's memory is played by a test double: an encoder whose ``encode_images`` raises
    torch.OutOfMemoryError for batches of more than 3 photos, as a GPU does when a batch does not
    fit. The error names the size asked for and the largest halving that fits (8 -> 4 -> 2)."""

    class SmallMemory:
        def __getattr__(self, name):
            return getattr(encoder, name)

        def encode_images(self, pixels):
            if len(pixels) > 3:
                raise torch.OutOfMemoryError("CUDA out of memory (test double)")
            return encoder.encode_images(pixels)

    with pytest.raises(TaxonlensError, match=r"^--batch-size 8 does not fit in the memory of cpu; 2 does"):
        embed_files(SmallMemory(), photo_files, tmp_path / "e.jsonl", batch_size=8)
    out, _ = embed_files(SmallMemory(), photo_files, tmp_path / "e.jsonl", batch_size=2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(photo_files) and sum(bool(r["error"]) for r in rows) == 1
