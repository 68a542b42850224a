"""Per-call latency of PolicyRunner.step for one observation on one thread, against the torch forward.

The robot steps one observation per control tick, so per-call latency (median and tail), not throughput,
decides whether a policy fits the control rate. Target: median <= 50 us.

    python bench/bench_policy_runner.py --calls 20000
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robotrl.envs.quadrotor.observations import ACTION_DIM, OBSERVATION_DIM
from robotrl.export.bundle import PolicySpec, RecurrentState
from robotrl.export.export import export_bundle
from robotrl.policies.mlp import ActorCritic
from robotrl.policies.recurrent_student import RecurrentStudent
from robotrl.recipes.quadrotor import quadrotor_policy_spec
from robotrl.runtime.policy_runner import PolicyRunner, create_session

TARGET_MEDIAN_US = 50.0


def quadrotor_spec(recurrent_state: tuple[RecurrentState, ...]) -> PolicySpec:
    return quadrotor_policy_spec("quadrotor_hover", "bench", 100.0, {}, recurrent_state)


def latency_us(call: Callable[[], object], calls: int) -> tuple[float, float]:
    """(median, p99) of single-call wall time in microseconds, after a warm-up."""
    for _ in range(calls // 10):
        call()
    gc.collect()
    samples = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        call()
        samples[i] = time.perf_counter_ns() - start
    return float(np.median(samples)) / 1e3, float(np.percentile(samples, 99)) / 1e3


def bench(name: str, module: nn.Module, spec: PolicySpec, out_dir: Path, calls: int) -> bool:
    module.eval()
    recorded = torch.randn(256, OBSERVATION_DIM)
    bundle = export_bundle(module, out_dir / name, spec, recorded, seed=0, config={}, metrics={})
    runner = PolicyRunner(bundle, num_threads=1)
    obs = recorded[0].numpy()

    session = create_session(bundle / "policy.onnx")
    feed = {"obs": obs[None], **{s.input_name: s.initial_array(1) for s in spec.recurrent_state}}
    outputs = list(spec.output_shapes())

    obs_t = recorded[:1]
    states_t = tuple(torch.from_numpy(s.initial_array(1)) for s in spec.recurrent_state)

    def torch_forward() -> object:
        with torch.inference_mode():
            return module(obs_t, *states_t)

    runner_median, runner_p99 = latency_us(lambda: runner.step(obs), calls)
    raw_median, raw_p99 = latency_us(lambda: session.run(outputs, feed), calls)
    torch_median, torch_p99 = latency_us(torch_forward, calls)
    params = sum(p.numel() for p in module.parameters())
    print(
        f"{name:<5} {params:>6}  runner {runner_median:6.1f} / {runner_p99:6.1f}  "
        f"ort.run {raw_median:6.1f} / {raw_p99:6.1f}  torch {torch_median:6.1f} / {torch_p99:6.1f}  "
        f"runner/torch {runner_median / torch_median:4.2f}x"
    )
    return runner_median <= TARGET_MEDIAN_US


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20000, help="timed calls per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    mlp = ActorCritic(OBSERVATION_DIM, OBSERVATION_DIM, ACTION_DIM).deterministic_actor()
    student = RecurrentStudent()  # RAPTOR's 2084-parameter student
    state = RecurrentState(
        "hidden", "hidden_next", (1, "batch", student.hidden_size), (0.0,) * student.hidden_size
    )
    print(f"median / p99 latency per call in us, one observation, one thread ({args.calls} calls)")
    print("name  params")
    with tempfile.TemporaryDirectory() as tmp:
        ok = [
            bench("mlp", mlp, quadrotor_spec(()), Path(tmp), args.calls),
            bench("gru", student, quadrotor_spec((state,)), Path(tmp), args.calls),
        ]
    print(f"target median <= {TARGET_MEDIAN_US:.0f} us: {'met' if all(ok) else 'MISSED'}")


if __name__ == "__main__":
    main()
