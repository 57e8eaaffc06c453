"""``bench device`` (what scripts/gpu-check.sh runs on a GPU), at its quick size on this machine's
CPU: every task on every model measured once, with positive throughput and memory; the script
refuses plainly where torch sees no GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from taxonlens.bench.device_check import TRAINERS
from taxonlens.cli import app

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
ROOT = Path(__file__).resolve().parents[2]


def test_quick_check_measures_every_model_and_task_on_the_cpu(tmp_path):
    out = tmp_path / "device.json"
    result = CliRunner().invoke(app, ["bench", "device", "--quick", "--device", "cpu", "--threads", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["device"] == "cpu" and figures["precision"] in ("fp32", "bf16")
    tasks = [(r["task"], r["model"]) for r in figures["rows"]]
    assert tasks == [("predict", "tiny-clip"), ("score", "tiny-qwen2.5-vl"),
                     *[(t, "tiny-qwen2.5-vl") for t in TRAINERS]]
    for row in figures["rows"]:
        assert row["seconds"] > 0 and row["per_second"] == pytest.approx(row["items"] / row["seconds"])
        assert row["peak_mb"] > 0
    assert f"every model on cpu at {figures['precision']}" in " ".join(result.output.split())  # the table's title


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible: the script would run the check")
def test_gpu_check_script_refuses_plainly_without_a_gpu():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh")], check=False, capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode != 0 and "no CUDA GPU visible to torch" in done.stderr
