"""Our frames, motor order and motor model match the simulator RAPTOR was trained in.

The official checkpoint (PyPI `foundation-policy`) was trained only in that simulator, so it hovers in
ours only if every convention agrees: observation layout and frames, motor order, rotor spin
directions, the action-to-thrust map. The negative controls show that this check has teeth: each
single convention error makes the same checkpoint crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
from foundation_policy import Raptor

from robotrl.envs.quadrotor.dynamics import (
    POS_W,
    QuadrotorDynamics,
)
from robotrl.envs.quadrotor.env import InitConfig, sample_initial_state
from robotrl.envs.quadrotor.observations import raptor_observation
from robotrl.envs.quadrotor.params import QuadrotorParams
from robotrl.envs.quadrotor.platforms import load_platform

Transform = Callable[[torch.Tensor], torch.Tensor]


def _position_error(
    params: QuadrotorParams,
    steps: int,
    obs_transform: Transform | None = None,
    action_transform: Transform | None = None,
) -> np.ndarray:
    """[steps, N] distance to a target at the origin, flying the checkpoint at 100 Hz (inf once diverged)."""
    n = params.num_envs
    dynamics = QuadrotorDynamics(params, dt=0.01)
    zero = torch.zeros(n, 3)
    # The env's random starts (0.5 m, 30 deg, 0.5 m/s, 1 rad/s) around a target at the origin.
    state = sample_initial_state(params, InitConfig(), zero, zero, torch.Generator().manual_seed(0))
    policy = Raptor()
    policy.reset()
    action = torch.zeros(n, 4)  # RAPTOR's convention for the first previous action
    error = np.empty((steps, n))
    with np.errstate(all="ignore"):  # diverging negative controls overflow inside the evaluator
        for t in range(steps):
            obs = raptor_observation(state, zero, zero, action)
            if obs_transform is not None:
                obs = obs_transform(obs)
            action = torch.as_tensor(policy.evaluate_step(obs.double().numpy()), dtype=torch.float32)
            state = dynamics.step(state, action if action_transform is None else action_transform(action))
            error[t] = state[:, POS_W].norm(dim=-1).numpy()
    return np.where(np.isfinite(error), error, np.inf)


def test_official_checkpoint_hovers_in_our_simulator() -> None:
    error = _position_error(load_platform("crazyflie").repeat(64), steps=1000)
    worst = error.max(axis=0)
    assert (worst < 1.5).all(), f"{(worst >= 1.5).sum()} of 64 episodes left the 1.5 m ball or went NaN"
    rmse_last_5s = np.sqrt(np.mean(error[500:] ** 2, axis=0))
    assert (rmse_last_5s <= 0.10).all(), f"worst RMSE over the last 5 s {rmse_last_5s.max():.3f} m"


def _transpose_rotation(obs: torch.Tensor) -> torch.Tensor:
    rot = obs[:, 3:12].reshape(-1, 3, 3).transpose(1, 2).reshape(-1, 9)
    return torch.cat((obs[:, :3], rot, obs[:, 12:]), dim=-1)


def _negate_position(obs: torch.Tensor) -> torch.Tensor:
    return torch.cat((-obs[:, :3], obs[:, 3:]), dim=-1)


def _mirrored_spin(params: QuadrotorParams) -> QuadrotorParams:
    return dataclasses.replace(params, rotor_torque_directions=-params.rotor_torque_directions)


@pytest.mark.parametrize(
    ("obs_transform", "action_transform", "change_params"),
    [
        pytest.param(None, lambda a: a[:, [0, 3, 2, 1]], None, id="motor order FR, FL, BL, BR"),
        pytest.param(None, lambda a: a[:, [0, 2, 3, 1]], None, id="PX4 motor order FR, BL, FL, BR"),
        pytest.param(None, None, _mirrored_spin, id="rotor spin directions mirrored"),
        pytest.param(_transpose_rotation, None, None, id="rotation matrix world-to-body"),
        pytest.param(_negate_position, None, None, id="position error target minus position"),
    ],
)
def test_each_convention_error_makes_the_checkpoint_crash(
    obs_transform: Transform | None,
    action_transform: Transform | None,
    change_params: Callable[[QuadrotorParams], QuadrotorParams] | None,
) -> None:
    params = load_platform("crazyflie").repeat(16)
    if change_params is not None:
        params = change_params(params)
    error = _position_error(params, steps=300, obs_transform=obs_transform, action_transform=action_transform)
    crashed = error.max(axis=0) >= 1.5
    assert crashed.mean() >= 0.9, f"only {crashed.mean():.0%} crashed; the check is too weak"
