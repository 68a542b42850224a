"""PolicyRunner against the torch modules it replaces, its input/output checks, and its no-torch promise."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bundle import TinyGru, TinyMlp, export_tiny, gru_spec, make_spec, recorded_inputs, torch_sequence
from torch import nn

import robotrl.runtime
from robotrl.runtime.policy_runner import (
    SMALL_ARRAY,
    NonFiniteActionError,
    NonFiniteObservationError,
    PolicyRunner,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


class SqrtPolicy(nn.Module):
    """Finite for the non-negative inputs it was exported on, NaN for negative ones."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(obs[:, :4])


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyMlp, Path]:
    torch.manual_seed(1)
    module = TinyMlp().eval()
    return module, export_tiny(module, make_spec(), tmp_path_factory.mktemp("mlp") / "bundle")


@pytest.fixture(scope="module")
def gru(tmp_path_factory: pytest.TempPathFactory) -> tuple[TinyGru, Path]:
    torch.manual_seed(2)
    module = TinyGru().eval()
    return module, export_tiny(module, gru_spec(), tmp_path_factory.mktemp("gru") / "bundle")


def test_mlp_runner_matches_torch(mlp: tuple[TinyMlp, Path]) -> None:
    module, path = mlp
    runner = PolicyRunner(path)
    obs = recorded_inputs(32).numpy()
    with torch.no_grad():
        expected = module(torch.from_numpy(obs)).numpy()
    assert np.abs(runner.step(obs) - expected).max() <= 1e-5
    single = runner.step(obs[3].astype(np.float64))
    assert single.shape == (4,) and single.dtype == np.float32
    assert np.abs(single - expected[3]).max() <= 1e-5
    assert (runner.observation_dim, runner.action_dim, runner.control_rate_hz) == (22, 4, 100.0)
    assert runner.spec.policy.task == "quadrotor_hover" and runner.state == {}


def test_gru_runner_carries_state_and_reset_restores_it(gru: tuple[TinyGru, Path]) -> None:
    module, path = gru
    runner = PolicyRunner(path)
    initial = gru_spec().recurrent_state[0].initial_array(1)
    np.testing.assert_array_equal(runner.state["h_in"], initial)
    obs = recorded_inputs(20).numpy()
    expected = torch_sequence(module, gru_spec(), obs)
    actions = np.stack([runner.step(row) for row in obs])
    assert np.abs(actions - expected).max() <= 1e-5
    assert np.abs(runner.state["h_in"] - initial).max() > 1e-3
    # Without carrying state the same input gives another action: the state really flows between steps.
    assert np.abs(runner.step(obs[0]) - expected[0]).max() > 1e-4
    runner.reset()
    np.testing.assert_array_equal(runner.state["h_in"], initial)
    np.testing.assert_allclose(runner.step(obs[0]), expected[0], atol=1e-5)


def test_gru_runner_batched(gru: tuple[TinyGru, Path]) -> None:
    module, path = gru
    runner = PolicyRunner(path)
    obs = recorded_inputs(3).numpy()
    with pytest.raises(ValueError, match=r"call reset\(batch_size=3\)"):
        runner.step(obs)
    runner.reset(batch_size=3)
    h = torch.from_numpy(gru_spec().recurrent_state[0].initial_array(3))
    with torch.no_grad():
        expected, h = module(torch.from_numpy(obs), h)
        expected_next, _ = module(torch.from_numpy(obs), h)
    np.testing.assert_allclose(runner.step(obs), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(runner.step(obs), expected_next.numpy(), atol=1e-5)


def test_wrong_observation_shape_names_fields(mlp: tuple[TinyMlp, Path]) -> None:
    runner = PolicyRunner(mlp[1])
    with pytest.raises(
        ValueError, match=r"shape \(23,\).*expected \(22,\) or \(B, 22\).*position_error_w\[3\]"
    ):
        runner.step(np.zeros(23, dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 22\)"):
        runner.step(np.zeros((2, 2, 22), dtype=np.float32))
    with pytest.raises(TypeError, match="float32 or float64, got int64"):
        runner.step(np.zeros(22, dtype=np.int64))


def test_non_finite_observation_is_refused(mlp: tuple[TinyMlp, Path]) -> None:
    runner = PolicyRunner(mlp[1])
    assert 2 * 22 <= SMALL_ARRAY < 64 * 22  # the two batches below take both paths of the check
    for batch in (2, 64):
        obs = np.zeros((batch, 22), dtype=np.float32)
        obs[1, 16] = np.nan
        obs[batch - 1, 0] = -np.inf
        with pytest.raises(
            NonFiniteObservationError,
            match=rf"position_error_w \(rows \[{batch - 1}\]\), angular_velocity_b \(rows \[1\]\)",
        ):
            runner.step(obs)


def test_non_finite_action_is_raised(tmp_path: Path) -> None:
    path = export_tiny(SqrtPolicy(), make_spec(), tmp_path / "sqrt", recorded_inputs().abs())
    runner = PolicyRunner(path)
    assert np.isfinite(runner.step(np.ones(22))).all()
    with pytest.raises(NonFiniteActionError, match=r"'actions' holds non-finite values.*fall back"):
        runner.step(-np.ones(22))


def test_runtime_never_imports_torch_or_training_code(gru: tuple[TinyGru, Path]) -> None:
    script = (
        "import sys\nimport numpy as np\nfrom robotrl.runtime.policy_runner import PolicyRunner\n"
        f"runner = PolicyRunner({str(gru[1])!r})\n"
        "runner.step(np.zeros(runner.observation_dim, dtype=np.float32))\n"
        "banned = ('torch.', 'robotrl.envs', 'robotrl.algos', 'robotrl.policies')\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(banned)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_runtime_sources_import_only_robot_side_code() -> None:
    """Catches imports the subprocess check cannot reach, e.g. in modules the runner does not load."""
    banned = ("torch", "robotrl.envs", "robotrl.algos", "robotrl.policies")
    for path in Path(robotrl.runtime.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not any(module == b or module.startswith(b + ".") for b in banned), f"{path}: {module}"
