"""PPO on slot observations (or the pixel / state baselines), with periodic evaluation, a video and a summary.

    python -m agents.ppo CONFIG [--obs slots|pixels|state] [--total-timesteps N] [--seed S] [--device auto]
                         [--log-dir DIR | --continue DIR] [--overwrite] [--checkpoint PATH] [key=value ...]

CONFIG is a YAML file in configs/agents (``key=value`` overrides its keys, e.g. ``ppo.lr=1e-4``). ``--obs slots``
runs the SlotContrast model of ``--checkpoint`` (default: the bundled checkpoint of the env) inside the env loop;
with ``pixels`` or ``state`` a ``--checkpoint`` only colours the video. Writes to the log dir (default
``runs/ppo/<config>-<obs>-s<seed>``): TensorBoard events (``tensorboard_1/``), ``evaluations.npz`` (success of
each periodic evaluation), ``model.zip`` (``PPO.load``), ``episode.mp4`` (one evaluation episode, with the
slot masks overlaid), ``run.json`` (the config and perception checkpoint, written at the start) and
``result.json`` (the run's figures and config). Ends with one line: the success rate over ``eval_episodes``
seeded episodes, a random policy's on the same episodes, and the paths.

A log dir holding a run is refused unless ``--overwrite`` (replace it) or ``--continue DIR`` (go on with it).
Ctrl-C or SIGTERM saves ``model.zip`` first; ``--continue`` then trains on to ``total_timesteps`` (a larger
``--total-timesteps`` extends a finished run). It keeps the policy, its optimiser, the step count and the
evaluation curve; the rollout in progress and the envs' episodes start afresh, so a continued run is not
identical to an uninterrupted one.
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

from oc_perception.cli import Interrupted, run_or_exit
from oc_perception.checkpoint import CheckpointError, default_checkpoint, load_model
from oc_perception.config import ConfigError, to_dict
from oc_perception.devices import resolve_device
from oc_perception.io import atomic_write
from oc_perception.rundir import RunFiles, claim_log_dir

from .config import OBS_TYPES, AgentConfig, load_agent_config
from .envs import make_single_env, make_vec_env
from .evaluation import RandomAgent, record_episode, success_rate
from .extractor import SlotSetExtractor

# Errors that stop a run with one line: bad config or checkpoint (a missing bundled checkpoint included).
USER_ERRORS = (ConfigError, CheckpointError, FileNotFoundError)
RESULT_FILE = "result.json"
RUN_FILE = "run.json"  # the config and perception checkpoint of the run in a log dir, for --continue to check
PPO_RUN = RunFiles(results=("model.zip", RESULT_FILE, "evaluations.npz", "episode.mp4"), resumable=("model.zip",),
                   logs=(RUN_FILE, "tensorboard_*"))
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
        record = {**run_record(cfg, checkpoint), "success_rate": self.success_rate,
                  "random_success_rate": self.random_success_rate, "curve": self.curve, "steps": self.steps,
                  "train_seconds": self.train_seconds, "tensorboard_dir": str(self.tensorboard_dir),
                  "model_path": str(self.model_path), "video_path": str(self.video_path)}
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
    written before the key existed then still count for slots and pixels); ``precision`` fp32 and
    ``first_frame_passes`` None are what runs without those keys used."""
    config = {k: v for k, v in config.items()
              if not (k == "precision" and v == "fp32") and not (k == "first_frame_passes" and v is None)}
    return config if config.get("obs") == "state" else {k: v for k, v in config.items() if k != "state_policy"}


def run_record(cfg: AgentConfig, checkpoint: str | Path | None) -> dict:
    """What makes a run this run: its config and perception checkpoint (as ``result.json`` records them)."""
    return {"config": to_dict(cfg), "checkpoint_sha256": perception_digest(cfg, checkpoint)}


def check_resumable(log_dir: Path, record: dict) -> None:
    """Raise unless ``log_dir`` holds a run to go on with under ``record``'s config (``total_timesteps`` may
    grow) and perception checkpoint."""
    if not (log_dir / "model.zip").is_file():
        raise FileNotFoundError(f"--continue {log_dir}: no model.zip there, so no run to go on with; start one "
                                f"with --log-dir {log_dir}")
    saved = next((json.loads((log_dir / name).read_text()) for name in (RUN_FILE, RESULT_FILE)
                  if (log_dir / name).is_file()), None)
    if saved is None:
        raise CheckpointError(f"--continue {log_dir}: neither {RUN_FILE} nor {RESULT_FILE} says which config trained "
                              "that model.zip; start a fresh run")

    def identity(config: dict) -> dict:
        return {k: v for k, v in run_identity(config).items() if k != "total_timesteps"}

    before, now = identity(saved["config"]), identity(record["config"])
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if saved.get("checkpoint_sha256") != record["checkpoint_sha256"]:
        differ.append("the perception checkpoint")
    if differ:
        raise CheckpointError(f"--continue {log_dir} was trained with another config (differs in: "
                              f"{', '.join(differ)}); pass the same config, overrides and --checkpoint")


def save_agent(agent: PPO, path: Path) -> Path:
    """``agent.save`` through the one atomic writer (an interrupt never leaves half a model.zip)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: SB3 would append ".zip" to the temporary name
            agent.save(f)

    return atomic_write(path, write)


def restore_evaluations(evaluation: EvalCallback, log_dir: Path) -> None:
    """The evaluations of the run being continued, so ``evaluations.npz`` and the curve go on from them."""
    path = log_dir / "evaluations.npz"
    if not path.is_file():
        return
    with np.load(path) as past:
        evaluation.evaluations_timesteps = list(past["timesteps"])
        evaluation.evaluations_results = [list(r) for r in past["results"]]
        evaluation.evaluations_length = [list(r) for r in past["ep_lengths"]]
        if "successes" in past:
            evaluation.evaluations_successes = [list(r) for r in past["successes"]]


def perception_digest(cfg: AgentConfig, checkpoint: str | Path | None) -> str | None:
    """SHA-256 of the perception checkpoint a run uses (the bundled one for slots without ``checkpoint``).

    By content, not path: a retrained model written over the same file is another run. None for pixels and
    states, whose runs do not read a perception model (so ``--checkpoint`` does not set them apart).
    """
    if cfg.obs != "slots":
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
          progress: bool = True, *, resume: bool = False, overwrite: bool = False) -> RunResult:
    """Train PPO as ``cfg`` says, evaluate it beside a random policy, save it and record one episode.

    Args:
        cfg: the agent config (``cfg.obs`` picks the observations).
        log_dir: where TensorBoard events, ``evaluations.npz``, ``model.zip``, ``episode.mp4`` and
            ``result.json`` go.
        checkpoint: the perception model; None = the bundled checkpoint of ``cfg.env_id`` for slots, no
            overlay in the video for pixels and state.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...: PPO and the perception model.
        progress: show a progress bar and a line per evaluation.
        resume: go on with the run in ``log_dir`` (its ``model.zip``, saved at the end or on an interrupt).
        overwrite: replace a run that ``log_dir`` holds (refused otherwise).

    Raises:
        ConfigError: ``log_dir`` holds a run and neither ``resume`` nor ``overwrite`` is given.
        Interrupted: Ctrl-C or SIGTERM, after ``model.zip`` was saved (the message names ``--continue``).
    """
    log_dir = Path(log_dir)
    device = resolve_device(device)
    uses_perception = cfg.obs == "slots" or checkpoint is not None
    perception = load_model(checkpoint, device, env_id=cfg.env_id) if uses_perception else None
    eval_seed = cfg.seed + EVAL_SEED_OFFSET
    record = run_record(cfg, checkpoint)
    with claim_log_dir(log_dir, resuming=resume, overwrite=overwrite, files=PPO_RUN):
        model_path = log_dir / "model.zip"
        if resume:
            check_resumable(log_dir, record)
        else:
            atomic_write(log_dir / RUN_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
        venv = make_vec_env(cfg, cfg.obs, cfg.n_envs, perception)
        eval_venv = make_vec_env(cfg, cfg.obs, cfg.n_envs, perception)
        eval_venv.seed(eval_seed)
        if resume:
            agent = PPO.load(model_path, env=venv, device=device, tensorboard_log=str(log_dir))
            agent.set_random_seed(cfg.seed + agent.num_timesteps)  # fresh episodes, not a replay of the first ones
        else:
            agent = build_agent(cfg, venv, log_dir, device)
        evaluation = EvalCallback(eval_venv, n_eval_episodes=cfg.eval_episodes,
                                  eval_freq=max(1, cfg.eval_freq // cfg.n_envs), log_path=str(log_dir),
                                  deterministic=cfg.eval_deterministic, verbose=0,
                                  callback_after_eval=EvalReport() if progress else None)
        if resume:
            restore_evaluations(evaluation, log_dir)
        start = time.perf_counter()
        try:
            agent.learn(max(0, cfg.total_timesteps - agent.num_timesteps),
                        callback=[ProgressBar(), evaluation] if progress else evaluation, tb_log_name="tensorboard",
                        reset_num_timesteps=not resume)
        except KeyboardInterrupt:
            save_agent(agent, model_path)
            raise Interrupted(f"stopped at {agent.num_timesteps:,} of {cfg.total_timesteps:,} env steps; saved the "
                              f"policy and its optimiser in {model_path}: go on with --continue {log_dir} (the rollout "
                              "in progress and the episodes start afresh there)") from None
        train_seconds = time.perf_counter() - start
        save_agent(agent, model_path)

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
    ap.add_argument("--continue", dest="resume", default=None, metavar="LOG_DIR",
                    help="go on with the run in this log dir (its model.zip) up to --total-timesteps")
    ap.add_argument("--overwrite", action="store_true", help="replace the run in the log dir instead of refusing")
    ap.add_argument("--checkpoint", default=None, help="perception checkpoint (default: the bundled one)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    return ap.parse_intermixed_args(argv)  # overrides may come after the options


def main(argv: list[str] | None = None) -> RunResult:
    args = parse_args(argv)
    flags = {"obs": args.obs, "total_timesteps": args.total_timesteps, "seed": args.seed}
    overrides = args.overrides + [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = run_or_exit(load_agent_config, args.config, overrides, errors=USER_ERRORS)
    log_dir = args.resume or args.log_dir or Path("runs/ppo") / f"{Path(args.config).stem}-{cfg.obs}-s{cfg.seed}"

    def run() -> RunResult:
        if args.resume and args.log_dir and Path(args.resume).resolve() != Path(args.log_dir).resolve():
            raise ConfigError("--continue takes the log dir of the run to go on with; leave out --log-dir")
        return train(cfg, log_dir, args.checkpoint, args.device, not args.no_progress,
                     resume=args.resume is not None, overwrite=args.overwrite)

    result = run_or_exit(run, errors=USER_ERRORS)
    print(summary(cfg, result))
    return result


if __name__ == "__main__":
    main()
