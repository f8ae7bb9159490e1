"""SlotContrast (Manasyan et al., CVPR 2025): temporally consistent object slots from video.

Per frame: encoder features -> feature MLP -> slot attention initialised from the previous frame's
*predicted* slots (the learned initial slots on the first frame) -> transformer predictor. An MLP decoder
reconstructs the features from the slots; a slot-slot contrastive loss keeps each object in its slot.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from oc_perception.config import ModelConfig
from oc_perception.frames import preprocess_frames, resize_labels
from oc_perception.model.decoder import BroadcastDecoder, MLPDecoder
from oc_perception.model.encoder import FeatureMLP, build_encoder
from oc_perception.model.initializer import RandomSlots, initial_positions
from oc_perception.model.losses import (background_ownership_loss, colour_smoothness_loss,
                                        feature_reconstruction_loss, segmentation_matching_loss,
                                        slot_slot_contrastive_loss, temporal_consistency_loss)
from oc_perception.model.predictor import SlotPredictor
from oc_perception.model.slot_attention import InvariantSlotAttention, SlotAttention


def check_first_frame_passes(passes: object) -> int:
    """``passes`` as an int if it is one >= 1, else a ValueError that names the fix."""
    if not isinstance(passes, numbers.Integral) or isinstance(passes, bool) or passes < 1:
        raise ValueError(f"first_frame_passes must be an int >= 1 (1: the paper's model; 3 or more: the slots settle "
                         f"on an episode's first frame), got {passes!r}")
    return int(passes)


@dataclass
class SlotState:
    """Recurrent state between frames of a stream.

    slots: [B, K, D] predicted slots, the initialisation of the next frame.
    is_first: [B] bool, rows whose next frame starts an episode (initial slots, first-frame iterations).
    positions: [B, K, 4] slot positions and scales (``slot_attention.relative``), else None.
    """

    slots: torch.Tensor
    is_first: torch.Tensor
    positions: torch.Tensor | None = None

    def restart(self, rows: torch.Tensor) -> "SlotState":
        """A state in which the rows where ``rows`` ([B] bool) is true start a new episode at the next frame."""
        rows = torch.as_tensor(rows, dtype=torch.bool, device=self.is_first.device)
        return SlotState(self.slots, self.is_first | rows, self.positions)

    def select(self, rows: torch.Tensor | slice) -> "SlotState":
        """The state of the streams ``rows`` (indices, bool mask or slice)."""
        return SlotState(self.slots[rows], self.is_first[rows],
                         None if self.positions is None else self.positions[rows])

    def cat(self, other: "SlotState") -> "SlotState":
        """The streams of ``self`` followed by those of ``other``."""
        return SlotState(torch.cat([self.slots, other.slots]), torch.cat([self.is_first, other.is_first]),
                         None if self.positions is None else torch.cat([self.positions, other.positions]))


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
        sa, dec = cfg.slot_attention, cfg.decoder
        if cfg.initializer not in ("fixed", "random"):
            raise ValueError(f"model.initializer must be 'fixed' or 'random', got '{cfg.initializer}'")
        if dec.kind not in ("mlp", "broadcast"):
            raise ValueError(f"model.decoder.kind must be 'mlp' or 'broadcast', got '{dec.kind}'")
        if dec.kind == "broadcast" and enc.target != "pixels":
            raise ValueError("model.decoder.kind=broadcast renders RGB: it needs model.encoder.target=pixels")
        if cfg.loss.foreground_weight != 1.0 and enc.target != "pixels":
            raise ValueError("model.loss.foreground_weight weighs pixels: it needs model.encoder.target=pixels")
        for term in ("background_weight", "smoothness_weight", "temporal_weight"):
            if getattr(cfg.loss, term) > 0 and enc.target != "pixels":
                raise ValueError(f"model.loss.{term} reads the frames' colours: it needs model.encoder.target=pixels")
        if cfg.initializer == "fixed":
            self.initial_slots = nn.Parameter(torch.randn(1, cfg.num_slots, d) * d**-0.5)
        else:
            self.initializer = RandomSlots(cfg.num_slots, d, positions=sa.relative)
        if sa.relative:
            self.slot_attention: nn.Module = InvariantSlotAttention(d, self.grid, sa.mlp_hidden_mult, sa.eps)
            if cfg.initializer == "fixed":  # fixed slots start at fixed, spread-out places
                xy = torch.rand(1, cfg.num_slots, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
                self.register_buffer("initial_positions", initial_positions(xy), persistent=False)
        else:
            self.slot_attention = SlotAttention(d, sa.mlp_hidden_mult, sa.eps)
        pr = cfg.predictor
        self.predictor = SlotPredictor(d, pr.num_heads, pr.ffn_mult, pr.official_logit_scale)
        if dec.kind == "broadcast":
            self.decoder: nn.Module = BroadcastDecoder(d, 3, dec.broadcast_size, dec.conv_channels, sa.relative)
            side = self.decoder.side
            if enc.input_size % side:
                raise ValueError(f"model.decoder: the broadcast decoder renders {side}x{side}, which does not "
                                 f"divide the input size {enc.input_size}; change broadcast_size or conv_channels")
            self.mask_side = side
        else:
            target_dim = f if enc.target == "features" else 3 * enc.patch_size**2
            self.decoder = MLPDecoder(d, target_dim, self.num_patches, dec.hidden_dims, dec.pos_emb, sa.relative)
            self.mask_side = self.grid

    # ------------------------------------------------------------------ inputs
    @property
    def input_size(self) -> int:
        return self.cfg.encoder.input_size

    @property
    def device(self) -> torch.device:
        return self.feature_mlp.fc1.weight.device

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``[..., H, W, 3]`` (tensor or numpy) -> normalised float ``[..., 3, S, S]`` on the model's device."""
        frames = torch.as_tensor(frames).to(self.device)
        return preprocess_frames(frames, self.input_size, self.cfg.mean, self.cfg.std)

    def _check_images(self, x: torch.Tensor, name: str, ndim: int) -> None:
        layout = "[B, T, 3, H, W]" if ndim == 5 else "[B, 3, H, W]"
        s = self.input_size
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch tensor {layout}, got {type(x).__name__}; "
                            "use model.preprocess(frames) on uint8 RGB frames (numpy or torch)")
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
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"{name}: expected float32 (or autocast half) values, got {x.dtype}; convert with "
                             ".float() or use model.preprocess(frames)")
        if ndim == 5 and x.shape[1] == 0:
            raise ValueError(f"{name}: a clip of 0 frames (T = 0); pass at least one frame")
        # A NaN frame would poison the recurrent state of every later frame: refuse it, state untouched. A NaN or
        # inf anywhere makes the sum non-finite (so would values near 1e38, which no normalised frame holds), and
        # one reduction costs a fraction of an elementwise isfinite.
        if not bool(x.sum(dtype=torch.float32).isfinite()):
            raise ValueError(f"{name}: holds NaN or inf values; the slot state was left unchanged. Check the "
                             "frame source (normalised frames come from model.preprocess on uint8 RGB)")

    def encode_frames(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [N, 3, S, S] -> (features [N, P, F], reconstruction target [N, P_target, F_target]):
        the features, RGB patches (MLP decoder) or RGB pixels at the broadcast decoder's side."""
        features = self.encoder(images)
        if self.cfg.encoder.target == "features":
            return features, features
        if self.cfg.decoder.kind == "broadcast":
            pixels = F.adaptive_avg_pool2d(images, self.mask_side)
            return features, rearrange(pixels, "n c h w -> n (h w) c")
        ps = self.cfg.encoder.patch_size
        return features, rearrange(images, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=ps, p2=ps)

    def reconstruction_image(self, reconstruction: torch.Tensor) -> torch.Tensor:
        """A pixel reconstruction ``[..., M', F]`` (``out["reconstruction"]``) as images ``[..., 3, h, w]`` in
        normalised units: the input size for RGB patches, the broadcast decoder's side for pixels."""
        if self.cfg.encoder.target != "pixels":
            raise ValueError("this model reconstructs features, not pixels: there is no image to show")
        if self.cfg.decoder.kind == "broadcast":
            return rearrange(reconstruction, "... (h w) c -> ... c h w", h=self.mask_side)
        ps = self.cfg.encoder.patch_size
        return rearrange(reconstruction, "... (h w) (p1 p2 c) -> ... c (h p1) (w p2)", h=self.grid, p1=ps, p2=ps)

    # ------------------------------------------------------------------ clip forward
    def forward(self, video: torch.Tensor,
                state: SlotState | None = None) -> tuple[dict[str, torch.Tensor], SlotState]:
        """video [B, T, 3, S, S] normalised -> (out, the state after the clip), as ``step`` returns; out holds

        slots [B, T, K, D], slots_predicted [B, T, K, D], grouping_masks [B, T, K, P],
        decoder_masks [B, T, K, M], reconstruction [B, T, M', F], target [B, T, M', F], and with
        ``slot_attention.relative`` positions [B, T, K, 4]. M = ``mask_side ** 2``: P for the MLP decoder,
        the broadcast decoder's resolution otherwise.

        ``state`` continues a stream (chunked processing of a long video: pass the returned state to the next
        clip or to ``step``). Default: every video starts from the initial slots.
        """
        self._check_images(video, "video", 5)
        b, t = video.shape[:2]
        features, target = self.encode_frames(rearrange(video, "b t c h w -> (b t) c h w"))
        features = rearrange(features, "(b t) p f -> b t p f", b=b, t=t)
        target = rearrange(target, "(b t) p f -> b t p f", b=b, t=t)
        return self.forward_features(features, target, state)

    def forward_features(self, features: torch.Tensor, target: torch.Tensor | None = None,
                         state: SlotState | None = None) -> tuple[dict[str, torch.Tensor], SlotState]:
        """Everything after the encoder. features [B, T, P, F] -> (out, state) as ``forward``.

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
        steps = []
        for i in range(t):
            out, state = self._frame_update(inputs[:, i], state)
            steps.append(out)
        result = {key: torch.stack([o[key] for o in steps], dim=1) for key in steps[0]}  # [B, T, ...]
        positions = result.get("positions")
        reconstruction, decoder_masks = self.decoder(
            rearrange(result["slots"], "b t k d -> (b t) k d"),
            None if positions is None else rearrange(positions, "b t k c -> (b t) k c"))
        result["decoder_masks"] = rearrange(decoder_masks, "(b t) k p -> b t k p", b=b)
        result["reconstruction"] = rearrange(reconstruction, "(b t) p f -> b t p f", b=b)
        result["target"] = target
        return result, state

    def loss(self, out: dict[str, torch.Tensor],
             segmentation: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses of a clip forward: loss_featrec, loss_ss (0 for T = 1) and their weighted sum loss_total.

        With ``loss.segmentation_weight`` > 0 and ``segmentation`` (int labels [B, T, h, w] at the decoder mask
        resolution ``mask_side``), also loss_seg, the supervised mask loss (``segmentation_matching_loss``) of the
        decoder and slot-attention masks, matched jointly.
        """
        lc = self.cfg.loss
        featrec = feature_reconstruction_loss(out["reconstruction"], out["target"], lc.foreground_weight)
        ss = slot_slot_contrastive_loss(out["slots"], lc.temperature, lc.batch_contrast)
        losses = {"loss_featrec": featrec, "loss_ss": ss}
        total = lc.featrec_weight * featrec + lc.ss_weight * ss
        if lc.background_weight > 0:
            losses["loss_background"] = background_ownership_loss(out["decoder_masks"], out["target"])
            total = total + lc.background_weight * losses["loss_background"]
        if lc.smoothness_weight > 0:
            losses["loss_smooth"] = colour_smoothness_loss(out["decoder_masks"], out["target"],
                                                           lc.smoothness_floor_weight)
            total = total + lc.smoothness_weight * losses["loss_smooth"]
        if lc.temporal_weight > 0:
            losses["loss_temporal"] = temporal_consistency_loss(out["decoder_masks"], out["target"])
            total = total + lc.temporal_weight * losses["loss_temporal"]
        if lc.segmentation_weight > 0 and segmentation is not None:
            # The slot-attention masks are supervised too, with the same matching: a slot that reads its object
            # is what lets the decoder draw it (decoder supervision alone carves the frame into regions).
            grid_labels = resize_labels(rearrange(segmentation, "b t h w -> (b t) h w"), (self.grid, self.grid))
            losses["loss_seg"] = segmentation_matching_loss(
                [out["decoder_masks"], out["grouping_masks"]],
                [segmentation, rearrange(grid_labels, "(b t) h w -> b t h w", b=segmentation.shape[0])],
                area_exponent=lc.segmentation_area_exponent)
            total = total + lc.segmentation_weight * losses["loss_seg"]
        return {**losses, "loss_total": total}

    # ------------------------------------------------------------------ streaming
    def first_slots(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The slots (and, with ``slot_attention.relative``, positions) an episode starts from:
        slots [B, K, D], positions [B, K, 4] or None.

        ``initializer: fixed``: the K learned slots. ``random``: a fresh draw of the learned Gaussian while
        training; in eval mode (wrappers, ``step``, evaluation) one fixed draw (seed 0) for every episode, so
        slots are a function of the frames alone and reproducible for every env seed.
        """
        if self.cfg.initializer == "random":
            return self.initializer(batch_size)
        slots = self.initial_slots.expand(batch_size, -1, -1)
        if not self.cfg.slot_attention.relative:
            return slots, None
        return slots, self.initial_positions.expand(batch_size, -1, -1)

    def set_num_slots(self, num_slots: int) -> None:
        """Draw ``num_slots`` slots per episode from now on (models with ``initializer: random`` only: their slots
        come from one learned distribution, so K is free at inference; nothing else in the model depends on it).
        Raises ValueError for fixed initial slots, which are K learned vectors."""
        if self.cfg.initializer != "random":
            raise ValueError("num_slots can change only for models with random initial slots (model.initializer: "
                             f"random); this one has {self.cfg.num_slots} learned initial slots")
        if not isinstance(num_slots, numbers.Integral) or isinstance(num_slots, bool) or num_slots < 1:
            raise ValueError(f"num_slots must be a positive int, got {num_slots!r}")
        self.initializer = self.initializer.with_num_slots(int(num_slots))
        self.cfg.num_slots = int(num_slots)

    def init_state(self, batch_size: int) -> SlotState:
        """A state for ``batch_size`` streams, every row at the start of an episode."""
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"init_state: batch_size must be a positive int (streams), got {batch_size!r}")
        slots, positions = self.first_slots(batch_size)
        return SlotState(slots.detach(), torch.ones(batch_size, dtype=torch.bool, device=slots.device),
                         None if positions is None else positions.detach())

    def _attend(self, init: torch.Tensor, init_pos: torch.Tensor | None, inputs: torch.Tensor,
                iters: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Slot attention from ``init`` [B, K, D] (positions [B, K, 4] with ``relative``) over inputs [B, P, D]:
        (slots, positions or None, attention masks [B, K, P])."""
        if self.cfg.slot_attention.relative:
            return self.slot_attention(init, init_pos, inputs, iters)
        slots, attn = self.slot_attention(init, inputs, iters)
        return slots, None, attn

    def _frame_update(self, inputs: torch.Tensor, state: SlotState, first_frame_passes: int | None = None
                      ) -> tuple[dict[str, torch.Tensor], SlotState]:
        """One frame of the recurrence. inputs [B, P, D] (after the feature MLP); ``first_frame_passes``
        overrides the config's ``slot_attention.first_frame_passes`` (None: the config's)."""
        sa = self.cfg.slot_attention
        passes = sa.first_frame_passes if first_frame_passes is None else first_frame_passes
        first = state.is_first
        b = inputs.shape[0]
        if bool(first.all()):
            (init, init_pos), iters = self.first_slots(b), sa.iters_first
        elif not bool(first.any()):
            init, init_pos, iters = state.slots, state.positions, sa.iters
        else:  # some rows start an episode: per-row initial slots and iteration counts
            start, start_pos = self.first_slots(b)
            rows = first.view(-1, 1, 1)
            init = torch.where(rows, start, state.slots)
            init_pos = None if start_pos is None else torch.where(rows, start_pos, state.positions)
            iters = torch.where(first, sa.iters_first, sa.iters)
        slots, positions, attn = self._attend(init, init_pos, inputs, iters)
        if passes > 1 and bool(first.any()):
            rows = first.view(-1, 1, 1)
            for _ in range(passes - 1):
                again, again_pos, again_attn = self._attend(self.predictor(slots), positions, inputs, sa.iters)
                slots, attn = torch.where(rows, again, slots), torch.where(rows, again_attn, attn)
                positions = None if positions is None else torch.where(rows, again_pos, positions)
        out: dict[str, torch.Tensor] = {} if positions is None else {"positions": positions}
        predicted = self.predictor(slots)
        out.update(slots=slots, slots_predicted=predicted, grouping_masks=attn)
        carried, carried_pos = predicted, positions
        if sa.dormant_below > 0 and not bool(first.all()):
            # attn [B, K, P] sums to 1 over slots per patch: its sum over patches is the patches a slot holds
            dormant = ((attn.sum(-1) < sa.dormant_below) & ~first.view(-1, 1)).unsqueeze(-1)  # [B, K, 1]
            carried = torch.where(dormant, init, predicted)
            carried_pos = None if positions is None else torch.where(dormant, init_pos, positions)
        return out, SlotState(carried, torch.zeros_like(first), carried_pos)

    def step(
        self, frame: torch.Tensor, state: SlotState, decode: bool = False, first_frame_passes: int | None = None
    ) -> tuple[dict[str, torch.Tensor], SlotState]:
        """One frame of a stream: frame [B, 3, S, S] normalised -> (out, next state).

        out: slots [B, K, D], slots_predicted [B, K, D], grouping_masks [B, K, P], with ``decode=True``
        decoder_masks [B, K, M] and reconstruction [B, M', F] (as in ``forward``), and with
        ``slot_attention.relative`` positions [B, K, 4]. Frame by frame this gives the same slots as
        ``forward`` on the whole clip. ``first_frame_passes`` (>= 1) overrides the config's
        ``slot_attention.first_frame_passes`` for the rows that start an episode; the weights do not depend on it.
        """
        self._check_images(frame, "frame", 4)
        if first_frame_passes is not None:
            check_first_frame_passes(first_frame_passes)
        if state.slots.shape[0] != frame.shape[0]:
            raise ValueError(f"state holds {state.slots.shape[0]} streams but the frame batch has {frame.shape[0]}")
        features, _ = self.encode_frames(frame)
        out, state = self._frame_update(self.feature_mlp(features), state, first_frame_passes)
        if decode:
            out["reconstruction"], out["decoder_masks"] = self.decoder(out["slots"], out.get("positions"))
        return out, state
