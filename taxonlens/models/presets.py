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
