"""Demonstrations from Meta-World's scripted experts, made imperfect on purpose, as human demos are.

The executed action is the expert's plus Gaussian noise, and now and then a burst of random actions
pushes the arm off its path (a perturbation); the recorded label is always the expert's clean action,
so the data shows how to recover from states the expert alone never visits. Few demonstrations give a
behaviour-cloned policy that is good but clearly improvable, which is what ResiP and DSRL start from.

A dataset is one .npz: per-step obs, labels and executed actions, episode_ends (exclusive end index of
each episode, as the Diffusion Policy datasets store them), and per-episode success and seed, with the
collection settings in a JSON string under "meta".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.envs.manipulation.metaworld_env import MetaWorldConfig, MetaWorldVecEnv


@dataclass
class DemoConfig:
    task: str = "assembly-v3"
    episodes: int = 50
    noise_std: float = 0.1
    """Std of the Gaussian noise added to every executed expert action."""
    perturb_probability: float = 0.3
    """Chance that an episode gets one burst of random actions."""
    perturb_steps: int = 10
    keep: str = "successes"
    """'successes': keep successful episodes only (until `episodes` are kept); 'all': keep every one."""
    num_envs: int = 8
    workers: int = 2
    max_episode_steps: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.keep not in ("successes", "all"):
            raise ValueError(f"keep must be 'successes' or 'all', got {self.keep!r}")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")


@dataclass
class DemoDataset:
    obs: np.ndarray
    """[T, 39]"""
    actions: np.ndarray
    """[T, 4] the expert's clean actions: the labels."""
    executed: np.ndarray
    """[T, 4] what the arm did (labels + noise or a perturbation)."""
    episode_ends: np.ndarray
    """[E] exclusive end index of each episode in the step arrays."""
    success: np.ndarray
    meta: dict[str, Any]

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ends)

    def episode(self, e: int) -> slice:
        start = 0 if e == 0 else int(self.episode_ends[e - 1])
        return slice(start, int(self.episode_ends[e]))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            obs=self.obs,
            actions=self.actions,
            executed=self.executed,
            episode_ends=self.episode_ends,
            success=self.success,
            meta=json.dumps(self.meta),
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DemoDataset:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: record one with `robotrl demos collect`")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {k: data[k] for k in ("obs", "actions", "executed", "episode_ends", "success")}
                meta = json.loads(str(data["meta"]))
        except (KeyError, ValueError, OSError) as error:
            raise ValueError(f"{path} is not a robotrl demo dataset ({error}); record it again") from error
        dataset = cls(**fields, meta=meta)
        if dataset.obs.shape[0] != dataset.actions.shape[0] or (
            dataset.num_episodes and int(dataset.episode_ends[-1]) != dataset.obs.shape[0]
        ):
            raise ValueError(f"{path} is inconsistent: steps and episode ends disagree; record it again")
        return dataset


def _experts(task: str, n: int) -> list[Any]:
    from metaworld.policies import ENV_POLICY_MAP

    return [ENV_POLICY_MAP[task]() for _ in range(n)]


def collect_demos(config: DemoConfig, progress: bool = True) -> DemoDataset:
    """Fly the experts with noise and perturbations until `episodes` episodes are kept."""
    from rich.progress import Progress

    rng = np.random.default_rng(config.seed)
    env_config = MetaWorldConfig(
        config.task, config.num_envs, config.workers, config.max_episode_steps, config.seed
    )
    n = config.num_envs
    experts = _experts(config.task, n)
    kept: list[dict[str, np.ndarray]] = []
    flown = successes = 0
    # Every env draws its episodes from its own seeded stream, so config.seed reproduces the dataset.
    with MetaWorldVecEnv(env_config) as env, Progress(disable=not progress) as bar:
        task = bar.add_task(f"demos {config.task}", total=config.episodes)
        obs = env.reset(seed=config.seed).numpy()
        record: list[dict[str, list[np.ndarray]]] = [_empty() for _ in range(n)]
        perturb_at = _perturbation_starts(rng, config, n)
        step_in_episode = np.zeros(n, dtype=int)
        while len(kept) < config.episodes:
            labels = np.stack([np.clip(experts[i].get_action(obs[i]), -1.0, 1.0) for i in range(n)])
            executed = labels + config.noise_std * rng.standard_normal(labels.shape)
            burst = (step_in_episode >= perturb_at) & (step_in_episode < perturb_at + config.perturb_steps)
            executed[burst] = rng.uniform(-1.0, 1.0, size=(int(burst.sum()), 4))
            executed = np.clip(executed, -1.0, 1.0)
            for i in range(n):
                record[i]["obs"].append(obs[i].astype(np.float32))
                record[i]["actions"].append(labels[i].astype(np.float32))
                record[i]["executed"].append(executed[i].astype(np.float32))
            next_obs, _, terminated, truncated, info = env.step(torch.from_numpy(executed).float())
            next_obs = next_obs.numpy()
            step_in_episode += 1
            for i in (terminated | truncated).nonzero().squeeze(-1).tolist():
                flown += 1
                success = bool(info["success"][i])
                successes += success
                if (success or config.keep == "all") and len(kept) < config.episodes:
                    episode = {k: np.stack(v) for k, v in record[i].items()}
                    episode["success"] = np.array(success)
                    kept.append(episode)
                    bar.update(task, completed=len(kept))
                record[i] = _empty()
                step_in_episode[i] = 0
                perturb_at[i] = _perturbation_starts(rng, config, 1)[0]
            obs = next_obs
    return DemoDataset(
        obs=np.concatenate([e["obs"] for e in kept]),
        actions=np.concatenate([e["actions"] for e in kept]),
        executed=np.concatenate([e["executed"] for e in kept]),
        episode_ends=np.cumsum([len(e["obs"]) for e in kept]),
        success=np.array([bool(e["success"]) for e in kept]),
        meta={**asdict(config), "episodes_flown": flown, "expert_success_rate": successes / max(flown, 1)},
    )


def _empty() -> dict[str, list[np.ndarray]]:
    return {"obs": [], "actions": [], "executed": []}


def _perturbation_starts(rng: np.random.Generator, config: DemoConfig, n: int) -> np.ndarray:
    """The step where each episode's burst starts; past the time limit (never) for episodes without one."""
    start = rng.integers(5, max(6, config.max_episode_steps // 2), size=n)
    return np.where(rng.random(n) < config.perturb_probability, start, config.max_episode_steps + 1)
