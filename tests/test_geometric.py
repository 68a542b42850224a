"""The geometric SE(3) baseline flies our simulated platforms, and refuses bad input loudly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.envs.quadrotor.dynamics import (
    POS_W,
    QuadrotorDynamics,
    hover_state,
)
from robotrl.envs.quadrotor.env import InitConfig, sample_initial_state
from robotrl.envs.quadrotor.observations import raptor_observation
from robotrl.envs.quadrotor.params import QuadrotorParams
from robotrl.envs.quadrotor.platforms import load_platform, platform_path

PLATFORMS = ("crazyflie", "x500", "fpv5")
DT = 0.01


def _fly(
    controller: GeometricController,
    params: QuadrotorParams,
    state: torch.Tensor,
    target_w: torch.Tensor,
    steps: int,
) -> np.ndarray:
    """[steps, N, 3] positions after each control step, through the same observation a policy gets."""
    n = params.num_envs
    dynamics = QuadrotorDynamics(params, dt=DT)
    controller.reset(n)
    action = params.hover_action().unsqueeze(-1).expand(n, 4).clone()
    zero = torch.zeros(n, 3)
    positions = np.empty((steps, n, 3))
    for t in range(steps):
        obs = raptor_observation(state, target_w, zero, action)
        action = torch.as_tensor(controller.act(obs.numpy()))
        assert action.shape == (n, 4) and bool((action.abs() <= 1.0).all())
        state = dynamics.step(state, action)
        positions[t] = state[:, POS_W].numpy()
    return positions


def _controller(name: str) -> GeometricController:
    return GeometricController(NominalQuadrotor.from_platform_yaml(platform_path(name)), dt=DT)


@pytest.mark.parametrize("name", PLATFORMS)
def test_hover_from_random_starts(name: str) -> None:
    n = 64
    params = load_platform(name).repeat(n)
    zero = torch.zeros(n, 3)
    starts = sample_initial_state(params, InitConfig(), zero, zero, torch.Generator().manual_seed(0))
    positions = _fly(_controller(name), params, starts, zero, steps=1000)
    error = np.linalg.norm(positions, axis=-1)
    assert np.isfinite(error).all()
    settled_by_3s = (error[299:] <= 0.10).all(axis=0)
    rmse_last_5s = np.sqrt(np.mean(error[500:] ** 2, axis=0))
    assert settled_by_3s.mean() >= 0.95, f"{name}: only {settled_by_3s.mean():.0%} within 0.10 m from 3 s on"
    assert (rmse_last_5s <= 0.05).all(), f"{name}: worst RMSE over the last 5 s {rmse_last_5s.max():.3f} m"


@pytest.mark.parametrize("name", PLATFORMS)
def test_step_response_settles_without_large_overshoot(name: str) -> None:
    params = load_platform(name)
    positions = _fly(
        _controller(name), params, hover_state(params), torch.tensor([[1.0, 0.0, 0.0]]), steps=400
    )
    error = np.linalg.norm(positions[:, 0] - np.array([1.0, 0.0, 0.0]), axis=-1)
    outside = np.nonzero(error > 0.10)[0]
    settle_s = (outside[-1] + 1) * DT if outside.size else 0.0
    assert settle_s < 3.0, f"{name}: still more than 0.10 m off {settle_s:.2f} s after a 1 m step"
    overshoot = positions[:, 0, 0].max() - 1.0
    assert overshoot <= 0.10, f"{name}: overshoot {overshoot:.3f} m on a 1 m step"


def test_level_hover_observation_gives_the_hover_action() -> None:
    """Consistency of the controller's own YAML reading and inverse thrust curve with the simulator's."""
    params = load_platform("crazyflie")
    hover = float(params.hover_action()[0])
    obs = np.zeros((2, 22))
    obs[:, [3, 7, 11]] = 1.0
    obs[:, 18:] = hover
    controller = _controller("crazyflie")
    controller.reset(2)
    np.testing.assert_allclose(controller.act(obs), hover, atol=1e-4)


def test_from_platform_yaml_accepts_a_mapping_and_names_missing_fields() -> None:
    raw = yaml.safe_load(platform_path("crazyflie").read_text())
    nominal = NominalQuadrotor.from_platform_yaml(raw)
    assert nominal.mass == pytest.approx(raw["mass"])
    np.testing.assert_allclose(nominal.rotor_positions, raw["rotor_positions"])
    del raw["thrust_curve"]
    with pytest.raises(ValueError, match="thrust_curve"):
        NominalQuadrotor.from_platform_yaml(raw)


def test_bad_observations_raise() -> None:
    controller = _controller("crazyflie")
    with pytest.raises(RuntimeError, match="reset"):
        controller.act(np.zeros((1, 22)))
    controller.reset(3)
    with pytest.raises(ValueError, match=r"expected \(3, 22\).*got \(3, 21\)"):
        controller.act(np.zeros((3, 21)))
    with pytest.raises(ValueError, match=r"got \(22,\)"):
        controller.act(np.zeros(22))
    obs = np.zeros((3, 22))
    obs[:, [3, 7, 11]] = 1.0
    obs[1, 13] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        controller.act(obs)


def test_controller_module_imports_neither_torch_nor_envs() -> None:
    """It is the safety fallback on the robot, where only numpy is available."""
    code = (
        "import sys, robotrl.control.geometric; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('robotrl.envs')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
