"""PPO on slots vs pixels vs ground-truth state: success rate and wall time at the same env-step budget.

    python benchmarks/rl_compare.py [--configs configs/agents/oddoneout_slots.yml configs/agents/push_slots.yml]
        [--obs slots pixels state] [--seeds 0 1 2] [--total-timesteps N] [--checkpoint PATH] [--device auto]
        [--out runs/rl_compare] [--reuse | --table-only] [--test-env-kwargs '{colors: [purple, cyan]}']
        [key=value ...]

Every (config, observation type, seed) is one ``agents.ppo.train`` run with the config's hyperparameters, so the
three observation types share the budget (``--total-timesteps``, default the config's) and the evaluation episodes
(``eval_episodes`` episodes seeded from the run's seed, the same for every observation type). ``key=value``
overrides apply to every config (e.g. ``eval_freq=10000``). ``--checkpoint`` is the perception model of the slot
runs (default: the bundled one) and colours the baselines' videos too.

Prints a markdown table (success rate mean and std over seeds, a random policy's on the same episodes, wall time
of training per run, periodic evaluations included) and writes it to ``OUT/results.md``, with the learning curves
(success rate of the periodic evaluations, mean and std over seeds) in ``OUT/learning_curves.png``. Each run's log
dir is ``OUT/<config>/<obs>-s<seed>``; with ``--reuse`` a run whose log dir holds the ``result.json`` of the same
config and perception checkpoint (by content) is read instead of trained again, so an interrupted comparison goes
on where it stopped and runs started apart (one process per core) are tabled together. ``--table-only`` reads
them the same way but trains nothing: the runs not (yet) in OUT are left out of the table, say with fewer seeds
for one observation type than for another.

``--test-env-kwargs`` (YAML mappings of env constructor arguments, each a held-out scene distribution, e.g.
colours never seen in training or more objects) evaluates every trained agent again, on the same number of
seeded episodes, in envs made with the config's ``env_kwargs`` updated by each mapping: one more success-rate
column per mapping (the random policy is evaluated there too), and ``OUT/held_out.png``: a bar per observation
type and scene (training scenes first), mean and std over seeds, the random policy's rate as a grey tick.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

# `python benchmarks/X.py` puts benchmarks/ first on the path; envs/ and agents/ live beside it (the wheel
# installs them as oc_perception_envs / oc_perception_agents, so an editable install does not provide them).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import OBS_TYPES, AgentConfig, check_env_kwargs, load_agent_config  # noqa: E402
from agents.ppo import USER_ERRORS, RunResult, train  # noqa: E402
from oc_perception.config import CONFIG_DIR  # noqa: E402
from oc_perception.cli import yaml_mapping  # noqa: E402

DEFAULT_CONFIGS = [CONFIG_DIR / "agents" / "oddoneout_slots.yml", CONFIG_DIR / "agents" / "push_slots.yml"]
Runs = dict[tuple[str, str], list[RunResult]]  # (env id, obs) -> one result per seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides for every config")
    ap.add_argument("--configs", nargs="+", type=Path, default=DEFAULT_CONFIGS, help="agent configs, one per env")
    ap.add_argument("--obs", nargs="+", choices=OBS_TYPES, default=list(OBS_TYPES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--total-timesteps", type=int, default=None, help="env steps per run (default: the config's)")
    ap.add_argument("--checkpoint", default=None, help="perception checkpoint (default: the bundled one)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("runs/rl_compare"))
    ap.add_argument("--reuse", action="store_true", help="read finished runs of the same config from OUT")
    ap.add_argument("--table-only", action="store_true",
                    help="like --reuse, but train nothing: table the finished runs in OUT, leave out the others")
    ap.add_argument("--test-env-kwargs", action="append", type=yaml_mapping, default=[],
                    help="a held-out scene distribution, a YAML mapping of env arguments such as "
                         "'{num_objects: 6}' (repeat the option for several)")
    return ap.parse_intermixed_args(argv)


def held_out_rates(cfg: AgentConfig, result: RunResult, scenes: list[dict], checkpoint: str | None,
                   device: str) -> list[tuple[float, float]]:
    """(agent, random policy) success rates of a trained run in each held-out scene distribution; NaN for the
    agent where the scene changes its observation space (the state rows grow with ``num_objects``)."""
    from stable_baselines3 import PPO

    from agents.envs import make_vec_env
    from agents.evaluation import RandomAgent, success_rate
    from agents.ppo import EVAL_SEED_OFFSET
    from oc_perception.checkpoint import load_model

    agent = PPO.load(result.model_path, device="cpu")
    perception = load_model(checkpoint, "cpu", env_id=cfg.env_id) if cfg.obs == "slots" else None
    seed = cfg.seed + EVAL_SEED_OFFSET
    rates = []
    for scene in scenes:
        scene_cfg = dataclasses.replace(cfg, env_kwargs={**cfg.env_kwargs, **scene})
        check_env_kwargs(cfg.env_id, scene_cfg.env_kwargs, "--test-env-kwargs")
        venv = make_vec_env(scene_cfg, cfg.obs, cfg.n_envs, perception)
        rate = (success_rate(agent, venv, cfg.eval_episodes, seed, cfg.eval_deterministic)
                if venv.observation_space == agent.observation_space else float("nan"))
        random_rate = success_rate(RandomAgent(venv.action_space, cfg.n_envs, seed), venv, cfg.eval_episodes, seed,
                                   deterministic=False)
        venv.close()
        rates.append((rate, random_rate))
    return rates


def run_all(args: argparse.Namespace) -> tuple[Runs, dict[str, AgentConfig]]:
    """Train every (config, obs, seed) in turn; returns the results and the config of each env."""
    runs: Runs = defaultdict(list)
    configs: dict[str, AgentConfig] = {}
    budget = [] if args.total_timesteps is None else [f"total_timesteps={args.total_timesteps}"]
    for path in args.configs:
        for obs in args.obs:
            for seed in args.seeds:
                cfg = load_agent_config(path, [*args.overrides, *budget, f"obs={obs}", f"seed={seed}"])
                configs[cfg.env_id] = cfg
                log_dir = args.out / path.stem / f"{obs}-s{seed}"
                result = RunResult.load(log_dir, cfg, args.checkpoint) if args.reuse or args.table_only else None
                how = "read from its result.json" if result else "trained"
                if result is None and args.table_only:
                    print(f"{cfg.env_id} {obs} seed {seed}: left out (no finished run of this config in {log_dir})")
                    continue
                if result is None:
                    # (a run of another config, or any run without --reuse, is trained again in its place)
                    result = train(cfg, log_dir, args.checkpoint, args.device, progress=False, overwrite=True)
                result.held_out = held_out_rates(cfg, result, args.test_env_kwargs, args.checkpoint, args.device)
                runs[cfg.env_id, obs].append(result)
                print(f"{cfg.env_id} {obs} seed {seed}: success rate {result.success_rate:.2f} (random "
                      f"{result.random_success_rate:.2f}) in {result.train_seconds:.0f} s ({how})", flush=True)
    return runs, configs


def scene_label(scene: dict) -> str:
    """A held-out scene's env kwargs as one line of YAML, e.g. ``{colors: [orange, purple]}``."""
    return yaml.safe_dump(scene, default_flow_style=True).strip()


def table(runs: Runs, configs: dict[str, AgentConfig], scenes: list[dict] | None = None) -> str:
    """Markdown: one row per (env, obs); a column per held-out scene distribution (agent / random policy)."""
    scenes = scenes or []
    extra = "".join(f" held-out {scene_label(s)} |" for s in scenes)
    lines = ["| env | obs | env steps | seeds | success rate | random policy | train wall time per run (s) |" + extra,
             "|---|---|---:|---:|---|---|---:|" + "---|" * len(scenes)]
    for (env_id, obs), results in runs.items():
        rate = np.array([r.success_rate for r in results])
        random_rate = np.array([r.random_success_rate for r in results])
        seconds = np.mean([r.train_seconds for r in results])
        lines.append(f"| {env_id} | {obs} | {configs[env_id].total_timesteps:,} | {len(results)} | "
                     f"{rate.mean():.2f} ± {rate.std():.2f} | {random_rate.mean():.2f} ± {random_rate.std():.2f} | "
                     f"{seconds:.0f} |" + "".join(held_out_cell(results, i) for i in range(len(scenes))))
    return "\n".join(lines)


def held_out_cell(results: list[RunResult], i: int) -> str:
    agent = np.array([r.held_out[i][0] for r in results])
    random_rate = np.array([r.held_out[i][1] for r in results])
    if np.isnan(agent).any():
        return f" n/a: other observation shape (random {random_rate.mean():.2f}) |"
    return f" {agent.mean():.2f} ± {agent.std():.2f} (random {random_rate.mean():.2f}) |"


def plot_curves(runs: Runs, path: Path) -> Path:
    """One panel per env: success rate of the periodic evaluations against env steps, mean ± std over seeds."""
    env_ids = list(dict.fromkeys(env_id for env_id, _ in runs))
    fig, axes = plt.subplots(1, len(env_ids), figsize=(5 * len(env_ids), 3.6), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        for (run_env, obs), results in runs.items():
            if run_env != env_id or not results[0].curve:
                continue
            n = min(len(r.curve) for r in results)  # seeds stop at the same budget; guard against a short one
            steps = np.array([t for t, _ in results[0].curve[:n]])
            rates = np.array([[rate for _, rate in r.curve[:n]] for r in results])
            ax.plot(steps, rates.mean(0), marker="o", label=obs)
            ax.fill_between(steps, rates.mean(0) - rates.std(0), rates.mean(0) + rates.std(0), alpha=0.2)
        random_rate = np.mean([r.random_success_rate for (e, _), rs in runs.items() if e == env_id for r in rs])
        ax.axhline(random_rate, color="grey", linestyle="--", label="random policy")
        ax.set(title=env_id, xlabel="env steps", ylabel="success rate", ylim=(-0.02, 1.02))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))  # 100k, not 100000
        ax.legend()
    return save_figure(fig, path)


def plot_held_out(runs: Runs, scenes: list[dict], path: Path) -> Path:
    """One panel per env: success rate per observation type on the training scenes and on each held-out one."""
    env_ids = list(dict.fromkeys(env_id for env_id, _ in runs))
    labels = ["training scenes", *(textwrap.fill(scene_label(s), 24) for s in scenes)]
    fig, axes = plt.subplots(len(env_ids), 1, figsize=(max(6.0, 2.2 * len(labels)), 3.8 * len(env_ids)),
                             squeeze=False)
    for ax, env_id in zip(axes[:, 0], env_ids):
        types = [obs for e, obs in runs if e == env_id]
        width = 0.8 / len(types)
        for j, obs in enumerate(types):
            results = runs[env_id, obs]
            # rates: [seeds, 1 + scenes]; the random policy's the same way
            rates = np.array([[r.success_rate] + [h[0] for h in r.held_out] for r in results])
            random_rates = np.array([[r.random_success_rate] + [h[1] for h in r.held_out] for r in results])
            x = np.arange(len(labels)) + (j - (len(types) - 1) / 2) * width
            ax.bar(x, rates.mean(0), width, yerr=rates.std(0), capsize=3, label=f"{obs} ({len(results)} seeds)")
            ax.scatter(x, random_rates.mean(0), marker="_", s=200, color="grey", zorder=3,
                       label="random policy" if j == 0 else None)
        ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
        ax.set(title=env_id, ylabel="success rate", ylim=(0, 1.05))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_figure(fig, path)


def save_figure(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        runs, configs = run_all(args)
    except USER_ERRORS as e:
        sys.exit(f"error: {e}")
    if not runs:
        sys.exit(f"error: no finished run of these configs in {args.out}: train them without --table-only")
    text = table(runs, configs, args.test_env_kwargs)
    print(text)
    (args.out / "results.md").write_text(text + "\n")
    print(f"learning curves: {plot_curves(runs, args.out / 'learning_curves.png')}")
    if args.test_env_kwargs:
        print(f"held-out scenes: {plot_held_out(runs, args.test_env_kwargs, args.out / 'held_out.png')}")


if __name__ == "__main__":
    main()
