"""The training loop around SAC: collect, store, update, TensorBoard, checkpoints, resume, a progress bar.

Env-agnostic: a batched env with reset()/step() and automatic resets (info["final_obs"] holds the last
observation of the envs that finished). The budget counts real env steps: an env that executes action
chunks reports how many it ran in info["steps"]. DSRL-NA's critic learns on info["executed_actions"].
A checkpoint holds the replay buffer, so only the latest one is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robotrl.algos.checkpoints import latest_checkpoint, write_checkpoint
from robotrl.algos.on_policy_runner import VecEnv
from robotrl.algos.sac import SAC

log = logging.getLogger(__name__)

EvalFn = Callable[[SAC], dict[str, float]]
"""Scores the current policy; a truthy 'criterion_met' in the result stops training."""


@dataclass
class OffPolicyRunnerConfig:
    total_env_steps: int = 1_000_000
    """Budget in real env steps (an executed chunk of k actions counts k per env)."""
    checkpoint_every: int = 100_000
    """Env steps between checkpoints (the end of training always writes one)."""
    eval_every: int = 0
    """Env steps between evaluation callbacks (0: never)."""
    log_every: int = 1_000
    """Env steps between TensorBoard points (and history entries)."""
    stop_at_criterion: bool = True
    """Stop as soon as the evaluation reports criterion_met."""

    def __post_init__(self) -> None:
        if self.total_env_steps < 1 or self.checkpoint_every < 1 or self.log_every < 1 or self.eval_every < 0:
            raise ValueError(
                "need total_env_steps, checkpoint_every, log_every >= 1 and eval_every >= 0, got "
                f"{self.total_env_steps}, {self.checkpoint_every}, {self.log_every}, {self.eval_every}"
            )


def crossed(before: int, after: int, every: int) -> bool:
    """Whether a multiple of `every` lies in (before, after]."""
    return after // every > before // every


class EpisodeTracker:
    """Per-env running return, length and success; the episodes that finished since the last drain."""

    def __init__(self, num_envs: int):
        self.returns = torch.zeros(num_envs)
        self.lengths = torch.zeros(num_envs)
        self.success = torch.zeros(num_envs, dtype=torch.bool)
        self.finished: dict[str, list[float]] = {"return": [], "length": [], "success_rate": []}

    def record(
        self, reward: torch.Tensor, steps: torch.Tensor, success: torch.Tensor, done: torch.Tensor
    ) -> None:
        self.returns += reward
        self.lengths += steps
        self.success |= success
        running = {"return": self.returns, "length": self.lengths, "success_rate": self.success}
        for key, values in running.items():
            self.finished[key] += values[done].float().tolist()
        self.returns[done] = 0.0
        self.lengths[done] = 0.0
        self.success[done] = False

    def drain(self) -> dict[str, float]:
        out = {f"episode/{k}": sum(v) / len(v) for k, v in self.finished.items() if v}
        if self.finished["return"]:
            out["episode/count"] = float(len(self.finished["return"]))
        self.finished = {k: [] for k in self.finished}
        return out


class OffPolicyRunner:
    def __init__(
        self,
        env: VecEnv,
        sac: SAC,
        run_dir: Path,
        config: OffPolicyRunnerConfig,
        evaluate: EvalFn | None = None,
        progress: bool = True,
    ):
        self.env = env
        self.sac = sac
        self.run_dir = Path(run_dir)
        self.config = config
        self.evaluate = evaluate
        self.progress = progress
        self.env_steps = 0
        self.wall_s = 0.0
        self.history: list[dict[str, float]] = []
        self.episodes = EpisodeTracker(env.num_envs)
        self._losses: dict[str, list[float]] = {}

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save(self) -> Path:
        """The latest checkpoint only: each holds the replay buffer."""
        state = {
            "sac": self.sac.state_dict(),
            "env_steps": self.env_steps,
            "wall_s": self.wall_s,
            "history": self.history,
        }
        name = f"steps_{self.env_steps:010d}.pt"
        return write_checkpoint(self.checkpoint_dir, name, state, keep_previous=False)

    def load(self, path: Path) -> None:
        state = torch.load(path, weights_only=False)
        self.sac.load_state_dict(state["sac"])
        self.env_steps = int(state["env_steps"])
        self.wall_s = float(state["wall_s"])
        self.history = list(state["history"])

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.checkpoint_dir)

    def learn(self) -> dict[str, float]:
        """Train until total_env_steps or the criterion; returns the last evaluation (or {})."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.config
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.env_steps or None)
        obs = self.env.reset()
        last_eval: dict[str, float] = {}
        window_start, window_steps = time.perf_counter(), 0
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, disable=not self.progress, transient=False) as bar:
            task = bar.add_task("train", total=cfg.total_env_steps, completed=self.env_steps, status="")
            while self.env_steps < cfg.total_env_steps:
                before = self.env_steps
                start = time.perf_counter()
                obs = self.collect(obs)
                self.wall_s += time.perf_counter() - start
                window_steps += self.env_steps - before
                done = self.env_steps >= cfg.total_env_steps
                fresh_eval: dict[str, float] = {}
                eval_due = cfg.eval_every and (crossed(before, self.env_steps, cfg.eval_every) or done)
                if self.evaluate is not None and eval_due:
                    eval_start = time.perf_counter()
                    fresh_eval = last_eval = self.evaluate(self.sac)
                    self.wall_s += time.perf_counter() - eval_start
                met = bool(fresh_eval.get("criterion_met")) and cfg.stop_at_criterion
                if crossed(before, self.env_steps, cfg.log_every) or fresh_eval or done or met:
                    now = time.perf_counter()
                    metrics = self._window_metrics(window_steps / max(now - window_start, 1e-9))
                    metrics.update({f"eval/{k}": float(v) for k, v in fresh_eval.items()})
                    window_start, window_steps = now, 0
                    for key, value in metrics.items():
                        writer.add_scalar(key, value, self.env_steps)
                    self.history.append({"env_steps": float(self.env_steps), **metrics})
                    bar.update(task, status=self._status(metrics, last_eval))
                bar.update(task, completed=min(self.env_steps, cfg.total_env_steps))
                if met or done or crossed(before, self.env_steps, cfg.checkpoint_every):
                    self.save()
                if met:
                    log.info("criterion met at %d env steps after %.1f s", self.env_steps, self.wall_s)
                    break
        writer.close()
        return last_eval

    def collect(self, obs: torch.Tensor) -> torch.Tensor:
        """One vector step: act, store every env's transition, run the updates it earned."""
        actions = self.sac.explore(obs)
        next_obs, reward, terminated, truncated, info = self.env.step(actions)
        finished = terminated | truncated
        # A finished env's next_obs is already its new episode's first one: learn from the real last one.
        last_obs = next_obs
        if finished.any():
            last_obs = torch.where(finished.unsqueeze(-1), info["final_obs"], next_obs)
        critic_action = info["executed_actions"] if self.sac.config.noise_aliasing else actions
        self.sac.store(obs, critic_action, reward, last_obs, terminated)
        for key, value in self.sac.update().items():
            self._losses.setdefault(key, []).append(value)
        steps = info.get("steps", torch.ones(self.env.num_envs, dtype=torch.long))
        success = info.get("success", torch.zeros(self.env.num_envs, dtype=torch.bool))
        self.episodes.record(reward.float().cpu(), steps.float().cpu(), success.bool().cpu(), finished.cpu())
        self.env_steps += int(steps.sum())
        return next_obs

    def _window_metrics(self, env_steps_per_s: float) -> dict[str, float]:
        metrics = {k: sum(v) / len(v) for k, v in self._losses.items()}
        self._losses = {}
        metrics.update(self.episodes.drain())
        metrics["perf/env_steps"] = float(self.env_steps)
        metrics["perf/env_steps_per_s"] = env_steps_per_s
        metrics["perf/wall_s"] = self.wall_s
        metrics["perf/updates"] = float(self.sac.updates)
        return metrics

    @staticmethod
    def _status(metrics: dict[str, Any], last_eval: dict[str, float]) -> str:
        parts = []
        if "episode/return" in metrics:
            parts.append(f"return {metrics['episode/return']:+.2f}")
            parts.append(f"success {metrics['episode/success_rate']:.2f}")
        if "train/alpha" in metrics:
            parts.append(f"alpha {metrics['train/alpha']:.3g}")
        if last_eval:
            parts.append(f"eval success {last_eval.get('success_rate', float('nan')):.2f}")
        return "  ".join(parts)
