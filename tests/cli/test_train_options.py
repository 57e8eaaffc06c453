"""The options of the ``train`` commands come from their configuration dataclasses: every field is an
option with the field's help and default, and the values given reach the configuration the trainer
receives."""

from __future__ import annotations

import importlib.util
import typing
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from taxonlens.cli import app
from taxonlens.cli.config_options import CHOICES, OPTION_NAMES, config_options
from taxonlens.train import zero
from taxonlens.train.contrastive import ContrastiveConfig
from taxonlens.train.finedefics import Stage1Config, Stage2Config
from taxonlens.train.grpo import RFTConfig
from taxonlens.train.sft import SFTConfig

runner = CliRunner()
BENCHMARK = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks" / "inat21_plantae_similar_choice.jsonl"
CONFIGS = {"contrastive": (ContrastiveConfig,), "finedefics": (Stage1Config, Stage2Config), "sft": (SFTConfig,),
           "grpo": (RFTConfig,)}
REQUIRED = {"out", "model"}  # --out everywhere, --model of grpo


def _command(name: str) -> typer.core.TyperCommand:
    return typer.main.get_command(app).commands["train"].commands[name]


@pytest.mark.parametrize("name", CONFIGS)
def test_every_field_is_an_option_with_its_help_and_default(name: str) -> None:
    params = {p.name: p for p in _command(name).params}
    for config in CONFIGS[name]:
        for f in fields(config):
            param = params[f.name]
            assert param.param_type_name == "option" and param.help == f.metadata["help"], f.name
            flag = OPTION_NAMES.get(f.name, f"--{f.name.replace('_', '-')}").split("/")[0]
            assert flag in param.opts, (f.name, param.opts)
            if param.required:
                assert f.name in REQUIRED
            else:
                assert param.default == f.default, f.name
            if f.name in CHOICES:
                annotation = param.type_descriptor.annotation
                assert CHOICES[f.name] in (annotation, *typing.get_args(annotation)), f.name
    help_text = runner.invoke(app, ["train", name, "--help"], env={"COLUMNS": "250"}).output
    assert all(f"--{f.name.replace('_', '-')}" in help_text for f in fields(CONFIGS[name][0])
               if f.name not in OPTION_NAMES)


def test_finedefics_keeps_its_flag_names_and_has_few_parameters_of_its_own() -> None:
    params = _command("finedefics").params
    opts = {opt for p in params for opt in (*p.opts, *p.secondary_opts)}
    assert {"--full", "--lora", "--w-ntp", "--w-ccc", "--w-occ", "--open-fraction", "--stage"} <= opts
    config_fields = {f.name for config in CONFIGS["finedefics"] for f in fields(config)}
    assert {p.name for p in params} - config_fields == {"manifest", "stage", "taxonomy", "split", "val_split",
                                                        "resume", "num_processes"}


def _capture(monkeypatch, target: str) -> list:
    """Replace the trainer ``target`` by one that records the configuration it is given."""
    seen = []

    def trainer(config, *args, **kwargs):
        seen.append(config)
        return SimpleNamespace(metrics=[{"reward": 0.0}], model_dir="m", steps=1, seconds=0.0)

    monkeypatch.setattr(target, trainer)
    return seen


def test_values_given_reach_the_configuration(monkeypatch, tmp_path) -> None:
    deepspeed_file = str(tmp_path / "ds.json")  # a DeepSpeed configuration (DeepSpeed taken as installed)
    Path(deepspeed_file).write_text('{"zero_optimization": {"stage": 2}}')
    deepspeed = ["--deepspeed", deepspeed_file]
    find_spec = zero.importlib.util.find_spec
    monkeypatch.setattr(zero.importlib.util, "find_spec",
                        lambda name, *a: object() if name == "deepspeed" else find_spec(name, *a))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,split,kingdom,species\na.png,train,K,S1\nb.png,val,K,S2\n")
    out = str(tmp_path / "run")
    seen = _capture(monkeypatch, "taxonlens.train.contrastive.train_contrastive")
    result = runner.invoke(app, ["train", "contrastive", str(manifest), "--out", out, "--weight-decay", "0.3",
                                 "--no-augment", "--eval-text-type", "scientific", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert seen[0] == ContrastiveConfig(out=out, weight_decay=0.3, augment=False, eval_text_type="scientific",
                                        threads=2)

    seen = _capture(monkeypatch, "taxonlens.train.finedefics.train_stage2")
    result = runner.invoke(app, ["train", "finedefics", str(manifest), "--out", out, "--stage", "2", "--full",
                                 "--open-fraction", "0.25", "--w-ntp", "3", "--eval-batch-size", "5",
                                 *deepspeed])
    assert result.exit_code == 0, result.output
    assert seen[0] == Stage2Config(out=out, full_finetune=True, open_fraction=0.25, eval_batch_size=5,
                                   deepspeed=deepspeed_file)
    seen = _capture(monkeypatch, "taxonlens.train.finedefics.train_stage1")
    result = runner.invoke(app, ["train", "finedefics", str(manifest), "--out", out, "--w-ccc", "0.25", "--w-occ", "1"])
    assert result.exit_code == 0, result.output
    assert seen[0] == Stage1Config(out=out, w_ccc=0.25, w_occ=1.0)

    seen = _capture(monkeypatch, "taxonlens.train.sft.train_sft")
    result = runner.invoke(app, ["train", "sft", str(BENCHMARK), "--out", out, "--answer", "name",
                                 "--questions-per-record", "2", "--lora-alpha", "4", *deepspeed])
    assert result.exit_code == 0, result.output
    assert seen[0] == SFTConfig(out=out, answer="name", questions_per_record=2, lora_alpha=4.0,
                                deepspeed=deepspeed_file)

    seen = _capture(monkeypatch, "taxonlens.train.grpo.train_grpo")
    result = runner.invoke(app, ["train", "grpo", str(BENCHMARK), "--out", out, "--model", "tiny-qwen2.5-vl",
                                 "--epsilon", "0.1", "--max-new-tokens", "8", "--gradient-checkpointing"])
    assert result.exit_code == 0, result.output
    assert seen[0] == RFTConfig(out=out, model="tiny-qwen2.5-vl", epsilon=0.1, max_new_tokens=8,
                                gradient_checkpointing=True)


def test_a_command_without_settings_or_with_a_field_of_its_own_is_refused() -> None:
    def no_settings(x: int = 0) -> None: ...

    def clash(settings: dict, seed: int = 0) -> None: ...

    with pytest.raises(TypeError, match="no 'settings' parameter"):
        config_options(SFTConfig)(no_settings)
    with pytest.raises(TypeError, match=r"\['seed'\] are also configuration fields"):
        config_options(SFTConfig)(clash)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed here")
@pytest.mark.parametrize("command", ["sft", "finedefics"])
def test_deepspeed_without_deepspeed_stops_before_anything_loads(command, monkeypatch, tmp_path) -> None:
    from taxonlens.train import finedefics, sft

    monkeypatch.setattr(sft, "load_lmm", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(finedefics, "leaf_embeddings", lambda *a, **k: pytest.fail("an encoder was loaded"))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,split,kingdom,species\na.png,train,K,S1\n")
    data = str(BENCHMARK if command == "sft" else manifest)
    result = runner.invoke(app, ["train", command, data, "--out", str(tmp_path / "run"), "--deepspeed", "zero2"])
    assert result.exit_code != 0
    assert "--deepspeed zero2: DeepSpeed is not installed" in str(result.exception) + result.output
    assert not (tmp_path / "run").exists()
