"""hover_metrics on hand-made flight logs with known answers, and fly() on controllers with known outcomes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robotrl.envs.quadrotor.env import InitConfig, QuadrotorEnvConfig
from robotrl.envs.quadrotor.evaluation import FlightLog, HoverCriterion, TorchController, fly, hover_metrics
from robotrl.envs.quadrotor.platforms import load_platform

DT = 0.5
STEPS = 20  # samples at t = 0.5, 1.0, ..., 10.0 s
TARGET = np.array([1.0, -2.0, 0.5], np.float32)
TARGET_Z = 0.0  # hover targets are at the origin
CRITERION = HoverCriterion()  # within 0.10 m from 3 s on, RMSE <= 0.05 m over the last 5 s of 10 s


def make_log(errors: np.ndarray, crashed_at: list[int] | None = None) -> FlightLog:
    """A log whose env n is errors[t, n] metres from the target along x at step t."""
    steps, n = errors.shape
    target = np.broadcast_to(TARGET, (steps, n, 3)).copy()
    position = target.copy()
    position[..., 0] += errors
    crashes = np.array(crashed_at if crashed_at is not None else [-1] * n, np.int64)
    return FlightLog(DT, position, target, np.zeros((steps, n, 4), np.float32), crashes)


def test_time_axis_is_the_time_after_each_step() -> None:
    np.testing.assert_allclose(make_log(np.zeros((STEPS, 1))).time_s, DT * np.arange(1, STEPS + 1))


def test_a_perfect_log() -> None:
    m = hover_metrics(make_log(np.zeros((STEPS, 8))), CRITERION)
    assert m["episodes"] == 8
    assert m["success_rate"] == 1.0
    assert m["position_rmse_m"] == 0.0
    assert m["position_rmse_median_m"] == 0.0
    assert m["settle_time_median_s"] == 0.0
    assert m["crashes"] == 0.0
    assert m["criterion_met"] == 1.0


def test_crash_settle_and_rmse_on_a_mixed_log() -> None:
    t = DT * np.arange(1, STEPS + 1)
    errors = np.zeros((STEPS, 4))
    errors[:, 1] = np.where(t <= 2.0, 0.3, 0.04)  # in by 3 s, settled after the 2.0 s sample
    errors[:, 2] = np.where(t <= 4.0, 0.3, 0.0)  # settles too late: still outside at 3.0-4.0 s
    errors[10:, 3] = 50.0  # crashed at step 10; where it lies afterwards must not count
    m = hover_metrics(make_log(errors, crashed_at=[-1, -1, -1, 10]), CRITERION)
    assert m["crashes"] == 1.0
    assert m["success_rate"] == 0.5  # envs 0 and 1 of 4: the crashed env counts as a failure
    # RMSE over t in (5, 10] of the envs that flew to the end: errors 0, 0.04, 0 -> sqrt(0.04^2 / 3)
    assert m["position_rmse_m"] == pytest.approx(0.04 / math.sqrt(3), rel=1e-6)
    assert m["position_rmse_median_m"] == 0.0
    # Settle time = time of the last sample outside 0.10 m: env 0 never (0 s), env 1 at 2.0 s, env 2 at
    # 4.0 s; the crashed env has none.
    assert m["settle_time_median_s"] == pytest.approx(2.0)
    assert m["criterion_met"] == 0.0


@pytest.mark.parametrize("last_outside_step", [0, 5, 12])
def test_settle_time_of_a_single_drop(last_outside_step: int) -> None:
    errors = np.full((STEPS, 1), 0.02)
    errors[: last_outside_step + 1] = 0.5
    m = hover_metrics(make_log(errors), CRITERION)
    assert m["settle_time_median_s"] == pytest.approx((last_outside_step + 1) * DT)


def test_an_env_outside_at_the_end_never_settles() -> None:
    errors = np.zeros((STEPS, 3))
    errors[-1, 0] = 0.2
    errors[:3, 1] = 0.5  # last outside at step 2, t = 1.5 s
    m = hover_metrics(make_log(errors), CRITERION)
    assert m["settle_time_median_s"] == pytest.approx(np.median([1.5, 0.0]))  # env 0 is left out
    assert m["success_rate"] == pytest.approx(2 / 3)


def test_criterion_flags() -> None:
    # Everyone within 0.10 m but 0.08 m RMSE: success 1, criterion not met.
    m = hover_metrics(make_log(np.full((STEPS, 4), 0.08)), CRITERION)
    assert m["success_rate"] == 1.0
    assert m["position_rmse_m"] == pytest.approx(0.08)
    assert m["criterion_met"] == 0.0
    # 19 of 20 succeed (95 %) with RMSE 0.03 m: met; 18 of 20 (90 %): not met.
    errors = np.full((STEPS, 20), 0.03)
    errors[-1, 0] = 0.2  # env 0 leaves the bound at the end
    met = hover_metrics(make_log(errors), CRITERION)
    assert met["success_rate"] == pytest.approx(0.95)
    assert met["criterion_met"] == 1.0
    errors[-1, 1] = 0.2
    assert hover_metrics(make_log(errors), CRITERION)["criterion_met"] == 0.0


def test_position_error_is_nan_from_the_crash_step_on() -> None:
    log = make_log(np.full((STEPS, 2), 0.1), crashed_at=[-1, 7])
    err = log.position_error_m
    assert np.isfinite(err[:, 0]).all()
    assert np.isfinite(err[:7, 1]).all() and np.isnan(err[7:, 1]).all()


# ------------------------------------------------------------------------------------------ fly()
class ConstantController:
    def __init__(self, action: float | np.ndarray):
        self.action = action
        self.batch_size = -1

    def reset(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def act(self, obs: np.ndarray) -> np.ndarray:
        assert obs.shape == (self.batch_size, 22)
        return np.broadcast_to(self.action, (obs.shape[0], 4)).astype(np.float32)


def test_fly_records_hovering_and_crashing_controllers() -> None:
    torch.set_num_threads(1)
    at_target = InitConfig(position_m=0.0, tilt_deg=0.0, velocity_mps=0.0, angular_velocity_radps=0.0)
    config = QuadrotorEnvConfig(num_envs=4, init=at_target)
    hover = float(load_platform("crazyflie").hover_action()[0])
    log = fly(ConstantController(hover), config, duration_s=1.0)
    assert log.position_w.shape == log.target_position_w.shape == (100, 4, 3)
    assert log.actions.shape == (100, 4, 4)
    assert (log.crashed_at == -1).all()
    assert np.nanmax(log.position_error_m) < 0.01
    assert (
        hover_metrics(log, HoverCriterion(by_s=0.5, rmse_window_s=0.5, episode_s=1.0))["criterion_met"] == 1.0
    )

    # Motors off: it falls; a fall of 1.5 m (the termination distance) takes at least sqrt(2 * 1.5 / g).
    falling = fly(ConstantController(-1.0), config, duration_s=1.0)
    assert (falling.crashed_at >= 0).all()
    assert (falling.crashed_at * config.dt >= math.sqrt(2 * 1.5 / 9.81) - 0.02).all()
    assert hover_metrics(falling)["crashes"] == 4.0
    # Up to the crash it fell straight down; from the crash step on the rows belong to the reset env.
    before = falling.crashed_at[0] - 1
    assert falling.position_w[before, :, 2].max() - TARGET_Z < -1.0
    assert np.isnan(falling.flown_position_w[before + 1 :]).all()


def test_fly_gives_up_at_by_s_only_when_the_criterion_is_out_of_reach() -> None:
    torch.set_num_threads(1)
    at_target = InitConfig(position_m=0.0, tilt_deg=0.0, velocity_mps=0.0, angular_velocity_radps=0.0)
    config = QuadrotorEnvConfig(num_envs=4, init=at_target)
    criterion = HoverCriterion(by_s=0.5, rmse_window_s=0.5, episode_s=1.0)
    hover = float(load_platform("crazyflie").hover_action()[0])
    kept = fly(ConstantController(hover), config, duration_s=1.0, give_up=criterion)
    assert kept.position_w.shape[0] == 100
    # Full throttle climbs away: no env is within 0.10 m at 0.5 s, so the flight ends there.
    climbing = fly(ConstantController(1.0), config, duration_s=1.0, give_up=criterion)
    assert climbing.position_w.shape[0] == climbing.actions.shape[0] == 50
    metrics = hover_metrics(climbing, criterion)
    assert metrics["flown_s"] == pytest.approx(0.5)
    assert metrics["criterion_met"] == 0.0 and metrics["success_rate"] == 0.0


def test_torch_controller_runs_a_module_without_gradients() -> None:
    module = torch.nn.Linear(22, 4)
    controller = TorchController(module)
    out = controller.act(np.ones((3, 22), np.float32))
    assert out.shape == (3, 4) and out.dtype == np.float32
    expected = module(torch.ones(3, 22)).detach().numpy()
    np.testing.assert_allclose(out, expected)
    assert not module.training
