"""SlotDynamics: a SlotFormer-style (Wu et al., ICLR 2023) autoregressive transformer over slot sets.

The tokens are the K slots of each of the last T <= ``history`` frames, plus one action token per frame when the
model is action-conditioned (the action taken *after* that frame). A learned temporal position encoding marks
each frame; there is none over the slot index, so the model is permutation-equivariant within a frame: it
treats slots as a set, as slot attention produces them. The outputs at the last frame's slot tokens become the
next frame's slots, as a residual on the last frame's slots (SlotFormer's ``pred_res``). ``rollout`` feeds the
predictions back in, with a sliding window of ``history`` frames.

Files: ``save_dynamics(model, path)`` writes safetensors with the constructor arguments as metadata, so
``load_dynamics(path)`` needs nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from oc_perception.checkpoint.format import CheckpointError, TensorFormat

DYNAMICS_FILE = TensorFormat("oc-perception/slotdynamics-v1", "a slot dynamics checkpoint",
                             "perception models load with load_checkpoint()")


class SlotDynamics(nn.Module):
    """Next-frame slot predictor.

    Args:
        slot_dim: D, the perception model's slot dimension.
        num_layers: transformer layers (pre-LN).
        num_heads: attention heads (``hidden_dim`` must divide).
        hidden_dim: token width inside the transformer.
        ffn_mult: feed-forward width as a multiple of ``hidden_dim``.
        history: the most frames the model looks back at (SlotFormer's burn-in length); longer inputs are cut to
            their last ``history`` frames.
        action_dim: 0 for no actions; else the number of discrete actions (integer actions are one-hot encoded)
            or the size of a continuous action vector (float actions are used as they are).
        dropout: dropout in the transformer.

    Actions, where used, go with the frames: ``actions[:, t]`` is the action taken after frame ``t``, the one
    that leads to frame ``t + 1``. A float action vector of zeros (for discrete actions: a one-hot of all zeros)
    stands for "unknown".
    """

    def __init__(self, slot_dim: int, num_layers: int = 4, num_heads: int = 4, hidden_dim: int = 128,
                 ffn_mult: int = 4, history: int = 6, action_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        if history < 1 or action_dim < 0:
            raise ValueError(f"need history >= 1 and action_dim >= 0, got history={history}, action_dim={action_dim}")
        self.slot_dim, self.history, self.action_dim = slot_dim, history, action_dim
        self.hparams = {"slot_dim": slot_dim, "num_layers": num_layers, "num_heads": num_heads,
                        "hidden_dim": hidden_dim, "ffn_mult": ffn_mult, "history": history,
                        "action_dim": action_dim, "dropout": dropout}
        self.in_proj = nn.Linear(slot_dim, hidden_dim)
        self.action_proj = nn.Linear(action_dim, hidden_dim) if action_dim else None
        # One embedding per position in the window, none per slot: that keeps the permutation equivariance.
        self.time_embed = nn.Parameter(torch.zeros(1, history, 1, hidden_dim))
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(hidden_dim, num_heads, ffn_mult * hidden_dim, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(hidden_dim),
                                                 enable_nested_tensor=False)
        self.out_proj = nn.Linear(hidden_dim, slot_dim)
        # Zero-initialised residual: an untrained model predicts the last frame's slots (the copy-last baseline).
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    # ------------------------------------------------------------------ checks
    def _check_slots(self, slots: torch.Tensor, name: str) -> None:
        if slots.ndim != 4 or slots.shape[-1] != self.slot_dim or slots.shape[1] == 0:
            raise ValueError(f"{name}: expected slots [B, T, K, D] with T >= 1 and D={self.slot_dim}, "
                             f"got shape {tuple(slots.shape)}")

    def encode_actions(self, actions: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
        """actions [B, F] int (discrete) or [B, F, A] float -> float [B, F, A]; None for a model without actions.

        Raises ValueError for missing actions, actions given to a model without them, and wrong shapes.
        """
        if not self.action_dim:
            if actions is not None:
                raise ValueError("this model takes no actions (action_dim=0); pass actions=None")
            return None
        if actions is None:
            raise ValueError(f"this model is action-conditioned (action_dim={self.action_dim}); pass actions")
        if actions.dtype.is_floating_point:
            if actions.shape != (batch, frames, self.action_dim):
                raise ValueError(f"actions: expected float [B, F, A] = [{batch}, {frames}, {self.action_dim}], "
                                 f"got {tuple(actions.shape)}")
            return actions
        if actions.shape != (batch, frames):
            raise ValueError(f"actions: expected integer [B, F] = [{batch}, {frames}], got {tuple(actions.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.action_dim):
            raise ValueError(f"actions: discrete actions must lie in [0, {self.action_dim}), got "
                             f"[{int(actions.min())}, {int(actions.max())}]")
        return F.one_hot(actions.long(), self.action_dim).float()

    # ------------------------------------------------------------------ prediction
    def forward(self, slots: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """One step: slots [B, T, K, D] -> the next frame's slots [B, K, D].

        ``actions``: [B, T] int or [B, T, A] float, the action after each input frame (see the class docstring).
        Only the last ``history`` frames (and their actions) are used.
        """
        self._check_slots(slots, "slots")
        b, t = slots.shape[:2]
        action_emb = self.encode_actions(actions, b, t)
        slots, t = slots[:, -self.history:], min(t, self.history)
        k = slots.shape[2]
        tokens = self.in_proj(slots)  # [B, T, K, H]
        if action_emb is not None:
            action_tok = self.action_proj(action_emb[:, -self.history:])  # [B, T, H]
            tokens = torch.cat([tokens, action_tok[:, :, None]], dim=2)  # [B, T, K + 1, H]
        # A window shorter than ``history`` takes the last encodings: the newest frame always has the same one.
        tokens = tokens + self.time_embed[:, self.history - t:]
        out = self.transformer(rearrange(tokens, "b t n h -> b (t n) h"))
        out = rearrange(out, "b (t n) h -> b t n h", t=t)[:, -1, :k]  # the last frame's slot tokens
        return slots[:, -1] + self.out_proj(out)

    def rollout(self, history: torch.Tensor, actions: torch.Tensor | None = None, steps: int = 1) -> torch.Tensor:
        """Autoregressive prediction: history [B, T, K, D] -> predicted slots [B, H, K, D] of the H = ``steps``
        frames after it.

        ``actions``: [B, T + H - 1] int or [B, T + H - 1, A] float, the action after each history frame and after
        each predicted frame but the last (a longer sequence is cut). Each step sees the last ``history`` frames,
        true or predicted.
        """
        self._check_slots(history, "history")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        b, t = history.shape[:2]
        if actions is not None and actions.ndim >= 2 and actions.shape[1] >= t + steps - 1:
            actions = actions[:, : t + steps - 1]
        action_emb = self.encode_actions(actions, b, t + steps - 1)
        frames = list(history[:, -self.history:].unbind(1))
        start = t - len(frames)  # index of frames[0] in the action sequence
        predicted = []
        for _ in range(steps):
            window = torch.stack(frames[-self.history:], dim=1)
            first = start + len(frames) - window.shape[1]
            window_actions = None if action_emb is None else action_emb[:, first: first + window.shape[1]]
            nxt = self(window, window_actions)
            predicted.append(nxt)
            frames.append(nxt)
        return torch.stack(predicted, dim=1)


def teacher_forcing_windows(slots: torch.Tensor, actions: torch.Tensor | None, history: int):
    """Every full window of a clip for one-step training: slots [B, L, K, D] (L > history), actions [B, L(, A)]
    or None -> (windows [B * (L - history), history, K, D], their actions or None, targets
    [B * (L - history), K, D], the frame after each window)."""
    b, length = slots.shape[:2]
    n = length - history
    idx = torch.arange(history, device=slots.device)[None] + torch.arange(n, device=slots.device)[:, None]
    windows = rearrange(slots[:, idx], "b n t k d -> (b n) t k d")
    targets = rearrange(slots[:, history:], "b n k d -> (b n) k d")
    window_actions = None if actions is None else rearrange(actions[:, idx], "b n t ... -> (b n) t ...")
    return windows, window_actions, targets


def repeat_last(slots: torch.Tensor, steps: int) -> torch.Tensor:
    """The copy-last baseline: history [B, T, K, D] -> [B, H, K, D], the last frame's slots H times."""
    return repeat(slots[:, -1], "b k d -> b h k d", h=steps)


@torch.inference_mode()
def rollout_dataset(model: SlotDynamics, slots: torch.Tensor, actions: torch.Tensor | None, burn_in: int,
                    steps: int, batch_size: int = 64) -> torch.Tensor:
    """Roll out every trajectory from its first ``burn_in`` frames, in batches on the model's device:
    slots [N, T, K, D] (T >= burn_in), actions [N, T(, A)] or None -> predicted [N, steps, K, D] on the CPU."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(slots), batch_size):
        a = None if actions is None else actions[i: i + batch_size, : burn_in + steps - 1].to(device)
        out.append(model.rollout(slots[i: i + batch_size, :burn_in].to(device), a, steps).cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------- files
def save_dynamics(model: SlotDynamics, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model as safetensors with its constructor arguments (and ``metadata``) inside, atomically."""
    return DYNAMICS_FILE.write(path, model.state_dict(), {"config": json.dumps(model.hparams), **(metadata or {})})


def read_dynamics_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a file written by ``save_dynamics`` (e.g. ``burn_in``, ``data``)."""
    return DYNAMICS_FILE.read_metadata(path)


def load_dynamics(path: str | Path, device: str | torch.device = "cpu") -> SlotDynamics:
    """A file written by ``save_dynamics`` -> ``SlotDynamics`` in eval mode.

    Raises:
        CheckpointError: unreadable, another kind of file, damaged (digest) or non-finite weights, or weights
            that do not fit the stored config.
    """
    state, meta = DYNAMICS_FILE.read(path)
    model = SlotDynamics(**json.loads(meta["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit its stored config: {e}") from e
    return model.to(device).eval()
