"""The BioCLIP objective's loss: open_clip's symmetric InfoNCE with every pair of one taxon a
positive (its own module, so that importing the trainers' settings does not import open_clip)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss


class MultiPositiveClipLoss(ClipLoss):
    """open_clip's symmetric InfoNCE loss, with every pair of the same taxon a positive.

    With ``groups`` (``[B]`` taxon ids), the target of image ``i`` over the texts is
    uniform over the texts ``j`` with ``groups[j] == groups[i]`` (and symmetrically for
    texts), so two photos of one species in a batch do not push each other's captions
    away. Without ``groups``, or with all groups distinct, it is exactly ``ClipLoss``.
    The minimum is then the mean entropy of the targets, not 0.

    Where the photos of a taxon carry the very same caption (a fixed text type), their
    caption embeddings are equal and plain ``ClipLoss`` already gives the same value;
    the difference is for captions of one taxon that differ (``mixed``: a taxonomic and
    a common-name caption of one species in a batch), which ``ClipLoss`` pushes apart
    from each other's photos.
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                groups: torch.Tensor | None = None, logit_bias: torch.Tensor | None = None,
                output_dict: bool = False):
        if groups is None:
            return super().forward(image_features, text_features, logit_scale, logit_bias, output_dict)
        if self.world_size > 1:
            raise NotImplementedError("multi-positive targets are not implemented for distributed training")
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale, logit_bias)
        same = (groups[:, None] == groups[None, :]).to(logits_per_image.dtype)
        targets = same / same.sum(dim=1, keepdim=True)  # symmetric pattern: the same targets serve the texts
        loss = (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2
        return {"contrastive_loss": loss} if output_dict else loss
