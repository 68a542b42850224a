"""Quadruped simulator throughput: A1 robot physics steps per second, 1 versus 2 rollout threads.

    python bench/bench_quadruped_sim.py [--num-envs 256 1024] [--threads 1 2] [--seconds 0.5]

Every env physics step counts one (a policy step is `decimation` of them). The robots get fresh
uniform random actions each policy step, so they stumble and fall as under an untrained policy. The
variants are timed alternately, best of `--repeats`, so that load from other processes on a shared
machine hits them alike; ratios are against one thread at the same batch size in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from robotrl.envs.quadruped.model import NUM_JOINTS
from robotrl.envs.quadruped.sim import QuadrupedSim, QuadrupedSimConfig


def _robot_steps_per_second(sim: QuadrupedSim, actions: np.ndarray, seconds: float) -> tuple[float, float]:
    """Step until `seconds` have passed; robot physics steps per wall second and per CPU second of this
    process (all its threads), which stays meaningful when other processes hold the cores."""
    policy_steps = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        sim.step(actions[policy_steps % len(actions)])
        policy_steps += 1
    robot_steps = policy_steps * sim.num_envs * sim.config.decimation
    return robot_steps / elapsed, robot_steps / (time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--num-envs", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant; the best is kept")
    parser.add_argument("--per-env-models", action="store_true", help="one MjModel copy per env (for DR)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other processes share them)")

    for num_envs in args.num_envs:
        actions = rng.uniform(-1.0, 1.0, size=(50, num_envs, NUM_JOINTS))
        sims = {
            threads: QuadrupedSim(
                QuadrupedSimConfig(num_envs=num_envs, num_threads=threads, per_env_models=args.per_env_models)
            )
            for threads in args.threads
        }
        best = {threads: (0.0, 0.0) for threads in sims}
        for sim in sims.values():
            _robot_steps_per_second(sim, actions, 0.1)  # warm-up
        for _ in range(args.repeats):
            for threads, sim in sims.items():
                rate = _robot_steps_per_second(sim, actions, args.seconds)
                best[threads] = max(best[threads], rate)
        baseline = best[1][0] if 1 in best else None
        for threads, (rate, per_cpu) in best.items():
            ratio = f"  {rate / baseline:4.2f}x 1 thread" if baseline else ""
            print(
                f"{num_envs:5d} envs, {threads} thread(s): {rate / 1e3:7.1f} k robot-steps/s{ratio}"
                f"  ({per_cpu / 1e3:5.1f} k per CPU-second)"
            )
        for sim in sims.values():
            sim.close()


if __name__ == "__main__":
    main()
