"""Behaviour cloning of a diffusion policy: DDPM training on action chunks, EMA weights, resumable.

Env-agnostic: it sees arrays of observations and expert actions split into episodes. Each step t of an
episode gives one sample, the observation at t and the chunk of labels t..t+H-1, padded at the episode's
end by repeating its last action (as Diffusion Policy does).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.policies.diffusion import DiffusionConfig, DiffusionPolicy, noise_scheduler


@dataclass
class BCConfig:
    iterations: int = 20_000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-6
    warmup_iterations: int = 500
    """Linear warm-up, then cosine decay to 0."""
    ema_decay: float = 0.995
    checkpoint_every: int = 2_000
    log_every: int = 100
    max_grad_norm: float = 1.0


def chunk_dataset(
    obs: np.ndarray, actions: np.ndarray, episode_ends: np.ndarray, horizon: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(obs [S, O], chunks [S, H, A]) for every step of every episode."""
    starts = np.concatenate(([0], episode_ends[:-1]))
    index = []
    for start, end in zip(starts, episode_ends, strict=True):
        t = np.arange(start, end)
        index.append(np.minimum(t[:, None] + np.arange(horizon)[None, :], end - 1))
    idx = np.concatenate(index)
    return torch.from_numpy(obs.astype(np.float32)), torch.from_numpy(actions[idx].astype(np.float32))


def fit_normalization(policy: DiffusionPolicy, obs: torch.Tensor, actions: torch.Tensor) -> None:
    """Observation mean/std and the per-dimension action range, from the data, frozen afterwards."""
    policy.obs_normalizer.update(obs)
    flat = actions.reshape(-1, actions.shape[-1])
    low, high = flat.min(0).values, flat.max(0).values
    # A dimension the expert never moves would divide by zero: give it a small range.
    width = (high - low).clamp_min(1e-2)
    centre = 0.5 * (high + low)
    policy.action_low.copy_(centre - 0.5 * width)
    policy.action_high.copy_(centre + 0.5 * width)


class DiffusionBC:
    """DDPM training of `policy` with an EMA copy; the EMA copy is the policy that is used."""

    def __init__(self, policy: DiffusionPolicy, config: BCConfig, seed: int = 0):
        self.policy = policy
        self.ema = copy.deepcopy(policy).eval().requires_grad_(False)
        self.config = config
        self.scheduler = noise_scheduler(policy.config.train_timesteps)
        self.optimizer = torch.optim.AdamW(
            policy.denoiser.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.iteration = 0
        self.history: list[dict[str, float]] = []
        self.wall_s = 0.0

    def _lr(self) -> float:
        cfg, i = self.config, self.iteration
        if i < cfg.warmup_iterations:
            return cfg.learning_rate * (i + 1) / cfg.warmup_iterations
        progress = (i - cfg.warmup_iterations) / max(1, cfg.iterations - cfg.warmup_iterations)
        return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def loss(self, obs: torch.Tensor, chunks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Epsilon-prediction MSE at random timesteps."""
        p = self.policy
        x0 = p.normalize_actions(chunks).flatten(1)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, p.config.train_timesteps, (x0.shape[0],), generator=generator)
        noisy = self.scheduler.add_noise(x0, noise, t)
        eps = p.denoiser(noisy, p.obs_normalizer(obs), t)
        return torch.nn.functional.mse_loss(eps, noise)

    def step(self, obs: torch.Tensor, chunks: torch.Tensor) -> float:
        cfg = self.config
        idx = torch.randint(0, obs.shape[0], (cfg.batch_size,), generator=self.generator)
        loss = self.loss(obs[idx], chunks[idx], self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.denoiser.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self._update_ema()
        self.iteration += 1
        return loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up of the decay (as Diffusion Policy's EMA): early weights are forgotten quickly.
        decay = min(self.config.ema_decay, (1 + self.iteration) / (10 + self.iteration))
        for ema, live in zip(self.ema.denoiser.parameters(), self.policy.denoiser.parameters(), strict=True):
            ema.lerp_(live, 1.0 - decay)

    def sync_normalization(self) -> None:
        """Copy the normalisers and action range into the EMA policy (they are not trained)."""
        self.ema.obs_normalizer.load_state_dict(self.policy.obs_normalizer.state_dict())
        self.ema.action_low.copy_(self.policy.action_low)
        self.ema.action_high.copy_(self.policy.action_high)

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
            "history": self.history,
            "wall_s": self.wall_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"]["weights"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        self.wall_s = float(state["wall_s"])


def train_diffusion_bc(
    obs: np.ndarray,
    actions: np.ndarray,
    episode_ends: np.ndarray,
    diffusion: DiffusionConfig,
    config: BCConfig,
    run_dir: Path,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DiffusionPolicy, DiffusionBC]:
    """Train (or resume from run_dir/checkpoint.pt) and return the EMA policy."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from torch.utils.tensorboard import SummaryWriter

    torch.manual_seed(seed)
    obs_t, chunks = chunk_dataset(obs, actions, episode_ends, diffusion.prediction_horizon)
    policy = DiffusionPolicy(obs.shape[1], actions.shape[1], diffusion)
    fit_normalization(policy, obs_t, chunks)
    bc = DiffusionBC(policy, config, seed)
    bc.sync_normalization()
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.is_file():
        bc.load_state_dict(torch.load(checkpoint, weights_only=False))
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=bc.iteration or None)
    columns = (
        TextColumn("diffusion BC"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    window: list[float] = []
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("bc", total=config.iterations, completed=bc.iteration, status="")
        start = time.perf_counter()
        while bc.iteration < config.iterations:
            window.append(bc.step(obs_t, chunks))
            if bc.iteration % config.log_every == 0 or bc.iteration == config.iterations:
                loss = sum(window) / len(window)
                window = []
                bc.history.append({"iteration": float(bc.iteration), "loss": loss, "lr": bc._lr()})
                writer.add_scalar("loss/denoising_mse", loss, bc.iteration)
                bar.update(task, completed=bc.iteration, status=f"loss {loss:.4f}")
            if bc.iteration % config.checkpoint_every == 0 or bc.iteration == config.iterations:
                bc.wall_s += time.perf_counter() - start
                start = time.perf_counter()
                run_dir.mkdir(parents=True, exist_ok=True)
                tmp = checkpoint.with_suffix(".tmp")
                torch.save(bc.state_dict(), tmp)
                tmp.replace(checkpoint)
    writer.close()
    return bc.ema, bc
