"""``--engine ray``: the local engine's rows from a Ray Data pipeline (one local Ray, 2 CPUs, for
the whole module), Parquet shards that resume shard by shard, a worker killed mid-run, and
``embed`` / ``index build`` on Ray from the command line."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace

import numpy as np
import psutil
import pytest
from typer.testing import CliRunner

from taxonlens.cli import app, main
from taxonlens.data import read_manifest
from taxonlens.errors import DataError
from taxonlens.index.memory import VectorMemory
from taxonlens.predict import predict_files, ray_engine
from taxonlens.predict.ray_engine import SHARDS, EngineOptions, predict_ray, ray_cluster, read_shards
from taxonlens.tables import read_table

RAY = EngineOptions(engine="ray", num_workers=2, shard_size=10)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs); the engine runs on it instead of starting its own."""
    import ray

    ray.init(num_cpus=2, object_store_memory=1024**3, include_dashboard=False, log_to_driver=False)
    with ray_cluster():
        yield
    ray.shutdown()


def _kill_one_encoder(killed: list[int]) -> None:
    """Kill (SIGKILL) one encoder actor process of the running pipeline, once."""
    if killed:
        return
    for p in psutil.process_iter(["pid", "cmdline"]):
        if "_EncodeWorker" in " ".join(p.info["cmdline"] or []):
            os.kill(p.info["pid"], signal.SIGKILL)
            killed.append(p.info["pid"])
            return


@pytest.fixture(scope="module")
def killed_run(local_ray, recognizer, photo_files, tmp_path_factory):
    """``predict_ray`` over the photos (one broken) in shards of 10, one encoder killed as the first
    rows come in; and the local engine's rows of the same photos."""
    tmp = tmp_path_factory.mktemp("ray")
    killed: list[int] = []
    out, failures = predict_ray(recognizer, photo_files, tmp / "shards", RAY, batch_size=4, top_k=3,
                                progress=lambda n: _kill_one_encoder(killed))
    local, _ = predict_files(recognizer, photo_files, tmp / "local.parquet", batch_size=8, top_k=3)
    return out, failures, killed, [row for _, row in read_table(local, "predictions")]


def _same_row(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k, v in a.items():
        if isinstance(v, float):
            assert math.isclose(v, b[k], rel_tol=1e-5, abs_tol=1e-6), k
        elif k == "alternatives":
            assert [x["path"] for x in v] == [x["path"] for x in b[k]]
            assert np.allclose([x["score"] for x in v], [x["score"] for x in b[k]], atol=1e-5)
        else:
            assert v == b[k], k


def test_ray_rows_are_the_local_engines_rows(killed_run, world_dir):
    out, failures, _, local = killed_run
    rows = read_shards(out)
    assert [r["file_name"] for r in rows] == [r["file_name"] for r in local]
    for a, b in zip(rows, local):
        _same_row(a, b)
    broken = [r for r in rows if r["error"]]
    assert [r["file_name"] for r in broken] == [str(world_dir / "broken.png")] and broken[0]["path"] == []
    assert [f.path for f in failures] == [str(world_dir / "broken.png")]


def test_a_killed_worker_leaves_every_photo_exactly_once(killed_run, photo_files):
    out, _, killed, _ = killed_run
    assert len(killed) == 1  # a worker really died mid-run
    names = [row["file_name"] for _, row in read_table(out / SHARDS, "m") for _, row in
             read_table(out / row["file"], "shard")]
    assert sorted(names) == sorted(photo_files) and len(set(names)) == len(names)
    manifest = [row for _, row in read_table(out / SHARDS, "m")]
    assert [m["shard"] for m in manifest] == [0, 1, 2, 3] and [m["photos"] for m in manifest] == [10, 10, 10, 7]
    assert sum(m["errors"] for m in manifest) == 1
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [m["file"] for m in manifest]


def test_a_rerun_skips_finished_shards_and_redoes_changed_ones(killed_run, recognizer, photo_files, monkeypatch):
    out, *_ = killed_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    ran: list[list] = []
    original = ray_engine._rows
    monkeypatch.setattr(ray_engine, "_rows", lambda paths, *a: ran.append(list(paths)) or original(paths, *a))
    done = []
    predict_ray(recognizer, photo_files, out, RAY, batch_size=4, top_k=3, progress=done.append)
    assert ran == [] and sum(done) == len(photo_files)  # every shard finished: Ray is not asked
    changed = photo_files[12]  # in shard 1
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    predict_ray(recognizer, photo_files, out, replace(RAY, num_workers=1), batch_size=4, top_k=3)
    assert [sorted({s for _, s in paths}) for paths in ran] == [[1]] and len(ran[0]) == 10
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.parquet")}
    assert [n for n in before if before[n] != after[n]] == ["shard-00001.parquet"]
    with pytest.raises(DataError, match="written with another top_k"):
        predict_ray(recognizer, photo_files, out, RAY, batch_size=4, top_k=2)


def test_embed_and_index_build_on_ray(local_ray, world_dir, photo_files, tmp_path, monkeypatch):
    runner = CliRunner()
    common = ["--model", "tiny-clip", "--precision", "fp32"]
    result = runner.invoke(app, ["embed", str(world_dir / "images"), *common, "--out", str(tmp_path / "local.parquet")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["embed", str(world_dir / "images"), *common, "--engine", "ray", "--num-workers", "1",
                                 "--out", str(tmp_path / "emb")])
    assert result.exit_code == 0, result.output
    assert "Dataset" not in result.output and "(raylet)" not in result.output  # Ray's logs stay out
    local = [row for _, row in read_table(tmp_path / "local.parquet", "embeddings")]
    shards = read_shards(tmp_path / "emb")
    assert [r["file_name"] for r in shards] == [r["file_name"] for r in local]
    assert all(r["model"] == s["model"] and np.allclose(r["embedding"], s["embedding"], atol=1e-5)
               for r, s in zip(local, shards))

    args = [str(world_dir / "manifest.jsonl"), *common, "--split", "train"]
    assert runner.invoke(app, ["index", "build", *args, "--out", str(tmp_path / "plain")]).exit_code == 0
    from taxonlens.models.encoders import OpenCLIPEncoder

    encoded = []
    original = OpenCLIPEncoder.encode_images
    monkeypatch.setattr(OpenCLIPEncoder, "encode_images",
                        lambda self, pixels: encoded.append(len(pixels)) or original(self, pixels))
    result = runner.invoke(app, ["index", "build", *args, "--engine", "ray", "--num-workers", "1",
                                 "--out", str(tmp_path / "on-ray")])
    assert result.exit_code == 0, result.output
    assert encoded == []  # the photos were encoded by the Ray workers, not here
    plain, on_ray = VectorMemory.load(tmp_path / "plain"), VectorMemory.load(tmp_path / "on-ray")
    train = [r for r in read_manifest(world_dir / "manifest.jsonl") if r.split == "train"]
    assert np.array_equal(plain.labels, on_ray.labels) and len(on_ray) == len(train)


@pytest.mark.parametrize(("args", "message"), [
    (["--engine", "ray", "--out", "p.csv"], "with --engine ray name a folder"),
    (["--num-workers", "2"], "apply to --engine ray"),
    (["--engine", "ray", "--num-workers", "0", "--out", "d"], "--num-workers must be at least 1"),
])
def test_engine_options_fail_before_any_model_loads(args, message, world_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["taxonlens", "predict", str(world_dir / "images"), "--model", "no-such-model",
                                     *args])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
