"""DeepSpeed ZeRO configurations: the shipped files, a user's file, the error without DeepSpeed (raised
when an LMM trainer's configuration is made, before any model loads), accelerate's DeepSpeed plugin
and the Accelerator the epoch loop is given (accelerate's class replaced: DeepSpeed is not installed
here and needs CUDA GPUs, so no DeepSpeed step runs in these tests)."""

import importlib.util
import json

import pytest
import torch

from taxonlens.errors import TaxonlensError
from taxonlens.resources import DEEPSPEED_CONFIGS, deepspeed_file
from taxonlens.train import zero
from taxonlens.train.finedefics import Stage1Config, Stage2Config
from taxonlens.train.grpo import RFTConfig
from taxonlens.train.parallel import Placement, deepspeed_accelerator, placement
from taxonlens.train.sft import SFTConfig
from taxonlens.train.zero import deepspeed_config, deepspeed_plugin

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None


def test_shipped_configurations_are_zero_stages_2_and_3_filled_in_by_the_trainer():
    for name, stage in (("zero2", 2), ("zero3", 3)):
        config = json.loads(deepspeed_file(name).read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert {config[k] for k in ("train_micro_batch_size_per_gpu", "gradient_clipping")} == {"auto"}
        assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
    assert set(DEEPSPEED_CONFIGS) == {"zero2", "zero3"}


def test_no_deepspeed_asked_is_none():
    assert deepspeed_config(None) is None


@pytest.mark.skipif(HAS_DEEPSPEED, reason="DeepSpeed is installed here")
@pytest.mark.parametrize("choice", ["zero2", "zero3"])
def test_without_deepspeed_installed_the_error_says_to_install_it(choice):
    with pytest.raises(TaxonlensError, match="DeepSpeed is not installed"):
        deepspeed_config(choice)


@pytest.mark.skipif(not HAS_DEEPSPEED, reason="DeepSpeed is not installed here")
def test_with_deepspeed_installed_the_shipped_file_is_used():
    assert deepspeed_config("zero3") == str(deepspeed_file("zero3"))


def test_an_unknown_name_or_missing_file_is_refused(tmp_path):
    with pytest.raises(TaxonlensError, match="zero2 or zero3"):
        deepspeed_config(str(tmp_path / "ds.json"))


@pytest.fixture
def deepspeed_importable(monkeypatch):
    """``find_spec("deepspeed")`` finds it (the package itself is never imported by these tests)."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(zero.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "deepspeed" else find_spec(name, *a))


def _user_file(tmp_path, stage: int = 1) -> str:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": stage}, "gradient_clipping": "auto"}))
    return str(path)


def test_names_and_files_resolve_to_their_configuration(deepspeed_importable, tmp_path):
    assert deepspeed_config("zero2") == str(deepspeed_file("zero2"))
    assert deepspeed_config("zero3") == str(deepspeed_file("zero3"))
    assert deepspeed_config(_user_file(tmp_path)) == str(tmp_path / "ds.json")


@pytest.mark.parametrize("config", [SFTConfig, Stage1Config, Stage2Config, RFTConfig])
def test_every_lmm_trainer_takes_deepspeed_and_refuses_it_when_its_configuration_is_made(config, tmp_path,
                                                                                         deepspeed_importable):
    assert config(deepspeed="zero3").deepspeed == "zero3"
    with pytest.raises(TaxonlensError, match="zero2 or zero3"):
        config(deepspeed=str(tmp_path / "missing.json"))


def test_deepspeed_trains_on_cuda_gpus_only(deepspeed_importable):
    with pytest.raises(TaxonlensError, match="DeepSpeed trains on CUDA GPUs, not on cpu"):
        placement("cpu", "fp32", "zero2")
    assert placement("cpu", "fp32").deepspeed is None


@pytest.mark.parametrize("choice, stage", [("zero2", 2), ("zero3", 3), ("user", 1)])
def test_the_plugin_has_the_files_stage_the_batch_and_the_clipping(choice, stage, tmp_path):
    path = _user_file(tmp_path) if choice == "user" else str(deepspeed_file(choice))
    plugin = deepspeed_plugin(path, micro_batch=3, processes=4, max_grad_norm=0.5)
    config = plugin.deepspeed_config
    assert plugin.zero_stage == config["zero_optimization"]["stage"] == stage
    assert (config["train_micro_batch_size_per_gpu"], config["train_batch_size"]) == (3, 12)
    assert config["gradient_clipping"] == 0.5 and config["gradient_accumulation_steps"] == 1
    assert deepspeed_plugin(path, 1, 1, 0.0).deepspeed_config["gradient_clipping"] == 0.0  # not clipped


@pytest.mark.parametrize("precision, mixed", [("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "no")])
def test_the_loop_accelerator_carries_the_plugin_and_the_precision(precision, mixed, monkeypatch):
    import accelerate

    made = []
    monkeypatch.setattr(accelerate, "Accelerator", lambda **kwargs: made.append(kwargs) or "accelerator")
    place = Placement(torch.device("cpu"), precision, rank=1, world=2, deepspeed=str(deepspeed_file("zero3")))
    assert deepspeed_accelerator(place, batch_size=5, max_grad_norm=1.0) == "accelerator"
    plugin = made[0]["deepspeed_plugin"]
    assert made[0]["mixed_precision"] == mixed and plugin.zero_stage == 3
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 3  # ceil(5 / 2): the larger share
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0
