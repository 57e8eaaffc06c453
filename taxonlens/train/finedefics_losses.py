"""Finedefics' attribute-augmented alignment inside a multimodal LLM: global representations
and the contrastive terms (see :mod:`taxonlens.train.finedefics` for the training).

Global representation: the LLM's last-layer hidden state (``output_hidden_states=True``,
``hidden_states[-1]``) at the end-of-sequence token closing a user turn that holds only the
image (:func:`image_reps`, no question) or only a text (:func:`text_reps`, no image): the
turn as the model's chat template writes it, its trailing whitespace cut and the tokenizer's
EOS token appended unless the turn already ends with it (the Qwen presets' ``<|im_end|>`` is
both). Sequences are padded on the left, so that token is the last of every row; the tiny
presets give the same representation padded or alone (to 1e-5, tested).

Contrastive terms (:func:`info_nce`): a symmetric InfoNCE over cosine similarities divided by
a temperature, each term with its own learnable one (:class:`Temperatures`: log-parametrised,
kept in ``[0.001, 0.5]``). A batch's texts are its distinct strings (:func:`alignment_batch`),
and a text is a positive of every photo and text of its category: photos of one species in a
batch share their name (and often their description), so a row may have several positive
columns; its loss is ``-log`` of the softmax mass on all of them (plain InfoNCE with one
positive; 0 at perfect alignment and a low temperature, whatever the duplicates). A row without
a positive (a hard negative's text, seen from the text side) only serves as a negative.

Category-category contrast (CCC, :func:`category_nce`), within the text side. The paper
("Analyzing and Boosting the Power of Fine-Grained Visual Recognition for Multi-modal LLMs",
ICLR 2025; its abstract and Stage I, attribute-augmented alignment) names the object-attribute
and attribute-category contrasts with hard negatives from similar categories; the CCC definition
here is read from its reference code (``PKU-ICST-MIPL/Finedefics_ICLR2025``,
``modeling_idefics2.py``, ``loss_ccc``), not from an equation of the paper. That code scores each
category name of the batch against ``[the batch's names, the hard-negative names]`` (cosine /
the OAC temperature) and takes the cross-entropy with the first column as target: with one photo
per device, the anchor itself, so the term only pushes a name away from the names of the most
similar categories (its positive is trivial; with more photos per device every row targets the
first photo's name), weighted 0.5 like OAC and ACC beside NTP at 1. Here a category is written
several ways, its *surface forms* (the scientific name, the taxonomic string "Animalia Chordata
... Genus species", the common name where one is known;
:func:`taxonlens.train.finedefics.surface_forms`), and the forms of one category are positives of
each other: each form of a photo's category is an anchor, the other forms of its category its
positives, the forms of every other category of the batch (in-batch and hard negatives) its
negatives, the anchor itself left out of the softmax (as in SupCon), with its own temperature.
This keeps the reference's push away from the similar categories' names and adds a pull between
the ways one category is written, which the trivial positive lacks. A hard negative's forms, and
a category written one way only, serve only as negatives; equal strings of two categories are
one form of both.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from taxonlens.errors import TaxonlensError
from taxonlens.models.mllm import LMM
from taxonlens.train.sft import SFTExample, sft_inputs, sft_loss

#: the contrastive terms: object<->attribute description, attribute description<->category name,
#: category<->category (surface forms of one category vs other categories), and object<->category
#: name (an ablation, off by default)
TERMS = ("oac", "acc", "ccc", "occ")
#: every loss part, in the order of the weights
PARTS = ("ntp", *TERMS)
TAU_MIN, TAU_MAX = 0.001, 0.5


# ------------------------------------------------------------------ representations
def global_text(lmm: LMM, text: str | None = None) -> str:
    """The input text whose last token's hidden state represents an image (``text=None``: a
    user turn holding only the image) or a text (a turn holding only ``text``), ending with EOS."""
    content = [{"type": "image"}] if text is None else [{"type": "text", "text": text}]
    turn = lmm.processor.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=False).rstrip()
    eos = lmm.tokenizer.eos_token
    return turn if turn.endswith(eos) else turn + eos


def _last_hidden(lmm: LMM, batch: dict) -> torch.Tensor:
    """``[B, H]`` float32 last-layer hidden state at the last position of left-padded inputs."""
    device = next(lmm.model.parameters()).device
    out = lmm.model(**batch.to(device), output_hidden_states=True, logits_to_keep=1)
    return out.hidden_states[-1][:, -1].float()


def image_reps(lmm: LMM, images: Sequence[Image.Image]) -> torch.Tensor:
    """Global representations ``[B, H]`` of ``B`` images (with autograd, as the model is)."""
    return _last_hidden(lmm, lmm.inputs(images, [global_text(lmm)] * len(images), "left"))


def text_reps(lmm: LMM, texts: Sequence[str]) -> torch.Tensor:
    """Global representations ``[N, H]`` of ``N`` texts, each read without an image.

    Raises:
        TaxonlensError: the model does not take an input without an image.
    """
    try:
        batch = lmm.processor(text=[global_text(lmm, t) for t in texts], return_tensors="pt", padding=True,
                              padding_side="left")
        return _last_hidden(lmm, batch)
    except (TypeError, ValueError, IndexError) as e:
        raise TaxonlensError(f"{lmm.name} does not take text-only input ({str(e).splitlines()[0]}); Finedefics' "
                             "alignment reads descriptions and category names without an image") from None


# ------------------------------------------------------------------------- losses
class Temperatures(torch.nn.Module):
    """One learnable temperature per contrastive term: ``tau = exp(log_tau)``, used clamped to
    ``[TAU_MIN, TAU_MAX]`` and clamped in place after every step (:meth:`clamp_`)."""

    def __init__(self, init: float = 0.07, terms: Sequence[str] = TERMS):
        super().__init__()
        if not TAU_MIN <= init <= TAU_MAX:
            raise TaxonlensError(f"temperature must lie in [{TAU_MIN}, {TAU_MAX}], got {init}")
        self.log_tau = torch.nn.ParameterDict({t: torch.nn.Parameter(torch.tensor(math.log(init))) for t in terms})

    def forward(self, term: str) -> torch.Tensor:
        """The temperature of ``term``, a 0-d tensor in ``[TAU_MIN, TAU_MAX]``."""
        return self.log_tau[term].clamp(math.log(TAU_MIN), math.log(TAU_MAX)).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        for p in self.log_tau.values():
            p.clamp_(math.log(TAU_MIN), math.log(TAU_MAX))

    def values(self) -> dict[str, float]:
        return {t: float(self(t).detach()) for t in self.log_tau}


def _one_way(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Mean over the rows with a positive of ``-log`` (softmax mass on the positive columns)."""
    rows = positive.any(dim=1)
    logits, positive = logits[rows], positive[rows]
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~positive, -math.inf), dim=1)).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor, temperature: torch.Tensor | float
             ) -> torch.Tensor:
    """Symmetric InfoNCE of ``a [Na, H]`` and ``b [Nb, H]`` over cosine similarities / ``temperature``.

    Args:
        positive: ``[Na, Nb]`` bool, which pairs match; a row or column without any match (a hard
            negative's text) only serves as a negative of the other side.

    Returns:
        the mean of the ``a -> b`` and ``b -> a`` directions (0-d); ``info_nce(b, a, positive.T)``
        is the same value.
    """
    if not bool(positive.any()):
        raise ValueError("info_nce needs a positive pair")
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    return (_one_way(logits, positive) + _one_way(logits.T, positive.T)) / 2


def category_nce(forms: torch.Tensor, positive: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """InfoNCE of ``forms [F, H]`` against themselves, cosine similarities / ``temperature``, each
    row's own column left out of its softmax (one direction: the similarity matrix is symmetric).

    Args:
        positive: ``[F, F]`` bool, which other forms a form's category shares (the diagonal is
            ignored); a row without a positive only serves as a negative.

    Returns:
        the mean over the rows with a positive (0-d): 0-ish when every category's forms coincide
        and lie far from the others' at a low temperature.
    """
    self_pair = torch.eye(len(forms), dtype=torch.bool, device=positive.device)
    positive = positive & ~self_pair
    if not bool(positive.any()):
        raise ValueError("category_nce needs a category with two surface forms")
    unit = F.normalize(forms.float(), dim=-1)
    logits = (unit @ unit.T / temperature).masked_fill(self_pair, -math.inf)
    return _one_way(logits, positive)


@dataclass(frozen=True)
class AlignmentBatch:
    """The texts of one alignment batch and which pairs match (a text matches a photo or a
    text when they belong to one category).

    Attributes:
        descriptions: ``[D]`` distinct description texts, in order of first appearance.
        names: ``[C]`` distinct category names, likewise.
        object_description: ``[B, D]`` bool, description ``d`` describes photo ``i``'s category.
        object_name: ``[B, C]`` bool, name ``c`` names photo ``i``'s category.
        description_name: ``[D, C]`` bool, the description and the name belong to one category.
        forms: ``[F]`` distinct surface forms of the batch's categories (own and hard negatives).
        form_form: ``[F, F]`` bool, form ``g`` is another form of a category of a photo that form
            ``f`` names (the positives of :func:`category_nce`; a hard negative's forms have none).
    """

    descriptions: list[str]
    names: list[str]
    object_description: torch.Tensor
    object_name: torch.Tensor
    description_name: torch.Tensor
    forms: list[str]
    form_form: torch.Tensor


def alignment_batch(categories: Sequence[Hashable], texts: Sequence[tuple[Hashable, str, str]],
                    forms: Mapping[Hashable, Sequence[str]] | None = None) -> AlignmentBatch:
    """The :class:`AlignmentBatch` of ``B`` photos of ``categories`` (any ids) and the
    ``(category, description, name)`` triples of the batch: each photo's own, then those of the
    hard-negative categories. ``forms``: each category's surface forms (default: its name alone).
    Equal texts are one text (of every category they come with)."""
    of_description: dict[str, set] = {}
    of_name: dict[str, set] = {}
    of_form: dict[str, set] = {}
    for c, d, n in texts:
        of_description.setdefault(d, set()).add(c)
        of_name.setdefault(n, set()).add(c)
        for f in (forms[c] if forms is not None else (n,)):
            of_form.setdefault(f, set()).add(c)
    descriptions, names, form_list = list(of_description), list(of_name), list(of_form)
    obj_d = torch.tensor([[c in of_description[d] for d in descriptions] for c in categories], dtype=torch.bool)
    obj_n = torch.tensor([[c in of_name[n] for n in names] for c in categories], dtype=torch.bool)
    d_n = torch.tensor([[bool(of_description[d] & of_name[n]) for n in names] for d in descriptions],
                       dtype=torch.bool)
    own = set(categories)
    f_f = torch.tensor([[f != g and bool(of_form[f] & of_form[g] & own) for g in form_list] for f in form_list],
                       dtype=torch.bool)
    return AlignmentBatch(descriptions, names, obj_d.reshape(len(categories), len(descriptions)),
                          obj_n.reshape(len(categories), len(names)), d_n, form_list, f_f)


#: the texts each term reads
_TEXTS = {"oac": ("descriptions",), "acc": ("descriptions", "names"), "ccc": ("forms",), "occ": ("names",)}


def contrastive_terms(objects: torch.Tensor | None, texts: Mapping[str, torch.Tensor], batch: AlignmentBatch,
                      temperatures: Temperatures, terms: Sequence[str] = TERMS) -> dict[str, torch.Tensor]:
    """The asked ``terms`` from the global representations of the batch's photos ``[B, H]``
    (``None`` when no asked term needs them) and of its texts: ``texts["descriptions"] [D, H]``,
    ``["names"] [C, H]``, ``["forms"] [F, H]`` (those an asked term reads)."""
    out = {}
    for t in terms:
        if t == "ccc":
            out[t] = category_nce(texts["forms"], batch.form_form, temperatures(t))
            continue
        a, b, positive = {"oac": (objects, texts.get("descriptions"), batch.object_description),
                          "acc": (texts.get("descriptions"), texts.get("names"), batch.description_name),
                          "occ": (objects, texts.get("names"), batch.object_name)}[t]
        out[t] = info_nce(a, b, positive, temperatures(t))
    return out


def finedefics_loss(lmm: LMM, images: Sequence[Image.Image], batch: AlignmentBatch, ntp: Sequence[SFTExample],
                    temperatures: Temperatures, weights: Mapping[str, float],
                    cache: dict[str, list[int]] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage I's loss of one batch: ``sum(weights[p] * part p)`` over :data:`PARTS` with a
    non-zero weight (a part weighted 0 is not computed).

    Args:
        images: the ``B`` photos.
        batch: their texts (:func:`alignment_batch`).
        ntp: one example per photo, its description as the target after the describing prompt
            (next-token prediction, teacher-forced: :func:`~taxonlens.train.sft.sft_loss`).
        weights: part name -> weight.

    Returns:
        the loss (0-d) and the unweighted value of every computed part.
    """
    active = [p for p in PARTS if weights.get(p, 0.0)]
    if not active:
        raise TaxonlensError("every loss weight is 0: nothing to train")
    parts: dict[str, torch.Tensor] = {}
    if "ntp" in active:
        inputs, labels = sft_inputs(lmm, images, ntp, cache)
        device = next(lmm.model.parameters()).device
        parts["ntp"] = sft_loss(lmm.model, inputs.to(device), labels.to(device))
    terms = [t for t in TERMS if t in active]
    if terms:
        objects = image_reps(lmm, images) if {"oac", "occ"} & set(terms) else None
        kinds = list(dict.fromkeys(k for t in terms for k in _TEXTS[t]))
        strings = list(dict.fromkeys(s for k in kinds for s in getattr(batch, k)))  # a name is also a form
        reps = text_reps(lmm, strings)
        row = {s: i for i, s in enumerate(strings)}
        texts = {k: reps[[row[s] for s in getattr(batch, k)]] for k in kinds}
        parts |= contrastive_terms(objects, texts, batch, temperatures, terms)
    loss = sum(weights[p] * parts[p] for p in active)
    return loss, {p: float(v.detach()) for p, v in parts.items()}


__all__ = [
    "PARTS",
    "TAU_MAX",
    "TAU_MIN",
    "TERMS",
    "AlignmentBatch",
    "Temperatures",
    "alignment_batch",
    "category_nce",
    "contrastive_terms",
    "finedefics_loss",
    "global_text",
    "image_reps",
    "info_nce",
    "text_reps",
]
