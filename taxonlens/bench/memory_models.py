"""The real architectures of ``bench memory``, built on the ``meta`` device from their published
configurations (no weights, no download, no memory), and what the memory formulas read from them.

:data:`~taxonlens.models.architectures.ARCHITECTURES` holds each published configuration as data,
with the repository it comes from and the parameter count its publisher states. :func:`build_on_meta` builds the real module
tree; :func:`parameter_counts` counts it; :func:`model_shape` reduces a config (real or a tiny
preset's) to the :class:`Shape` the formulas of :mod:`taxonlens.bench.memory` use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from taxonlens.models.architectures import ARCHITECTURES, Architecture


def build_on_meta(arch: Architecture) -> torch.nn.Module:
    """The real module tree of ``arch`` on the ``meta`` device: shapes, no storage (~0.2-3 s)."""
    if arch.builder == "open_clip":
        import open_clip

        with torch.device("meta"):  # built there, not built on the CPU and moved
            return open_clip.create_model(arch.config, device="meta")
    import transformers

    config = getattr(transformers, arch.builder)(**arch.config)
    with torch.device("meta"):
        return transformers.AutoModelForImageTextToText.from_config(config)


def _is_vision(name: str) -> bool:
    """Whether parameter ``name`` belongs to the image side: the image tower and its connector
    (Qwen's merger, Idefics2's perceiver and projection); the rest is the text side (an LMM's
    language model and output layer, a CLIP model's text tower)."""
    return any(part in name for part in ("visual", "vision_model.", "connector."))


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """``{"total", "vision", "text", "tied"}``: parameters of ``model``, a tied (shared) tensor
    counted once, as a checkpoint stores it; ``vision`` is the image tower with its connector
    (merger, perceiver, projection), ``text`` the language model with its output layer (or a CLIP
    model's text tower), ``tied`` what counting shared tensors at each use would add."""
    counts = {"total": 0, "vision": 0, "text": 0}
    for name, p in model.named_parameters():  # yields a shared tensor once
        counts["total"] += p.numel()
        counts["vision" if _is_vision(name) else "text"] += p.numel()
    every_use = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    return counts | {"tied": every_use - counts["total"]}


def output_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    """An LMM's output layer (``lm_head``), which quantization and LoRA leave alone; None for CLIP."""
    return model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None


def linear_parameters(model: torch.nn.Module) -> int:
    """Weights (and biases) of the ``nn.Linear`` modules other than the output layer: what
    bitsandbytes quantizes to 8 or 4 bits and what LoRA ``all-linear`` adapts."""
    head = output_layer(model)
    return sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
               for p in m.parameters(recurse=False))


def lora_parameters(model: torch.nn.Module, rank: int) -> int:
    """Trainable parameters of LoRA of ``rank`` on every ``nn.Linear`` but the output layer
    (peft's ``all-linear``): ``rank * (in + out)`` each."""
    head = output_layer(model)
    return sum(rank * (m.in_features + m.out_features) for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m is not head)


@dataclass(frozen=True)
class Tower:
    """One transformer stack, as the activation formula sees it.

    Attributes:
        layers, hidden, heads, kv_heads, head_dim, intermediate: its config.
        gated: a gated MLP (gate, up, down: SwiGLU) rather than fc1 -> activation -> fc2.
        rms_norm: RMSNorm (transformers' eager one keeps its input, the normalised tensor and the
            output) rather than LayerNorm (input and output).
        qk_norm: RMSNorm on queries and keys per head (Qwen3).
    """

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    gated: bool
    rms_norm: bool
    qk_norm: bool = False


@dataclass(frozen=True)
class Shape:
    """What the memory formulas read from a model's config.

    Attributes:
        vision, text: the image tower and the text tower (an LMM's language model).
        vocab: V, the output layer's width (0 for CLIP, whose loss is over the batch).
        patch: image patch side in pixels; merge: patches merged per side into one LM token
            (Qwen: 2); factor: image sides are rounded to a multiple of it (Qwen: patch * merge).
        latents: LM tokens per image of a perceiver resampler (Idefics2: 64), else None.
        max_side: the largest side the image tower takes (None: any); fixed_side: it takes only
            this side (CLIP: 224) and adds ``extra_tokens`` (CLIP's class token).
        patch_values: input values per patch (channels x frames x patch^2), kept by the patch embedding.
        text_len: tokens of a text fixed by the model (CLIP: the context length), else None.
        causal_lm: an LMM, whose inference keeps a KV cache.
    """

    vision: Tower
    text: Tower
    vocab: int
    patch: int
    merge: int = 1
    factor: int = 1
    latents: int | None = None
    max_side: int | None = None
    fixed_side: int | None = None
    extra_tokens: int = 0
    patch_values: int = 0
    text_len: int | None = None
    causal_lm: bool = True

    def vision_tokens(self, side: int) -> int:
        """Tokens the image tower sees for one square photo of ``side`` pixels."""
        side = self.fixed_side or min(side, self.max_side or side)
        side = max(self.factor, round(side / self.factor) * self.factor)
        return (side // self.patch) ** 2 + self.extra_tokens

    def image_tokens(self, side: int) -> int:
        """LM tokens one photo of ``side`` pixels becomes (0 for CLIP)."""
        if not self.causal_lm:
            return 0
        return self.latents if self.latents is not None else self.vision_tokens(side) // self.merge ** 2


def _text_tower(t, qk_norm: bool) -> Tower:
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads
    return Tower(t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads, head_dim,
                 t.intermediate_size, gated=True, rms_norm=True, qk_norm=qk_norm)


def model_shape(model: torch.nn.Module) -> Shape:
    """The :class:`Shape` of ``model``: an open_clip CLIP or a Qwen2.5-VL / Qwen3-VL / Idefics2
    LMM (real on ``meta``, or a tiny preset).

    Raises:
        ValueError: another model type.
    """
    config = getattr(model, "config", None)  # open_clip models have none
    if config is None:
        return _clip_shape(model)
    kind = config.model_type
    if kind in ("qwen2_5_vl", "qwen3_vl"):
        v, qwen3 = config.vision_config, kind == "qwen3_vl"
        vision = Tower(v.depth, v.hidden_size, v.num_heads, v.num_heads, v.hidden_size // v.num_heads,
                       v.intermediate_size, gated=not qwen3, rms_norm=not qwen3)
        return Shape(vision, _text_tower(config.text_config, qk_norm=qwen3), config.text_config.vocab_size,
                     v.patch_size, v.spatial_merge_size, v.patch_size * v.spatial_merge_size,
                     patch_values=v.in_channels * v.temporal_patch_size * v.patch_size ** 2)
    if kind == "idefics2":
        v = config.vision_config
        vision = Tower(v.num_hidden_layers, v.hidden_size, v.num_attention_heads, v.num_attention_heads,
                       v.hidden_size // v.num_attention_heads, v.intermediate_size, gated=False, rms_norm=False)
        return Shape(vision, _text_tower(config.text_config, qk_norm=False), config.text_config.vocab_size,
                     v.patch_size, latents=config.perceiver_config.resampler_n_latents, max_side=v.image_size,
                     patch_values=v.num_channels * v.patch_size ** 2)
    raise ValueError(f"no memory shape for model type {kind!r}")


def _clip_shape(model: torch.nn.Module) -> Shape:
    visual, blocks = model.visual, model.visual.transformer.resblocks
    width = visual.transformer.width
    heads = blocks[0].attn.num_heads
    vision = Tower(len(blocks), width, heads, heads, width // heads, blocks[0].mlp.c_fc.out_features,
                   gated=False, rms_norm=False)
    text_blocks = model.transformer.resblocks
    t_width, t_heads = model.transformer.width, text_blocks[0].attn.num_heads
    text = Tower(len(text_blocks), t_width, t_heads, t_heads, t_width // t_heads,
                 text_blocks[0].mlp.c_fc.out_features, gated=False, rms_norm=False)
    side, patch = visual.image_size[0], visual.patch_size[0]
    return Shape(vision, text, 0, patch, fixed_side=side, extra_tokens=1, patch_values=3 * patch ** 2,
                 text_len=model.context_length, causal_lm=False)


__all__ = ["ARCHITECTURES", "Architecture", "Shape", "Tower", "build_on_meta", "linear_parameters",
           "lora_parameters", "model_shape", "parameter_counts"]
