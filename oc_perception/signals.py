"""Label-free signals of a slot model on videos: what there is to watch when the env gives no masks.

All four are computed on the decoder masks at their own resolution (``model.mask_side`` cells a side) and on the
frames pooled to those cells; none reads a segmentation.

- ``objects_drawn``: ``1 - E_model / E_mean`` over the pixels unlike the batch's mean image (what moves or differs
  between videos: the objects, where the scene around them stays), where ``E_model`` is the reconstruction's squared
  error there and ``E_mean`` that of the mean image. 0: the model paints the mean image (what unsupervised runs
  start with; below 0, worse); 1: it draws what changes exactly. Pixel models only.
- ``slots_used``: slots that own (argmax) at least one cell of a frame, averaged over frames.
- ``mask_change``: the fraction of cells whose slot changes from one frame to the next.
- ``mask_change_static``: the same over cells whose colour does not change between the two frames: slot churn that
  no motion explains (identity swaps, flicker). A model that keeps objects in their slots keeps it near 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

PREFIX = "label_free/"
# A cell is static (or a pixel like the mean image) when no channel differs by more than this, in normalised units:
# the reconstruction loss's foreground threshold.
THRESHOLD = 0.1


class LabelFreeSignals:
    """Accumulates the signals of the module docstring over batches; ``compute()`` returns
    ``{"label_free/<name>": value}`` for those that had data (``objects_drawn`` needs ``pixels=True``, the change
    signals videos of at least 2 frames).

    Args:
        pixels: the model reconstructs RGB pixels (``model.cfg.encoder.target == "pixels"``).
    """

    def __init__(self, pixels: bool) -> None:
        self.pixels = pixels
        self._sums: dict[str, float] = {}

    def _add(self, **values: float) -> None:
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)

    @torch.no_grad()
    def update(self, out: dict[str, torch.Tensor], video: torch.Tensor) -> None:
        """``out``: a clip forward's output (``decoder_masks`` [B, T, K, M], with ``pixels`` also ``target`` and
        ``reconstruction`` [B, T, M', 3 * n]); ``video``: the normalised input [B, T, 3, S, S]."""
        masks = out["decoder_masks"].float()
        b, t, k, m = masks.shape
        labels = masks.argmax(2)  # [B, T, M]
        self._add(slots_used=F.one_hot(labels, k).amax(2).sum(-1).sum(), frames=b * t)
        if t > 1:
            side = round(m**0.5)
            cells = F.adaptive_avg_pool2d(rearrange(video.float(), "b t c h w -> (b t) c h w"), side)
            cells = rearrange(cells, "(b t) c h w -> b t (h w) c", b=b)
            static = (cells[:, 1:] - cells[:, :-1]).abs().amax(-1) <= THRESHOLD  # [B, T-1, M]
            changed = labels[:, 1:] != labels[:, :-1]
            self._add(changed=changed.sum(), pairs=changed.numel(), changed_static=(changed & static).sum(),
                      static=static.sum())
        if self.pixels:
            target = out["target"].float()
            pixels = target.reshape(*target.shape[:-2], -1, 3)  # [B, T, N, 3]
            recon = out["reconstruction"].float().reshape(pixels.shape)
            mean = pixels.mean(dim=(0, 1), keepdim=True)
            varying = (pixels - mean).abs().amax(-1) > THRESHOLD  # [B, T, N]
            self._add(error_model=(((recon - pixels) ** 2).mean(-1) * varying).sum(),
                      error_mean=(((mean - pixels) ** 2).mean(-1) * varying).sum())

    def compute(self) -> dict[str, float]:
        s = self._sums
        results = {}
        if s.get("frames"):
            results["slots_used"] = s["slots_used"] / s["frames"]
        if s.get("pairs"):
            results["mask_change"] = s["changed"] / s["pairs"]
        if s.get("static"):
            results["mask_change_static"] = s["changed_static"] / s["static"]
        if s.get("error_mean"):
            results["objects_drawn"] = 1.0 - s["error_model"] / s["error_mean"]
        return {PREFIX + k: v for k, v in results.items()}
