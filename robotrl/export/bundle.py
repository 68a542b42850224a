"""Policy bundle schema: policy.yaml as data classes, its writer, and a reader that refuses untrusted bundles.

A bundle is a directory with policy.onnx, policy.pt (TorchScript) and policy.yaml. The graph takes the
observation (`obs`, float32 [batch, obs_dim]), each recurrent state input and each sampled input (noise the
runtime draws, float32 [batch, size]), and returns the actions (float32 [batch, action_dim]) and each next
recurrent state, in the order policy.yaml lists them.
The robot reads bundles through this module, so it imports numpy and pyyaml only, never torch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

SCHEMA_VERSION = 1
ONNX_FILE = "policy.onnx"
TORCHSCRIPT_FILE = "policy.pt"
MANIFEST_FILE = "policy.yaml"
BATCH = "batch"
"""Name of the one dynamic axis of every graph input and output."""
INLINE_STATE_LIMIT = 64
"""Initial states with more values go to a .npy file beside policy.yaml, to keep the YAML legible."""
SAMPLED_DISTRIBUTIONS = ("standard_normal",)
"""Distributions the runtime can draw sampled inputs from."""
REEXPORT = "re-export the policy with `robotrl export` instead of editing or copying parts of a bundle"


class BundleError(Exception):
    """A bundle the runtime must refuse; the message names the check, expected vs found, and the fix."""


class MissingFileError(BundleError):
    """A file the bundle needs is absent."""


class ManifestError(BundleError):
    """policy.yaml is not valid YAML or does not follow the schema."""


class SchemaVersionError(BundleError):
    """policy.yaml was written for a schema this code does not read."""


class HashMismatchError(BundleError):
    """A file's sha256 differs from the one policy.yaml recorded at export."""


class GraphSignatureError(BundleError):
    """The ONNX graph's inputs or outputs differ from what policy.yaml declares."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_name_and_size(kind: str, name: object, size: object) -> None:
    _check(isinstance(name, str) and bool(name), f"{kind} name must be a non-empty string, got {name!r}")
    _check(_is_positive_int(size), f"{kind} {name!r}: size must be a positive int, got {size!r}")


@dataclass(frozen=True)
class ObservationField:
    """One named slice of the observation vector."""

    name: str
    size: int
    """Number of consecutive values in the observation vector."""
    unit: str
    """SI unit of the values, "1" when dimensionless."""
    frame: str
    """Reference frame and sign convention, in words."""

    def __post_init__(self) -> None:
        _check_name_and_size("field", self.name, self.size)


@dataclass(frozen=True)
class ActionField:
    """One named slice of the action vector: the bounds the policy outputs and how the robot scales them."""

    name: str
    size: int
    unit: str
    frame: str
    scaling: str
    """How the robot maps [low, high] onto hardware, e.g. 'linear onto motor_command_range [lo, hi]'."""
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        ObservationField(self.name, self.size, self.unit, self.frame)
        _check(
            _is_number(self.low) and _is_number(self.high) and self.low < self.high,
            f"action field {self.name!r}: bounds must be numbers with low < high, "
            f"got [{self.low!r}, {self.high!r}]",
        )


@dataclass(frozen=True)
class Normalization:
    """Where observation normalisation happens, so the robot neither skips nor repeats it."""

    in_graph: bool
    """True when the graph normalises raw observations itself; the robot then feeds raw values."""
    method: str
    """What the normalisation is, e.g. 'running mean/std from training, clipped to +-10'."""

    def __post_init__(self) -> None:
        _check(
            isinstance(self.in_graph, bool),
            f"normalization.in_graph must be true or false, got {self.in_graph!r}",
        )


@dataclass(frozen=True)
class RecurrentState:
    """A state tensor the graph reads as `input_name` and returns, updated, as `output_name`."""

    input_name: str
    output_name: str
    shape: tuple[int | str, ...]
    """Full tensor shape with exactly one BATCH axis, e.g. (1, "batch", 16) for a torch GRU."""
    initial: tuple[float, ...]
    """Per-sample initial value, flattened row-major; the runtime broadcasts it over the batch."""

    def __post_init__(self) -> None:
        where = f"recurrent state {self.input_name!r}"
        _check(
            list(self.shape).count(BATCH) == 1,
            f"{where}: shape needs exactly one {BATCH!r} axis, got {self.shape}",
        )
        _check(
            all(dim == BATCH or (isinstance(dim, int) and dim > 0) for dim in self.shape),
            f"{where}: shape holds positive ints and {BATCH!r}, got {self.shape}",
        )
        size = math.prod(self.sample_shape)
        _check(
            len(self.initial) == size and all(_is_number(value) for value in self.initial),
            f"{where}: initial needs {size} numbers for sample shape {self.sample_shape}, "
            f"got {len(self.initial)}",
        )

    @property
    def batch_axis(self) -> int:
        return self.shape.index(BATCH)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(dim) for dim in self.shape if dim != BATCH)

    def initial_array(self, batch_size: int) -> np.ndarray:
        """The initial state for `batch_size` samples, as the graph expects it (float32, contiguous)."""
        sample = np.asarray(self.initial, dtype=np.float32).reshape(self.sample_shape)
        shape = tuple(batch_size if dim == BATCH else dim for dim in self.shape)
        return np.broadcast_to(np.expand_dims(sample, self.batch_axis), shape).copy()


@dataclass(frozen=True)
class SampledInput:
    """Noise the runtime draws afresh each step and feeds as graph input `name` [batch, size].

    Drawn outside the graph so that export can feed torch, ONNX and TorchScript the same values for parity.
    """

    name: str
    size: int
    distribution: str = "standard_normal"

    def __post_init__(self) -> None:
        _check_name_and_size("sampled input", self.name, self.size)
        _check(
            self.distribution in SAMPLED_DISTRIBUTIONS,
            f"sampled input {self.name!r}: distribution must be one of {list(SAMPLED_DISTRIBUTIONS)}, "
            f"got {self.distribution!r}",
        )

    def draw(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        """Values for `batch_size` samples, as the graph expects them (float32 [batch_size, size])."""
        return rng.standard_normal((batch_size, self.size), dtype=np.float32)


@dataclass(frozen=True)
class Chunking:
    """How a policy over action chunks samples them; the runtime only exposes it, for logs and checks."""

    prediction_horizon: int
    """Actions predicted per chunk (H)."""
    action_horizon: int
    """Actions of a chunk executed before the next one is sampled (1 <= k <= H)."""
    inference_steps: int
    """Denoising steps per chunk."""
    sampler: str
    """The denoising sampler, e.g. 'ddim, eta 0'."""
    in_graph: bool
    """True when the denoising loop runs inside the graph, False when a runtime must (PolicyRunner cannot)."""

    def __post_init__(self) -> None:
        _check(
            _is_positive_int(self.prediction_horizon)
            and _is_positive_int(self.action_horizon)
            and self.action_horizon <= self.prediction_horizon,
            f"chunking needs ints 1 <= action_horizon <= prediction_horizon, got action_horizon "
            f"{self.action_horizon!r}, prediction_horizon {self.prediction_horizon!r}",
        )
        _check(
            _is_positive_int(self.inference_steps),
            f"chunking.inference_steps must be a positive int, got {self.inference_steps!r}",
        )
        _check(
            isinstance(self.sampler, str) and bool(self.sampler),
            f"chunking.sampler must be a non-empty string, got {self.sampler!r}",
        )
        _check(
            isinstance(self.in_graph, bool), f"chunking.in_graph must be true or false, got {self.in_graph!r}"
        )


@dataclass(frozen=True)
class PolicySpec:
    """The policy's interface as the robot must honour it; the caller of the export fills it in."""

    task: str
    robot: str
    """Platform name, as in sim/ and hardware/ (the parameter set the policy was trained for)."""
    observation_fields: tuple[ObservationField, ...]
    normalization: Normalization
    action_fields: tuple[ActionField, ...]
    control_rate_hz: float
    safety_limits: Mapping[str, Any]
    """Limits the policy was trained under (e.g. max tilt, geofence); the deployment must not exceed them."""
    recurrent_state: tuple[RecurrentState, ...] = ()
    observation_input: str = "obs"
    action_output: str = "actions"
    sampled_inputs: tuple[SampledInput, ...] = ()
    """Graph inputs after the recurrent states, drawn by the runtime each step."""
    chunking: Chunking | None = None
    """Set for policies over action chunks; None for per-step policies."""

    def __post_init__(self) -> None:
        _check(
            bool(self.observation_fields) and bool(self.action_fields),
            "a policy needs observation and action fields",
        )
        for group in (self.observation_fields, self.action_fields):
            names = [f.name for f in group]
            _check(len(set(names)) == len(names), f"field names must be unique, got {names}")
        _check(
            _is_number(self.control_rate_hz) and self.control_rate_hz > 0,
            f"control_rate_hz must be a positive number, got {self.control_rate_hz!r}",
        )
        _check(
            isinstance(self.safety_limits, Mapping),
            f"safety_limits must be a mapping, got {self.safety_limits!r}",
        )
        io_names = [self.observation_input, self.action_output]
        io_names += [name for s in self.recurrent_state for name in (s.input_name, s.output_name)]
        io_names += [s.name for s in self.sampled_inputs]
        _check(
            len(set(io_names)) == len(io_names), f"graph input/output names must be unique, got {io_names}"
        )

    @property
    def observation_dim(self) -> int:
        return sum(f.size for f in self.observation_fields)

    @property
    def action_dim(self) -> int:
        return sum(f.size for f in self.action_fields)

    def input_shapes(self) -> dict[str, list[int | str]]:
        """Graph inputs in order (observation, recurrent states, sampled inputs), name -> shape with BATCH."""
        states = {s.input_name: list(s.shape) for s in self.recurrent_state}
        sampled = {s.name: [BATCH, s.size] for s in self.sampled_inputs}
        return {self.observation_input: [BATCH, self.observation_dim], **states, **sampled}

    def output_shapes(self) -> dict[str, list[int | str]]:
        """Graph outputs in order, name -> shape with the BATCH axis."""
        states = {s.output_name: list(s.shape) for s in self.recurrent_state}
        return {self.action_output: [BATCH, self.action_dim], **states}


@dataclass(frozen=True)
class Provenance:
    """Enough to find and rerun what produced the policy."""

    git_commit: str
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Parity:
    """Evidence from export that the shipped graphs compute what the trained module computed."""

    tolerance: float
    num_inputs: int
    """Recorded observations the check ran on."""
    onnx_max_abs_diff: float
    torchscript_max_abs_diff: float


@dataclass(frozen=True)
class BundleSpec:
    """The whole of policy.yaml."""

    policy: PolicySpec
    provenance: Provenance
    parity: Parity
    sha256: Mapping[str, str]
    """File name -> hex digest, for every file of the bundle except policy.yaml."""
    schema_version: int = SCHEMA_VERSION


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(
    bundle_dir: Path, policy: PolicySpec, provenance: Provenance, parity: Parity
) -> BundleSpec:
    """Write policy.yaml (and large initial states) for the graphs already in `bundle_dir`; hash them last."""
    states: list[dict[str, Any]] = []
    state_files: list[str] = []
    for state in policy.recurrent_state:
        entry: dict[str, Any] = {
            "input": state.input_name,
            "output": state.output_name,
            "shape": list(state.shape),
        }
        if len(state.initial) <= INLINE_STATE_LIMIT:
            entry["initial"] = list(state.initial)
        else:
            entry["initial_file"] = f"{state.input_name}_initial.npy"
            np.save(bundle_dir / entry["initial_file"], np.reshape(state.initial, state.sample_shape))
            state_files.append(entry["initial_file"])
        states.append(entry)
    sha256 = {name: sha256_file(bundle_dir / name) for name in (ONNX_FILE, TORCHSCRIPT_FILE, *state_files)}
    spec = BundleSpec(policy, provenance, parity, sha256)
    document = {
        "schema_version": spec.schema_version,
        "task": policy.task,
        "robot": policy.robot,
        "control_rate_hz": policy.control_rate_hz,
        "observation": {
            "input": policy.observation_input,
            "normalization": asdict(policy.normalization),
            "fields": [asdict(f) for f in policy.observation_fields],
        },
        "action": {"output": policy.action_output, "fields": [asdict(f) for f in policy.action_fields]},
        "recurrent_state": states,
        "sampled_inputs": [asdict(s) for s in policy.sampled_inputs],
        "chunking": None if policy.chunking is None else asdict(policy.chunking),
        "safety_limits": dict(policy.safety_limits),
        "provenance": asdict(provenance),
        "parity": asdict(parity),
        "sha256": sha256,
    }
    try:
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=120)
    except yaml.YAMLError as err:
        raise ValueError(
            f"safety_limits, config and metrics must hold plain YAML values (str, int, float, bool, list, "
            f"dict); convert numpy scalars with float() or int(): {err}"
        ) from err
    (bundle_dir / MANIFEST_FILE).write_text(text)
    return spec


def read_bundle(bundle_dir: Path) -> BundleSpec:
    """Parse policy.yaml, check files, schema version and hashes; raise a BundleError on the first failure."""
    for name in (MANIFEST_FILE, ONNX_FILE, TORCHSCRIPT_FILE):
        if not (bundle_dir / name).is_file():
            raise MissingFileError(
                f"bundle {bundle_dir}: {name} is missing; a bundle needs all of policy.yaml, "
                f"policy.onnx and policy.pt. Copy the whole directory again or {REEXPORT}."
            )
    try:
        document = yaml.safe_load((bundle_dir / MANIFEST_FILE).read_text())
    except yaml.YAMLError as err:
        raise ManifestError(f"{bundle_dir / MANIFEST_FILE} is not valid YAML ({err}); {REEXPORT}.") from err
    if not isinstance(document, dict):
        raise ManifestError(
            f"{bundle_dir / MANIFEST_FILE} must hold a mapping, found {type(document).__name__}; {REEXPORT}."
        )
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{bundle_dir / MANIFEST_FILE}: schema_version is {version!r}, this robotrl reads "
            f"{SCHEMA_VERSION}; {REEXPORT} using the robotrl version installed on the robot."
        )
    try:
        sha256 = _mapping(document, "sha256")
        _verify_hashes(bundle_dir, sha256)
        return BundleSpec(
            policy=_policy_from_document(document, bundle_dir, sha256),
            provenance=Provenance(**_mapping(document, "provenance")),
            parity=Parity(**_mapping(document, "parity")),
            sha256=sha256,
        )
    except KeyError as err:
        raise ManifestError(f"{bundle_dir / MANIFEST_FILE} is missing key {err}; {REEXPORT}.") from err
    except (TypeError, ValueError) as err:
        raise ManifestError(
            f"{bundle_dir / MANIFEST_FILE} does not follow schema {SCHEMA_VERSION}: {err}; {REEXPORT}."
        ) from err


def _verify_hashes(bundle_dir: Path, sha256: Mapping[str, Any]) -> None:
    for required in (ONNX_FILE, TORCHSCRIPT_FILE):
        if required not in sha256:
            raise ManifestError(
                f"{bundle_dir / MANIFEST_FILE}: sha256 has no entry for {required}; {REEXPORT}."
            )
    for name, expected in sha256.items():
        path = bundle_dir / name
        if not path.is_file():
            raise MissingFileError(
                f"bundle {bundle_dir}: {name} (listed in sha256) is missing; copy the whole "
                f"directory again or {REEXPORT}."
            )
        found = sha256_file(path)
        if found != expected:
            raise HashMismatchError(
                f"bundle {bundle_dir}: sha256 of {name} is {found}, policy.yaml expects {expected}; the file "
                f"was modified or copied incompletely. Copy the bundle again or {REEXPORT}."
            )


def _mapping(document: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = document[key]
    if not isinstance(value, dict):
        raise TypeError(f"{key!r} must be a mapping, found {value!r}")
    return value


def _policy_from_document(
    document: Mapping[str, Any], bundle_dir: Path, sha256: Mapping[str, Any]
) -> PolicySpec:
    observation = _mapping(document, "observation")
    action = _mapping(document, "action")
    # Bundles written before sampled inputs and chunking existed lack both keys: they have neither.
    chunking = None if document.get("chunking") is None else Chunking(**_mapping(document, "chunking"))
    return PolicySpec(
        task=document["task"],
        robot=document["robot"],
        observation_fields=tuple(ObservationField(**f) for f in observation["fields"]),
        normalization=Normalization(**_mapping(observation, "normalization")),
        action_fields=tuple(ActionField(**f) for f in action["fields"]),
        control_rate_hz=document["control_rate_hz"],
        safety_limits=_mapping(document, "safety_limits"),
        recurrent_state=tuple(
            _state_from_entry(entry, bundle_dir, sha256) for entry in document["recurrent_state"]
        ),
        observation_input=observation["input"],
        action_output=action["output"],
        sampled_inputs=tuple(SampledInput(**entry) for entry in document.get("sampled_inputs", [])),
        chunking=chunking,
    )


def _state_from_entry(
    entry: Mapping[str, Any], bundle_dir: Path, sha256: Mapping[str, Any]
) -> RecurrentState:
    if "initial_file" in entry:
        if entry["initial_file"] not in sha256:
            raise ValueError(
                f"initial_file {entry['initial_file']!r} has no sha256 entry, so it cannot be trusted"
            )
        initial = np.load(bundle_dir / entry["initial_file"], allow_pickle=False).ravel().tolist()
    else:
        initial = entry["initial"]
    return RecurrentState(entry["input"], entry["output"], tuple(entry["shape"]), tuple(initial))
