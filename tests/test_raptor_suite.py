"""The RAPTOR evaluation suite: mid-flight changes, metrics on hand-made logs, and tiny end-to-end runs."""

from __future__ import annotations

import functools
import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrl.cli import main
from robotrl.control.geometric import GeometricController, NominalQuadrotor
from robotrl.envs.quadrotor import raptor_suite
from robotrl.envs.quadrotor.env import InitConfig, QuadrotorEnvConfig
from robotrl.envs.quadrotor.evaluation import FlightLog, StepHook, fly
from robotrl.envs.quadrotor.mid_flight import Gust, MoveTarget, ScaleMass, WeakenRotor
from robotrl.envs.quadrotor.params import GRAVITY, QuadrotorParams
from robotrl.envs.quadrotor.platforms import load_platform, platform_path
from robotrl.envs.quadrotor.raptor_suite import (
    Flight,
    SuiteConfig,
    aggregate,
    held_out_fleet,
    named_fleet,
    recovery_metrics,
    run_scenario,
    scenarios,
    step_response_metrics,
)
from robotrl.recipes.raptor_report import GEOMETRIC, RAPTOR, STUDENT, TEACHERS, wilson_interval
from robotrl.recipes.raptor_suite import geometric_baseline, run_raptor_suite

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DT = 0.01
AT_TARGET = InitConfig(position_m=0.0, tilt_deg=0.0, velocity_mps=0.0, angular_velocity_radps=0.0)


_TINY = dict(
    episodes_per_quadrotor=2, hover_s=2.0, figure8_s=2.0, rmse_window_s=1.0,
    step_at_s=1.0, step_s=2.0, change_at_s=1.0, adaptation_s=2.0,
)  # fmt: skip
"""Two-second flights with the changes at 1 s: enough to see a controller settle, hold and recover."""


def _tiny_config(**overrides: float) -> SuiteConfig:
    return SuiteConfig(**(_TINY | overrides))  # type: ignore[arg-type]


class OpenLoopHover:
    """The nominal hover action of each env, whatever happens: shows what a change does on its own."""

    def __init__(self, hover_action: np.ndarray):
        self.action = np.repeat(hover_action[:, None], 4, axis=1).astype(np.float32)

    def reset(self, batch_size: int) -> None:
        assert batch_size == self.action.shape[0]

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.action


def _open_loop(change: StepHook | None, duration_s: float = 1.5, num_envs: int = 2) -> FlightLog:
    torch.set_num_threads(1)
    params = load_platform("crazyflie").repeat(num_envs)
    config = QuadrotorEnvConfig(num_envs=num_envs, init=AT_TARGET)
    controller = OpenLoopHover(params.hover_action().numpy())
    return fly(controller, config, duration_s, params=params, on_step=change)


# ------------------------------------------------------------------------------------------ changes
def test_without_a_change_the_open_loop_hover_stays_put() -> None:
    assert np.nanmax(_open_loop(None).position_error_m) < 1e-3


def test_mass_up_30_percent_sinks_the_open_loop_hover_at_the_expected_rate() -> None:
    log = _open_loop(ScaleMass(at_s=1.0, factor=1.3))
    z = log.position_w[:, :, 2]
    assert np.abs(z[:100]).max() < 1e-3  # samples up to t = 1.0 s: before the change
    # Hover thrust now carries 1/1.3 of the weight: a = g (1/1.3 - 1) for the 0.5 s after the change.
    accel = GRAVITY * (1.0 / 1.3 - 1.0)
    np.testing.assert_allclose(z[-1], 0.5 * accel * 0.5**2, rtol=0.02)


def test_a_weak_rotor_tips_the_open_loop_hover_only_after_the_change() -> None:
    log = _open_loop(WeakenRotor(at_s=1.0, rotor="front_right", efficiency=0.7))
    assert log.position_error_m[:100].max() < 1e-3
    assert ((log.crashed_at >= 100) & (log.crashed_at < 150)).all()  # tumbled (spin rate) within 0.5 s


def test_a_gust_pushes_sideways_for_its_duration_then_stops() -> None:
    log = _open_loop(Gust(at_s=0.5, duration_s=0.3, weight_fraction=0.5, direction_w=(0.0, 2.0, 0.0)))
    y = log.position_w[:, :, 1]
    assert np.abs(y[:50]).max() < 1e-3
    # 0.5 g along +y for 0.3 s, then coasting at the speed it left with (hover thrust stays vertical).
    speed = 0.5 * GRAVITY * 0.3
    expected_end = 0.5 * 0.5 * GRAVITY * 0.3**2 + speed * (1.5 - 0.8)
    np.testing.assert_allclose(y[-1], expected_end, rtol=0.02)
    np.testing.assert_allclose((y[-1] - y[-11]) / (10 * DT), speed, rtol=0.01)
    assert np.abs(log.position_w[-1, :, 2]).max() < 1e-3


def test_move_target_jumps_the_hover_target_and_refuses_other_modes() -> None:
    log = _open_loop(MoveTarget(at_s=0.5, offset_w=(0.5, 0.0, 0.0)), duration_s=1.0)
    # Sample i is the state after step i; the jump comes before step 50, so sample 49 (t = 0.5 s) is the last
    # with the old target.
    np.testing.assert_array_equal(log.target_position_w[:50, :, 0], 0.0)
    np.testing.assert_allclose(log.target_position_w[50:, :, 0], 0.5)
    assert log.position_error_m[50:].min() > 0.45  # the open-loop quad stayed behind
    config = QuadrotorEnvConfig(num_envs=1)
    config.target.mode = "figure8"
    with pytest.raises(ValueError, match="needs target mode 'hover'"):
        fly(OpenLoopHover(np.zeros(1)), config, 0.1, on_step=MoveTarget(at_s=0.0))


def test_changes_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="'middle' is not one of"):
        WeakenRotor(at_s=1.0, rotor="middle")
    with pytest.raises(ValueError, match="at_s must be a time >= 0"):
        ScaleMass(at_s=-1.0)
    with pytest.raises(ValueError, match="zero vector"):
        Gust(at_s=0.0, direction_w=(0.0, 0.0, 0.0))


# ------------------------------------------------------------------------------------------ metrics
def _log_along_x(progress_x: np.ndarray, dt: float, crashed_at: list[int] | None = None) -> FlightLog:
    """Envs that sit at the origin and, from sample `jump` on, track a target at x = 0.5 m (see below)."""
    steps, n = progress_x.shape
    position = np.zeros((steps, n, 3), np.float32)
    position[..., 0] = progress_x
    target = np.zeros_like(position)
    crashes = np.array(crashed_at if crashed_at is not None else [-1] * n, np.int64)
    return FlightLog(dt, position, target, np.zeros((steps, n, 4), np.float32), crashes)


def _step_log() -> tuple[FlightLog, float]:
    """The target jumps from 0 to 0.5 m at 1 s; env 0 follows a first-order lag (tau 0.2 s), env 1 a
    second-order response (zeta 0.5, omega 10 rad/s), env 2 is 0.3 m off at the jump, env 3 crashes later."""
    dt, at_s, tau, zeta, omega = 0.001, 1.0, 0.2, 0.5, 10.0
    t = (np.arange(3000) + 1) * dt
    s = np.clip(t - at_s, 0.0, None)
    wd = omega * math.sqrt(1 - zeta**2)
    second = 1 - np.exp(-zeta * omega * s) * (np.cos(wd * s) + zeta / math.sqrt(1 - zeta**2) * np.sin(wd * s))
    x = 0.5 * np.stack([1 - np.exp(-s / tau), second, 1 - np.exp(-s / tau), 1 - np.exp(-s / tau)], axis=1)
    x[:, 2] -= 0.3
    log = _log_along_x(x, dt, crashed_at=[-1, -1, -1, 2500])
    log.target_position_w[round(at_s / dt) :, :, 0] = 0.5
    return log, at_s


def test_step_response_of_known_curves() -> None:
    log, at_s = _step_log()
    m = step_response_metrics(log, at_s=at_s, within_m=0.1)
    np.testing.assert_array_equal(m["eligible"], [1, 1, 0, 1])
    np.testing.assert_array_equal(m["success"], [1, 1, 1, 0])
    # First order: 10 -> 90 % in tau ln 9, no overshoot, within 0.1 m (20 % of 0.5 m) after tau ln 5.
    assert m["rise_s"][0] == pytest.approx(0.2 * math.log(9), abs=2e-3)
    assert m["overshoot_pct"][0] == 0.0
    assert m["settle_s"][0] == pytest.approx(0.2 * math.log(5), abs=2e-3)
    # Second order, zeta 0.5: overshoot exp(-pi zeta / sqrt(1 - zeta^2)) = 16.3 %.
    assert m["overshoot_pct"][1] == pytest.approx(100 * math.exp(-math.pi * 0.5 / math.sqrt(0.75)), abs=0.1)
    assert 0.0 < m["rise_s"][1] < m["rise_s"][0]
    assert np.isnan(m["rise_s"][2]) and np.isnan(m["settle_s"][2])  # not at the target at the jump
    assert m["rise_s"][3] == m["settle_s"][3] == math.inf  # crashed after the jump: counted, failed


def test_recovery_times_and_who_counts() -> None:
    dt, at_s = 0.01, 1.0
    t = (np.arange(300) + 1) * dt
    err = np.full((300, 5), 0.05)
    after = t > at_s
    err[after & (t <= 1.5), 0] = 0.3  # back after 0.5 s
    err[after & (t <= 2.5), 1] = 0.3  # back after 1.5 s: too late
    err[:, 2] = 0.3  # never at the target: does not count
    err[after & (t <= 1.2), 4] = 0.3  # out, then crashes
    log = _log_along_x(err, dt, crashed_at=[-1, -1, -1, -1, 250])
    m = recovery_metrics(log, at_s=at_s, within_m=0.1, deadline_s=1.0)
    np.testing.assert_allclose(m["recovery_s"], [0.5, 1.5, np.nan, 0.0, np.inf])
    np.testing.assert_array_equal(m["recovered_in_time"], [1.0, 0.0, np.nan, 1.0, 0.0])
    np.testing.assert_allclose(m["peak_error_m"][:2], 0.3, rtol=1e-6)
    assert m["peak_error_m"][4] == math.inf
    assert aggregate("recovered_in_time", m["recovered_in_time"]) == 0.5  # 2 of the 4 that count
    assert aggregate("recovery_s", m["recovery_s"]) == pytest.approx(1.0)  # median of 0, 0.5, 1.5, inf
    assert math.isnan(aggregate("recovery_s", np.full(3, np.nan)))


class OwnGeometric:
    """Quadrotor q's own geometric controller on rows q*K to q*K + K-1: flies if rows are quadrotor-major."""

    def __init__(self, platforms: tuple[str, ...], episodes_per_quadrotor: int):
        self.parts = [
            GeometricController(NominalQuadrotor.from_platform_yaml(platform_path(p)), dt=DT)
            for p in platforms
        ]
        self.k = episodes_per_quadrotor

    def reset(self, batch_size: int) -> None:
        assert batch_size == self.k * len(self.parts)
        for part in self.parts:
            part.reset(self.k)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([p.act(obs[i * self.k : (i + 1) * self.k]) for i, p in enumerate(self.parts)])


@pytest.mark.parametrize(
    ("controllers", "holds"), [(("crazyflie", "fpv5"), True), (("fpv5", "crazyflie"), False)]
)
def test_scenarios_fly_quadrotor_major_rows(controllers: tuple[str, ...], holds: bool) -> None:
    torch.set_num_threads(1)
    fleet = named_fleet(("crazyflie", "fpv5"))
    config = _tiny_config(episodes_per_quadrotor=3, hover_s=4.0, rmse_window_s=2.0)
    hover = next(s for s in scenarios(config) if s.name == "hover")
    result = run_scenario(OwnGeometric(controllers, 3), fleet, hover, config)
    rmse = result.episodes["rmse_m"]
    assert rmse.shape == (6,)
    assert (rmse < 0.1).all() if holds else (rmse > 0.1).all(), rmse
    assert Flight(fleet, "own", hover, result).per_quadrotor()["rmse_m"].shape == (2,)


# ------------------------------------------------------------------------------------------ end to end
def test_suite_with_the_geometric_controller_and_the_official_checkpoint(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pytest.importorskip("foundation_policy")
    report = run_raptor_suite(tmp_path, quadrotors=3, config=_tiny_config(), progress=False)
    assert set(report["summary"]) == {"held_out", "crazyflie", "fpv5", "x500"}
    crazyflie = report["summary"]["crazyflie"]
    for name in (GEOMETRIC, RAPTOR):
        assert crazyflie[name]["hover"]["success"] == 1.0, name
        assert crazyflie[name]["hover"]["rmse_m"] < 0.1, name
        assert crazyflie[name]["figure8"]["success"] == 1.0, name
    # RAPTOR flies every held-out quadrotor; the Crazyflie-tuned geometric controller cannot hold them.
    held_out = report["summary"]["held_out"]
    assert held_out[RAPTOR]["hover"]["rmse_m"] < 0.1
    assert held_out[GEOMETRIC]["hover"]["rmse_m"] > 2 * held_out[RAPTOR]["hover"]["rmse_m"]
    assert report["skipped"] == {}

    on_disk = json.loads((tmp_path / "suite.json").read_text())
    assert on_disk["summary"]["crazyflie"][RAPTOR]["hover"]["success"] == 1.0
    rows = (tmp_path / "suite.csv").read_text().splitlines()
    assert rows[0] == (
        "fleet,group,controller,scenario,metric,quadrotor,mass_kg,thrust_to_weight,roll_authority,value"
    )
    assert any(r.startswith(f"unseen,x500,{RAPTOR},adapt_gust,recovered_in_time,x500,2.06") for r in rows)
    assert sum(",all,," in r for r in rows) > 0
    md = (tmp_path / "suite.md").read_text()
    assert md.count("## ") == 4 and md.count(f"| {GEOMETRIC} |") == 4
    assert f"{RAPTOR} 0 of 2 (0-66 %)" in md and md.count("Hover crashes") == 4
    for png in ("unseen_vs_mass.png", "unseen_events.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC


def test_crash_rates_come_with_their_wilson_interval() -> None:
    """0 of n: the upper bound is z^2 / (n + z^2) (3.84 / 803.84 for 800 hovers); the interval always holds
    k / n, and k of n mirrors n - k of n."""
    assert wilson_interval(0, 800) == pytest.approx((0.0, 3.8416 / 803.8416))
    low, high = wilson_interval(1, 800)
    assert 0.0 < low < 1 / 800 < high < 0.008
    mirrored = wilson_interval(799, 800)
    assert (1 - mirrored[1], 1 - mirrored[0]) == pytest.approx((low, high))
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_the_checkpoint_row_is_skipped_with_a_note_when_it_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.set_num_threads(1)
    monkeypatch.setitem(sys.modules, "foundation_policy", None)  # makes the import fail
    config = _tiny_config(episodes_per_quadrotor=1)
    report = run_raptor_suite(tmp_path, quadrotors=0, named=("crazyflie",), config=config, progress=False)
    assert set(report["summary"]["crazyflie"]) == {GEOMETRIC}
    assert RAPTOR in report["skipped"]
    assert "official RAPTOR checkpoint is skipped" in caplog.text
    assert f"Skipped: {RAPTOR}" in (tmp_path / "suite.md").read_text()


class _FakeFarm:
    """What robotrl.recipes.raptor.load_teacher_farm returns: two training quadrotors, the second dropped."""

    def __init__(self) -> None:
        self.params = QuadrotorParams.cat([load_platform("crazyflie"), load_platform("fpv5")])
        self.kept = torch.tensor([True, False])
        self.asked: list[int] = []

    def controller(self, episodes_per_quadrotor: int) -> object:
        self.asked.append(episodes_per_quadrotor)
        return geometric_baseline(DT)


def test_teachers_and_student_on_the_training_quadrotors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    farm = _FakeFarm()
    fake = types.ModuleType("robotrl.recipes.raptor")
    fake.load_teacher_farm = lambda run_dir: farm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "robotrl.recipes.raptor", fake)
    monkeypatch.setitem(sys.modules, "foundation_policy", None)
    config = _tiny_config()
    report = run_raptor_suite(
        tmp_path, student=geometric_baseline(DT), teachers=tmp_path / "run", quadrotors=0,
        named=("crazyflie",), config=config, progress=False,
    )  # fmt: skip
    assert farm.asked == [config.episodes_per_quadrotor]
    assert set(report["summary"]) == {"crazyflie", "training", "training_not_kept"}
    assert set(report["summary"]["training"]) == {STUDENT, TEACHERS}
    check = report["student_vs_teachers"]
    assert check["quadrotors"] == 1.0  # the kept one only
    assert check["ratio"] == pytest.approx(1.0)  # the same controller on both sides
    assert check["met"] == 1.0 and check["quadrotors_within_limit"] == 1.0
    assert "Student vs teachers" in (tmp_path / "suite.md").read_text()
    assert (tmp_path / "training_vs_mass.png").read_bytes()[:8] == PNG_MAGIC


def test_held_out_fleet_is_not_the_training_draw() -> None:
    with pytest.raises(ValueError, match="seed 0 draws the training quadrotors"):
        held_out_fleet(4, seed=0)
    fleet = held_out_fleet(4)
    assert fleet.labels[0] == "held_out/000" and fleet.group_names == ("held_out",)
    assert not torch.allclose(fleet.params.mass, held_out_fleet(4, seed=2).params.mass)


# ------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feed-forward hover bundle after one PPO iteration: it only has to fly, not fly well."""
    root = tmp_path_factory.mktemp("suite_cli")
    small = ["--num-envs", "64", "--threads", "1", "--no-progress", "--set", "runner.eval_every=0"]
    assert main(["train", "quadrotor", "--run-dir", str(root / "run"), "--max-iterations", "1", *small]) == 0
    assert main(["export", str(root / "run"), "--out", str(root / "bundle")]) == 0
    return root / "bundle"


def test_cli_eval_suite_raptor_flies_the_bundle_as_the_student(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CLI builds the default config; shorten its flights (the options under test are passed through).
    monkeypatch.setattr(raptor_suite, "SuiteConfig", functools.partial(SuiteConfig, **_TINY))
    args = [
        "eval",
        str(tiny_bundle),
        "--suite",
        "raptor",
        "--quadrotors",
        "1",
        "--episodes",
        "1",
        "--seed",
        "7",
    ]
    assert main(args) == 0
    out = tiny_bundle / "eval_raptor"
    report = json.loads((out / "suite.json").read_text())
    assert report["config"]["episodes_per_quadrotor"] == 1 and report["config"]["seed"] == 7
    assert report["fleets"]["unseen"]["quadrotors"] == 4  # 1 held-out + 3 named
    assert STUDENT in report["summary"]["held_out"] and GEOMETRIC in report["summary"]["held_out"]
    printed = capsys.readouterr().out
    assert "held_out: 1 quadrotor(s) x 1 episodes" in printed and str(out / "suite.md") in printed
