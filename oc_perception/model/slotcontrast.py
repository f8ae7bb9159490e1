"""SlotContrast (Manasyan et al., CVPR 2025): temporally consistent object slots from video.

Per frame: encoder features -> feature MLP -> slot attention initialised from the previous frame's
*predicted* slots (the learned initial slots on the first frame) -> transformer predictor. An MLP decoder
reconstructs the features from the slots; a slot-slot contrastive loss keeps each object in its slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from oc_perception.config import ModelConfig
from oc_perception.data.transforms import preprocess_frames
from oc_perception.model.decoder import MLPDecoder
from oc_perception.model.encoder import FeatureMLP, build_encoder
from oc_perception.model.losses import (feature_reconstruction_loss, mask_distillation_loss,
                                        slot_slot_contrastive_loss)
from oc_perception.model.predictor import SlotPredictor
from oc_perception.model.slot_attention import SlotAttention


@dataclass
class SlotState:
    """Recurrent state between frames of a stream.

    slots: [B, K, D] predicted slots, the initialisation of the next frame.
    is_first: [B] bool, rows whose next frame starts an episode (learned initial slots, first-frame iterations).
    """

    slots: torch.Tensor
    is_first: torch.Tensor

    def restart(self, rows: torch.Tensor) -> "SlotState":
        """A state in which the rows where ``rows`` ([B] bool) is true start a new episode at the next frame."""
        rows = torch.as_tensor(rows, dtype=torch.bool, device=self.is_first.device)
        return SlotState(self.slots, self.is_first | rows)

    def to(self, device: torch.device | str) -> "SlotState":
        return SlotState(self.slots.to(device), self.is_first.to(device))


class SlotContrast(nn.Module):
    """The SlotContrast video model.

    Args:
        cfg: ``ModelConfig`` (``load_config(path).model``): encoder, K slots of dim D, slot attention,
            predictor, decoder and loss hyperparameters.

    Inputs are normalised float videos ``[B, T, 3, S, S]`` with ``S = cfg.encoder.input_size``;
    ``preprocess`` makes them from uint8 RGB frames.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc = cfg.encoder
        if enc.target not in ("features", "pixels"):
            raise ValueError(f"model.encoder.target must be 'features' or 'pixels', got '{enc.target}'")
        if enc.input_size % enc.patch_size:
            raise ValueError(
                f"model.encoder.input_size {enc.input_size} is not a multiple of the patch size {enc.patch_size}"
            )
        if enc.backbone == "cnn" and enc.target == "features":
            raise ValueError(
                "model.encoder: a CNN encoder is trained, so reconstructing its own features collapses; "
                "set model.encoder.target=pixels"
            )
        self.grid = enc.input_size // enc.patch_size
        self.num_patches = self.grid**2  # P
        d, f = cfg.slot_dim, enc.feature_dim
        self.encoder = build_encoder(enc)
        self.feature_mlp = FeatureMLP(f, cfg.input_mlp_hidden or 2 * f, d)
        self.initial_slots = nn.Parameter(torch.randn(1, cfg.num_slots, d) * d**-0.5)
        sa = cfg.slot_attention
        self.slot_attention = SlotAttention(d, sa.mlp_hidden_mult, sa.eps, sa.bilevel)
        pr = cfg.predictor
        self.predictor = SlotPredictor(d, pr.num_heads, pr.ffn_mult, pr.official_logit_scale)
        target_dim = f if enc.target == "features" else 3 * enc.patch_size**2
        self.decoder = MLPDecoder(d, target_dim, self.num_patches, cfg.decoder.hidden_dims, cfg.decoder.pos_emb,
                                  cfg.decoder.mix)

    # ------------------------------------------------------------------ inputs
    @property
    def input_size(self) -> int:
        return self.cfg.encoder.input_size

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``[..., H, W, 3]`` (tensor or numpy) -> normalised float ``[..., 3, S, S]`` on the model's device."""
        frames = torch.as_tensor(frames).to(self.initial_slots.device)
        return preprocess_frames(frames, self.input_size, self.cfg.mean, self.cfg.std)

    def _check_images(self, x: torch.Tensor, name: str, ndim: int) -> None:
        layout = "[B, T, 3, H, W]" if ndim == 5 else "[B, 3, H, W]"
        s = self.input_size
        if x.ndim != ndim or x.shape[-3] != 3:
            raise ValueError(f"{name}: expected a float tensor {layout}, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(
                f"{name}: expected a normalised float tensor, got dtype {x.dtype}; "
                "use model.preprocess(frames) on uint8 RGB frames"
            )
        if x.shape[-2:] != (s, s):
            raise ValueError(
                f"{name}: expected {s}x{s} images (the model's input size), got "
                f"{x.shape[-2]}x{x.shape[-1]}; use model.preprocess(frames) to resize"
            )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [N, 3, S, S] -> (features [N, P, F], reconstruction target [N, P, F_target])."""
        features = self.encoder(images)
        if self.cfg.encoder.target == "features":
            return features, features
        ps = self.cfg.encoder.patch_size
        return features, rearrange(images, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=ps, p2=ps)

    # ------------------------------------------------------------------ clip forward
    def forward(self, video: torch.Tensor, state: SlotState | None = None) -> dict[str, torch.Tensor]:
        """video [B, T, 3, S, S] normalised -> dict of

        slots [B, T, K, D], slots_predicted [B, T, K, D], grouping_masks [B, T, K, P],
        decoder_masks [B, T, K, P], reconstruction [B, T, P, F], target [B, T, P, F].

        ``state`` continues a stream (chunked processing of a long video); the state after the clip is
        ``model.next_state(out)``. Default: every video starts from the learned initial slots.
        """
        self._check_images(video, "video", 5)
        b, t = video.shape[:2]
        features, target = self.encode(rearrange(video, "b t c h w -> (b t) c h w"))
        features = rearrange(features, "(b t) p f -> b t p f", b=b, t=t)
        target = rearrange(target, "(b t) p f -> b t p f", b=b, t=t)
        return self.forward_features(features, target, state)

    def forward_features(self, features: torch.Tensor, target: torch.Tensor | None = None,
                         state: SlotState | None = None) -> dict[str, torch.Tensor]:
        """Everything after the encoder. features [B, T, P, F] -> the outputs of ``forward``.

        ``target`` defaults to ``features`` (the frozen-feature setting; used with feature caches).
        """
        f = self.cfg.encoder.feature_dim
        if features.ndim != 4 or features.shape[2:] != (self.num_patches, f):
            raise ValueError(
                f"features: expected [B, T, {self.num_patches}, {f}] (P patches x F), got {tuple(features.shape)}"
            )
        if target is None:
            if self.cfg.encoder.target != "features":
                raise ValueError("forward_features: this model reconstructs pixels; pass target=")
            target = features
        b, t = features.shape[:2]
        inputs = self.feature_mlp(features)  # [B, T, P, D]
        state = self.init_state(b) if state is None else state
        slots, predicted, attn = [], [], []
        for i in range(t):
            out, state = self._recur(inputs[:, i], state)
            slots.append(out["slots"])
            predicted.append(out["slots_predicted"])
            attn.append(out["grouping_masks"])
        slots_t = torch.stack(slots, dim=1)  # [B, T, K, D]
        attn_t = torch.stack(attn, dim=1)  # [B, T, K, P]
        reconstruction, decoder_masks = self.decoder(rearrange(slots_t, "b t k d -> (b t) k d"),
                                                     rearrange(attn_t, "b t k p -> (b t) k p"))
        return {
            "slots": slots_t,
            "slots_predicted": torch.stack(predicted, dim=1),
            "grouping_masks": attn_t,
            "decoder_masks": rearrange(decoder_masks, "(b t) k p -> b t k p", b=b),
            "reconstruction": rearrange(reconstruction, "(b t) p f -> b t p f", b=b),
            "target": target,
        }

    @staticmethod
    def next_state(out: dict[str, torch.Tensor]) -> SlotState:
        """The state after a clip ``forward``: continue the stream with the next clip or ``step``."""
        predicted = out["slots_predicted"][:, -1]
        return SlotState(predicted, torch.zeros(predicted.shape[0], dtype=torch.bool, device=predicted.device))

    def loss(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of a clip forward: loss_featrec, loss_ss (needs T >= 2) and their weighted sum loss_total;
        with ``decoder.mix="attention"`` also loss_mask (alpha masks learn the attention masks)."""
        lc = self.cfg.loss
        featrec = feature_reconstruction_loss(out["reconstruction"], out["target"])
        ss = slot_slot_contrastive_loss(out["slots"], lc.temperature, lc.batch_contrast)
        losses = {"loss_featrec": featrec, "loss_ss": ss}
        total = lc.featrec_weight * featrec + lc.ss_weight * ss
        if self.cfg.decoder.mix == "attention":
            losses["loss_mask"] = mask_distillation_loss(out["decoder_masks"], out["grouping_masks"])
            total = total + lc.mask_weight * losses["loss_mask"]
        return {**losses, "loss_total": total}

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int) -> SlotState:
        """A state for ``batch_size`` streams, every row at the start of an episode."""
        device = self.initial_slots.device
        slots = self.initial_slots.detach().expand(batch_size, -1, -1)
        return SlotState(slots, torch.ones(batch_size, dtype=torch.bool, device=device))

    def _recur(self, inputs: torch.Tensor, state: SlotState) -> tuple[dict[str, torch.Tensor], SlotState]:
        """One frame of the recurrence. inputs [B, P, D] (after the feature MLP)."""
        sa = self.cfg.slot_attention
        first = state.is_first
        if bool(first.all()):
            init, iters = self.initial_slots.expand(inputs.shape[0], -1, -1), sa.iters_first
        elif not bool(first.any()):
            init, iters = state.slots, sa.iters
        else:  # some rows start an episode: per-row initial slots and iteration counts
            init = torch.where(first.view(-1, 1, 1), self.initial_slots, state.slots)
            iters = torch.where(first, sa.iters_first, sa.iters)
        slots, attn = self.slot_attention(init, inputs, iters)
        predicted = self.predictor(slots)
        out = {"slots": slots, "slots_predicted": predicted, "grouping_masks": attn}
        return out, SlotState(predicted, torch.zeros_like(first))

    def step(
        self, frame: torch.Tensor, state: SlotState, decode: bool = False
    ) -> tuple[dict[str, torch.Tensor], SlotState]:
        """One frame of a stream: frame [B, 3, S, S] normalised -> (out, next state).

        out: slots [B, K, D], slots_predicted [B, K, D], grouping_masks [B, K, P], and with ``decode=True``
        decoder_masks [B, K, P] and reconstruction [B, P, F]. Frame by frame this gives the same slots as
        ``forward`` on the whole clip.
        """
        self._check_images(frame, "frame", 4)
        if state.slots.shape[0] != frame.shape[0]:
            raise ValueError(f"state holds {state.slots.shape[0]} streams but the frame batch has {frame.shape[0]}")
        features, _ = self.encode(frame)
        out, state = self._recur(self.feature_mlp(features), state)
        if decode:
            out["reconstruction"], out["decoder_masks"] = self.decoder(out["slots"], out["grouping_masks"])
        return out, state
