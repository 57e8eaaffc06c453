"""DeepSpeed ZeRO configurations: the shipped files, a user's file, and the error without DeepSpeed."""

import importlib.util
import json

import pytest

from taxonlens.errors import TaxonlensError
from taxonlens.resources import DEEPSPEED_CONFIGS, deepspeed_file
from taxonlens.train.zero import deepspeed_config

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
