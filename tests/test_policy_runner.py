"""PolicyRunner against the torch modules it replaces, its input/output checks, and its no-torch promise."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bundle import (
    NoisyChunker,
    TinyGru,
    TinyMlp,
    export_tiny,
    gru_spec,
    make_spec,
    noisy_spec,
    recorded_inputs,
    torch_sequence,
)
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


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> tuple[NoisyChunker, Path]:
    torch.manual_seed(4)
    module = NoisyChunker().eval()
    return module, export_tiny(module, noisy_spec(), tmp_path_factory.mktemp("noisy") / "bundle")


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


def test_reset_rows_restarts_only_those_rows(gru: tuple[TinyGru, Path]) -> None:
    module, path = gru
    runner = PolicyRunner(path)
    runner.reset(batch_size=4)
    obs = recorded_inputs(4).numpy()
    runner.step(obs)
    initial = gru_spec().recurrent_state[0].initial_array(4)  # [1, 4, hidden]: the batch is axis 1
    for rows, restarted in (([1, 3], [1, 3]), (np.array([True, False, False, False]), [0])):
        before = runner.state["h_in"]
        runner.reset(4, rows=rows)
        after = runner.state["h_in"]
        kept = [row for row in range(4) if row not in restarted]
        np.testing.assert_array_equal(after[:, restarted], initial[:, restarted])
        np.testing.assert_array_equal(after[:, kept], before[:, kept])
        assert np.abs(before[:, kept] - initial[:, kept]).max(axis=(0, 2)).min() > 1e-3  # they had moved on
        with torch.no_grad():
            expected, _ = module(torch.from_numpy(obs), torch.from_numpy(after))
        np.testing.assert_allclose(runner.step(obs), expected.numpy(), atol=1e-5)
    assert runner.batch_size == 4


def test_reset_rows_refuses_rows_outside_the_batch(gru: tuple[TinyGru, Path]) -> None:
    runner = PolicyRunner(gru[1])
    runner.reset(batch_size=4)
    runner.step(recorded_inputs(4).numpy())
    before = runner.state["h_in"]
    for rows, message in (
        ([0, 4], r"rows \[4\] are out of range for the current batch of 4"),
        ([-1], r"rows \[-1\] are out of range"),
        (np.ones(3, dtype=bool), r"a row mask needs shape \(4,\) for the current batch, got \(3,\)"),
        ([0.5], r"rows must be int indices or a bool mask"),
    ):
        with pytest.raises(ValueError, match=message):
            runner.reset(4, rows=rows)
    with pytest.raises(
        ValueError, match=r"keeps the current batch of 4, got batch_size=1: pass batch_size=4"
    ):
        runner.reset(rows=[0])
    np.testing.assert_array_equal(runner.state["h_in"], before)


def test_sampled_input_runner_matches_torch_on_the_same_noise(noisy: tuple[NoisyChunker, Path]) -> None:
    module, path = noisy
    runner = PolicyRunner(path, seed=7)
    rng = np.random.default_rng(7)  # the runner's generator, drawn in the same order
    noise, chunk = noisy_spec().sampled_inputs[0], noisy_spec().recurrent_state[0]
    state = torch.from_numpy(chunk.initial_array(1))
    for row in recorded_inputs(10).numpy():
        with torch.no_grad():
            expected, state = module(torch.from_numpy(row[None]), state, torch.from_numpy(noise.draw(rng, 1)))
        np.testing.assert_allclose(runner.step(row), expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(runner.state["chunk_in"], state.numpy(), atol=1e-5)


def test_sampled_input_depends_on_the_seed_only(noisy: tuple[NoisyChunker, Path]) -> None:
    obs = recorded_inputs(10).numpy()

    def actions(seed: int) -> np.ndarray:
        runner = PolicyRunner(noisy[1], seed=seed)
        return np.stack([runner.step(row) for row in obs])

    first = actions(0)
    np.testing.assert_array_equal(first, actions(0))
    assert np.abs(first - actions(1)).max() > 1e-3
    runner = PolicyRunner(noisy[1])
    np.testing.assert_array_equal(runner.step(obs[0]), first[0])
    runner.reset()
    np.testing.assert_array_equal(runner.state["chunk_in"], noisy_spec().recurrent_state[0].initial_array(1))
    assert np.abs(runner.step(obs[0]) - first[0]).max() > 1e-3  # reset() does not reseed
    runner.reset(batch_size=2)
    twins = runner.step(np.stack((obs[0], obs[0])))
    assert np.abs(twins[0] - twins[1]).max() > 1e-3  # each row draws its own noise


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
