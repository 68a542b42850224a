"""Export a trained torch policy to a bundle: ONNX + TorchScript + policy.yaml, gated by a parity check.

The module's forward is `forward(obs) -> actions` for feed-forward policies and
`forward(obs, *states, *sampled) -> (actions, *next_states)` otherwise, with the states in the order of
`spec.recurrent_state` and the sampled inputs (noise the runtime draws) in that of `spec.sampled_inputs`.
Only what passes parity on real recorded observations is ever renamed into place.
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robotrl.export.bundle import (
    BATCH,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    Parity,
    PolicySpec,
    Provenance,
    write_manifest,
)
from robotrl.runtime.policy_runner import PolicyRunner, create_session

logger = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-5
"""Largest absolute difference allowed between torch, ONNX and TorchScript outputs."""
PARITY_SEED = 0
"""Seed of the sampled inputs export feeds: each parity run redraws the same values for every graph."""

StepFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
"""Graph inputs in order (obs [B, obs_dim], *states, *sampled) -> [actions, *next_states], float32 numpy."""


class ParityError(RuntimeError):
    """An exported graph computes something else than the torch module; nothing was written."""


def export_bundle(
    module: nn.Module,
    out_dir: str | Path,
    spec: PolicySpec,
    recorded_inputs: torch.Tensor,
    *,
    seed: int,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Path:
    """Write a checked bundle to `out_dir` (which must not exist) and return its path.

    `recorded_inputs` [N, obs_dim] are real observations from rollouts: parity runs them as one batch and,
    for recurrent policies, also as one sequence carrying the state, since random inputs miss the regions
    the policy actually visits.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; export to a new directory or remove it first")
    if (
        recorded_inputs.ndim != 2
        or recorded_inputs.shape[1] != spec.observation_dim
        or not len(recorded_inputs)
    ):
        raise ValueError(
            f"recorded_inputs must be [N >= 1, {spec.observation_dim}] (the observation fields), "
            f"got {tuple(recorded_inputs.shape)}"
        )
    inputs = recorded_inputs.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(inputs).all():
        raise ValueError("recorded_inputs hold NaN or inf; record observations from finite rollouts")
    module = copy.deepcopy(module).to("cpu").eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # Traced on one sample; the batched parity run below proves the batch axis stayed dynamic.
        initial = [s.initial_array(1) for s in spec.recurrent_state]
        rng = np.random.default_rng(PARITY_SEED)
        example = tuple(torch.from_numpy(x) for x in _graph_inputs(spec, rng, inputs[:1], initial))
        _check_output_shapes(module, example, spec)
        with _known_noise_silenced():
            _export_onnx(module, example, spec, staging / ONNX_FILE)
            torch.jit.trace(module, example, check_trace=False).save(str(staging / TORCHSCRIPT_FILE))
            scripted = torch.jit.load(str(staging / TORCHSCRIPT_FILE))
        parity = _parity(module, scripted, staging / ONNX_FILE, spec, inputs)
        provenance = Provenance(git_commit(), seed, dict(config), dict(metrics))
        write_manifest(staging, spec, provenance, parity)
        PolicyRunner(staging)  # the robot's own checks (hashes, graph signature) must accept the bundle
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "exported %s (parity onnx %.2e, torchscript %.2e)",
        out_dir,
        parity.onnx_max_abs_diff,
        parity.torchscript_max_abs_diff,
    )
    return out_dir


def git_commit() -> str:
    """HEAD of the repository holding this code, or 'unknown' outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _check_output_shapes(module: nn.Module, example: tuple[torch.Tensor, ...], spec: PolicySpec) -> None:
    with torch.no_grad():
        try:
            outputs = module(*example)
        except TypeError as err:
            signature = ", ".join(["obs", *list(spec.input_shapes())[1:]])
            raise TypeError(f"the spec needs forward({signature}) -> actions and next states: {err}") from err
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    batch = example[0].shape[0]
    expected = [[batch if dim == BATCH else dim for dim in shape] for shape in spec.output_shapes().values()]
    found = [list(out.shape) for out in outputs]
    if found != expected:
        raise ValueError(
            f"module returns shapes {found} for a batch of {batch}, the spec's outputs "
            f"{list(spec.output_shapes())} need {expected}; check action_fields and recurrent_state"
        )


def _export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...], spec: PolicySpec, path: Path) -> None:
    inputs, outputs = spec.input_shapes(), spec.output_shapes()
    dynamic_axes = {name: {shape.index(BATCH): BATCH} for name, shape in {**inputs, **outputs}.items()}
    with torch.no_grad():
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic_axes,
        )


@contextmanager
def _known_noise_silenced() -> Iterator[None]:
    """Hide warnings that say nothing about the user's module, so its own tracer warnings stand out.

    The legacy exporter and policy.pt are chosen on purpose (DESIGN.md) despite their deprecation; nn.GRU/LSTM
    trace their own constant size checks; the RNN batch-size notice does not apply with states as inputs.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.modules\.rnn")
        warnings.filterwarnings(
            "ignore", r"Exporting a model to ONNX with a batch_size other than 1", UserWarning
        )
        yield


def _torch_step(fn: Callable[..., Any]) -> StepFn:
    def step(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = fn(*(torch.from_numpy(x) for x in inputs))
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    return step


def _onnx_step(onnx_path: Path, spec: PolicySpec) -> StepFn:
    session = create_session(onnx_path)
    input_names, output_names = list(spec.input_shapes()), list(spec.output_shapes())

    def step(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return session.run(output_names, dict(zip(input_names, inputs, strict=True)))

    return step


def _graph_inputs(
    spec: PolicySpec, rng: np.random.Generator, obs: np.ndarray, states: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """The graph's inputs in order, with the sampled ones drawn from `rng` as the runtime draws them."""
    return [obs, *states, *(s.draw(rng, len(obs)) for s in spec.sampled_inputs)]


def _run(step: StepFn, spec: PolicySpec, inputs: np.ndarray) -> list[np.ndarray]:
    """Outputs for the inputs as one batch, then (recurrent) per step of one sequence, and its final state.

    Sampled inputs come from a fresh PARITY_SEED generator, so every graph run here sees the same values.
    """
    rng = np.random.default_rng(PARITY_SEED)
    initial = [s.initial_array(len(inputs)) for s in spec.recurrent_state]
    outputs = step(_graph_inputs(spec, rng, inputs, initial))
    if spec.recurrent_state:
        states = [s.initial_array(1) for s in spec.recurrent_state]
        for row in inputs:
            actions, *states = step(_graph_inputs(spec, rng, row[None], states))
            outputs.append(actions)
        outputs.extend(states)
    return outputs


def _max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def _parity(
    module: nn.Module, scripted: Callable[..., Any], onnx_path: Path, spec: PolicySpec, inputs: np.ndarray
) -> Parity:
    reference = _run(_torch_step(module), spec, inputs)
    parity = Parity(
        tolerance=PARITY_TOLERANCE,
        num_inputs=len(inputs),
        onnx_max_abs_diff=_max_abs_diff(reference, _run(_onnx_step(onnx_path, spec), spec, inputs)),
        torchscript_max_abs_diff=_max_abs_diff(reference, _run(_torch_step(scripted), spec, inputs)),
    )
    worst = max(parity.onnx_max_abs_diff, parity.torchscript_max_abs_diff)
    if not worst <= PARITY_TOLERANCE:
        raise ParityError(
            f"exported policy differs from the torch module on {len(inputs)} recorded inputs: max |diff| "
            f"ONNX {parity.onnx_max_abs_diff:.3e}, TorchScript {parity.torchscript_max_abs_diff:.3e}, "
            f"tolerance {PARITY_TOLERANCE:.0e}. Look for randomness, data-dependent Python control flow or "
            f"in-place buffer updates in forward(); no bundle was written"
        )
    return parity
