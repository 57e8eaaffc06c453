"""Multimodal LLMs (LMMs): one wrapper over transformers' image-text-to-text models.

:func:`load_lmm` builds one by name, never downloading at import time:

- a tiny preset (``tiny-qwen2.5-vl``, ``tiny-qwen3-vl``, ``tiny-idefics2``; random weights,
  built offline by :mod:`taxonlens.models.tiny_lmm`), or ``random:NAME``: a real architecture
  (``random:qwen2.5-vl-3b``) with random weights, for speed and memory at a real size;
- a local directory written by ``save_pretrained`` (or :meth:`LMM.save`);
- a Hugging Face name (``Qwen/Qwen2.5-VL-3B-Instruct``, ``Qwen/Qwen3-VL-2B-Instruct``,
  ``HuggingFaceM4/idefics2-8b``, any ``AutoModelForImageTextToText`` model), read from the
  local cache; offline, a missing model is a clear :class:`LMMWeightsError`.

:class:`LMM` asks one image one question in the model's chat format, and answers either by
generation or by scoring offered options: the log-likelihood of each option (and of the
end-of-turn token after it, so an option that is a prefix of another is not favoured) given
the image and the question, all options of all questions in one batched forward pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import nonmember
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError

from taxonlens.choices import Choice
from taxonlens.errors import TaxonlensError
from taxonlens.models.device import DTYPES, attention_implementation, resolve_device, resolve_precision
from taxonlens.models.hub import offline_help, state_fingerprint
from taxonlens.models.presets import LMM_PRESETS, RANDOM_PREFIX, is_built_offline

#: model types whose language model takes multimodal rotary positions (``rope_deltas`` after a prompt)
_MROPE = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl"})
#: The end-of-turn text of each chat family (what follows an answer).
_END_OF_TURN = {"qwen2_5_vl": "<|im_end|>", "qwen3_vl": "<|im_end|>", "qwen2_vl": "<|im_end|>",
                "idefics2": "<end_of_utterance>"}


#: LoRA targets of ``targets="language"``: the projections of every decoder layer of the language model.
_LANGUAGE_LORA = r".*(language_model|text_model)\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
#: Named LoRA target sets: the language model's layers, or every linear layer (vision tower and
#: connector too), each optionally with the output layer (``+head``: a randomly initialised tiny
#: preset cannot learn confident answers with its output layer frozen).
LORA_TARGETS = ("language", "language+head", "all-linear", "all-linear+head")
_VOLATILE_CONFIG = {"_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype"}


def check_lora_targets(targets: str) -> None:
    """Raise :class:`TaxonlensError` unless ``targets`` is one of :data:`LORA_TARGETS` or a
    non-empty regular expression."""
    if targets in LORA_TARGETS:
        return
    try:
        if not re.compile(targets).pattern.strip():
            raise re.error("empty")
    except (re.error, TypeError):
        raise TaxonlensError(f"LoRA targets {targets!r} are neither one of {', '.join(LORA_TARGETS)} nor a "
                             "regular expression") from None


def lora_target_modules(model: torch.nn.Module, targets: str) -> str | list[str]:
    """What peft's ``target_modules`` gets for ``targets``: the language layers' pattern for
    ``language``, ``all-linear`` as it is, the full module names for the ``+head`` sets, and any
    other text as a regular expression.

    Raises:
        TaxonlensError: a ``+head`` set for a model without a linear output layer.
    """
    if targets == "language":
        return _LANGUAGE_LORA
    if targets not in LORA_TARGETS[1:] or targets == "all-linear":
        return targets
    head = model.get_output_embeddings()
    head_name = next((n for n, m in model.named_modules() if m is head and isinstance(m, torch.nn.Linear)), None)
    if head_name is None:
        raise TaxonlensError(f"LoRA targets {targets!r}: the model has no linear output layer to adapt")
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    keep = [n for n in linear if targets == "all-linear+head" or re.fullmatch(_LANGUAGE_LORA, n)]
    return keep + [head_name] * (head_name not in keep)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' per-file progress bars off for the duration (noise in logs for small models)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _stable(config: dict) -> dict:
    """A config dict without the keys a save and load rewrite (recursively)."""
    return {k: _stable(v) if isinstance(v, dict) else v for k, v in config.items() if k not in _VOLATILE_CONFIG}


class LMMWeightsError(TaxonlensError):
    """A multimodal LLM's configuration or weights are not on this machine."""


class LMM:
    """A multimodal LLM with its processor.

    Attributes:
        model: the transformers model (``AutoModelForImageTextToText``), float32 on the CPU by default.
        processor: its processor (tokenizer, image processor, chat template).
        name: how it was asked for.
        end_of_turn: the text that closes an answer in this model's chat format.
    """

    def __init__(self, model: torch.nn.Module, processor, name: str):
        self.model, self.processor, self.name = model, processor, name
        self.tokenizer = processor.tokenizer
        # callers that use the processor directly (trl's GRPO) pad as generation needs: on the left
        self.tokenizer.padding_side = "left"
        self.end_of_turn = _END_OF_TURN.get(model.config.model_type, self.tokenizer.eos_token)

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def n_layers(self) -> int:
        """Decoder layers of the language model (``hidden_states[k]`` is the output of layer ``k``)."""
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        """Width ``H`` of the language model's hidden states."""
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def non_answer_token_ids(self) -> list[int]:
        """The added tokens an answer never holds: every one but the end of turn and end of text
        (image and video placeholders, turn starts, padding, tool markup). Generation suppresses
        them: a sampled image placeholder would even break the next forward pass, whose image
        positions no longer match the image."""
        keep = {self.tokenizer.convert_tokens_to_ids(self.end_of_turn), self.tokenizer.eos_token_id}
        return sorted(i for i in self.tokenizer.added_tokens_decoder if i not in keep)

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids -> bool ``[B, L]``: where the image's tokens sit in the sequence."""
        return input_ids == self.model.config.image_token_id

    @staticmethod
    def messages(question: str, system: str | None = None) -> list[dict]:
        """The chat messages of one image and ``question`` (after an optional ``system`` message),
        in the conversational format of processors and trl."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return messages

    def chat(self, question: str, system: str | None = None) -> str:
        """The prompt text of :meth:`messages`, ready for the assistant's answer."""
        return self.processor.apply_chat_template(self.messages(question, system), add_generation_prompt=True)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are; :meth:`inputs` puts every input tensor there."""
        return next(self.model.parameters()).device

    def inputs(self, images: Sequence[Image.Image], texts: Sequence[str], padding_side: str = "left") -> dict:
        """Processor outputs (``input_ids [B, L]``, ``attention_mask``, pixel tensors, ...) of one
        image per text, padded on ``padding_side``, on the model's :attr:`device`."""
        if len(images) != len(texts):
            raise ValueError(f"one image per text: got {len(images)} images and {len(texts)} texts")
        before = self.tokenizer.padding_side
        self.tokenizer.padding_side = padding_side
        try:
            return self.processor(text=list(texts), images=[[img] for img in images], return_tensors="pt",
                                  padding=True).to(self.device)
        finally:
            self.tokenizer.padding_side = before

    @torch.inference_mode()
    def generate(self, images: Sequence[Image.Image], questions: Sequence[str], max_new_tokens: int = 16,
                 system: str | None = None) -> list[str]:
        """Greedy answers (text after the prompt, special tokens removed) to one question per image."""
        batch = self.inputs(images, [self.chat(q, system) for q in questions], "left")
        out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                  suppress_tokens=self.non_answer_token_ids)
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:].cpu(),
                                                               skip_special_tokens=True)]

    def option_logprobs(self, images: Sequence[Image.Image], questions: Sequence[str],
                        options: Sequence[Sequence[str]], batch_size: int = 32,
                        system: str | None = None) -> list[torch.Tensor]:
        """Log-likelihood of every offered option of every question, given its image.

        A question whose options are all single tokens (letters, short names) is scored in one
        pass of its prompt: ``log p(option | image, question)`` read from the next-token
        distribution (no option is then a prefix of another). Otherwise
        ``log p(option tokens, end of turn | image, question)`` is summed over the option's
        tokens, the end-of-turn token keeping an option that is a prefix of another from being
        favoured: one pass over image and question fills a key/value cache that every option
        of the question then continues (:meth:`_score`), so the image and the question are
        encoded once per question, not once per option.

        Args:
            images, questions: one question per image.
            options: the options of each question (any number each).
            batch_size: prompts per forward pass (their options continue them in one more pass).
            system: an optional system message before each question.

        Returns:
            one float32 tensor ``[K_i]`` per question.
        """
        if len(options) != len(questions):
            raise ValueError(f"one option list per question: got {len(options)} lists and {len(questions)} questions")
        prompts = [self.chat(q, system) for q in questions]
        single = [self._single_tokens(p, opts) for p, opts in zip(prompts, options)]
        out: list[torch.Tensor | None] = [None] * len(questions)
        fast = [i for i, ids in enumerate(single) if ids is not None]
        for start in range(0, len(fast), batch_size):
            chunk = fast[start:start + batch_size]
            logprobs = self._next_token_logprobs([images[i] for i in chunk], [prompts[i] for i in chunk])
            for row, i in enumerate(chunk):
                out[i] = logprobs[row, single[i]]
        slow = [i for i, ids in enumerate(single) if ids is None]
        for start in range(0, len(slow), batch_size):
            chunk = slow[start:start + batch_size]
            scores = self._score([images[i] for i in chunk], [prompts[i] for i in chunk], [options[i] for i in chunk])
            for i, score in zip(chunk, scores):
                out[i] = score
        return out

    def _single_tokens(self, prompt: str, options: Sequence[str]) -> list[int] | None:
        """The token id of each option when every option is one token that stays one token
        after the prompt; else ``None``."""
        alone = self.tokenizer(list(options), add_special_tokens=False)["input_ids"]
        if any(len(ids) != 1 for ids in alone) or len({ids[0] for ids in alone}) != len(alone):
            return None
        after = self._after_prompt(prompt, options)
        return None if after is None else [ids[0] for ids in after]

    def _after_prompt(self, prompt: str, texts: Sequence[str]) -> list[list[int]] | None:
        """The token ids of each of ``texts`` as they stand after ``prompt``, or ``None`` when one
        of them does not start a new token there (it would merge with the prompt's last one)."""
        base = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        targets = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        joined = self.tokenizer([prompt + t for t in texts], add_special_tokens=False)["input_ids"]
        return targets if all(j == base + t for j, t in zip(joined, targets)) else None

    @torch.inference_mode()
    def _next_token_logprobs(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> torch.Tensor:
        """``[N, vocab]`` log-probabilities of the token after each prompt (left padding)."""
        batch = self.inputs(images, prompts, "left")
        return torch.log_softmax(self.model(**batch).logits[:, -1].float(), dim=-1).cpu()

    @torch.inference_mode()
    def _score(self, images: Sequence[Image.Image], prompts: Sequence[str], answers: Sequence[Sequence[str]]
               ) -> list[torch.Tensor]:
        """Per prompt ``b``, ``[K_b]`` summed log-probabilities of ``answer + end of turn`` after it.

        The ``B`` prompts (left padded to ``L`` tokens) run once and fill a key/value cache;
        each prompt's rows of it are then repeated for its answers, and the ``R = sum K_b``
        answers (right padded to ``T`` tokens) run once on top. An answer's first token is read
        from the prompt's last logits, the others from the continuation's. Positions continue
        the prompt's: the count of its real tokens, plus for M-RoPE models the ``rope_deltas``
        its image left (its last position plus one, as generation continues).
        """
        targets = [self._answer_ids(p, opts) for p, opts in zip(prompts, answers)]
        batch = self.inputs(images, prompts, "left")
        mask = batch["attention_mask"]
        mrope = self.model_type in _MROPE
        prefix = self.model(**batch, use_cache=True,
                            **({} if mrope else {"position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}))
        first = torch.log_softmax(prefix.logits[:, -1].float(), dim=-1)  # [B, V]
        owner = torch.tensor([b for b, opts in enumerate(targets) for _ in opts], device=mask.device)  # [R]
        flat = [t for opts in targets for t in opts]
        width = max(map(len, flat))
        ids = torch.full((len(flat), width), self.tokenizer.pad_token_id, dtype=torch.long)
        for r, t in enumerate(flat):
            ids[r, :len(t)] = torch.tensor(t)
        ids = ids.to(mask.device)
        answer_mask = (torch.arange(width) < torch.tensor([len(t) for t in flat])[:, None]).to(mask)  # [R, T]
        positions = mask.long().sum(-1)[owner, None] + torch.arange(width, device=mask.device)  # [R, T]
        if mrope:
            deltas = self._base_model().model.rope_deltas.to(mask.device)  # [B, 1]
            positions = (positions + deltas[owner]).unsqueeze(0).expand(3, -1, -1)  # [3, R, T]
        cache = prefix.cache
        cache.batch_select_indices(owner)
        logits = self.model(input_ids=ids, attention_mask=torch.cat([mask[owner], answer_mask], dim=1),
                            position_ids=positions, cache=cache, use_cache=True).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()  # [R, T, V]
        first, owner = first.cpu(), owner.cpu()
        scores = torch.tensor([float(first[owner[r], t[0]]) + sum(float(logprobs[r, k - 1, t[k]]) for k in range(1, len(t)))
                               for r, t in enumerate(flat)])
        return list(torch.split(scores, [len(opts) for opts in targets]))

    def _answer_ids(self, prompt: str, answers: Sequence[str]) -> list[list[int]]:
        """The token ids of each ``answer + end of turn`` as they stand after ``prompt``.

        Raises:
            RuntimeError: an answer does not start a new token after the prompt (scoring it
                from the prompt's cache would then score other tokens than the text's).
        """
        targets = self._after_prompt(prompt, [a + self.end_of_turn for a in answers])
        if targets is None:
            bad = [a for a in answers if self._after_prompt(prompt, [a + self.end_of_turn]) is None]
            raise RuntimeError(f"{self.name}: the answer {bad[0]!r} tokenizes differently after the prompt; "
                               "option scoring needs the answer to start a new token")
        return targets

    def _base_model(self) -> torch.nn.Module:
        """The transformers model under any peft wrapper."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def fingerprint(self) -> str:
        """A short hash that changes whenever the weights or configuration change (not the
        bookkeeping a save and load rewrites: name, library version, architectures)."""
        return state_fingerprint(_stable(self.model.config.to_dict()), self.model.state_dict())

    def add_lora(self, r: int = 8, alpha: float = 16, dropout: float = 0.0, targets: str = "language") -> LMM:
        """Wrap the model with peft LoRA adapters and return ``self``.

        Args:
            targets: one of :data:`LORA_TARGETS` or a regular expression over module names (see
                :func:`lora_target_modules`).

        Raises:
            TaxonlensError: targets that match no module of this model.
        """
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=lora_target_modules(self.model, targets))
        try:
            self.model = get_peft_model(self.model, config)
        except ValueError as e:  # peft: no module matched
            raise TaxonlensError(f"LoRA targets {targets!r} do not fit {self.name}: {str(e).splitlines()[0]}") from None
        return self

    def save(self, directory: str | Path) -> Path:
        """``save_pretrained`` of model and processor: a folder :func:`load_lmm` loads."""
        directory = Path(directory)
        with _no_progress_bars():
            self.model.save_pretrained(directory)
            self.processor.save_pretrained(directory)
        return directory


class Quantization(Choice):
    """Weights loaded in fewer bits through bitsandbytes (an optional extra, CUDA GPUs):
    ``none``, ``8bit`` (LLM.int8) or ``4bit`` (NF4, computing in the model's precision)."""

    what = nonmember("quantization")
    none = "none"
    int8 = "8bit"
    nf4 = "4bit"


def _quantization_config(quantize: str, dtype: torch.dtype):
    """transformers' ``BitsAndBytesConfig`` of ``quantize``.

    Raises:
        TaxonlensError: bitsandbytes is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise TaxonlensError(f"--quantize {quantize} loads weights through bitsandbytes, which is not installed: "
                             "pip install 'taxonlens[quantize]' (for CUDA GPUs), or use --quantize none")
    from transformers import BitsAndBytesConfig

    if quantize == Quantization.int8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def load_lmm(name: str, precision: str = "fp32", seed: int = 0, device: str | torch.device = "cpu",
             device_map: str | None = None, quantize: str = "none") -> LMM:
    """Build a multimodal LLM by name (see the module docstring).

    Args:
        precision: a :class:`~taxonlens.models.device.Precision` (``auto``: the fast format of
            ``device``, see :func:`~taxonlens.models.device.resolve_precision`).
        seed: seeds the random weights of a preset or a ``random:NAME`` model.
        device: where the model runs (``auto``: a GPU when there is one, see
            :func:`~taxonlens.models.device.resolve_device`); answers and scores come back on the CPU.
        device_map: a checkpoint spread over the GPUs by accelerate (``auto``, or a map), in
            place of ``device``: for a model larger than one GPU.
        quantize: a checkpoint's weights in 8 or 4 bits (:class:`Quantization`), on ``device``.

    Attention is PyTorch's SDPA, or FlashAttention 2 where it applies (see
    :func:`~taxonlens.models.device.attention_implementation`).

    Raises:
        LMMWeightsError: a directory or hub name whose files are missing or unreadable.
        TaxonlensError: an unknown name; ``device_map`` or ``quantize`` for a model built here
            (they are ways of loading a checkpoint); ``quantize`` without bitsandbytes.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    quantize = Quantization(quantize)
    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    dtype, attention = DTYPES[precision], attention_implementation(device, precision)
    if is_built_offline(name):
        from taxonlens.models.tiny_lmm import build_tiny_lmm

        if device_map is not None or quantize != Quantization.none:
            raise TaxonlensError(f"{name} is built here with random weights; device_map and quantize are ways of "
                                 "loading a checkpoint (a folder or a hub name): use device and precision")
        model, processor = build_tiny_lmm(name, seed, dtype, device, attention)
        return LMM(model.to(device, dtype), processor, name)
    path = Path(name).expanduser()
    local = path.is_dir()
    if local and not (path / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
        raise LMMWeightsError(f"{path} holds no config.json (found: {found}); a model folder is what "
                              "save_pretrained writes (config.json, weights, processor files)")
    if not local and (name.startswith((".", "/", "~")) or name.count("/") != 1):
        raise TaxonlensError(f"unknown multimodal LLM {name!r}: not a preset ({', '.join(LMM_PRESETS)}), "
                             f"{RANDOM_PREFIX}ARCHITECTURE, an existing folder, or a Hugging Face name ORG/NAME")
    placement: dict = {"device_map": device_map} if device_map is not None else {}
    if quantize != Quantization.none:
        placement = {"quantization_config": _quantization_config(quantize, dtype),
                     "device_map": device_map or {"": str(device)}}
    try:
        with _no_progress_bars():
            processor = AutoProcessor.from_pretrained(str(path) if local else name)
            model = AutoModelForImageTextToText.from_pretrained(str(path) if local else name, dtype=dtype,
                                                                attn_implementation=attention, **placement)
    except (OSError, ValueError, SafetensorError) as e:
        where = f"{path}: files could not be loaded ({str(e).splitlines()[0]})" if local else (
            f"multimodal LLM {name!r} could not be loaded; {offline_help(name)}, or pass a folder written by "
            "save_pretrained")
        raise LMMWeightsError(where) from None
    return LMM((model if placement else model.to(device)).eval(), processor, name)
