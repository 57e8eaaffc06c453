"""Tiny multimodal LLMs that build offline: a config from :data:`LMM_PRESETS`, a byte-level
BPE tokenizer trained on the shipped taxonomies' names, the family's image processor and a
short chat template. Random weights; small enough to train on synthworld on a CPU.

:func:`build_tiny_lmm` returns ``(model, processor)``; saved with ``save_pretrained``, the
folder loads back through :func:`taxonlens.models.mllm.load_lmm` like any local checkpoint.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import torch
from transformers import AutoModelForImageTextToText, PreTrainedModel, PreTrainedTokenizerFast, ProcessorMixin

from taxonlens.models.presets import LMM_PRESETS
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


def build_tiny_lmm(name: str, seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``(model, processor)`` of the tiny preset ``name`` (see :data:`LMM_PRESETS`), random
    weights seeded by ``seed``, float32, in eval mode."""
    preset = LMM_PRESETS[name]
    tokenizer = tiny_tokenizer(preset["family"], preset["vocab_size"])
    processor = _processor(preset, tokenizer)
    config = _config(preset, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model.eval(), processor
