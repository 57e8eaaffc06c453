"""Image-text encoders: the :class:`Encoder` protocol and its open_clip backend.

:func:`load_encoder` builds one by name, and never downloads at import time:

- a preset (``tiny-clip``, ``tiny-clip-rn``; random weights, built from a config);
- ``bioclip`` / ``bioclip-2`` or any ``hf-hub:ORG/REPO`` (read from the Hugging Face
  cache; offline, a missing repo is a clear :class:`EncoderWeightsError`);
- a local directory with ``open_clip_config.json`` and weights (what
  :meth:`OpenCLIPEncoder.save` writes, and the layout of a hub snapshot);
- ``ARCH:FILE`` (an open_clip architecture and a checkpoint file),
  ``ARCH:TAG`` (an open_clip pretrained tag) or a bare ``ARCH`` (random weights).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image
from safetensors import SafetensorError

from taxonlens.errors import TaxonlensError
from taxonlens.models.device import DTYPES, resolve_device, resolve_precision
from taxonlens.models.hub import offline_help, state_fingerprint
from taxonlens.models.presets import ENCODER_ALIASES, ENCODER_PRESETS

log = logging.getLogger(__name__)
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
#: What open_clip raises for a missing, unreadable or corrupt config or checkpoint (a bad JSON config is a
#: ValueError, a corrupt .bin an UnpicklingError, a corrupt .safetensors a SafetensorError).
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, pickle.UnpicklingError, SafetensorError)


class EncoderWeightsError(TaxonlensError):
    """An encoder's configuration or weights are not on this machine."""


@runtime_checkable
class Encoder(Protocol):
    """What recognition needs from an image-text model.

    Attributes:
        name: how it was asked for (``bioclip``, ``tiny-clip``, a path).
        embed_dim: D, the size of the shared embedding space.
    """

    name: str
    embed_dim: int

    @property
    def device(self) -> torch.device:
        """Where the model runs (inputs are moved there; features come back on the CPU)."""

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB image -> float ``[3, H, W]`` model input."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> L2-normalised float32 ``[B, D]``."""

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> L2-normalised float32 ``[N, D]``."""

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> L2-normalised float32 ``[B, P, C]``: the image tower's last
        spatial feature map, one row per patch in raster order (what TARA aligns to)."""

    @property
    def logit_scale(self) -> float:
        """Multiplier of cosine similarities before a softmax (CLIP's learned temperature)."""

    def fingerprint(self) -> str:
        """A short hash that changes whenever the weights or configuration change."""


class OpenCLIPEncoder:
    """An open_clip CLIP model as an :class:`Encoder`.

    Attributes:
        model: the ``open_clip`` module (train it directly; the encode methods run in inference mode).
        config: the open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        preprocess: PIL image -> ``[3, H, W]`` (resize, centre crop, normalise).
        train_transform: the same with open_clip's training augmentation.
    """

    def __init__(self, model: torch.nn.Module, config: dict, preprocess, train_transform, name: str,
                 precision: str = "fp32"):
        self.model, self.config, self.name, self.precision = model, config, name, precision
        self.preprocess, self.train_transform = preprocess, train_transform
        self.embed_dim = int(config["embed_dim"])
        self.tokenizer = _tokenizer_for(config)
        self._dtype = DTYPES[precision]
        model.eval()

    @property
    def device(self) -> torch.device:
        """Where the model's weights are; inputs are moved there, features come back on the CPU."""
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode, no autograd and autocast at the model's precision for the duration, restoring a
        training model after."""
        was_training = self.model.training
        self.model.eval()
        try:
            autocast = (torch.autocast(self.device.type, self._dtype) if self._dtype != torch.float32
                        else nullcontext())
            with torch.inference_mode(), autocast:
                yield
        finally:
            self.model.train(was_training)

    def _pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` on the model's device and in its number format; the copy does not wait
        for the device when ``pixels`` are pinned (see :class:`~taxonlens.data.loader.PhotoLoader`)."""
        return pixels.to(self.device, non_blocking=True).to(self._dtype)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with self._inference():
            f = self.model.encode_image(self._pixels(pixels))
        return torch.nn.functional.normalize(f.float(), dim=-1).cpu()

    def patch_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> L2-normalised float32 ``[B, P, C]``: the last block's patch tokens
        (ViT: after the final layer norm, class token left out, ``C`` = width, ``P`` = (H / patch)^2;
        ResNet: the last stage's ``h x w`` feature map, before attention pooling), row-major."""
        with self._inference():
            grid = self.model.visual.forward_intermediates(self._pixels(pixels), indices=1,
                                                           intermediates_only=True,
                                                           normalize_intermediates=True)["image_intermediates"][-1]
        grid = grid.float().flatten(2).transpose(1, 2)  # [B, C, h, w] -> [B, hw, C]
        return torch.nn.functional.normalize(grid, dim=-1).cpu()

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """``N`` strings -> L2-normalised float32 ``[N, D]``.

        Texts are encoded in batches of similar length. For open_clip's plain CLIP text tower
        (causal mask, feature at the end-of-text token: BioCLIP's), each batch is cut after its
        longest text: the padding after an end-of-text token cannot reach it, so the result is
        the same and a 77-token context costs only the tokens used (taxon captions are short).
        """
        if not len(texts):
            return torch.zeros(0, self.embed_dim)
        tokens = self.tokenizer(list(texts)).to(self.device)  # [N, context]
        trim = self._trimmable_text_tower()
        ends = tokens.argmax(dim=-1) if trim else torch.zeros(len(tokens), dtype=torch.long)
        order = torch.argsort(ends, stable=True)
        out = torch.empty(len(tokens), self.embed_dim)
        with self._inference():
            for i in range(0, len(order), batch_size):
                rows = order[i : i + batch_size]
                if trim:
                    f = self._encode_text_prefix(tokens[rows, : int(ends[rows].max()) + 1])
                else:
                    f = self.model.encode_text(tokens[rows])
                out[rows.cpu()] = torch.nn.functional.normalize(f.float(), dim=-1).cpu()
        return out

    def _trimmable_text_tower(self) -> bool:
        import open_clip

        m = self.model
        return (isinstance(m, open_clip.CLIP) and getattr(m, "text_pool_type", None) == "argmax"
                and getattr(m, "attn_mask", None) is not None)

    def _encode_text_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's ``CLIP.encode_text`` on the first ``L`` positions of ``tokens [B, L]``
        (positional embedding and causal mask cut to ``L``); ``[B, D]`` unnormalised."""
        m, length = self.model, tokens.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:length].to(cast)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:length, :length]))
        x = x[torch.arange(len(x)), tokens.argmax(dim=-1)]
        proj = m.text_projection
        return proj(x) if isinstance(proj, torch.nn.Linear) else x if proj is None else x @ proj

    def fingerprint(self) -> str:
        """Hash of the config, the precision and 64 strided values of every tensor of the
        state dict: cheap even for ViT-L, and changed by any training step."""
        return state_fingerprint({"config": self.config, "precision": self.precision}, self.model.state_dict())

    def save(self, directory: str | Path) -> Path:
        """Write ``open_clip_config.json`` and ``open_clip_model.safetensors`` (fp32): the
        layout of a Hugging Face snapshot, loadable with ``load_encoder(directory)``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        preprocess_cfg = dict(getattr(self.model.visual, "preprocess_cfg", {}) or {})
        (directory / CONFIG_FILE).write_text(json.dumps({"model_cfg": self.config, "preprocess_cfg": preprocess_cfg},
                                                        indent=1, default=list))
        state = {k: v.detach().float().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        return directory


class _NoRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    quiet = _NoRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def _tokenizer_for(config: dict):
    import open_clip

    text_cfg = config.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.get_tokenizer("hf-hub:" + text_cfg["hf_tokenizer_name"])
    return open_clip.SimpleTokenizer(context_length=int(text_cfg.get("context_length", 77)))


def _missing_weights(name: str, target: str, detail: str) -> EncoderWeightsError:
    return EncoderWeightsError(
        f"encoder {name!r} ({target}) could not be loaded: {detail}. {offline_help(target.removeprefix('hf-hub:'))}, "
        "or pass --model /path/to/dir holding open_clip_config.json and open_clip_model.safetensors"
    )


def load_encoder(name: str, precision: str = "fp32", seed: int = 0, device: str | torch.device = "cpu"
                 ) -> OpenCLIPEncoder:
    """Build an encoder by name (see the module docstring for the accepted forms).

    Args:
        name: preset, alias, ``hf-hub:...``, directory, ``ARCH:FILE``, ``ARCH:TAG`` or ``ARCH``.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (the fast format of ``device``, see
            :func:`~taxonlens.models.device.resolve_precision`).
        seed: seeds the random initialisation of presets and bare architectures.
        device: where the model runs (``auto``: a GPU when there is one, see
            :func:`~taxonlens.models.device.resolve_device`); features come back on the CPU.

    Raises:
        EncoderWeightsError: the configuration or weights are not available locally.
        TaxonlensError: an unknown name.
    """
    import open_clip

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    target = ENCODER_ALIASES.get(name, name)
    kwargs = {"precision": precision, "device": str(device)}
    if target in ENCODER_PRESETS:
        torch.manual_seed(seed)
        config = ENCODER_PRESETS[target]
        with _quiet_random_init():  # a preset is random by design: open_clip's warning would mislead
            model, train_tf, val_tf = open_clip.create_model_and_transforms("ViT-B-16", **kwargs, **config)
        return OpenCLIPEncoder(model, config, val_tf, train_tf, name, precision)
    if target.startswith("hf-hub:"):
        try:
            model, train_tf, val_tf = open_clip.create_model_and_transforms(target, require_pretrained=True, **kwargs)
        except _LOAD_ERRORS as e:
            raise _missing_weights(name, target, str(e).split(". Last error")[0]) from None
        from open_clip.factory import _get_hf_config

        config = _get_hf_config(target.removeprefix("hf-hub:"))["model_cfg"]
        return OpenCLIPEncoder(model, config, val_tf, train_tf, name, precision)
    path = Path(os.path.expanduser(target))
    if path.is_dir():
        cfg_file = path / CONFIG_FILE
        if not cfg_file.is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise EncoderWeightsError(f"{path} holds no {CONFIG_FILE} (found: {found}); an encoder directory needs "
                                      f"{CONFIG_FILE} and {WEIGHTS_FILE}, as written by `taxonlens train contrastive`")
        try:
            model, train_tf, val_tf = open_clip.create_model_and_transforms(f"local-dir:{path}", require_pretrained=True,
                                                                            **kwargs)
        except _LOAD_ERRORS as e:
            raise EncoderWeightsError(f"{path}: weights could not be loaded ({e}); expected {WEIGHTS_FILE} or "
                                      "open_clip_pytorch_model.bin beside the config") from None
        config = json.loads(cfg_file.read_text())["model_cfg"]
        return OpenCLIPEncoder(model, config, val_tf, train_tf, name, precision)
    arch, _, pretrained = target.partition(":")
    if arch not in open_clip.list_models():
        raise TaxonlensError(
            f"unknown encoder {name!r}: not a preset ({', '.join(ENCODER_PRESETS)}), an alias "
            f"({', '.join(ENCODER_ALIASES)}), an hf-hub: name, a directory, or an open_clip architecture "
            "(see `python -c 'import open_clip; print(open_clip.list_models())'`)"
        )
    config = open_clip.get_model_config(arch)
    if pretrained and not Path(pretrained).is_file() and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        raise EncoderWeightsError(f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of {arch} "
                                  f"({', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'})")
    if not pretrained:
        log.warning("encoder %s has random weights (no checkpoint given)", arch)
        torch.manual_seed(seed)
    try:
        with _quiet_random_init():
            model, train_tf, val_tf = open_clip.create_model_and_transforms(
                arch, pretrained=pretrained or None, require_pretrained=bool(pretrained), **kwargs)
    except _LOAD_ERRORS as e:
        raise EncoderWeightsError(f"encoder {name!r}: weights could not be loaded ({e}); offline, a pretrained tag "
                                  "needs its file in the cache: pass ARCH:/path/to/checkpoint instead") from None
    return OpenCLIPEncoder(model, config, val_tf, train_tf, name, precision)
