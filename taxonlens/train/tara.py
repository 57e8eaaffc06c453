"""TARA: taxonomy-aware representation alignment of a multimodal LLM to a biology foundation model.

TARA (CVPR 2026) puts the tree of life into an LMM by aligning two of its internal states with a
frozen biology foundation model (BFM; BioCLIP 2 in the paper, any taxonlens encoder here, such
as a tiny BioCLIP-style encoder trained on synthworld), alternating with no-thinking GRPO
(:mod:`taxonlens.train.grpo`):

- **visual alignment**: the hidden states of LMM layer ``l`` (default: the middle one) at the
  image's token positions, through a trainable MLP projector, against the BFM's patch features
  of the same image (:meth:`~taxonlens.models.encoders.OpenCLIPEncoder.patch_features`); loss
  ``1 - mean cosine similarity`` over matched tokens. When the counts differ, two square grids
  are matched by average-pooling the finer one to the coarser grid (Qwen's merged patches
  against a ViT's patches), anything else by taking evenly spaced tokens of both (Idefics2's
  perceiver latents have no grid);
- **label alignment**: the hidden state of layer ``m`` at the first answer token (the paper's
  representation of the answer's first token at layer ``m``; here the teacher-forced true
  answer's first token, whose state has seen the prompt and that token), through a second
  projector, against the BFM's text embedding of the true label at the asked rank ("a photo of
  <kingdom> ... <taxon at that rank>.", BioCLIP's taxonomic caption); loss ``1 - cosine
  similarity``. ``m`` defaults to the last layer (the final norm's output), the reference
  code's choice: the paper calls it layer ``m``, and its public code (``grpo_trainer_tara.py``)
  reads ``hidden_states[1][-1]`` of generation, the last layer's state at the first generated
  token (``target_layer`` defaulting to ``-1``), while its visual alignment reads the middle layer;
- TARA loss = ``(w_v * visual + w_l * label) / (w_v + w_l)`` (0.5 / 0.5 by default).

The alignment is computed in a teacher-forced forward pass with gradients (prompt + true
answer), so the LMM's own trainable weights receive the alignment gradient, not only the
projectors (the public reference reads these states from generation outputs, where no gradient
reaches the LMM). :class:`TARATrainer` takes one alignment update (its own AdamW: the LMM's
trainable weights at the current learning rate, the projectors at ``projector_lr_scale`` times
it) before each GRPO update, on the same questions. The BFM and the projectors are used only in
training: the saved model is a plain LMM.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from trl import GRPOTrainer

from taxonlens.data import VQARecord
from taxonlens.errors import TaxonlensError
from taxonlens.models.encoders import load_encoder
from taxonlens.models.mllm import LMM
from taxonlens.models.text import label_prompts
from taxonlens.train.sft import SFTExample, sft_inputs

ALIGNMENT_FILE = "tara.pt"


# ----------------------------------------------------------------- targets
@dataclass
class AlignmentTargets:
    """What the BFM says of the training questions (computed once; the BFM is frozen).

    Attributes:
        patches: per record index, its image's patch features, float32 ``[P, C]``, unit rows.
        labels: per example, the text embedding of its true label at the asked rank, ``[N, D]``.
    """

    patches: dict[int, torch.Tensor]
    labels: torch.Tensor

    @property
    def patch_dim(self) -> int:
        return int(next(iter(self.patches.values())).shape[-1])

    @property
    def text_dim(self) -> int:
        return int(self.labels.shape[-1])


def label_text(record: VQARecord, level: int) -> str:
    """The BFM caption of ``record``'s true label at ``level``: BioCLIP's taxonomic text of the
    path down to that rank."""
    return label_prompts(record.levels[: level + 1], "taxonomic")[0]


def alignment_targets(bfm: str, examples: Sequence[SFTExample], records: Sequence[VQARecord],
                      load: Callable[[VQARecord], Any], batch_size: int = 64) -> AlignmentTargets:
    """Patch features of every asked record's image and label embeddings of every example (each
    caption encoded once), from the encoder ``bfm`` (a taxonlens encoder name or folder)."""
    encoder = load_encoder(bfm)
    asked = list(dict.fromkeys(ex.record for ex in examples))
    patches: dict[int, torch.Tensor] = {}
    for start in range(0, len(asked), batch_size):
        chunk = asked[start:start + batch_size]
        feats = encoder.patch_features(torch.stack([encoder.preprocess(load(records[i])) for i in chunk]))
        patches.update(zip(chunk, feats))
    texts = [label_text(records[ex.record], ex.level) for ex in examples]
    unique = list(dict.fromkeys(texts))  # every epoch asks the same captions again
    embedded = encoder.encode_texts(unique)
    row = {text: i for i, text in enumerate(unique)}
    return AlignmentTargets(patches, embedded[[row[t] for t in texts]])


# ------------------------------------------------------------------ losses
def _even(n: int, k: int) -> torch.Tensor:
    """``k`` evenly spaced indices into ``n`` items, first and last included."""
    return torch.linspace(0, n - 1, k).round().long()


def _pool_grid(tokens: torch.Tensor, side: int) -> torch.Tensor:
    """``[s*s, D]`` tokens of a square grid (row-major) -> ``[side*side, D]`` by average pooling."""
    s = math.isqrt(len(tokens))
    grid = tokens.T.reshape(1, tokens.shape[1], s, s)
    return F.adaptive_avg_pool2d(grid, side).reshape(tokens.shape[1], -1).T


def match_tokens(states: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring ``[T, D]`` projected image-token states and ``[P, D]`` BFM patch features to the same
    count: unchanged if ``T == P``; two square grids pooled to the coarser one; else ``min(T, P)``
    evenly spaced rows of each."""
    t, p = len(states), len(targets)
    if t == p:
        return states, targets
    st, sp = math.isqrt(t), math.isqrt(p)
    if st * st == t and sp * sp == p:
        side = min(st, sp)
        return (_pool_grid(states, side) if st > side else states), (_pool_grid(targets, side) if sp > side else targets)
    k = min(t, p)
    return states[_even(t, k)], targets[_even(p, k)]


def visual_alignment_loss(states: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - mean cosine similarity`` of projected image-token states and BFM patch features,
    matched per image by :func:`match_tokens` and averaged over images.

    Args:
        states: per image, ``[T_i, D]`` projected hidden states of its tokens.
        targets: per image, ``[P_i, D]`` BFM patch features.
    """
    sims = [F.cosine_similarity(*match_tokens(s, t), dim=-1).mean() for s, t in zip(states, targets)]
    return 1 - torch.stack(sims).mean()


def label_alignment_loss(states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``1 - cosine similarity`` of ``[B, D]`` projected answer states and ``[B, D]`` label
    embeddings, averaged over the batch."""
    return 1 - F.cosine_similarity(states, labels, dim=-1).mean()


class Projector(nn.Sequential):
    """MLP ``[..., H] -> [..., D]``: linear, SiLU, linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))


class TARAAligner(nn.Module):
    """The two projectors and the layers they read.

    Args:
        hidden_size: the LMM's width ``H``.
        n_layers: the LMM's decoder layers.
        patch_dim, text_dim: the BFM's patch-feature width ``C`` and text-embedding width ``D``.
        visual_layer, label_layer: layers read (1-based; 0: the middle and the last).
        projector_hidden: the projectors' hidden width (0: ``2 H``).
    """

    def __init__(self, hidden_size: int, n_layers: int, patch_dim: int, text_dim: int, visual_layer: int = 0,
                 label_layer: int = 0, projector_hidden: int = 0):
        super().__init__()
        self.visual_layer = visual_layer or max(1, n_layers // 2)
        self.label_layer = label_layer or n_layers
        if not (1 <= self.visual_layer <= n_layers and 1 <= self.label_layer <= n_layers):
            raise TaxonlensError(f"TARA layers {self.visual_layer} and {self.label_layer}: the LMM has layers 1 to "
                                 f"{n_layers}")
        width = projector_hidden or 2 * hidden_size
        self.visual = Projector(hidden_size, width, patch_dim)
        self.label = Projector(hidden_size, width, text_dim)

    def forward(self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor, answer_at: torch.Tensor,
                patches: Sequence[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The visual and label alignment losses of one batch.

        Args:
            hidden_states: the LMM's ``output_hidden_states`` (``[B, L, H]`` per layer, embeddings first).
            image_mask: bool ``[B, L]``, the image's token positions.
            answer_at: ``[B]``, the position of each row's first answer token.
            patches: per row, the BFM patch features ``[P_i, C]`` of its image.
            labels: ``[B, D]``, the label embeddings.
        """
        visual = self.visual(hidden_states[self.visual_layer].float())  # [B, L, C]
        states = [visual[b][image_mask[b]] for b in range(len(visual))]
        rows = torch.arange(len(answer_at))
        label = self.label(hidden_states[self.label_layer][rows, answer_at].float())  # [B, D]
        return visual_alignment_loss(states, patches), label_alignment_loss(label, labels)


def alignment_batch(lmm: LMM, images: Sequence[Any], examples: Sequence[SFTExample]
                    ) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """The teacher-forced inputs of ``prompt + true answer`` (padded on the right), the image
    token mask ``[B, L]`` and the position ``[B]`` of the true answer's first token (the first
    position the labels score), whose state the label alignment reads."""
    batch, labels = sft_inputs(lmm, images, examples)
    answer_at = (labels != -100).int().argmax(dim=1)
    return batch, lmm.image_positions(batch["input_ids"]), answer_at


def tara_losses(lmm: LMM, model: nn.Module, aligner: TARAAligner, images: Sequence[Any],
                examples: Sequence[SFTExample], patches: Sequence[torch.Tensor], labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Visual and label alignment losses of ``model`` (``lmm``'s model or its trainer-wrapped
    copy) on ``examples``, with gradients to the model's trainable weights and the projectors."""
    batch, image_mask, answer_at = alignment_batch(lmm, images, examples)
    device = next(model.parameters()).device
    out = model(**batch.to(device), output_hidden_states=True, logits_to_keep=1)
    return aligner(out.hidden_states, image_mask.to(device), answer_at.to(device),
                   [p.to(device) for p in patches], labels.to(device))


# ----------------------------------------------------------------- trainer
class TARATrainer(GRPOTrainer):
    """trl's GRPO trainer with one TARA alignment update before every GRPO update.

    Args:
        lmm: the LMM being trained (its processor builds the teacher-forced inputs).
        examples, records, load: the training questions (:func:`~taxonlens.train.grpo.rft_examples`),
            their records and image loader; trl's dataset rows carry ``row``, an index into ``examples``.
        targets: the BFM's patch features and label embeddings.
        tara: the run's settings (:class:`~taxonlens.train.grpo.RFTConfig`: layers, weights,
            projector width and learning-rate scale, gradient clipping).
        **kwargs: :class:`trl.GRPOTrainer`'s.
    """

    def __init__(self, *, lmm: LMM, examples: Sequence[SFTExample], records: Sequence[VQARecord],
                 load: Callable[[VQARecord], Any], targets: AlignmentTargets, tara, **kwargs):
        super().__init__(**kwargs)
        self.lmm, self.examples, self.records, self.load, self.targets, self.tara = \
            lmm, examples, records, load, targets, tara
        self.aligner = TARAAligner(lmm.hidden_size, lmm.n_layers, targets.patch_dim, targets.text_dim,
                                   tara.visual_layer, tara.label_layer, tara.projector_hidden)
        self.aligner.to(self.accelerator.device)
        self.lmm_params = [p for p in self.model.parameters() if p.requires_grad]
        self.align_optimizer = torch.optim.AdamW([
            {"params": self.lmm_params, "scale": 1.0},
            {"params": list(self.aligner.parameters()), "scale": tara.projector_lr_scale}],
            lr=tara.lr, weight_decay=tara.weight_decay)

    def alignment_step(self, model: nn.Module, rows: Sequence[int]) -> tuple[float, float]:
        """One alignment update on the questions ``rows``; returns the visual and label losses."""
        examples = [self.examples[j] for j in rows]
        images = [self.load(self.records[ex.record]) for ex in examples]
        patches = [self.targets.patches[ex.record] for ex in examples]
        labels = self.targets.labels[list(rows)]
        lr = self.lr_scheduler.get_last_lr()[0] if self.lr_scheduler is not None else self.tara.lr
        for group in self.align_optimizer.param_groups:
            group["lr"] = lr * group["scale"]
        visual, label = tara_losses(self.lmm, model, self.aligner, images, examples, patches, labels)
        w_v, w_l = self.tara.visual_weight, self.tara.label_weight
        loss = (w_v * visual + w_l * label) / (w_v + w_l)
        self.align_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under several processes the LMM's gradients are averaged by DDP, the projectors' here
        if self.accelerator.num_processes > 1:
            for p in self.aligner.parameters():
                if p.grad is not None:  # (a projector whose loss weighs 0 has none, in every process)
                    p.grad = self.accelerator.reduce(p.grad, reduction="mean")
        if self.tara.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.lmm_params + list(self.aligner.parameters()), self.tara.max_grad_norm)
        self.align_optimizer.step()
        self.align_optimizer.zero_grad(set_to_none=True)  # the GRPO update starts from clean gradients
        return float(visual.detach()), float(label.detach())

    def training_step(self, model, inputs, num_items_in_batch=None):
        rows = list(dict.fromkeys(int(x["row"]) for x in inputs))  # trl repeats each question G times
        visual, label = self.alignment_step(model, rows)
        self._metrics["train"]["tara/visual_loss"].append(visual)
        self._metrics["train"]["tara/label_loss"].append(label)
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        if not self.args.should_save:  # one writer: the main process
            return
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        torch.save({"aligner": self.aligner.state_dict(), "optimizer": self.align_optimizer.state_dict()},
                   os.path.join(folder, ALIGNMENT_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, ALIGNMENT_FILE)
        if not os.path.exists(path):
            raise TaxonlensError(f"{checkpoint} has no {ALIGNMENT_FILE}: it was not written by a TARA run")
        saved = torch.load(path, map_location=self.accelerator.device, weights_only=True)
        self.aligner.load_state_dict(saved["aligner"])
        self.align_optimizer.load_state_dict(saved["optimizer"])


__all__ = ["ALIGNMENT_FILE", "AlignmentTargets", "Projector", "TARAAligner", "TARATrainer", "alignment_batch",
           "alignment_targets", "label_alignment_loss", "label_text", "match_tokens", "tara_losses",
           "visual_alignment_loss"]
