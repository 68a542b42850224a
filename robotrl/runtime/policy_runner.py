"""Run a policy bundle on the robot with onnxruntime and numpy only: no torch, no training code.

The runner refuses a bundle it cannot trust (see robotrl.export.bundle) and checks every observation, so a
bad input or a non-finite network output surfaces as an exception the safety layer can act on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from robotrl.export.bundle import (
    MANIFEST_FILE,
    ONNX_FILE,
    REEXPORT,
    BundleSpec,
    GraphSignatureError,
    read_bundle,
)

SMALL_ARRAY = 256
"""Arrays up to this many values are checked for NaN/inf through Python floats (see _all_finite)."""


class NonFiniteObservationError(ValueError):
    """The observation holds NaN or inf; the policy was not run."""


class NonFiniteActionError(RuntimeError):
    """The network returned NaN or inf: the safety layer should fall back. The recurrent state is kept."""


def create_session(onnx_path: Path, num_threads: int = 1) -> ort.InferenceSession:
    """A CPU session tuned for one small batch per control tick: fixed threads, full graph optimisation."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _all_finite(values: np.ndarray) -> bool:
    """No NaN or inf. Right after an onnxruntime call a numpy ufunc costs about 4 us (its code is out of the
    CPU caches) against 1 us for summing a few Python floats; a float32 sum this short cannot overflow."""
    if values.size <= SMALL_ARRAY:
        return math.isfinite(sum(values.ravel().tolist()))
    return bool(np.isfinite(values).all())


class PolicyRunner:
    """Steps the policy of a bundle, carrying its recurrent state between calls.

    Sampled inputs (e.g. the noise a diffusion policy starts from) are drawn each step from a generator
    seeded by `seed`, so a run with the same seed and observations repeats its actions.
    """

    def __init__(self, bundle_dir: str | Path, num_threads: int = 1, seed: int = 0) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.spec: BundleSpec = read_bundle(self.bundle_dir)
        self._session = create_session(self.bundle_dir / ONNX_FILE, num_threads)
        self._check_signature()
        policy = self.spec.policy
        self._obs_input = policy.observation_input
        self._obs_dim = policy.observation_dim
        self._output_names = list(policy.output_shapes())
        self._state_inputs = [s.input_name for s in policy.recurrent_state]
        self._sampled_inputs = policy.sampled_inputs
        self._rng = np.random.default_rng(seed)
        self._fields = ", ".join(f"{f.name}[{f.size}]" for f in policy.observation_fields)
        # One feed dict for the runner's life: step() replaces its values instead of building a new one.
        self._feed: dict[str, np.ndarray] = {}
        self.batch_size = 1
        self.reset()

    @property
    def observation_dim(self) -> int:
        return self._obs_dim

    @property
    def action_dim(self) -> int:
        return self.spec.policy.action_dim

    @property
    def control_rate_hz(self) -> float:
        return self.spec.policy.control_rate_hz

    @property
    def state(self) -> dict[str, np.ndarray]:
        """A copy of the recurrent state, input name -> array; empty for feed-forward policies."""
        return {name: self._feed[name].copy() for name in self._state_inputs}

    def reset(self, batch_size: int = 1, rows: Sequence[int] | np.ndarray | None = None) -> None:
        """Put the recurrent state back to the bundle's initial value, for `batch_size` parallel inputs.

        With `rows` (indices or a bool mask over the current batch) only those rows restart, so a batched env
        whose episodes end at different times keeps the others' state. The sampled inputs are not reseeded.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if rows is None:
            self.batch_size = batch_size
            for state in self.spec.policy.recurrent_state:
                self._feed[state.input_name] = state.initial_array(batch_size)
            return
        if batch_size != self.batch_size:
            raise ValueError(
                f"reset(rows=...) keeps the current batch of {self.batch_size}, got batch_size={batch_size}: "
                f"pass batch_size={self.batch_size} with rows, or no rows to change the batch"
            )
        index = self._row_index(rows)
        for state in self.spec.policy.recurrent_state:
            initial = np.moveaxis(state.initial_array(len(index)), state.batch_axis, 0)
            np.moveaxis(self._feed[state.input_name], state.batch_axis, 0)[index] = initial

    def step(self, obs: np.ndarray) -> np.ndarray:
        """Actions for obs [obs_dim] -> [action_dim], or [B, obs_dim] -> [B, action_dim]."""
        obs = np.asarray(obs)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self._obs_dim:
            raise ValueError(
                f"observation shape {obs.shape} does not match this policy: expected "
                f"({self._obs_dim},) or (B, {self._obs_dim}) with fields {self._fields}"
            )
        if obs.dtype != np.float32 and obs.dtype != np.float64:
            raise TypeError(f"observation dtype must be float32 or float64, got {obs.dtype}")
        batch = np.ascontiguousarray(obs.reshape(-1, self._obs_dim), dtype=np.float32)
        if not _all_finite(batch):
            raise NonFiniteObservationError(self._non_finite_message(batch))
        if self._state_inputs and batch.shape[0] != self.batch_size:
            raise ValueError(
                f"observation batch {batch.shape[0]} differs from the recurrent state batch "
                f"{self.batch_size}; call reset(batch_size={batch.shape[0]}) first"
            )
        self._feed[self._obs_input] = batch
        for sampled in self._sampled_inputs:
            self._feed[sampled.name] = sampled.draw(self._rng, batch.shape[0])
        actions, *states = self._session.run(self._output_names, self._feed)
        if not _all_finite(actions):
            raise NonFiniteActionError(
                f"policy output {self._output_names[0]!r} holds non-finite values {actions.tolist()}; "
                f"fall back to the safe action and call reset() before resuming"
            )
        for name, value in zip(self._state_inputs, states, strict=True):
            self._feed[name] = value
        return actions[0] if obs.ndim == 1 else actions

    def _row_index(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """`rows` as indices into the current batch, refused when they cannot name its rows."""
        index = np.asarray(rows)
        if index.dtype == np.bool_:
            if index.shape != (self.batch_size,):
                raise ValueError(
                    f"a row mask needs shape ({self.batch_size},) for the current batch, got {index.shape}"
                )
            return np.flatnonzero(index)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise ValueError(f"rows must be int indices or a bool mask over the batch, got {rows!r}")
        outside = index[(index < 0) | (index >= self.batch_size)]
        if outside.size:
            raise ValueError(
                f"rows {outside.tolist()} are out of range for the current batch of {self.batch_size} "
                f"(indices 0..{self.batch_size - 1})"
            )
        return index.astype(np.intp)

    def _non_finite_message(self, batch: np.ndarray) -> str:
        bad: list[str] = []
        start = 0
        for field in self.spec.policy.observation_fields:
            rows = np.flatnonzero(~np.isfinite(batch[:, start : start + field.size]).all(axis=1))
            if rows.size:
                bad.append(f"{field.name} (rows {rows.tolist()})")
            start += field.size
        return f"observation holds NaN or inf in {', '.join(bad)}; the policy was not run"

    def _check_signature(self) -> None:
        policy = self.spec.policy
        for kind, expected, nodes in (
            ("input", policy.input_shapes(), self._session.get_inputs()),
            ("output", policy.output_shapes(), self._session.get_outputs()),
        ):
            found = {node.name: list(node.shape) for node in nodes}
            if list(found) != list(expected):
                raise GraphSignatureError(
                    f"{self.bundle_dir / ONNX_FILE} has {kind}s {list(found)}, {MANIFEST_FILE} declares "
                    f"{list(expected)}; {REEXPORT}."
                )
            for node in nodes:
                if found[node.name] != expected[node.name] or node.type != "tensor(float)":
                    raise GraphSignatureError(
                        f"{self.bundle_dir / ONNX_FILE} {kind} {node.name!r} is {node.type} "
                        f"{found[node.name]}, {MANIFEST_FILE} declares tensor(float) {expected[node.name]}; "
                        f"{REEXPORT}."
                    )
