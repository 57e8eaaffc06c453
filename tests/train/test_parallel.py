"""Device, precision and processes of a training run: an explicit CPU run is the default run here,
shares of a step, and the proof that two data-parallel CPU processes (gloo, 127.0.0.1) train as
one process with the same global batch, and resume exactly after both are killed."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from taxonlens.errors import TaxonlensError
from taxonlens.train.parallel import Placement, launch_command, placement

WORKER = Path(__file__).with_name("data_parallel_worker.py")
_spec = importlib.util.spec_from_file_location("data_parallel_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)
contrastive_run, sft_run = worker.contrastive_run, worker.sft_run
#: 2 processes vs 1: the same steps up to float32 rounding (sums split over the processes and
#: re-added); AdamW divides every gradient by its running RMS, so a rounding difference in a
#: near-zero gradient moves a weight by a small fraction of the learning rate (measured: at most
#: 1.9e-5 after 6 steps at lr 1e-3 and 2e-3)
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-4


def _steps(path: Path) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in map(json.loads, path.read_text().splitlines())]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["model"]


def _launch(tmp: Path, name: str, jobs: list[dict], timeout: float = 300) -> list[int]:
    """Run the worker in 2 processes on 127.0.0.1 (the environment accelerate launch sets); their exit codes."""
    spec = tmp / f"{name}.json"
    spec.write_text(json.dumps(jobs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(spec)], cwd=Path.cwd(),
                              env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Contrastive and SFT training, in one process and in two: uninterrupted, and cut mid-run by
    SIGKILL of both processes (the contrastive run at its step 3 starts the SFT run, which kills
    its process after its own step 3: each has its step-2 checkpoint on disk), then resumed in a
    second launch."""
    tmp = tmp_path_factory.mktemp("parallel")
    one = {}
    for name, run in (("contrastive", contrastive_run), ("sft", sft_run)):
        losses = []
        one[name] = (run(tmp / f"{name}-1", progress=lambda log, losses=losses: losses.append((log.step, log.loss))),
                     losses)
    killed = {"trainer": "contrastive", "out": str(tmp / "contrastive-killed"), "nest_at": 3,
              "nested": {"trainer": "sft", "out": str(tmp / "sft-killed"), "kill_at": 3}}
    first = _launch(tmp, "first", [{"trainer": "contrastive", "out": str(tmp / "contrastive-2")},
                                   {"trainer": "sft", "out": str(tmp / "sft-2")}, killed])
    second = _launch(tmp, "second", [{"trainer": t, "out": str(tmp / f"{t}-killed"), "resume": True}
                                     for t in ("contrastive", "sft")])
    return tmp, one, (first, second)


@pytest.mark.parametrize("trainer", ["contrastive", "sft"])
def test_two_processes_train_as_one_with_the_same_global_batch(runs, trainer):
    tmp, one, _ = runs
    result, losses = one[trainer]
    two = _steps(tmp / f"{trainer}-2.steps.jsonl")
    assert [s for s, _ in two] == [s for s, _ in losses] == list(range(1, 7))
    assert [loss for _, loss in two] == pytest.approx([loss for _, loss in losses], abs=LOSS_TOLERANCE)
    ours, theirs = _weights(tmp / f"{trainer}-2"), _weights(result.model_dir.parent)
    assert ours.keys() == theirs.keys()
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=WEIGHT_TOLERANCE, msg=name)
    # one writer: the main process's files only, no stray temporary checkpoints
    files = sorted(p.name for p in (tmp / f"{trainer}-2").iterdir())
    assert files == ["checkpoint.pt", "config.json", "metrics.jsonl", "model"]
    assert [r["epoch"] for r in map(json.loads, (tmp / f"{trainer}-2" / "metrics.jsonl").read_text().splitlines())] \
        == [1, 2]


@pytest.mark.parametrize("trainer", ["contrastive", "sft"])
def test_two_processes_killed_after_a_checkpoint_resume_exactly(runs, trainer):
    tmp, _, (first, second) = runs
    assert first[0] == -signal.SIGKILL and first[1] != 0  # both processes died mid-run
    assert second == [0, 0]
    straight = _steps(tmp / f"{trainer}-2.steps.jsonl")
    killed = _steps(tmp / f"{trainer}-killed.steps.jsonl")
    # steps 1-3, then from the step-2 checkpoint: step 3 again, to the end
    assert [s for s, _ in killed] == [1, 2, 3, 3, 4, 5, 6]
    assert [loss for _, loss in killed[3:]] == pytest.approx([loss for _, loss in straight[2:]], abs=1e-6)
    ours, theirs = _weights(tmp / f"{trainer}-killed"), _weights(tmp / f"{trainer}-2")
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is a GPU there")
@pytest.mark.parametrize("run", [contrastive_run, sft_run], ids=["contrastive", "sft"])
def test_an_explicit_cpu_run_is_the_default_run_here(runs, run):
    """``device="cpu", precision="fp32"`` trains exactly as the defaults (``auto``) do on this machine."""
    tmp, one, _ = runs
    name = "contrastive" if run is contrastive_run else "sft"
    default = one[name][0]
    assert json.loads((tmp / f"{name}-1" / "config.json").read_text())["device"] == "auto"
    explicit = run(tmp / f"{name}-cpu", device="cpu", precision="fp32")
    assert [m["train_loss"] for m in explicit.metrics] == [m["train_loss"] for m in default.metrics]
    theirs = _weights(tmp / f"{name}-1")
    for key, tensor in _weights(tmp / f"{name}-cpu").items():
        assert torch.equal(tensor, theirs[key]), key


def test_placement_auto_trains_in_fp32_on_the_cpu():
    if torch.cuda.is_available():
        pytest.skip("auto is a GPU here")
    assert placement("auto", "auto") == placement("cpu", "fp32") == Placement(torch.device("cpu"), "fp32")
    assert placement("cpu", "bf16").precision == "bf16"
    with pytest.raises(TaxonlensError, match="no CUDA GPU"):
        placement("cuda", "auto")


def test_shares_split_a_step_contiguously_and_keep_every_process_busy():
    shares = [Placement(torch.device("cpu"), "fp32", rank, 2).share([10, 11, 12, 13, 14]) for rank in range(2)]
    assert shares == [([10, 11], True), ([12, 13, 14], True)]
    # a process left without items runs the first one, uncounted
    assert [Placement(torch.device("cpu"), "fp32", rank, 3).share([7, 8]) for rank in range(3)] == \
        [([7], False), ([7], True), ([8], True)]
    assert Placement(torch.device("cpu"), "fp32", 0, 1).share([7, 8]) == ([7, 8], True)


def test_num_processes_launches_taxonlens_through_accelerate_on_localhost():
    cmd = launch_command(["train", "sft", "q.jsonl", "--out", "run", "--num-processes", "2"], 2, 29500)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[cmd.index("--main_process_ip") + 1] == "127.0.0.1"
    assert cmd[cmd.index("-m", 3):] == ["-m", "taxonlens", "train", "sft", "q.jsonl", "--out", "run",
                                        "--num-processes", "2"]
