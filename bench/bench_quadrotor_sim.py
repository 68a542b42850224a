"""Quadrotor simulator throughput on one CPU thread: the eager RK4 step, and with its model compiled.

    python bench/bench_quadrotor_sim.py [--num-envs 4096] [--steps 200] [--no-compile]

Both variants step the same sampled RAPTOR quadrotors (per-env parameters, constant disturbance
force) and are timed alternately, best of `--repeats`, so that load from other processes on a
shared machine hits both alike. Ratios are against the eager rate measured in the same run; each
variant's one-step difference to a float64 step shows that the speed costs no accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import torch

from robotrl.envs.quadrotor.dynamics import QuadrotorDynamics, hover_state
from robotrl.envs.quadrotor.params import QuadrotorParams
from robotrl.envs.quadrotor.platforms import RaptorDistribution

Step = Callable[[torch.Tensor], torch.Tensor]


def _env_steps_per_second(step: Step, state: torch.Tensor, num_steps: int) -> float:
    num_envs = state.shape[0]
    start = time.perf_counter()
    for _ in range(num_steps):
        state = step(state)
    return num_steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant; the best is kept")
    parser.add_argument("--no-compile", action="store_true", help="time the eager step only")
    args = parser.parse_args()
    torch.set_num_threads(1)

    generator = torch.Generator().manual_seed(0)
    params = RaptorDistribution().sample(args.num_envs, generator)
    state = hover_state(params)
    action = params.hover_action().unsqueeze(-1) + 0.05 * torch.randn(args.num_envs, 4, generator=generator)
    force_w = 0.1 * 9.81 * params.mass.unsqueeze(-1) * torch.randn(args.num_envs, 3, generator=generator)

    variants: dict[str, QuadrotorDynamics] = {"eager": QuadrotorDynamics(params, dt=0.01)}
    if not args.no_compile:
        compiled = QuadrotorDynamics(params, dt=0.01, use_compile=True)
        start = time.perf_counter()
        compiled.step(state, action, force_w)
        print(f"torch.compile: first step took {time.perf_counter() - start:.1f} s (compilation)")
        variants["compiled"] = compiled
    # float32 rounding (near-cancelling rotor torques on light quads) sets the floor for both variants.
    params64 = QuadrotorParams(
        **{f.name: getattr(params, f.name).double() for f in dataclasses.fields(params)}
    )
    reference = QuadrotorDynamics(params64, dt=0.01).step(state.double(), action.double(), force_w.double())
    for name, dynamics in variants.items():
        error = (dynamics.step(state, action, force_w).double() - reference).abs().max()
        print(f"{name}: max |difference| to a float64 step after one step {error:.1e}")

    steps: dict[str, Step] = {
        name: (lambda s, dyn=dyn: dyn.step(s, action, force_w)) for name, dyn in variants.items()
    }
    best = dict.fromkeys(steps, 0.0)
    for step in steps.values():
        _env_steps_per_second(step, state, 10)  # warm-up
    for _ in range(args.repeats):
        for name, step in steps.items():
            best[name] = max(best[name], _env_steps_per_second(step, state, args.steps))

    print(
        f"{args.num_envs} envs, dt 0.01 s, 1 RK4 substep, 1 thread, best of {args.repeats}x{args.steps} steps"
    )
    for name, rate in best.items():
        print(f"  {name:9s} {rate / 1e6:6.2f} M env-steps/s  {rate / best['eager']:5.2f}x eager")


if __name__ == "__main__":
    main()
