"""Named platform files load and are plausible; bad files fail with a message naming field and range;
the RAPTOR distribution covers the ranges of ANCHORS section 1."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from robotrl.envs.quadrotor.params import GRAVITY, QuadrotorParams
from robotrl.envs.quadrotor.platforms import (
    PLATFORM_DIR,
    PlatformError,
    RaptorDistribution,
    available_platforms,
    load_platform,
)

# (mass range [kg], thrust-to-weight range) each named platform must stay in.
PLAUSIBLE = {
    "crazyflie": ((0.025, 0.035), (1.4, 2.0)),
    "x500": ((2.0, 2.4), (1.5, 2.5)),
    "fpv5": ((0.6, 0.8), (6.0, 14.0)),
}


def _crazyflie_fields() -> dict[str, Any]:
    return yaml.safe_load((PLATFORM_DIR / "crazyflie.yaml").read_text())


def _write(tmp_path: Path, fields: dict[str, Any]) -> Path:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def test_the_named_platforms_are_available() -> None:
    assert set(PLAUSIBLE) <= set(available_platforms())


@pytest.mark.parametrize("name", sorted(PLAUSIBLE))
def test_named_platform_loads_with_plausible_numbers(name: str) -> None:
    params = load_platform(name)
    (mass_lo, mass_hi), (tw_lo, tw_hi) = PLAUSIBLE[name]
    assert mass_lo - 1e-6 <= float(params.mass[0]) <= mass_hi + 1e-6  # float32 0.8 is 0.80000001
    assert tw_lo <= float(params.thrust_to_weight[0]) <= tw_hi
    lo, hi = params.motor_command_range[0].tolist()
    assert lo < float(params.hover_command()[0]) < hi
    # FR and BL spin counter-clockwise seen from above: their drag torque points down.
    assert params.rotor_torque_directions[0].tolist() == [-1.0, 1.0, -1.0, 1.0]


def test_roll_authority_ranks_the_racer_above_the_crazyflie_above_the_x500() -> None:
    """One rotor's full thrust x arm / roll inertia: a 5-inch racer tilts fastest, a 2 kg X500 slowest."""
    fpv, crazyflie, x500 = (float(load_platform(n).roll_authority[0]) for n in ("fpv5", "crazyflie", "x500"))
    assert fpv > crazyflie > x500 > 0
    cf = load_platform("crazyflie")
    arm = math.hypot(*cf.rotor_positions[0, 0, :2].tolist())
    assert crazyflie == pytest.approx(float(cf.max_thrust_per_rotor[0]) * arm / float(cf.inertia[0, 0, 0]))
    # For sampled quadrotors it is the torque-to-inertia ratio the RAPTOR distribution draws.
    generator = torch.Generator().manual_seed(0)
    sampled = RaptorDistribution(torque_to_inertia=(300.0, 300.0)).sample(64, generator)
    torch.testing.assert_close(sampled.roll_authority, torch.full((64,), 300.0))


@pytest.mark.parametrize("name", available_platforms())
def test_every_number_in_a_platform_file_has_a_source(name: str) -> None:
    raw = yaml.safe_load((PLATFORM_DIR / f"{name}.yaml").read_text())
    numeric = set(raw) - {"name", "description", "sources"}
    sources = raw["sources"]
    assert numeric <= set(sources), f"{name}: no source for {sorted(numeric - set(sources))}"
    assert all(isinstance(text, str) and len(text) > 10 for text in sources.values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mass": -1.0}, r"'mass' = -1\.0 is outside the allowed range \[0\.005, 50\.0\] kg"),
        ({"mass": "heavy"}, r"'mass' must be a number, got 'heavy'"),
        (
            {"motor_tau_falling": 2.0},
            r"'motor_tau_falling' = 2\.0 is outside the allowed range \[0\.001, 1\.0\] s",
        ),
        ({"motor_tau_rising": None}, r"missing field\(s\) \['motor_tau_rising'\]"),
        ({"masss": 0.027}, r"unknown field\(s\) \['masss'\]"),
        (
            {
                "rotor_positions": [
                    [-0.028, 0.028, 0.0],
                    [-0.028, -0.028, 0.0],
                    [0.028, -0.028, 0.0],
                    [0.028, 0.028, 0.0],
                ]
            },
            r"'rotor_positions' must list rotors front-right \(\+x,-y\), back-right",
        ),
        (
            {"rotor_positions": [[0.028, -0.028, 0.0]] * 3},
            r"'rotor_positions' has shape \(3, 3\), expected \(4, 3\)",
        ),
        (
            {"rotor_torque_directions": [1, 1, 1, 1]},
            r"'rotor_torque_directions' must hold two \+1 and two -1",
        ),
        (
            {"thrust_curve": [0.0014, 0.0057, 0.0369]},
            r"'thrust_curve \(thrust-to-weight\)' = 0\.6\d* is outside the allowed range \[1\.05, 20\.0\]",
        ),
        (
            {"inertia": [[1e-5, 1e-6, 0.0], [0.0, 1e-5, 0.0], [0.0, 0.0, 2e-5]]},
            r"'inertia' must be symmetric",
        ),
        (
            {"inertia": [[1e-5, 2e-5, 0.0], [2e-5, 1e-5, 0.0], [0.0, 0.0, 2e-5]]},
            r"'inertia' must be positive definite",
        ),
        (
            {"inertia": [[0.0, 0.0, 0.0], [0.0, 1e-5, 0.0], [0.0, 0.0, 2e-5]]},
            r"'inertia\[xx\]' = 0\.0 is outside the allowed range \[1e-07, 10\.0\]",
        ),
        ({"motor_command_range": [1.0, 0.0]}, r"'motor_command_range' must be \[lo, hi\] with lo < hi"),
    ],
)
def test_bad_platform_file_names_the_field_and_what_is_allowed(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    fields = _crazyflie_fields()
    for key, value in change.items():
        if value is None:
            del fields[key]
        else:
            fields[key] = value
    path = _write(tmp_path, fields)
    with pytest.raises(PlatformError, match=message) as error:
        load_platform(path)
    assert str(path) in str(error.value)


def test_unreadable_yaml_is_a_platform_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nmass: [0.027\n")
    with pytest.raises(PlatformError, match="not valid YAML"):
        load_platform(path)
    path.write_text("- 1\n- 2\n")
    with pytest.raises(PlatformError, match="expected a mapping of fields, got list"):
        load_platform(path)


def test_unknown_platform_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"unknown platform 'x5000'; available: crazyflie, .*x500"):
        load_platform("x5000")
    with pytest.raises(PlatformError, match="does not exist"):
        load_platform(tmp_path / "missing.yaml")


@pytest.fixture(scope="module")
def raptor_sample() -> QuadrotorParams:
    return RaptorDistribution().sample(1000, torch.Generator().manual_seed(0))


def _assert_spans(values: torch.Tensor, lo: float, hi: float, slack: float = 1e-5) -> None:
    """Inside [lo, hi] and reaching within 2% of both ends (1000 uniform draws miss that with p < 1e-8)."""
    assert lo * (1 - slack) <= float(values.min()) <= lo + 0.02 * (hi - lo)
    assert hi - 0.02 * (hi - lo) <= float(values.max()) <= hi * (1 + slack)


def test_raptor_mass_is_uniform_in_cube_root(raptor_sample: QuadrotorParams) -> None:
    _assert_spans(raptor_sample.mass, 0.02, 5.0)
    lo, hi = 0.02 ** (1 / 3), 5.0 ** (1 / 3)
    u = ((raptor_sample.mass ** (1 / 3) - lo) / (hi - lo)).sort().values.double()
    n = u.numel()
    ks = max(float((torch.arange(1, n + 1) / n - u).max()), float((u - torch.arange(n) / n).max()))
    assert ks < 1.63 / math.sqrt(n)  # Kolmogorov-Smirnov, 1% level
    assert torch.quantile(u, torch.tensor([0.25, 0.5, 0.75], dtype=u.dtype)).tolist() == pytest.approx(
        [0.25, 0.5, 0.75], abs=0.04
    )
    # Mass itself is far from uniform: its median sits near the cube of the cube-root midpoint.
    assert float(raptor_sample.mass.median()) == pytest.approx(((lo + hi) / 2) ** 3, rel=0.15)


def test_raptor_ranges_match_the_anchors(raptor_sample: QuadrotorParams) -> None:
    p = raptor_sample
    _assert_spans(p.thrust_to_weight, 1.5, 5.0)
    arm = p.rotor_positions[:, 0, :2].norm(dim=-1)
    assert float(arm.min()) >= 0.034 and float(arm.max()) <= 0.23
    _assert_spans(p.motor_tau_rising, 0.03, 0.10)
    _assert_spans(p.motor_tau_falling, 0.03, 0.30)
    _assert_spans(p.rotor_torque_constant, 0.005, 0.05)
    torque_to_inertia = p.max_thrust_per_rotor * arm / p.inertia[:, 0, 0]
    _assert_spans(torque_to_inertia, 40.0, 1200.0)
    # Hovering needs the same thrust per kilogram from every sampled quadrotor.
    hover_thrust = 4.0 * p.rotor_thrust(p.hover_command().unsqueeze(-1).expand(-1, 4))[:, 0]
    torch.testing.assert_close(hover_thrust / p.mass, torch.full_like(p.mass, GRAVITY), rtol=1e-4, atol=0.0)
