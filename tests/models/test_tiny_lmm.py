"""Models built offline with random weights: ``random:NAME`` holds the real architecture's towers
(the published configuration, only the vocabulary is the tiny tokenizer's), and the ways of loading
a checkpoint (device_map, quantization) are refused for them with a reason."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from taxonlens.bench.memory_models import build_on_meta
from taxonlens.errors import TaxonlensError
from taxonlens.models.architectures import ARCHITECTURES, SCALED_ARCHITECTURES
from taxonlens.models.device import attention_implementation
from taxonlens.models.mllm import load_lmm
from taxonlens.models.presets import TINY_LMM_VOCAB
from taxonlens.models.tiny_lmm import build_tiny_lmm

_VOCABULARY = ("embed_tokens", "lm_head")


def _towers(model: torch.nn.Module) -> int:
    """Parameters outside the token embedding and the output layer."""
    return sum(p.numel() for n, p in model.named_parameters() if not any(v in n for v in _VOCABULARY))


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b", "qwen3-vl-2b", "idefics2-8b"])
def test_a_random_architecture_has_the_published_towers(name):
    model, processor = build_tiny_lmm(f"random:{name}", device="meta")
    assert _towers(model) == _towers(build_on_meta(ARCHITECTURES[name]))
    assert model.get_input_embeddings().num_embeddings == len(processor.tokenizer) <= TINY_LMM_VOCAB + 8
    assert all(p.device.type == "meta" for p in model.parameters())  # built where it runs, never on the CPU


def test_the_scaled_architecture_is_the_size_its_name_says():
    model, _ = build_tiny_lmm("random:qwen2.5-vl-130m", device="meta")
    assert round(sum(p.numel() for p in model.parameters()) / 1e7) == 13  # 130 M
    assert model.config.text_config.hidden_size == 768 and model.config.text_config.num_hidden_layers == 16
    assert set(SCALED_ARCHITECTURES) == {"qwen2.5-vl-130m"}


def test_unknown_names_and_checkpoint_only_options_are_clear_errors(tmp_path):
    with pytest.raises(TaxonlensError, match=r"random-weight models: .*random:qwen2.5-vl-3b"):
        load_lmm("random:qwen9-vl")
    with pytest.raises(TaxonlensError, match="ways of loading a checkpoint"):
        load_lmm("tiny-qwen2.5-vl", device_map="auto")
    with pytest.raises(TaxonlensError, match="ways of loading a checkpoint"):
        load_lmm("tiny-qwen2.5-vl", quantize="4bit")
    with pytest.raises(TaxonlensError, match="unknown quantization '3bit'"):
        load_lmm("tiny-qwen2.5-vl", quantize="3bit")


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here")
def test_quantized_loading_without_bitsandbytes_says_what_to_install(tmp_path):
    load_lmm("tiny-qwen2.5-vl").save(tmp_path / "model")
    with pytest.raises(TaxonlensError, match=r"pip install 'taxonlens\[quantize\]'"):
        load_lmm(str(tmp_path / "model"), quantize="8bit")


def test_attention_is_sdpa_off_cuda():
    assert attention_implementation("cpu", "bf16") == "sdpa"
    assert load_lmm("tiny-qwen3-vl").model.config._attn_implementation == "sdpa"
    saved = load_lmm("tiny-idefics2")
    assert saved.model.config._attn_implementation == "sdpa"
