"""The shared epoch loop on a tiny task: a linear fit with dropout (so the random states matter)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from taxonlens.train import CheckpointError
from taxonlens.train.checkpoint import CHECKPOINT_FILE
from taxonlens.train.config import LoopConfig
from taxonlens.train.loop import (
    MODEL_DIR,
    EpochTask,
    LoopRun,
    StepLog,
    TrainResult,
    adamw,
    seed_everything,
    train_epochs,
)
from taxonlens.train.parallel import Placement

X = torch.linspace(-1, 1, 10)[:, None]  # [10, 1]
Y = 3 * X + 1


class Stop(Exception):
    """Raised by a progress callback to kill a run mid-epoch."""


def fit(out: Path, resume: bool = False, stop_at: int | None = None, parts: bool = True,
        **settings) -> TrainResult[torch.nn.Module]:
    """3 epochs of 3 batches (4, 4 and the tail of 2) over 10 points, a checkpoint every 2 steps;
    ``stop_at``: the run dies after that step."""
    config = LoopConfig(**{"out": out, "epochs": 3, "batch_size": 4, "lr": 0.05, "checkpoint_every": 2, **settings})

    def build(place: Placement) -> LoopRun[torch.nn.Module]:
        seed_everything(config.seed)
        model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(1, 1)).to(place.device)
        optimizer = adamw([{"params": list(model.parameters())}], lr=config.lr)

        def loss(items: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
            pred = model(X[items])
            return F.mse_loss(pred, Y[items]), ({"abs": float((pred - Y[items]).detach().abs().mean())} if parts else {})

        def save(write: bool) -> tuple[torch.nn.Module, Path]:
            folder = Path(config.out) / MODEL_DIR
            if write:
                folder.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), folder / "weights.pt")
            return model, folder

        task = EpochTask(lambda epoch: range(len(X)), loss, lambda: {"w": float(model[1].weight.detach())},
                         figures=lambda: {"bias": float(model[1].bias.detach())}, items="points")
        return LoopRun(model, optimizer, task, {"data": ("ten-points", "use the same points")}, save,
                       max_grad_norm=1.0)

    def progress(log: StepLog) -> None:
        if log.step == stop_at:
            raise Stop

    return train_epochs(config, build, resume, progress)


def _same_rows(a: list[dict], b: list[dict]) -> None:
    timing = {"seconds_per_step", "points_per_s", "train_seconds", "eval_seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in a] == \
           [{k: v for k, v in r.items() if k not in timing} for r in b]


def test_a_run_stopped_mid_epoch_resumes_exactly(tmp_path):
    straight = fit(tmp_path / "straight")
    with pytest.raises(Stop):
        fit(tmp_path / "resumed", stop_at=5)  # the last checkpoint is at step 4, batch 2 of epoch 2
    resumed = fit(tmp_path / "resumed", resume=True)

    assert straight.steps == resumed.steps == 9 and len(straight.metrics) == 3
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    _same_rows(straight.metrics, resumed.metrics)
    row = straight.metrics[-1]
    assert row["epoch"] == 3 and row["step"] == 9 and row["points"] == 10 and "abs_loss" in row and "bias" in row
    assert row["val"] == {"w": float(straight.model[1].weight.detach())}
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and resumed.checkpoint == tmp_path / "resumed" / CHECKPOINT_FILE
    assert (resumed.model_dir / "weights.pt").is_file() and not resumed.model.training


def test_resume_refuses_other_settings_and_an_existing_run(tmp_path):
    with pytest.raises(Stop):
        fit(tmp_path, stop_at=3)
    with pytest.raises(CheckpointError, match="exists"):
        fit(tmp_path)
    with pytest.raises(CheckpointError, match="lr: 0.05 -> 0.1"):
        fit(tmp_path, resume=True, lr=0.1)
    assert fit(tmp_path, resume=True, eval_every=2, threads=1).steps == 9  # these do not change the weights


def test_a_checkpoint_with_the_older_running_sum_resumes(tmp_path):
    """Checkpoints written before the loop was shared kept the running loss as ``loss_sum``."""
    straight = fit(tmp_path / "straight", parts=False)
    with pytest.raises(Stop):
        fit(tmp_path / "old", stop_at=5, parts=False)
    path = tmp_path / "old" / CHECKPOINT_FILE
    payload = torch.load(path, weights_only=True)
    payload["extra"] = {"data": payload["extra"]["data"], "loss_sum": payload["extra"]["sums"]["loss"],
                        "seconds": payload["extra"]["seconds"]}
    torch.save(payload, path)
    resumed = fit(tmp_path / "old", resume=True, parts=False)
    assert torch.equal(resumed.model[1].weight, straight.model[1].weight)
    _same_rows(straight.metrics, resumed.metrics)
