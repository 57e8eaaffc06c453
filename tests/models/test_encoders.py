"""Encoder conformance: one suite run on every preset in ``ENCODER_PRESETS`` (adding a
preset adds its coverage), and ``load_encoder``'s errors and offline loading.

Network is blocked wherever a test loads a model: presets must build offline, and
hub names must fail (or load from a local cache) at once, without retries.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from open_clip.loss import ClipLoss
from PIL import Image

from taxonlens.errors import TaxonlensError
from taxonlens.models.encoders import CONFIG_FILE, WEIGHTS_FILE, Encoder, EncoderWeightsError, load_encoder
from taxonlens.models.hub import write_snapshot
from taxonlens.models.presets import ENCODER_PRESETS

TEXTS = ["a photo of Plantae Tracheophyta Magnoliopsida Rosales Rosaceae Rosa canina.", "a photo of Vulpes vulpes.",
         "a photo of red fox.", "x"]


def _block_network(mp: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails loudly instead of waiting for a timeout."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted in an offline test")

    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket, "create_connection", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)


def _unit(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x.norm(dim=-1), torch.ones(len(x)), atol=1e-5))


@pytest.fixture(scope="module", params=sorted(ENCODER_PRESETS))
def encoder(request):
    """Each preset, built with the network blocked (shared by the read-only tests of a preset)."""
    with pytest.MonkeyPatch.context() as mp:
        _block_network(mp)
        return load_encoder(request.param)


@pytest.fixture
def fresh(encoder):
    """A private copy of the preset, for tests that train it."""
    return load_encoder(encoder.name)


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    """Three RGB photos of odd, different sizes."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 53), (81, 29), (64, 65))]


@pytest.fixture(scope="module")
def pixels(encoder, images) -> torch.Tensor:
    return torch.stack([encoder.preprocess(img) for img in images])


# ----------------------------------------------------------- conformance
def test_satisfies_the_encoder_protocol(encoder):
    assert isinstance(encoder, Encoder)
    assert encoder.embed_dim == ENCODER_PRESETS[encoder.name]["embed_dim"]
    assert isinstance(encoder.logit_scale, float)
    assert encoder.logit_scale == pytest.approx(1 / 0.07, rel=1e-5)  # CLIP's initial temperature
    fp = encoder.fingerprint()
    assert isinstance(fp, str) and len(fp) == 16 and fp == encoder.fingerprint()


def test_preprocess_gives_a_square_model_input(encoder, images):
    size = encoder.image_size
    assert size == ENCODER_PRESETS[encoder.name]["vision_cfg"]["image_size"]
    for img in images:
        x = encoder.preprocess(img)
        assert x.shape == (3, size, size) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_encode_images_shape_norm_determinism_and_batch_independence(encoder, pixels):
    f = encoder.encode_images(pixels)
    assert f.shape == (len(pixels), encoder.embed_dim) and f.dtype == torch.float32
    assert _unit(f) and not f.requires_grad
    assert torch.equal(encoder.encode_images(pixels), f)
    for i in range(len(pixels)):  # alone, the image gets what it got inside the batch (BatchNorm in eval)
        torch.testing.assert_close(encoder.encode_images(pixels[i : i + 1])[0], f[i], atol=1e-5, rtol=0)
    assert not torch.allclose(f[0], f[1])


def test_patch_features_form_the_last_feature_grid(encoder, pixels):
    cfg = ENCODER_PRESETS[encoder.name]["vision_cfg"]
    side = cfg["image_size"] // cfg.get("patch_size", 32)  # a ResNet downsamples 32x
    f = encoder.patch_features(pixels)
    assert f.shape[:2] == (len(pixels), side * side) and f.dtype == torch.float32 and not f.requires_grad
    assert _unit(f.reshape(-1, f.shape[-1]))
    torch.testing.assert_close(encoder.patch_features(pixels[1:2])[0], f[1], atol=1e-5, rtol=0)
    assert not torch.allclose(f[0], f[1]) and not torch.allclose(f[0, 0], f[0, -1])  # images and patches differ


def test_encode_texts_shape_norm_determinism_and_batch_independence(encoder):
    t = encoder.encode_texts(TEXTS)
    assert t.shape == (len(TEXTS), encoder.embed_dim) and t.dtype == torch.float32
    assert _unit(t) and not t.requires_grad
    assert torch.equal(encoder.encode_texts(TEXTS), t)
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(encoder.encode_texts([text])[0], t[i], atol=1e-5, rtol=0)
    torch.testing.assert_close(encoder.encode_texts(TEXTS, batch_size=3), t, atol=1e-5, rtol=0)
    assert encoder.encode_texts([]).shape == (0, encoder.embed_dim)


def test_encode_texts_equals_open_clip_on_the_full_context(encoder):
    """Batches cut after their longest text give open_clip's own full-context features."""
    texts = [*TEXTS, "a photo of " + " ".join(["Plantae"] * 30) + "."]  # one long caption among short ones
    with torch.inference_mode():
        full = torch.nn.functional.normalize(encoder.model.eval().encode_text(encoder.tokenizer(texts)).float(), dim=-1)
    assert encoder._trimmable_text_tower()  # every preset has a plain CLIP text tower
    torch.testing.assert_close(encoder.encode_texts(texts, batch_size=2), full, atol=2e-6, rtol=0)


def test_save_load_round_trip(encoder, images, pixels, tmp_path):
    encoder.save(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {CONFIG_FILE, WEIGHTS_FILE}
    loaded = load_encoder(str(tmp_path / "model"))
    assert loaded.fingerprint() == encoder.fingerprint()
    assert loaded.embed_dim == encoder.embed_dim and loaded.image_size == encoder.image_size
    assert torch.equal(loaded.preprocess(images[0]), encoder.preprocess(images[0]))
    assert torch.equal(loaded.encode_images(pixels), encoder.encode_images(pixels))
    assert torch.equal(loaded.encode_texts(TEXTS), encoder.encode_texts(TEXTS))
    assert loaded.logit_scale == encoder.logit_scale


def test_another_seed_gives_other_weights(encoder):
    assert load_encoder(encoder.name, seed=1).fingerprint() != encoder.fingerprint()


def test_clip_loss_reaches_both_towers_and_a_step_changes_the_fingerprint(encoder, fresh, pixels):
    model = fresh.model
    model.train()
    before = fresh.fingerprint()
    assert before == encoder.fingerprint()  # the same seed builds the same weights
    image_features = model.encode_image(pixels, normalize=True)
    text_features = model.encode_text(fresh.tokenizer(TEXTS[: len(pixels)]), normalize=True)
    loss = ClipLoss()(image_features, text_features, model.logit_scale.exp())
    assert torch.isfinite(loss)
    loss.backward()
    named = dict(model.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in named.values())

    def flows(p: torch.nn.Parameter) -> bool:
        return bool(p.grad.abs().sum() > 0)

    # the tower inputs (patch or stem convolution, token embedding) get gradient through every layer
    assert flows(next(model.visual.parameters())) and flows(named["token_embedding.weight"])
    assert flows(named["text_projection"]) and flows(named["logit_scale"])
    visual = [p for n, p in named.items() if n.startswith("visual.")]
    assert sum(flows(p) for p in visual) > len(visual) / 2
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert fresh.fingerprint() != before


def test_encoding_in_training_mode_restores_it_and_keeps_statistics(encoder, pixels):
    ref_images, ref_texts = encoder.encode_images(pixels), encoder.encode_texts(TEXTS)
    state = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    encoder.model.train()
    try:
        images, texts = encoder.encode_images(pixels), encoder.encode_texts(TEXTS)
        assert encoder.model.training and all(m.training for m in encoder.model.modules())
    finally:
        encoder.model.eval()
    # encoded in eval mode: the same features, BatchNorm running statistics untouched
    assert torch.equal(images, ref_images) and torch.equal(texts, ref_texts)
    assert all(torch.equal(v, state[k]) for k, v in encoder.model.state_dict().items())
    encoder.encode_images(pixels)
    assert not encoder.model.training


def test_bf16_is_close_to_fp32(encoder, pixels):
    bf16 = load_encoder(encoder.name, precision="bf16")
    assert bf16.precision == "bf16" and bf16.fingerprint() != encoder.fingerprint()
    fi, ft = bf16.encode_images(pixels), bf16.encode_texts(TEXTS)
    assert fi.dtype == ft.dtype == torch.float32 and _unit(fi) and _unit(ft)
    assert (fi * encoder.encode_images(pixels)).sum(dim=1).min() > 0.99
    assert (ft * encoder.encode_texts(TEXTS)).sum(dim=1).min() > 0.99


# ---------------------------------------------------------------- errors
@pytest.fixture
def offline_hub(monkeypatch, tmp_path) -> Path:
    """An empty, offline Hugging Face home; returns it.

    huggingface_hub reads HF_HUB_OFFLINE and HF_HOME into ``huggingface_hub.constants``
    when it is imported (open_clip imports it), so setting the environment alone does
    not reach a running process: the constants are patched too. Without that, a hub
    name retries the network for about 20 s before failing.
    """
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))
    _block_network(monkeypatch)
    return home


@pytest.mark.parametrize(("name", "repo"), [("bioclip", "imageomics/bioclip"), ("bioclip-2", "imageomics/bioclip-2"),
                                            ("hf-hub:x/y", "x/y")])
def test_missing_hub_weights_name_the_repo_and_the_fix(offline_hub, name, repo):
    start = time.monotonic()
    with pytest.raises(EncoderWeightsError) as info:
        load_encoder(name)
    assert time.monotonic() - start < 5  # no network retries
    msg = str(info.value)
    assert repo in msg
    assert f"{offline_hub / 'hub'}/models--{repo.replace('/', '--')}" in msg  # where it looked
    assert f"huggingface-cli download {repo}" in msg and "HF_HOME" in msg and "open_clip_config.json" in msg


def test_hub_cache_with_config_but_no_weights_is_an_error_not_random_weights(offline_hub, tmp_path):
    load_encoder("tiny-clip").save(tmp_path / "saved")
    write_snapshot("imageomics/bioclip", {CONFIG_FILE: tmp_path / "saved" / CONFIG_FILE})
    with pytest.raises(EncoderWeightsError, match="imageomics/bioclip"):
        load_encoder("bioclip")


def test_bioclip_loads_offline_from_a_local_hub_cache(offline_hub, tmp_path, images):
    saved = load_encoder("tiny-clip", seed=3)
    saved.save(tmp_path / "saved")
    write_snapshot("imageomics/bioclip", {name: tmp_path / "saved" / name for name in (CONFIG_FILE, WEIGHTS_FILE)})
    enc = load_encoder("bioclip")
    assert enc.name == "bioclip" and enc.fingerprint() == saved.fingerprint()
    x = torch.stack([enc.preprocess(img) for img in images])
    assert torch.equal(enc.encode_images(x), saved.encode_images(x))
    assert torch.equal(enc.encode_texts(TEXTS), saved.encode_texts(TEXTS))


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderWeightsError, match=r"holds no open_clip_config.json \(found: nothing\)"):
        load_encoder(str(tmp_path / "empty"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model.pt").write_bytes(b"")
    with pytest.raises(EncoderWeightsError, match=r"found: model.pt"):
        load_encoder(str(tmp_path / "other"))


def test_folder_with_missing_or_corrupt_files(tmp_path):
    folder = load_encoder("tiny-clip").save(tmp_path / "model")
    (folder / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(EncoderWeightsError, match="weights could not be loaded"):
        load_encoder(str(folder))
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(EncoderWeightsError, match="weights could not be loaded"):
        load_encoder(str(folder))
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(EncoderWeightsError, match="config"):
        load_encoder(str(folder))
    (folder / CONFIG_FILE).write_text(json.dumps({"preprocess_cfg": {}}))
    with pytest.raises(EncoderWeightsError, match="model_cfg"):
        load_encoder(str(folder))


def test_bad_architecture_checkpoint(tmp_path):
    with pytest.raises(EncoderWeightsError, match="neither a checkpoint file nor a pretrained tag of ViT-B-16"):
        load_encoder(f"ViT-B-16:{tmp_path / 'missing.pt'}")
    with pytest.raises(EncoderWeightsError, match="'no-such-tag' is neither"):
        load_encoder("ViT-B-16:no-such-tag")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderWeightsError, match="weights could not be loaded"):
        load_encoder(f"ViT-S-32:{corrupt}")


def test_unknown_name_and_precision():
    with pytest.raises(TaxonlensError, match="unknown encoder 'no-such-model'.*tiny-clip") as info:
        load_encoder("no-such-model")
    assert not isinstance(info.value, EncoderWeightsError)
    with pytest.raises(TaxonlensError, match="unknown precision 'fp8'"):  # fp16 is a precision (GPUs)
        load_encoder("tiny-clip", precision="fp8")
