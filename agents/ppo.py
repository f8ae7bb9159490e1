"""PPO on slot observations (or the pixel / state baselines), with periodic evaluation, a video and a summary.

    python -m agents.ppo CONFIG [--obs slots|pixels|state] [--total-timesteps N] [--seed S] [--device auto]
                         [--log-dir DIR] [--checkpoint PATH] [key=value ...]

CONFIG is a YAML file in configs/agents (``key=value`` overrides its keys, e.g. ``ppo.lr=1e-4``). ``--obs slots``
runs the SlotContrast model of ``--checkpoint`` (default: the bundled checkpoint of the env) inside the env loop;
with ``pixels`` or ``state`` a ``--checkpoint`` only colours the video. Writes to the log dir (default
``runs/ppo/<config>-<obs>-s<seed>``): TensorBoard events (``tensorboard_1/``), ``evaluations.npz`` (success of
each periodic evaluation), ``model.zip`` (``PPO.load``), ``episode.mp4`` (one evaluation episode, with the
slot masks overlaid) and ``result.json`` (the run's figures and config). Ends with one line: the success rate
over ``eval_episodes`` seeded episodes, a random policy's on the same episodes, and the paths.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.vec_env import VecEnv
from tqdm import tqdm

from agents.config import OBS_TYPES, AgentConfig, load_agent_config
from agents.envs import make_single_env, make_vec_env
from agents.evaluation import RandomAgent, record_episode, success_rate
from agents.extractor import SlotSetExtractor
from oc_perception.cli import run_or_exit
from oc_perception.checkpoint import CheckpointError, default_checkpoint, load_model
from oc_perception.config import ConfigError, to_dict
from oc_perception.devices import resolve_device
from oc_perception.io import atomic_write

# Errors that stop a run with one line: bad config or checkpoint (a missing bundled checkpoint included).
USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError)
RESULT_FILE = "result.json"
EVAL_SEED_OFFSET = 10_000  # evaluation envs are seeded seed + 10000 + i, apart from the training envs' seed + i


@dataclass
class RunResult:
    """What one run measured and wrote."""

    success_rate: float  # final evaluation, over eval_episodes seeded episodes
    random_success_rate: float  # a uniformly random policy on the same episodes
    curve: list[tuple[int, float]]  # (env steps, success rate) of each periodic evaluation
    steps: int  # env steps trained (total_timesteps rounded up to whole rollouts)
    train_seconds: float  # wall time of model.learn (periodic evaluations included)
    log_dir: Path
    tensorboard_dir: Path
    model_path: Path
    video_path: Path
    # (agent, random policy) success rates in held-out scene distributions (benchmarks/rl_compare.py)
    held_out: list[tuple[float, float]] = field(default_factory=list)

    def save(self, cfg: AgentConfig, checkpoint: str | Path | None) -> Path:
        """Write ``log_dir/result.json``: the figures, with the config and perception checkpoint that made them."""
        record = {"config": to_dict(cfg), "checkpoint_sha256": perception_digest(cfg, checkpoint),
                  "success_rate": self.success_rate, "random_success_rate": self.random_success_rate,
                  "curve": self.curve, "steps": self.steps, "train_seconds": self.train_seconds,
                  "tensorboard_dir": str(self.tensorboard_dir), "model_path": str(self.model_path),
                  "video_path": str(self.video_path)}
        text = json.dumps(record, indent=1) + "\n"
        return atomic_write(self.log_dir / RESULT_FILE, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, log_dir: str | Path, cfg: AgentConfig, checkpoint: str | Path | None) -> RunResult | None:
        """The result saved in ``log_dir`` by a run of this very config and checkpoint, else None."""
        path = Path(log_dir) / RESULT_FILE
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as e:  # not written by save (atomic): someone edited it; train the run again
            print(f"warning: {path} is not JSON ({e}): the run is trained again")
            return None
        digest = record.get("checkpoint_sha256", "unknown")  # files of older versions: never a match
        same_config = run_identity(record["config"]) == run_identity(to_dict(cfg))
        if not same_config or digest != perception_digest(cfg, checkpoint):
            return None
        return cls(record["success_rate"], record["random_success_rate"], [tuple(c) for c in record["curve"]],
                   record["steps"], record["train_seconds"], Path(log_dir), Path(record["tensorboard_dir"]),
                   Path(record["model_path"]), Path(record["video_path"]))


def run_identity(config: dict) -> dict:
    """The config keys that decide what a run trains: ``state_policy`` is the state agent's only (and results
    written before the key existed then still count for slots and pixels); ``precision`` fp32 is what runs
    without the key used."""
    config = {k: v for k, v in config.items() if not (k == "precision" and v == "fp32")}
    return config if config.get("obs") == "state" else {k: v for k, v in config.items() if k != "state_policy"}


def perception_digest(cfg: AgentConfig, checkpoint: str | Path | None) -> str | None:
    """SHA-256 of the perception checkpoint a run uses (the bundled one for slots without ``checkpoint``).

    By content, not path: a retrained model written over the same file is another run.
    """
    if checkpoint is None and cfg.obs != "slots":
        return None
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint(cfg.env_id)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ProgressBar(BaseCallback):
    """A tqdm bar over env steps (SB3's ``progress_bar=True`` needs ``rich``, which is not a dependency)."""

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.locals["total_timesteps"] - self.model.num_timesteps, unit="step",
                        dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.update(self.training_env.num_envs)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


class EvalReport(BaseCallback):
    """``EvalCallback(callback_after_eval=EvalReport())``: one line per evaluation, above the progress bar."""

    parent: EvalCallback

    def _on_step(self) -> bool:
        successes = self.parent.evaluations_successes[-1]
        tqdm.write(f"eval at {self.num_timesteps:,} steps: success rate {np.mean(successes):.2f} "
                   f"({len(successes)} episodes)")
        return True


def build_agent(cfg: AgentConfig, venv: VecEnv, log_dir: Path, device: torch.device) -> PPO:
    """PPO with the policy of ``cfg.obs``: slot-set extractor + MLP heads (slots; state rows with
    ``state_policy: set``), NatureCNN (pixels) or MLP (state)."""
    policy_kwargs = None
    if cfg.obs == "slots" or (cfg.obs == "state" and cfg.state_policy == "set"):
        use_masks = cfg.obs == "slots" and cfg.extractor.use_masks
        policy = "MultiInputPolicy" if use_masks else "MlpPolicy"  # masks make it a Dict space
        # mask_source is the wrapper's (agents.envs), share the policy's; the rest is the extractor's.
        kwargs = {k: v for k, v in to_dict(cfg.extractor).items() if k not in ("mask_source", "share")}
        policy_kwargs = {"features_extractor_class": SlotSetExtractor,
                         "features_extractor_kwargs": {**kwargs, "use_masks": use_masks},
                         "share_features_extractor": cfg.extractor.share}
    else:
        policy = "CnnPolicy" if cfg.obs == "pixels" else "MlpPolicy"
    p = cfg.ppo
    return PPO(policy, venv, learning_rate=p.lr, n_steps=p.n_steps, batch_size=p.batch_size, n_epochs=p.n_epochs,
               gamma=p.gamma, gae_lambda=p.gae_lambda, ent_coef=p.ent_coef, clip_range=p.clip_range,
               policy_kwargs=policy_kwargs, tensorboard_log=str(log_dir), seed=cfg.seed, device=device, verbose=0)


def train(cfg: AgentConfig, log_dir: str | Path, checkpoint: str | Path | None = None, device: str = "auto",
          progress: bool = True) -> RunResult:
    """Train PPO as ``cfg`` says, evaluate it beside a random policy, save it and record one episode.

    Args:
        cfg: the agent config (``cfg.obs`` picks the observations).
        log_dir: where TensorBoard events, ``evaluations.npz``, ``model.zip``, ``episode.mp4`` and
            ``result.json`` go.
        checkpoint: the perception model; None = the bundled checkpoint of ``cfg.env_id`` for slots, no
            overlay in the video for pixels and state.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...: PPO and the perception model.
        progress: show a progress bar and a line per evaluation.
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    uses_perception = cfg.obs == "slots" or checkpoint is not None
    perception = load_model(checkpoint, device, env_id=cfg.env_id) if uses_perception else None
    eval_seed = cfg.seed + EVAL_SEED_OFFSET

    venv = make_vec_env(cfg, cfg.obs, cfg.n_envs, perception)
    eval_venv = make_vec_env(cfg, cfg.obs, cfg.n_envs, perception)
    eval_venv.seed(eval_seed)
    agent = build_agent(cfg, venv, log_dir, device)
    evaluation = EvalCallback(eval_venv, n_eval_episodes=cfg.eval_episodes,
                              eval_freq=max(1, cfg.eval_freq // cfg.n_envs), log_path=str(log_dir),
                              deterministic=cfg.eval_deterministic, verbose=0,
                              callback_after_eval=EvalReport() if progress else None)
    start = time.perf_counter()
    agent.learn(cfg.total_timesteps, callback=[ProgressBar(), evaluation] if progress else evaluation,
                tb_log_name="tensorboard")
    train_seconds = time.perf_counter() - start
    model_path = log_dir / "model.zip"
    agent.save(model_path)

    rate = success_rate(agent, eval_venv, cfg.eval_episodes, eval_seed, cfg.eval_deterministic)
    random_venv = make_vec_env(cfg, "pixels", cfg.n_envs)  # a random policy ignores observations: the cheapest
    random_rate = success_rate(RandomAgent(random_venv.action_space, cfg.n_envs, eval_seed), random_venv,
                               cfg.eval_episodes, eval_seed, deterministic=False)
    video_env = make_single_env(cfg, cfg.obs, perception)
    video_path = record_episode(agent, video_env, log_dir / "episode.mp4", eval_seed, cfg.eval_deterministic,
                                perception)
    for env in (venv, eval_venv, random_venv, video_env):
        env.close()
    curve = [(int(t), float(np.mean(s))) for t, s in zip(evaluation.evaluations_timesteps,
                                                          evaluation.evaluations_successes)]
    result = RunResult(rate, random_rate, curve, agent.num_timesteps, train_seconds, log_dir,
                       Path(agent.logger.get_dir()), model_path, video_path)
    result.save(cfg, checkpoint)
    return result


def summary(cfg: AgentConfig, result: RunResult) -> str:
    """The run in one line."""
    return (f"{cfg.env_id} {cfg.obs}: success rate {result.success_rate:.2f} over {cfg.eval_episodes} episodes "
            f"(random policy {result.random_success_rate:.2f}, same episodes) after {result.steps:,} env steps in "
            f"{result.train_seconds:.0f} s | TensorBoard: {result.tensorboard_dir} | video: {result.video_path}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="agent YAML config (configs/agents/*.yml)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    ap.add_argument("--obs", choices=OBS_TYPES, default=None, help="observations (default: the config's obs)")
    ap.add_argument("--total-timesteps", type=int, default=None, help="env steps (default: the config's)")
    ap.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ap.add_argument("--log-dir", default=None, help="default runs/ppo/<config>-<obs>-s<seed>")
    ap.add_argument("--checkpoint", default=None, help="perception checkpoint (default: the bundled one)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    return ap.parse_intermixed_args(argv)  # overrides may come after the options


def main(argv: list[str] | None = None) -> RunResult:
    args = parse_args(argv)
    flags = {"obs": args.obs, "total_timesteps": args.total_timesteps, "seed": args.seed}
    overrides = args.overrides + [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = run_or_exit(load_agent_config, args.config, overrides, errors=USER_ERRORS)
    log_dir = args.log_dir or Path("runs/ppo") / f"{Path(args.config).stem}-{cfg.obs}-s{cfg.seed}"
    result = run_or_exit(train, cfg, log_dir, args.checkpoint, args.device, not args.no_progress, errors=USER_ERRORS)
    print(summary(cfg, result))
    return result


if __name__ == "__main__":
    main()
