"""Bundle export, parity gate, policy.yaml round trip, and refusal of tampered bundles.

The tiny policies and their specs here are also imported by test_policy_runner.py.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from robotrl.envs.quadrotor.observations import OBSERVATION_DIM
from robotrl.export.bundle import (
    ActionField,
    BundleError,
    Chunking,
    GraphSignatureError,
    HashMismatchError,
    ManifestError,
    MissingFileError,
    PolicySpec,
    RecurrentState,
    SampledInput,
    SchemaVersionError,
    read_bundle,
)
from robotrl.export.export import PARITY_TOLERANCE, ParityError, export_bundle
from robotrl.recipes.quadrotor import quadrotor_policy_spec
from robotrl.runtime.policy_runner import PolicyRunner, create_session

HIDDEN = 16
CHUNK_STATE = 3
NOISE = 5
CHUNKING = Chunking(
    prediction_horizon=8, action_horizon=4, inference_steps=8, sampler="ddim, eta 0", in_graph=True
)
SEED = 3
CONFIG = {"algo": "ppo", "actor_hidden": [32], "learning_rate": 3e-4}
METRICS = {"return/mean": 412.5, "perf/env_steps": 1_000_000}


class TinyMlp(nn.Module):
    """Feed-forward policy with normaliser buffers inside, as training exports it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.randn(OBSERVATION_DIM))
        self.register_buffer("obs_std", torch.rand(OBSERVATION_DIM) + 0.5)
        self.net = nn.Sequential(nn.Linear(OBSERVATION_DIM, 32), nn.Tanh(), nn.Linear(32, 4), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net((obs - self.obs_mean) / self.obs_std)


class TinyGru(nn.Module):
    """Recurrent student: obs [B, 22], h [1, B, hidden] -> actions [B, 4], h_next."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(OBSERVATION_DIM, hidden), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden)
        self.head = nn.Linear(hidden, 4)

    def forward(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, h_next = self.gru(self.encoder(obs).unsqueeze(0), h)
        return torch.tanh(self.head(features.squeeze(0))), h_next


class NoisyChunker(nn.Module):
    """Toy chunked policy: obs, chunk state [B, 3], noise [B, 5] -> actions [B, 4], next chunk state."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(OBSERVATION_DIM + CHUNK_STATE + NOISE, 4 + CHUNK_STATE)

    def forward(
        self, obs: torch.Tensor, chunk_state: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(torch.cat((obs, chunk_state, noise), dim=-1))
        return torch.tanh(out[:, :4]), torch.tanh(out[:, 4:])


class BranchyMlp(TinyMlp):
    """Python control flow on data: tracing freezes the branch taken by the example inputs."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        actions = super().forward(obs)
        return actions if float(obs.mean()) > 0 else -actions


def make_spec(recurrent_state: tuple[RecurrentState, ...] = ()) -> PolicySpec:
    return quadrotor_policy_spec(
        "quadrotor_hover",
        "crazyflie",
        100.0,
        {"max_tilt_rad": 0.6, "geofence_m": [[-2.0, -2.0, 0.0], [2.0, 2.0, 2.5]]},
        recurrent_state,
    )


def gru_spec(hidden: int = HIDDEN) -> PolicySpec:
    initial = tuple(float(v) for v in np.linspace(-0.5, 0.5, hidden))
    return make_spec((RecurrentState("h_in", "h_out", (1, "batch", hidden), initial),))


def noisy_spec() -> PolicySpec:
    state = RecurrentState("chunk_in", "chunk_out", ("batch", CHUNK_STATE), (0.1, 0.0, -0.1))
    return replace(make_spec((state,)), sampled_inputs=(SampledInput("noise", NOISE),), chunking=CHUNKING)


def recorded_inputs(num: int = 48) -> torch.Tensor:
    return torch.randn(num, OBSERVATION_DIM, generator=torch.Generator().manual_seed(0))


def export_tiny(
    module: nn.Module, spec: PolicySpec, out_dir: Path, inputs: torch.Tensor | None = None
) -> Path:
    inputs = recorded_inputs() if inputs is None else inputs
    return export_bundle(module, out_dir, spec, inputs, seed=SEED, config=CONFIG, metrics=METRICS)


def torch_sequence(module: nn.Module, spec: PolicySpec, obs: np.ndarray) -> np.ndarray:
    """Actions of a recurrent module over a [T, obs_dim] sequence, starting from the spec's initial state."""
    h = torch.from_numpy(spec.recurrent_state[0].initial_array(1))
    actions = []
    with torch.no_grad():
        for row in torch.from_numpy(obs):
            action, h = module(row[None], h)
            actions.append(action[0].numpy())
    return np.stack(actions)


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    return export_tiny(TinyMlp(), make_spec(), tmp_path_factory.mktemp("mlp") / "bundle")


@pytest.fixture(scope="module")
def noisy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(4)
    return export_tiny(NoisyChunker(), noisy_spec(), tmp_path_factory.mktemp("noisy") / "bundle")


def test_mlp_bundle_files_and_parity(mlp_bundle: Path) -> None:
    assert sorted(p.name for p in mlp_bundle.iterdir()) == ["policy.onnx", "policy.pt", "policy.yaml"]
    spec = read_bundle(mlp_bundle)
    assert spec.parity.num_inputs == 48
    assert spec.parity.tolerance == PARITY_TOLERANCE
    assert 0.0 <= spec.parity.onnx_max_abs_diff <= 1e-5
    assert 0.0 <= spec.parity.torchscript_max_abs_diff <= 1e-5
    assert set(spec.sha256) == {"policy.onnx", "policy.pt"}


def test_policy_yaml_round_trips_spec_and_provenance(mlp_bundle: Path) -> None:
    spec = read_bundle(mlp_bundle)
    assert spec.schema_version == 1
    assert spec.policy == make_spec()
    assert spec.policy.observation_dim == 22 and spec.policy.action_dim == 4
    assert spec.provenance.seed == SEED
    assert spec.provenance.config == CONFIG
    assert spec.provenance.metrics == METRICS
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    assert spec.provenance.git_commit == (head.stdout.strip() if head.returncode == 0 else "unknown")
    document = yaml.safe_load((mlp_bundle / "policy.yaml").read_text())
    assert document["observation"]["normalization"]["in_graph"] is True
    assert document["action"]["fields"][0]["low"] == -1.0 and document["action"]["fields"][0]["high"] == 1.0
    assert document["recurrent_state"] == []


def test_gru_bundle_states_in_yaml_and_parity(tmp_path: Path) -> None:
    torch.manual_seed(2)
    path = export_tiny(TinyGru(), gru_spec(), tmp_path / "gru")
    spec = read_bundle(path)
    assert spec.policy == gru_spec()
    assert spec.parity.onnx_max_abs_diff <= 1e-5 and spec.parity.torchscript_max_abs_diff <= 1e-5
    entry = yaml.safe_load((path / "policy.yaml").read_text())["recurrent_state"][0]
    assert entry["input"] == "h_in" and entry["output"] == "h_out" and entry["shape"] == [1, "batch", HIDDEN]
    assert len(entry["initial"]) == HIDDEN


def test_large_initial_state_goes_to_a_hashed_file(tmp_path: Path) -> None:
    torch.manual_seed(2)
    path = export_tiny(TinyGru(hidden=72), gru_spec(hidden=72), tmp_path / "gru72")
    entry = yaml.safe_load((path / "policy.yaml").read_text())["recurrent_state"][0]
    assert entry["initial_file"] == "h_in_initial.npy" and "initial" not in entry
    spec = read_bundle(path)
    assert "h_in_initial.npy" in spec.sha256
    assert spec.policy == gru_spec(hidden=72)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_parity_failure_raises_and_leaves_nothing(tmp_path: Path) -> None:
    # The trace example (the first row) has a positive mean, the whole batch a negative one.
    inputs = torch.cat((torch.full((1, OBSERVATION_DIM), 1.0), torch.full((31, OBSERVATION_DIM), -1.0)))
    with pytest.raises(ParityError, match=r"max \|diff\| ONNX .* tolerance 1e-05"):
        export_tiny(BranchyMlp(), make_spec(), tmp_path / "bundle", inputs)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_existing_dir_and_wrong_inputs(tmp_path: Path, mlp_bundle: Path) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        export_tiny(TinyMlp(), make_spec(), mlp_bundle)
    with pytest.raises(ValueError, match=r"\[N >= 1, 22\].*\(5, 21\)"):
        export_tiny(TinyMlp(), make_spec(), tmp_path / "b", torch.zeros(5, 21))
    with pytest.raises(TypeError, match=r"the spec needs forward\(obs, h_in\)"):
        export_tiny(TinyMlp(), gru_spec(), tmp_path / "b")
    five_actions = replace(make_spec(), action_fields=(ActionField("motors", 5, "1", "FR..FL", "linear"),))
    with pytest.raises(ValueError, match=r"module returns shapes \[\[1, 4\]\].*need \[\[1, 5\]\]"):
        export_tiny(TinyMlp(), five_actions, tmp_path / "b")


def _flip_onnx_byte(bundle: Path) -> None:
    data = bytearray((bundle / "policy.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "policy.onnx").write_bytes(bytes(data))


def _edit_yaml(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        document = yaml.safe_load((bundle / "policy.yaml").read_text())
        edit(document)
        (bundle / "policy.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    return tamper


def _bump_schema(document: dict) -> None:
    document["schema_version"] = 2


def _grow_first_obs_field(document: dict) -> None:
    document["observation"]["fields"][0]["size"] = 4


def _drop_robot(document: dict) -> None:
    del document["robot"]


@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        (_flip_onnx_byte, HashMismatchError, r"sha256 of policy\.onnx is [0-9a-f]{64}, policy\.yaml expects"),
        (_edit_yaml(_bump_schema), SchemaVersionError, r"schema_version is 2, this robotrl reads 1"),
        (
            _edit_yaml(_grow_first_obs_field),
            GraphSignatureError,
            r"'obs' is .*\['batch', 22\].*\['batch', 23\]",
        ),
        (_edit_yaml(_drop_robot), ManifestError, r"missing key 'robot'"),
        (lambda b: (b / "policy.pt").unlink(), MissingFileError, r"policy\.pt is missing"),
        (lambda b: (b / "policy.yaml").write_text("task: [unclosed\n"), ManifestError, r"not valid YAML"),
    ],
    ids=["onnx_byte", "schema_version", "obs_size", "missing_key", "deleted_file", "corrupt_yaml"],
)
def test_tampered_bundle_is_refused(
    tmp_path: Path, mlp_bundle: Path, tamper: Callable[[Path], None], error: type[BundleError], message: str
) -> None:
    bundle = Path(shutil.copytree(mlp_bundle, tmp_path / "bundle"))
    tamper(bundle)
    with pytest.raises(error, match=message) as caught:
        PolicyRunner(bundle)
    assert "re-export" in str(caught.value)


def test_sampled_input_follows_the_states_and_passes_parity(noisy_bundle: Path) -> None:
    spec = read_bundle(noisy_bundle)
    assert spec.policy == noisy_spec() and spec.policy.chunking == CHUNKING
    assert spec.parity.onnx_max_abs_diff <= 1e-5 and spec.parity.torchscript_max_abs_diff <= 1e-5
    assert spec.policy.input_shapes() == {
        "obs": ["batch", 22],
        "chunk_in": ["batch", CHUNK_STATE],
        "noise": ["batch", NOISE],
    }
    graph = create_session(noisy_bundle / "policy.onnx").get_inputs()
    assert [(node.name, node.shape) for node in graph] == list(spec.policy.input_shapes().items())
    document = yaml.safe_load((noisy_bundle / "policy.yaml").read_text())
    assert document["sampled_inputs"] == [{"name": "noise", "size": NOISE, "distribution": "standard_normal"}]
    assert document["chunking"] == {
        "prediction_horizon": 8,
        "action_horizon": 4,
        "inference_steps": 8,
        "sampler": "ddim, eta 0",
        "in_graph": True,
    }


def test_manifest_without_sampled_inputs_or_chunking_still_reads(tmp_path: Path, mlp_bundle: Path) -> None:
    """Bundles exported before these keys existed stay loadable on the robot."""
    bundle = Path(shutil.copytree(mlp_bundle, tmp_path / "bundle"))
    document = yaml.safe_load((bundle / "policy.yaml").read_text())
    assert document.pop("sampled_inputs") == [] and document.pop("chunking") is None
    (bundle / "policy.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    assert PolicyRunner(bundle).spec.policy == make_spec()


def _uniform_noise(document: dict) -> None:
    document["sampled_inputs"][0]["distribution"] = "uniform"


def _long_action_horizon(document: dict) -> None:
    document["chunking"]["action_horizon"] = 9


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            _uniform_noise,
            r"sampled input 'noise': distribution must be one of \['standard_normal'\], got 'uniform'",
        ),
        (_long_action_horizon, r"1 <= action_horizon <= prediction_horizon, got action_horizon 9"),
    ],
    ids=["distribution", "chunking"],
)
def test_bad_sampled_input_or_chunking_is_refused(
    tmp_path: Path, noisy_bundle: Path, tamper: Callable[[dict], None], message: str
) -> None:
    bundle = Path(shutil.copytree(noisy_bundle, tmp_path / "bundle"))
    _edit_yaml(tamper)(bundle)
    with pytest.raises(ManifestError, match=message) as caught:
        PolicyRunner(bundle)
    assert "re-export" in str(caught.value)


def test_sampled_input_is_validated() -> None:
    with pytest.raises(
        ValueError, match=r"'noise': distribution must be one of \['standard_normal'\], got 'u'"
    ):
        SampledInput("noise", 4, "u")
    with pytest.raises(ValueError, match=r"sampled input 'noise': size must be a positive int, got 0"):
        SampledInput("noise", 0)
    with pytest.raises(ValueError, match=r"names must be unique.*'obs'"):
        replace(make_spec(), sampled_inputs=(SampledInput("obs", 4),))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action_horizon": 0}, r"1 <= action_horizon <= prediction_horizon, got action_horizon 0"),
        ({"action_horizon": 9}, r"got action_horizon 9, prediction_horizon 8"),
        ({"prediction_horizon": 2.5}, r"prediction_horizon 2\.5"),
        ({"inference_steps": 0}, r"inference_steps must be a positive int, got 0"),
        ({"sampler": ""}, r"sampler must be a non-empty string, got ''"),
        ({"in_graph": "yes"}, r"in_graph must be true or false, got 'yes'"),
    ],
)
def test_chunking_refuses_bad_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(CHUNKING, **change)
    assert replace(CHUNKING, action_horizon=8).action_horizon == 8  # k == H is allowed
