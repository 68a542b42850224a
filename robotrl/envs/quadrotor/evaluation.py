"""Fly any controller (policy runner, torch actor, geometric baseline) through one code path and score it.

A controller is anything with `reset(batch_size)` and `act(obs: np.ndarray [B, 22]) -> np.ndarray [B, 4]`,
so a bundle, a training checkpoint and the classical baseline are measured on the same starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from robotrl.envs.quadrotor.dynamics import POS_W
from robotrl.envs.quadrotor.env import QuadrotorEnv, QuadrotorEnvConfig
from robotrl.envs.quadrotor.params import QuadrotorParams


class Controller(Protocol):
    """What `fly` flies. A controller with an `observation` attribute ('raptor' or 'teacher', see
    QuadrotorEnvConfig.observation) is flown on that observation; any other gets the env config's."""

    def reset(self, batch_size: int) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...


StepHook = Callable[[int, QuadrotorEnv], None]
"""Called by `fly` with (step, env) before the controller acts on that step, to change the env mid-flight
(parameters, forces, targets; robotrl.envs.quadrotor.mid_flight). The observation the controller is about to
see was taken before the call: a changed target shows in it one step later."""


@dataclass(frozen=True)
class HoverCriterion:
    """The issue's hover criterion: reach 0.10 m by 3 s, then RMSE <= 0.05 m over the last 5 s of 10 s."""

    within_m: float = 0.10
    by_s: float = 3.0
    rmse_m: float = 0.05
    rmse_window_s: float = 5.0
    success_fraction: float = 0.95
    episode_s: float = 10.0


@dataclass
class FlightLog:
    """Per-step record of one batch of episodes: [T, N, ...] arrays, crash step per env (-1: none)."""

    dt: float
    position_w: np.ndarray
    target_position_w: np.ndarray
    actions: np.ndarray
    crashed_at: np.ndarray

    @property
    def time_s(self) -> np.ndarray:
        return (np.arange(self.position_w.shape[0]) + 1) * self.dt

    @property
    def after_crash(self) -> np.ndarray:
        """[T, N] True from the step an env crashed on (its later rows belong to a reset env)."""
        steps = np.arange(self.position_w.shape[0])[:, None]
        return (self.crashed_at >= 0) & (steps >= self.crashed_at)

    @property
    def position_error_m(self) -> np.ndarray:
        """[T, N] distance to the target; NaN after a crash."""
        err = np.linalg.norm(self.position_w - self.target_position_w, axis=-1)
        return np.where(self.after_crash, np.nan, err)

    @property
    def flown_position_w(self) -> np.ndarray:
        """[T, N, 3] positions, NaN after a crash."""
        return np.where(self.after_crash[..., None], np.nan, self.position_w)


def fly(
    controller: Controller,
    env_config: QuadrotorEnvConfig,
    duration_s: float,
    params: QuadrotorParams | None = None,
    give_up: HoverCriterion | None = None,
    on_step: StepHook | None = None,
) -> FlightLog:
    """Fly num_envs episodes from the config's seeded random starts; a termination counts as a crash.

    With `give_up`, the flight stops at the criterion's `by_s` when too few envs are within reach
    to ever meet it: training's periodic evaluations then cost a third of a full flight while the
    policy is still far from the criterion. `on_step` changes the env during the flight (see StepHook).
    """
    config = dataclasses.replace(
        env_config,
        episode_length_s=duration_s + env_config.dt,
        observation=getattr(controller, "observation", env_config.observation),
    )
    env = QuadrotorEnv(config, params=params)
    steps = round(duration_s / config.dt)
    n = config.num_envs
    obs = env.reset()
    controller.reset(n)
    position = np.zeros((steps, n, 3), np.float32)
    target = np.zeros((steps, n, 3), np.float32)
    actions = np.zeros((steps, n, 4), np.float32)
    crashed_at = np.full(n, -1, np.int64)
    for t in range(steps):
        if on_step is not None:
            on_step(t, env)
        action = np.asarray(controller.act(obs.numpy()), dtype=np.float32)
        obs, _, terminated, _, _ = env.step(torch.from_numpy(action))
        actions[t] = action
        # A crashed env is already reset here; FlightLog blanks it from its crash step on.
        position[t] = env.state[:, POS_W].numpy()
        target[t] = env.target_position_w.numpy()
        newly = terminated.numpy() & (crashed_at < 0)
        crashed_at[newly] = t
        if give_up is not None and t + 1 == round(give_up.by_s / config.dt):
            err = np.linalg.norm(position[t] - target[t], axis=-1)
            within = (err <= give_up.within_m) & (crashed_at < 0)
            if within.mean() < give_up.success_fraction:
                cut = t + 1
                return FlightLog(config.dt, position[:cut], target[:cut], actions[:cut], crashed_at)
    return FlightLog(config.dt, position, target, actions, crashed_at)


def last_step_outside(error: np.ndarray, bound: float) -> np.ndarray:
    """[N] last step at which error [T, N] is above bound or NaN (crashed), -1 if none: the settle step."""
    outside = ~(error <= bound)
    return np.where(outside.any(0), outside.shape[0] - 1 - np.argmax(outside[::-1], axis=0), -1)


def hover_metrics(log: FlightLog, criterion: HoverCriterion = HoverCriterion()) -> dict[str, float]:
    """Success rate, position RMSE over the final window, settle time and crash count of a flight log."""
    err = log.position_error_m
    t = log.time_s
    crashed = log.crashed_at >= 0
    after = t >= criterion.by_s
    within_after = np.all(err[after] <= criterion.within_m, axis=0) & ~crashed
    window = t > t[-1] - criterion.rmse_window_s
    flown = ~crashed
    rmse_each = np.sqrt(np.mean(err[window][:, flown] ** 2, axis=0)) if flown.any() else np.array([np.nan])
    rmse_pooled = float(np.sqrt(np.mean(err[window][:, flown] ** 2))) if flown.any() else float("nan")
    # Settle time: the first step after which the error stays within the bound for good.
    last_outside = last_step_outside(err, criterion.within_m)
    settled = (last_outside < err.shape[0] - 1) & flown
    settle_s = np.where(settled, (last_outside + 1) * log.dt, np.nan)
    success_rate = float(within_after.mean())
    return {
        "episodes": float(err.shape[1]),
        "flown_s": float(t[-1]),
        "success_rate": success_rate,
        "position_rmse_m": rmse_pooled,
        "position_rmse_median_m": float(np.median(rmse_each)),
        "settle_time_median_s": float(np.nanmedian(settle_s)) if settled.any() else float("nan"),
        "crashes": float(crashed.sum()),
        "criterion_met": float(
            success_rate >= criterion.success_fraction and rmse_pooled <= criterion.rmse_m
        ),
    }


class TorchController:
    """Adapts a torch module mapping [B, obs] -> [B, act] to the Controller protocol."""

    def __init__(self, module: torch.nn.Module, observation: str = "raptor"):
        """`observation`: what the module reads, 'raptor' (22 values) or 'teacher' (teacher_observation)."""
        self.module = module.eval()
        self.observation = observation

    def reset(self, batch_size: int) -> None:
        del batch_size

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.module(torch.as_tensor(obs, dtype=torch.float32)).numpy()
