"""The training loop around PPO: rollouts, updates, TensorBoard, checkpoints, resume, a progress bar.

Env-agnostic: it needs a batched env with reset()/step() returning privileged observations in info
(DESIGN.md's contract) and, optionally, an evaluation callback that says when to stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from robotrl.algos.checkpoints import latest_checkpoint, write_checkpoint
from robotrl.algos.ppo import PPO

log = logging.getLogger(__name__)


class VecEnv(Protocol):
    num_envs: int

    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]: ...

    def privileged_observation(self) -> torch.Tensor: ...


EvalFn = Callable[[PPO], dict[str, float]]
"""Scores the current policy; a truthy 'criterion_met' in the result stops training."""


@dataclass
class RunnerConfig:
    max_iterations: int = 500
    checkpoint_every: int = 50
    """Iterations between checkpoints (the last iteration always writes one)."""
    eval_every: int = 10
    """Iterations between evaluation callbacks (0: never)."""
    stop_at_criterion: bool = True
    """Stop as soon as the evaluation reports criterion_met."""


class OnPolicyRunner:
    def __init__(
        self,
        env: VecEnv,
        ppo: PPO,
        run_dir: Path,
        config: RunnerConfig,
        evaluate: EvalFn | None = None,
        progress: bool = True,
    ):
        self.env = env
        self.ppo = ppo
        self.run_dir = Path(run_dir)
        self.config = config
        self.evaluate = evaluate
        self.progress = progress
        self.iteration = 0
        self.env_steps = 0
        self.wall_s = 0.0
        self.history: list[dict[str, float]] = []

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self) -> Path:
        state = {
            "ppo": self.ppo.state_dict(),
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "wall_s": self.wall_s,
            "history": self.history,
        }
        if hasattr(self.env, "state_dict"):
            state["env"] = self.env.state_dict()  # e.g. curriculum levels
        return write_checkpoint(self.checkpoint_dir, f"iter_{self.iteration:06d}.pt", state)

    def load(self, path: Path) -> None:
        state = torch.load(path, weights_only=False)
        self.ppo.load_state_dict(state["ppo"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])
        if "env" in state and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(state["env"])

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoint_dir)

    def summary(self, last_eval: dict[str, float], session_start_s: float) -> dict[str, Any]:
        """What a recipe's summary.json records of a finished learn(): budget used, the last evaluation."""
        return {
            "iterations": self.iteration,
            "env_steps": self.env_steps,
            "train_wall_s": self.wall_s,
            "this_session_wall_s": time.perf_counter() - session_start_s,
            "criterion_met": bool(last_eval.get("criterion_met")),
            "eval": last_eval,
            "checkpoint": str(self.latest_checkpoint()),
        }

    def learn(self) -> dict[str, float]:
        """Train until max_iterations or the criterion; returns the last evaluation (or {})."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.config
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.iteration or None)
        obs = self.env.reset()
        privileged = self.env.privileged_observation()
        last_eval: dict[str, float] = {}
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task("train", total=cfg.max_iterations, completed=self.iteration, status="")
            while self.iteration < cfg.max_iterations:
                obs, privileged, metrics = self.iterate(obs, privileged)
                fresh_eval: dict[str, float] = {}
                if self.evaluate is not None and cfg.eval_every and self.iteration % cfg.eval_every == 0:
                    eval_start = time.perf_counter()
                    fresh_eval = last_eval = self.evaluate(self.ppo)
                    self.wall_s += time.perf_counter() - eval_start
                    metrics.update({f"eval/{k}": v for k, v in fresh_eval.items()})
                metrics["perf/wall_s"] = self.wall_s
                metrics["perf/env_steps"] = float(self.env_steps)
                for key, value in metrics.items():
                    writer.add_scalar(key, value, self.iteration)
                self.history.append({"iteration": float(self.iteration), **metrics})
                status = f"reward {metrics['reward/step_mean']:+.3f}"
                if last_eval:
                    status += f"  eval success {last_eval.get('success_rate', float('nan')):.2f}"
                    status += f" rmse {last_eval.get('position_rmse_m', float('nan')):.3f} m"
                bar.update(task, completed=self.iteration, status=status)
                met = bool(fresh_eval.get("criterion_met")) and cfg.stop_at_criterion
                if met or self.iteration % cfg.checkpoint_every == 0 or self.iteration >= cfg.max_iterations:
                    self.save()
                if met:
                    log.info("criterion met at iteration %d after %.1f s", self.iteration, self.wall_s)
                    break
        writer.close()
        return last_eval

    def iterate(
        self, obs: torch.Tensor, privileged: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """One rollout and one PPO update from (obs, privileged); returns where the envs are and metrics."""
        start = time.perf_counter()
        reward_sum = 0.0
        episode_stats: dict[str, list[float]] = {}
        for _ in range(self.ppo.config.num_steps):
            actions = self.ppo.act(obs, privileged)
            obs, reward, terminated, truncated, info = self.env.step(actions)
            privileged = info["privileged_obs"]
            self.ppo.process_env_step(reward, terminated, truncated, info.get("final_privileged_obs"))
            reward_sum += reward.mean().item()
            for key, value in info.get("episode", {}).items():
                episode_stats.setdefault(key, []).append(value)
        self.ppo.compute_returns(privileged)
        metrics = self.ppo.update()
        self.iteration += 1
        self.env_steps += self.ppo.config.num_steps * self.env.num_envs
        elapsed = time.perf_counter() - start
        self.wall_s += elapsed
        metrics["reward/step_mean"] = reward_sum / self.ppo.config.num_steps
        metrics["perf/env_steps_per_s"] = self.ppo.config.num_steps * self.env.num_envs / elapsed
        for key, values in episode_stats.items():
            metrics[f"episode/{key}"] = sum(values) / len(values)
        return obs, privileged, metrics
