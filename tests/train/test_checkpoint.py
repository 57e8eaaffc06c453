"""Checkpoints: exact resume of model, optimizer, scheduler and random states; atomic writes; clear errors."""

import random

import numpy as np
import pytest
import torch

from taxonlens.train.checkpoint import (
    CheckpointError,
    LoopState,
    capture_rng_state,
    check_config,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _steps(model, opt, sched, n):
    """Steps whose data and dropout come from the global torch / numpy / python RNGs."""
    for _ in range(n):
        x = torch.randn(5, 4) + float(np.random.rand()) + random.random()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def test_resume_continues_bit_for_bit(tmp_path):
    model, opt, sched = _setup()
    _steps(model, opt, sched, 3)
    save_checkpoint(tmp_path / "c.pt", model, opt, sched, LoopState(step=3, epoch=1, batch=0), {"lr": 1e-2},
                    {"note": "x", "t": torch.arange(3)})
    _steps(model, opt, sched, 4)
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model2, opt2, sched2 = _setup(seed=123)  # other initial weights and RNG state: all replaced by the load
    ckpt = load_checkpoint(tmp_path / "c.pt", model2, opt2, sched2)
    assert ckpt.state == LoopState(step=3, epoch=1, batch=0)
    assert ckpt.config == {"lr": 1e-2} and ckpt.extra["note"] == "x" and ckpt.extra["t"].tolist() == [0, 1, 2]
    assert sched2.last_epoch == 3
    _steps(model2, opt2, sched2, 4)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, straight[k]), k


def test_rng_states_round_trip():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's legacy state
    state = capture_rng_state()
    expected = (random.random(), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(state)
    got = (random.random(), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_checkpoint_loads_without_running_code(tmp_path):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path / "c.pt", model, opt, sched)
    payload = torch.load(path, weights_only=True)  # plain tensors and values only
    assert set(payload) >= {"model", "optimizer", "scheduler", "loop", "rng", "config", "extra"}


def test_write_is_atomic(tmp_path, monkeypatch):
    model, opt, sched = _setup()
    path = save_checkpoint(tmp_path / "c.pt", model, opt, sched, LoopState(step=1))
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, sched, LoopState(step=2))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind
    assert load_checkpoint(path, restore_rng=False).state.step == 1


def test_load_errors_are_clear(tmp_path):
    model, opt, _ = _setup()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt", model)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", model)
    path = save_checkpoint(tmp_path / "c.pt", model)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, torch.nn.Linear(3, 3))
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, model, opt)


def test_check_config_lists_every_difference():
    check_config({"lr": 1, "out": "a"}, {"lr": 1, "out": "b"}, ignore=["out"])
    with pytest.raises(CheckpointError, match=r"lr: 1 -> 2; seed: None -> 3"):
        check_config({"lr": 1}, {"lr": 2, "seed": 3})
