"""The shared epoch loop on a tiny task: a linear fit with dropout (so the random states matter)."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from taxonlens.errors import TaxonlensError
from taxonlens.train import CheckpointError, loop
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
        deepspeed: str | None = None, val_losses: list[float] | None = None,
        **settings) -> TrainResult[torch.nn.Module]:
    """3 epochs of 3 batches (4, 4 and the tail of 2) over 10 points, a checkpoint every 2 steps;
    ``stop_at``: the run dies after that step; ``val_losses``: the validation loss of each epoch
    (the validation then gives ``{"loss", "w"}``)."""
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

        def evaluate() -> dict[str, float]:
            w = {"w": float(model[1].weight.detach())}
            return w if val_losses is None else {"loss": val_losses[len(evaluated)], **w}

        evaluated: list[float] = []  # the loss and weight of each evaluation, in order
        task = EpochTask(lambda epoch: range(len(X)), loss, lambda: evaluated.append(evaluate()) or evaluated[-1],
                         figures=lambda: {"bias": float(model[1].bias.detach())}, items="points")
        return LoopRun(model, optimizer, task, {"data": ("ten-points", "use the same points")}, save,
                       max_grad_norm=1.0)

    def progress(log: StepLog) -> None:
        if log.step == stop_at:
            raise Stop

    return train_epochs(config, build, resume, progress, deepspeed)


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


def test_early_stopping_keeps_the_best_evaluation_and_resumes_exactly(tmp_path):
    losses = [3.0, 2.0, 2.5, 2.6, 1.0, 0.5]  # best after epoch 2, then two evaluations without a lower loss
    straight = fit(tmp_path / "straight", val_losses=losses, epochs=6, patience=2)
    assert [r["epoch"] for r in straight.metrics] == [1, 2, 3, 4] and straight.steps == 12
    assert [r["best_epoch"] for r in straight.metrics] == [1, 2, 2, 2]
    assert float(straight.model[1].weight.detach()) == straight.metrics[1]["val"]["w"] != straight.metrics[3]["val"]["w"]
    with pytest.raises(Stop):
        fit(tmp_path / "resumed", stop_at=11, val_losses=losses, epochs=6, patience=2)
    resumed = fit(tmp_path / "resumed", resume=True, val_losses=losses[3:], epochs=6, patience=2)
    assert resumed.steps == 12 and torch.equal(resumed.model[1].weight, straight.model[1].weight)
    again = fit(tmp_path / "resumed", resume=True, val_losses=[], epochs=6, patience=2)  # stopped: nothing to train
    assert again.steps == 12 and torch.equal(again.model[1].weight, straight.model[1].weight)
    with pytest.raises(TaxonlensError, match="patience"):
        fit(tmp_path / "no-val", epochs=2, patience=1, eval_every=0)


def test_resume_refuses_other_settings_and_an_existing_run(tmp_path):
    with pytest.raises(Stop):
        fit(tmp_path, stop_at=3)
    with pytest.raises(CheckpointError, match="exists"):
        fit(tmp_path)
    with pytest.raises(CheckpointError, match="lr: 0.05 -> 0.1"):
        fit(tmp_path, resume=True, lr=0.1)
    assert fit(tmp_path, resume=True, eval_every=2, threads=1).steps == 9  # these do not change the weights


def test_resume_compares_the_resolved_precision(tmp_path):
    """A run started with --precision fp32 resumes under auto, which is fp32 on the CPU, and back."""
    with pytest.raises(Stop):
        fit(tmp_path, stop_at=3, precision="fp32")
    assert fit(tmp_path, resume=True, precision="auto").steps == 9


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


class FakeDeepSpeed:
    """Stands in for the Accelerator of :func:`~taxonlens.train.parallel.deepspeed_accelerator`
    (DeepSpeed is not installed here): ``prepare`` hands the optimizer and the schedule back, and
    ``backward`` does what DeepSpeed's engine does in one process: backward, clipping, the
    optimizer's step, the schedule's step, zeroed gradients."""

    def __init__(self, stage: int, batch_size: int, max_grad_norm: float):
        self.state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage))
        self.batch_size, self.max_grad_norm, self.backwards = batch_size, max_grad_norm, 0

    def prepare(self, model, optimizer, scheduler):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        return model, optimizer, scheduler

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.backwards += 1


@pytest.fixture
def fake_deepspeed(monkeypatch):
    """Runs of the loop with ``deepspeed`` get a :class:`FakeDeepSpeed` (ZeRO stage ``made.stage``)."""
    made = SimpleNamespace(stage=2, engines=[])

    def place(device, precision, deepspeed=None):
        return Placement(torch.device("cpu"), "fp32", deepspeed=f"{deepspeed}.json" if deepspeed else None)

    def accelerator(placement, batch_size, max_grad_norm):
        made.engines.append(FakeDeepSpeed(made.stage, batch_size, max_grad_norm))
        return made.engines[-1]

    monkeypatch.setattr(loop, "placement", place)
    monkeypatch.setattr(loop, "deepspeed_accelerator", accelerator)
    return made


def test_under_deepspeed_the_engine_takes_every_step_and_no_checkpoint_is_written(tmp_path, fake_deepspeed):
    plain = fit(tmp_path / "plain", checkpoint_every=0)
    deep = fit(tmp_path / "deep", deepspeed="zero2", checkpoint_every=0)

    engine = fake_deepspeed.engines[0]
    assert (engine.batch_size, engine.max_grad_norm, engine.backwards) == (4, 1.0, 9) and deep.steps == 9
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), deep.model.state_dict().items()):
        assert torch.equal(a, b), name  # no step, clipping or schedule step twice or left out
    _same_rows(plain.metrics, deep.metrics)
    assert "val" in deep.metrics[-1] and (deep.model_dir / "weights.pt").is_file()
    assert deep.checkpoint is None and not (tmp_path / "deep" / CHECKPOINT_FILE).exists()


def test_under_deepspeed_resume_checkpoints_and_zero3_validation_are_refused(tmp_path, fake_deepspeed):
    with pytest.raises(TaxonlensError, match="write no checkpoint"):
        fit(tmp_path / "a", deepspeed="zero2")  # checkpoint_every 2
    with pytest.raises(TaxonlensError, match="write no checkpoint"):
        fit(tmp_path / "b", resume=True, deepspeed="zero2", checkpoint_every=0)
    assert not fake_deepspeed.engines  # refused before the model was built
    fake_deepspeed.stage = 3
    with pytest.raises(TaxonlensError, match="set eval_every 0 or use zero2"):
        fit(tmp_path / "c", deepspeed="zero3", checkpoint_every=0)



def test_under_zero3_the_model_is_saved_with_its_weights_gathered(tmp_path, fake_deepspeed, monkeypatch):
    gathered = []

    def gather(params, modifier_rank):  # deepspeed.zero.GatheredParameters
        gathered.append((len(params), modifier_rank))
        return nullcontext()

    monkeypatch.setitem(sys.modules, "deepspeed", SimpleNamespace(zero=SimpleNamespace(GatheredParameters=gather)))
    fake_deepspeed.stage = 3
    assert fit(tmp_path, deepspeed="zero3", checkpoint_every=0, eval_every=0).steps == 9
    assert gathered == [(2, 0)]  # the Linear's weight and bias, changes kept from the main process
