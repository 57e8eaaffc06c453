"""Tiny model configurations that build offline, for tests, benchmarks and the demo.

Encoder presets are open_clip model configs (``embed_dim``, ``vision_cfg``,
``text_cfg``): adding a model family is adding a config here; the conformance
tests in ``tests/models`` run every preset.
"""

from __future__ import annotations

# iNat21 taxonomic captions are at most 38 BPE tokens; 64 leaves room for templates and common names
_TINY_TEXT = {"context_length": 64, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3}

ENCODER_PRESETS: dict[str, dict] = {
    # a small ViT: 64 px, 8 px patches (64 tokens), 4 layers of width 128
    "tiny-clip": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "layers": 4, "width": 128, "head_width": 32},
        "text_cfg": _TINY_TEXT,
    },
    # a small ResNet (open_clip's ModifiedResNet with attention pooling)
    "tiny-clip-rn": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32, "head_width": 32},
        "text_cfg": _TINY_TEXT,
    },
    # 224 px input (32 px patches, 49 tokens) for tools that resize every photo to 224 px, as pybioclip
    "tiny-clip-224": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 224, "patch_size": 32, "layers": 2, "width": 128, "head_width": 32},
        "text_cfg": _TINY_TEXT,
    },
}

#: Names users know, mapped to where open_clip finds them.
ENCODER_ALIASES: dict[str, str] = {
    "bioclip": "hf-hub:imageomics/bioclip",
    "bioclip-2": "hf-hub:imageomics/bioclip-2",
}

# Tiny multimodal LLMs (see :mod:`taxonlens.models.tiny_lmm`): ~1-3 M parameters, 112 px images,
# a 1,024-token BPE vocabulary trained on the shipped taxonomies. ``mrope_section`` sums to
# head_dim / 2 (32 / 2). The conformance tests in ``tests/models`` run every preset.
#: Tokens of the tiny presets' byte-level BPE vocabulary (trained on the shipped taxonomies).
TINY_LMM_VOCAB = 1024
_TINY_LM = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 4096}
LMM_PRESETS: dict[str, dict] = {
    "tiny-qwen2.5-vl": {
        "family": "qwen", "arch": "qwen2_5_vl", "vocab_size": TINY_LMM_VOCAB, "image_size": 112,
        "text": _TINY_LM | {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                "mrope_section": [4, 6, 6]}},
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "patch_size": 14,
                   "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 128, "window_size": 112,
                   "fullatt_block_indexes": [1]},
    },
    # tiny-qwen2.5-vl widened and deepened to ~21 M parameters (8 layers of 384, a 4-block vision
    # tower of 192): the pretrained starting point of the method benchmarks (``train pretrain-lmm``)
    "small-qwen2.5-vl": {
        "family": "qwen", "arch": "qwen2_5_vl", "vocab_size": TINY_LMM_VOCAB, "image_size": 112,
        "text": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 4096,
                 "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]}},
        "vision": {"depth": 2, "hidden_size": 128, "intermediate_size": 512, "num_heads": 2, "patch_size": 14,
                   "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 256, "window_size": 112,
                   "fullatt_block_indexes": [1]},
    },
    "tiny-qwen3-vl": {
        "family": "qwen", "arch": "qwen3_vl", "vocab_size": TINY_LMM_VOCAB, "image_size": 112,
        "text": _TINY_LM | {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                "mrope_section": [6, 5, 5]}},
        "vision": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "patch_size": 16,
                   "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 128,
                   "num_position_embeddings": 64, "deepstack_visual_indexes": [1]},
    },
    "tiny-idefics2": {
        "family": "idefics2", "arch": "idefics2", "vocab_size": TINY_LMM_VOCAB, "image_size": 112,
        "text": _TINY_LM | {"sliding_window": None},
        "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "image_size": 112, "patch_size": 14},
        "perceiver": {"hidden_act": "silu", "hidden_size": 128, "rms_norm_eps": 1e-6, "resampler_n_latents": 8, "resampler_depth": 1, "resampler_n_heads": 2,
                      "resampler_head_dim": 32, "num_key_value_heads": 1},
    },
}

#: The prefix of a random-weight model of an architecture: ``random:qwen2.5-vl-3b``.
RANDOM_PREFIX = "random:"


def is_built_offline(name: str) -> bool:
    """Whether :func:`taxonlens.models.tiny_lmm.build_tiny_lmm` builds ``name`` (a tiny preset or
    ``random:NAME``) rather than a checkpoint being loaded."""
    return name in LMM_PRESETS or name.startswith(RANDOM_PREFIX)
