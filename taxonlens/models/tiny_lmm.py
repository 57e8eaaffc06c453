"""Multimodal LLMs that build offline with random weights: a config, a byte-level BPE tokenizer
trained on the shipped taxonomies' names, the family's image processor and a short chat template.

- the tiny presets of :data:`LMM_PRESETS` (~1-3 M parameters): small enough to train on
  synthworld on a CPU;
- ``random:NAME``: the towers of a real or scaled architecture of
  :mod:`taxonlens.models.architectures` (``random:qwen2.5-vl-3b``, ``random:qwen2.5-vl-130m``)
  with the same tiny tokenizer, for speed and memory measured at a real width and depth.

:func:`build_tiny_lmm` returns ``(model, processor)``; saved with ``save_pretrained``, the
folder loads back through :func:`taxonlens.models.mllm.load_lmm` like any local checkpoint.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import torch
from transformers import AutoModelForImageTextToText, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

from taxonlens.errors import TaxonlensError
from taxonlens.models.architectures import ARCHITECTURES, SCALED_ARCHITECTURES
from taxonlens.models.presets import LMM_PRESETS, RANDOM_PREFIX, TINY_LMM_VOCAB
from taxonlens.resources import BUILTIN_TAXONOMIES, taxonomy_file

#: Special tokens of each family, in the order they get ids (after the trained vocabulary).
SPECIAL_TOKENS = {
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>"],
    "idefics2": ["<unk>", "<s>", "</s>", "<image>", "<fake_token_around_image>", "<end_of_utterance>"],
}

_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_IDEFICS2_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>"
    "{% elif item['type'] == 'text' %} {{ item['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:\n{% endif %}"
)

#: Words of the prompts taxonlens writes, so that they tokenize into few pieces.
_PROMPT_WORDS = (
    "What is the taxonomic classification of the organism in this image at the kingdom phylum class order "
    "family genus species level? Choose one from the options: Answer with the option only. Rank these candidate "
    "names from most to least likely. A B C D E F G H I J, ; : . ( ) [ ] 0 1 2 3 4 5 6 7 8 9 a photo of with "
    "common name tan fur striped soft spotted red green blue yellow brown black white grey leaves flower wing"
)


def _corpus() -> Iterator[str]:
    """Every name of the built-in taxonomies (lower and original case) and the prompt words."""
    for name in BUILTIN_TAXONOMIES:
        paths = json.loads(taxonomy_file(name).read_text(encoding="utf-8"))
        for path in paths.values():
            text = " ".join(path)
            yield text
            yield text.lower()
    for _ in range(50):
        yield _PROMPT_WORDS


@functools.lru_cache(maxsize=4)
def _tokenizer_json(family: str, vocab_size: int) -> str:
    """A byte-level BPE trained on :func:`_corpus` (deterministic), with ``family``'s special tokens, as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS[family],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(family: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """The tokenizer of a tiny preset of ``family`` (``qwen`` or ``idefics2``)."""
    tok = PreTrainedTokenizerFast(tokenizer_object=_tokenizer_from_json(_tokenizer_json(family, vocab_size)))
    if family == "qwen":
        tok.add_special_tokens({"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>",
                                "additional_special_tokens": SPECIAL_TOKENS["qwen"][1:]})
        tok.image_token, tok.video_token = "<|image_pad|>", "<|video_pad|>"
    else:
        tok.add_special_tokens({"pad_token": "<unk>", "unk_token": "<unk>", "bos_token": "<s>",
                                "eos_token": "<end_of_utterance>",
                                "additional_special_tokens": ["<image>", "<fake_token_around_image>",
                                                              "<end_of_utterance>"]})
    tok.padding_side = "left"
    return tok


def _tokenizer_from_json(text: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def _processor(preset: dict, tokenizer: PreTrainedTokenizerFast) -> ProcessorMixin:
    family, arch, side = preset["family"], preset["arch"], preset["image_size"]
    size = {"shortest_edge": side * side, "longest_edge": side * side}
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        kw = {"patch_size": preset["vision"]["patch_size"], "merge_size": 2, "size": size}
        return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tokenizer,
                                   video_processor=Qwen2VLVideoProcessor(**kw), chat_template=_QWEN_TEMPLATE)
    if arch == "qwen3_vl":
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        kw = {"patch_size": preset["vision"]["patch_size"], "merge_size": 2, "size": size}
        return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessor(**kw), tokenizer=tokenizer,
                                video_processor=Qwen3VLVideoProcessor(**kw), chat_template=_QWEN_TEMPLATE)
    if family == "idefics2":
        from transformers import Idefics2ImageProcessor, Idefics2Processor

        image_processor = Idefics2ImageProcessor(do_image_splitting=False,
                                                 size={"shortest_edge": side, "longest_edge": side})
        return Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                 image_seq_len=preset["perceiver"]["resampler_n_latents"],
                                 chat_template=_IDEFICS2_TEMPLATE)
    raise ValueError(f"no processor for preset architecture {arch!r}")


def _config(preset: dict, tokenizer: PreTrainedTokenizerFast):
    arch, text, vision = preset["arch"], dict(preset["text"]), dict(preset["vision"])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS[preset["family"]]}
    text["vocab_size"] = len(tokenizer)
    if arch in ("qwen2_5_vl", "qwen3_vl"):
        from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

        text |= {"bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                 "pad_token_id": ids["<|endoftext|>"]}
        cls = Qwen2_5_VLConfig if arch == "qwen2_5_vl" else Qwen3VLConfig
        return cls(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                   video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                   vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    from transformers import Idefics2Config

    text |= {"bos_token_id": ids["<s>"], "eos_token_id": ids["<end_of_utterance>"], "pad_token_id": ids["<unk>"]}
    return Idefics2Config(text_config=text, vision_config=vision, perceiver_config=dict(preset["perceiver"]),
                          image_token_id=ids["<image>"], tie_word_embeddings=False)


#: Family and preset architecture of each transformers config class of the architectures.
_FAMILIES = {"Qwen2_5_VLConfig": ("qwen", "qwen2_5_vl"), "Qwen3VLConfig": ("qwen", "qwen3_vl"),
             "Idefics2Config": ("idefics2", "idefics2")}


def lmm_preset(name: str) -> dict:
    """The preset of ``name``: a tiny preset as it is, or ``random:NAME``'s architecture as one
    (its text and vision towers, the tiny tokenizer's 1,024 tokens, 112 px images).

    Raises:
        TaxonlensError: an unknown name.
    """
    if name in LMM_PRESETS:
        return LMM_PRESETS[name]
    known = {**ARCHITECTURES, **SCALED_ARCHITECTURES}
    arch = known.get(name.removeprefix(RANDOM_PREFIX))
    if arch is None or arch.builder not in _FAMILIES:
        lmms = [f"{RANDOM_PREFIX}{n}" for n, a in known.items() if a.builder in _FAMILIES]
        raise TaxonlensError(f"unknown multimodal LLM {name!r}; random-weight models: {', '.join(lmms)}")
    family, kind = _FAMILIES[arch.builder]
    text = {k: v for k, v in arch.config["text_config"].items() if k not in ("vocab_size", "tie_word_embeddings")}
    preset = {"family": family, "arch": kind, "vocab_size": TINY_LMM_VOCAB,
              "image_size": 112, "text": text, "vision": arch.config["vision_config"]}
    if "perceiver_config" in arch.config:
        preset["perceiver"] = arch.config["perceiver_config"]
    return preset


def build_tiny_lmm(name: str, seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                   attention: str = "sdpa") -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` of ``name`` (see :func:`lmm_preset`), random weights seeded by
    ``seed``, in eval mode, with transformers' ``attention`` implementation.

    A tiny preset is built in float32 on the CPU whatever ``dtype`` and ``device`` (its weights
    are the same everywhere; :func:`~taxonlens.models.mllm.load_lmm` moves them); a
    ``random:NAME`` model is built directly in ``dtype`` on ``device``, as a model of billions of
    parameters must be.
    """
    preset = lmm_preset(name)
    tokenizer = tiny_tokenizer(preset["family"], preset["vocab_size"])
    processor = _processor(preset, tokenizer)
    config = _config(preset, tokenizer)
    if name in LMM_PRESETS:
        dtype, device = torch.float32, "cpu"
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attention)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model.eval(), processor
