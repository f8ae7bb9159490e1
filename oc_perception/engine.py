"""The engine of the slot observation wrappers: a SlotContrast model with one recurrent slot state per stream,
and the checks that turn an env's observations or renders into the model's frames.

:class:`SlotEncoder` owns the model, the recurrent state, batching and the observation space; the Gymnasium
wrappers (:mod:`oc_perception.wrappers`) and the Stable-Baselines3 wrapper (:mod:`oc_perception.sb3`) feed it
frames. It lives apart from both so that neither imports the other.

Observation space: ``Box(-inf, inf, (K, D), float32)``, or with ``include_masks=True``
``Dict(slots=Box(-inf, inf, (K, D), float32), masks=Box(0, 1, (K, g, g), float32))`` with the decoder masks at the
decoder's resolution ``g = model.mask_side`` (the patch grid for the MLP decoder, the rendered side for the
broadcast decoder); with ``mask_source="attention"`` the masks are slot attention's on the patch grid
(``g = model.grid``), which the model computes anyway: masks for the cost of the slots alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces

from oc_perception.checkpoint import load_model
from oc_perception.frames import rgb_conversion
from oc_perception.devices import Precision, autocast, check_precision
from oc_perception.model.slotcontrast import SlotContrast, SlotState, check_first_frame_passes

__all__ = [
    "MASK_SOURCES", "Checkpoint", "MaskSource", "SlotEncoder", "SlotObs", "check_frames",
    "frames_from_observations", "is_rgb_space", "select_obs",
]

SlotObs = np.ndarray | dict[str, np.ndarray]
"""Slots ``[..., K, D]`` float32, or ``{"slots": [..., K, D], "masks": [..., K, g, g]}`` with masks."""
Checkpoint = str | Path | SlotContrast | None
MaskSource = Literal["decoder", "attention"]
MASK_SOURCES: tuple[str, ...] = get_args(MaskSource)
RENDER_FIX = 'make the env with render_mode="rgb_array" (gym.make(env_id, render_mode="rgb_array"), or ' \
             "oc_perception.make(env_id, wrappers=[...]), which does so for envs without image observations)"


# ---------------------------------------------------------------------------------------------------- frames
def is_rgb_space(space: spaces.Space) -> bool:
    """Whether ``space`` holds RGB images the model can take: a uint8 ``Box`` of shape ``[H, W, 3]``."""
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[-1] == 3)


def frames_from_observations(observation_space: spaces.Space, render_mode: str | None) -> bool:
    """True when the frames are the observations, False when they come from ``render()``.

    Raises:
        ValueError: neither gives RGB frames (the observations are not uint8 ``[H, W, 3]`` images and
            ``render_mode`` is not ``"rgb_array"``); the message names the fix.
    """
    if is_rgb_space(observation_space):
        return True
    if render_mode == "rgb_array":
        return False
    if _is_image_space(observation_space):  # an image of another layout: converting it is the nearer fix
        raise ValueError(f"slot observations need uint8 RGB frames [H, W, 3], but the observations are "
                         f"{observation_space.dtype} {observation_space.shape} images: convert them in a wrapper "
                         f"inside this one ({rgb_conversion(observation_space.dtype, observation_space.shape)}), "
                         f"or {RENDER_FIX}")
    raise ValueError(f"slot observations need RGB frames, but the observations ({observation_space}) are not "
                     f"uint8 [H, W, 3] images and render_mode is {render_mode!r}: {RENDER_FIX}")


def _is_image_space(space: spaces.Space) -> bool:
    """A ``Box`` that holds images other than uint8 ``[H, W, 3]``: ``[H, W, C]`` or ``[C, H, W]`` of any dtype,
    or uint8 grey ``[H, W]`` (a float ``[N, M]`` box is a table of states, not an image)."""
    if not isinstance(space, spaces.Box):
        return False
    shape = space.shape
    if len(shape) == 3:
        return shape[-1] in (1, 3, 4) or shape[0] in (1, 3, 4)
    return len(shape) == 2 and space.dtype == np.uint8


def check_frames(frames: np.ndarray | Sequence[Any], source: str) -> np.ndarray:
    """``frames``: an array ``[N, H, W, 3]`` or a sequence of ``N`` frames ``[H, W, 3]`` -> uint8 ``[N, H, W, 3]``.

    Raises:
        ValueError: a frame is missing (``render()`` returned None) or is not uint8 RGB; ``source`` names where
            the frames came from.
    """
    if not isinstance(frames, np.ndarray):
        if any(f is None for f in frames):
            raise ValueError(f"{source} returned None instead of an RGB frame: {RENDER_FIX}")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise ValueError(f"{source} returned frames of different shapes {sorted(shapes)}")
        frames = np.stack([np.asarray(f) for f in frames])
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{source} gave a frame of dtype {frames.dtype} and shape {frames.shape[1:]}, but the slot model takes "
            f"uint8 RGB frames [H, W, 3]; convert them in a wrapper inside this one "
            f"({rgb_conversion(frames.dtype, frames.shape[1:])})"
        )
    return frames


def select_obs(obs: SlotObs, index: Any) -> SlotObs:
    """Rows ``index`` of a batched slot observation (array or dict of arrays)."""
    return {k: v[index] for k, v in obs.items()} if isinstance(obs, dict) else obs[index]



# ---------------------------------------------------------------------------------------------------- model
class SlotEncoder:
    """A slot model with the recurrent state of ``N`` streams: frames in, slot observations out.

    Shared by :class:`oc_perception.wrappers.SlotObservation`, :class:`oc_perception.wrappers.VectorSlotObservation`
    and :class:`oc_perception.sb3.VecSlotObservation`.

    Args:
        checkpoint: a path to one of our checkpoints, an already-loaded ``SlotContrast`` (used as is, moved only
            when ``device`` is given), or None for the bundled checkpoint of ``env_id``.
        device: where model and state live; default CUDA when available, else CPU (a given model: its device).
        include_masks: add the masks ``[K, g, g]``.
        mask_source: ``"decoder"`` (the decoder runs every step, at its resolution) or ``"attention"`` (the
            slot-attention masks of the step, on the patch grid: no decoder).
        precision: ``"fp32"`` or ``"bf16"`` (bfloat16 autocast, on GPU or CPU: ``oc_perception.devices``; a
            warning where the device only emulates bf16, which is slower than fp32).
        compile: run the model's ``step`` through ``torch.compile`` (compiles on the first frames).
        env_id: the env id that ``checkpoint=None`` looks up.
        first_frame_passes: passes over an episode's first frame (``model.slot_attention.first_frame_passes``):
            with 3 or more the slots settle before the first hand-over to the next frame, and more objects keep
            the slot of their first frame (docs/wrappers.md#identity). None: the checkpoint's setting (1 in the
            bundled models, the paper's).

    Attributes:
        observation_space: the slot observation space of one stream (see the module docstring).
    """

    def __init__(self, checkpoint: Checkpoint = None, device: str | torch.device | None = None,
                 include_masks: bool = False, precision: Precision = "fp32", compile: bool = False,
                 env_id: str | None = None, mask_source: MaskSource = "decoder",
                 first_frame_passes: int | None = None) -> None:
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
        self.model = load_model(checkpoint, device, env_id=env_id)
        self.device = self.model.device
        self.include_masks = include_masks
        self.mask_source = mask_source
        self.precision = check_precision(precision, self.device)
        self.first_frame_passes = None if first_frame_passes is None else check_first_frame_passes(first_frame_passes)
        self._step = torch.compile(self.model.step) if compile else self.model.step
        self._decode = include_masks and mask_source == "decoder"  # only decoder masks need the decoder
        self._mask_key, self._mask_side = (("decoder_masks", self.model.mask_side) if mask_source == "decoder"
                                           else ("grouping_masks", self.model.grid))
        g = self._mask_side
        k, d = self.model.cfg.num_slots, self.model.cfg.slot_dim
        slots = spaces.Box(-np.inf, np.inf, (k, d), np.float32)
        self.observation_space: spaces.Box | spaces.Dict = (
            spaces.Dict({"slots": slots, "masks": spaces.Box(0.0, 1.0, (k, g, g), np.float32)})
            if include_masks else slots
        )
        self._state: SlotState | None = None

    @property
    def num_streams(self) -> int:
        return 0 if self._state is None else self._state.slots.shape[0]

    def reset(self, num_streams: int) -> None:
        """Start ``num_streams`` streams: each one's next frame begins an episode."""
        with torch.inference_mode():
            self._state = self.model.init_state(num_streams)

    def encode(self, frames: np.ndarray, starts: np.ndarray | None = None, final_rows: np.ndarray | None = None,
               final_frames: np.ndarray | None = None) -> tuple[SlotObs, SlotObs | None]:
        """Advance every stream by one frame, in one batched forward pass.

        Args:
            frames: uint8 ``[N, H, W, 3]``, the current frame of each of the ``N`` streams.
            starts: bool ``[N]``, streams whose current frame begins a new episode (the state restarts).
            final_rows: int ``[F]``, streams whose previous episode ended with a frame that has not been
                encoded yet (same-step autoreset: the current frame is already the reset frame).
            final_frames: uint8 ``[F, H, W, 3]``, those final frames; each is encoded with its stream's state
                before the restart, as extra rows of the same forward pass.

        Returns:
            ``(obs, final_obs)``: slot observations ``[N, ...]`` of ``frames`` and ``[F, ...]`` of
            ``final_frames`` (None without final frames), as numpy float32.
        """
        if self._state is None:
            raise RuntimeError("SlotEncoder.encode before reset(num_streams)")
        n = self.num_streams
        if frames.shape[0] != n:
            raise ValueError(f"got {frames.shape[0]} frames for {n} streams")
        with torch.inference_mode(), autocast(self.precision, self.device):
            old = self._state
            state = old if starts is None else old.restart(starts)
            if final_rows is not None and len(final_rows):
                rows = torch.as_tensor(final_rows, dtype=torch.long, device=self.device)
                state = state.cat(old.select(rows))
                frames = np.concatenate([frames, final_frames])
            out, state = self._step(self.model.preprocess(frames), state, decode=self._decode,
                                    first_frame_passes=self.first_frame_passes)
            self._state = state.select(slice(None, n))
            obs = self._to_numpy(out)
        return select_obs(obs, slice(None, n)), (select_obs(obs, slice(n, None)) if frames.shape[0] > n else None)

    def _to_numpy(self, out: dict[str, torch.Tensor]) -> SlotObs:
        slots = out["slots"].float().cpu().numpy()
        if not self.include_masks:
            return slots
        masks = rearrange(out[self._mask_key].float(), "n k (h w) -> n k h w", h=self._mask_side)
        return {"slots": slots, "masks": masks.cpu().numpy()}
