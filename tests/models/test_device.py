"""The device and precision policy: ``auto`` resolves to this machine's hardware, an absent GPU is
a one-line error, inputs follow the model's device, and bf16 matches fp32 within a stated tolerance."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from taxonlens.errors import TaxonlensError
from taxonlens.models.device import autocast, bf16_is_fast, resolve_device, resolve_precision
from taxonlens.models.encoders import load_encoder
from taxonlens.models.mllm import load_lmm


def _photos(n: int = 3) -> list[Image.Image]:
    g = torch.Generator().manual_seed(0)
    return [Image.fromarray((torch.rand(48, 48, 3, generator=g) * 255).byte().numpy()) for _ in range(n)]


def test_auto_is_this_machine_and_an_absent_gpu_is_a_clear_error():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    cpu_auto = "bf16" if bf16_is_fast() else "fp32"
    assert resolve_precision("auto", "cpu") == cpu_auto and resolve_precision("fp16", "cpu") == "fp16"
    if not torch.cuda.is_available():
        with pytest.raises(TaxonlensError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(TaxonlensError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_training_trains_in_fp32_on_the_cpu_unless_asked_and_autocasts_what_it_resolves():
    assert resolve_precision("auto", "cpu", training=True) == "fp32"
    assert resolve_precision("bf16", "cpu", training=True) == "bf16"
    x = torch.ones(2, 2)
    with autocast(torch.device("cpu"), "fp32"):
        assert (x @ x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert (x @ x).dtype == torch.bfloat16


def test_an_explicit_cpu_equals_the_default():
    images = _photos()
    default, cpu = load_encoder("tiny-clip"), load_encoder("tiny-clip", device="cpu")
    pixels = torch.stack([default.preprocess(i) for i in images])
    assert torch.equal(default.encode_images(pixels), cpu.encode_images(pixels))
    assert default.fingerprint() == cpu.fingerprint()


def test_encoder_inputs_follow_the_model_device():
    encoder = load_encoder("tiny-clip")
    seen = []
    encoder.model.to("meta")  # weights without storage: any input left on the CPU would fail to mix with them
    encoder.model.visual.register_forward_pre_hook(lambda module, args: seen.append(args[0].device))
    with pytest.raises((NotImplementedError, RuntimeError)):  # a meta result cannot be copied to the CPU
        encoder.encode_images(torch.zeros(2, 3, encoder.image_size, encoder.image_size))
    assert seen == [torch.device("meta")]


def test_lmm_inputs_follow_the_model_device():
    lmm = load_lmm("tiny-qwen2.5-vl")
    lmm.model.to("meta")
    seen = {}

    def capture(module, args, kwargs):
        seen.update({k: v.device for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        raise StopIteration  # enough: the inputs reached the model

    lmm.model.register_forward_pre_hook(capture, with_kwargs=True)
    with pytest.raises(StopIteration):
        lmm.option_logprobs(_photos(1), ["Which?"], [["A", "B"]])
    assert seen and set(seen.values()) == {torch.device("meta")}  # input_ids, masks, pixels, grids


def test_bf16_matches_fp32_within_tolerance():
    """bf16 on the CPU: features within cosine 0.99 of fp32, option log-probabilities within 0.1 nats."""
    images = _photos()
    fp32, bf16 = load_encoder("tiny-clip", "fp32"), load_encoder("tiny-clip", "bf16")
    pixels = torch.stack([fp32.preprocess(i) for i in images])
    cosine = (fp32.encode_images(pixels) * bf16.encode_images(pixels)).sum(dim=1)
    assert cosine.min() > 0.99
    full, half = load_lmm("tiny-qwen2.5-vl"), load_lmm("tiny-qwen2.5-vl", precision="bf16")
    options = [["A", "B", "C", "D"]] * len(images)
    for a, b in zip(full.option_logprobs(images, ["Which?"] * 3, options),
                    half.option_logprobs(images, ["Which?"] * 3, options)):
        assert torch.allclose(a, b, atol=0.1)
