"""Real model architectures as data: the published configurations of the models taxonlens
loads (BioCLIP's open_clip architectures, Qwen2.5-VL, Qwen3-VL, Idefics2), with the repository
each comes from and the parameter count its publisher states, and smaller configurations scaled
from them for benchmarks.

``bench memory`` builds :data:`ARCHITECTURES` on the ``meta`` device to count and size them;
:func:`~taxonlens.models.mllm.load_lmm` builds any LMM here with random weights
(``random:qwen2.5-vl-3b``) so that speed and memory are measured at a real size without weights.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Source of the published counts of the Hugging Face repositories: the "Model size" of the
#: repository's page, which sums the tensors stored in its safetensors files.
HF_PAGE = "huggingface.co/{repo} (Model size, safetensors)"
#: Source of the published counts of the open_clip architectures (BioCLIP's are open_clip
#: checkpoints of these architectures).
OPEN_CLIP_PROFILE = "github.com/mlfoundations/open_clip docs/model_profile.csv ({arch})"

_QWEN25_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
                  "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "in_channels": 3,
                  "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
_QWEN25_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
_QWEN3_ROPE = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
               "mrope_interleaved": True}


@dataclass(frozen=True)
class Architecture:
    """A published model, as data.

    Attributes:
        name: the short name ``bench memory`` prints.
        repo: where the configuration is published (a Hugging Face repository).
        builder: ``open_clip`` (``config`` names an open_clip architecture) or the transformers
            config class (``config`` holds its keyword arguments, the published ``config.json`` values).
        published: the parameter count the publisher states, and ``source``: where.
    """

    name: str
    repo: str
    builder: str
    config: dict | str
    published: int
    source: str


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("bioclip", "imageomics/bioclip", "open_clip", "ViT-B-16", 149_620_000,
                 OPEN_CLIP_PROFILE.format(arch="ViT-B-16: 149.62 M")),
    Architecture("bioclip-2", "imageomics/bioclip-2", "open_clip", "ViT-L-14", 427_620_000,
                 OPEN_CLIP_PROFILE.format(arch="ViT-L-14: 427.62 M")),
    Architecture("qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2_5_VLConfig", {
        "text_config": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                        "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
                        "tie_word_embeddings": True, "rope_parameters": _QWEN25_ROPE},
        "vision_config": _QWEN25_VISION | {"out_hidden_size": 2048}, "tie_word_embeddings": True},
        3_750_000_000, HF_PAGE.format(repo="Qwen/Qwen2.5-VL-3B-Instruct") + ": 3.75 B"),
    Architecture("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2_5_VLConfig", {
        "text_config": {"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                        "tie_word_embeddings": False, "rope_parameters": _QWEN25_ROPE},
        "vision_config": _QWEN25_VISION | {"out_hidden_size": 3584}, "tie_word_embeddings": False},
        8_290_000_000, HF_PAGE.format(repo="Qwen/Qwen2.5-VL-7B-Instruct") + ": 8.29 B"),
    Architecture("qwen3-vl-2b", "Qwen/Qwen3-VL-2B-Instruct", "Qwen3VLConfig", {
        "text_config": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                        "vocab_size": 151936, "tie_word_embeddings": True, "rope_parameters": _QWEN3_ROPE},
        "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                          "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "num_position_embeddings": 2304,
                          "deepstack_visual_indexes": [5, 11, 17]},
        "tie_word_embeddings": True},
        2_130_000_000, HF_PAGE.format(repo="Qwen/Qwen3-VL-2B-Instruct") + ": 2.13 B"),
    Architecture("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct", "Qwen3VLConfig", {
        "text_config": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
                        "vocab_size": 151936, "tie_word_embeddings": False, "rope_parameters": _QWEN3_ROPE},
        "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                          "out_hidden_size": 4096, "patch_size": 16, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "num_position_embeddings": 2304,
                          "deepstack_visual_indexes": [8, 16, 24]},
        "tie_word_embeddings": False},
        8_770_000_000, HF_PAGE.format(repo="Qwen/Qwen3-VL-8B-Instruct") + ": 8.77 B"),
    Architecture("idefics2-8b", "HuggingFaceM4/idefics2-8b", "Idefics2Config", {
        # text: Mistral-7B-v0.1 (the config's text_config); vision: SigLIP so400m at 980 px
        "text_config": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                        "vocab_size": 32003, "sliding_window": 4096, "tie_word_embeddings": False},
        "vision_config": {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                          "num_attention_heads": 16, "image_size": 980, "patch_size": 14},
        "perceiver_config": {"hidden_size": 4096, "resampler_n_latents": 64, "resampler_depth": 3,
                             "resampler_n_heads": 16, "resampler_head_dim": 96, "num_key_value_heads": 4},
        "tie_word_embeddings": False},
        8_400_000_000, HF_PAGE.format(repo="HuggingFaceM4/idefics2-8b") + ": 8.4 B"),
)}

#: Configurations scaled down from a published one (not published models): wide and deep enough
#: that the model's arithmetic, not Python overhead, dominates a forward pass, yet quick to build
#: on a CPU. ``published`` is 0: there is no publisher's count.
SCALED_ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("qwen2.5-vl-130m", "", "Qwen2_5_VLConfig", {
        # Qwen2.5-VL-3B's layout at 768 wide: 16 layers of 12 heads (2 key/value heads) of 64
        "text_config": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 16,
                        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                        "tie_word_embeddings": False,
                        "rope_parameters": _QWEN25_ROPE | {"mrope_section": [8, 12, 12]}},
        "vision_config": _QWEN25_VISION | {"depth": 8, "hidden_size": 512, "intermediate_size": 1368, "num_heads": 8,
                                           "fullatt_block_indexes": [3, 7], "out_hidden_size": 768},
        "tie_word_embeddings": False},
        0, "scaled from Qwen/Qwen2.5-VL-3B-Instruct by taxonlens"),
)}
