"""Teacher env-steps/s of the batched teacher farm against one teacher trained alone, in one run.

Both train PPO teachers on quadrotors of the RAPTOR distribution with the same envs per teacher and the
same config (configs/train/raptor.yaml); the batched farm runs `group_size` teachers as one grouped
network (robotrl.policies.grouped_mlp). The issue asks for at least 5x.

    python bench/bench_teacher_farm.py --iterations 2 --set farm.group_size=64
"""

from __future__ import annotations

import argparse

from robotrl.recipes.raptor_config import load_config
from robotrl.recipes.raptor_farm import measure_farm_speedup

TARGET_SPEEDUP = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--iterations", type=int, default=2, help="batched PPO iterations in each alternating round"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the ratio is their median")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    config = load_config(None, [*args.set, f"farm.speedup_iterations={args.iterations}"])
    farm = config.farm
    print(
        f"{farm.envs_per_teacher} envs a teacher, {config.ppo.num_steps} steps a rollout, "
        f"{config.ppo.num_epochs} epochs, {config.threads} threads, {args.rounds} alternating rounds of "
        f"{args.iterations} batched iterations and as long for one teacher"
    )
    result = measure_farm_speedup(config, rounds=args.rounds)
    print(f"one teacher alone: {result['one_by_one_teacher_steps_per_s']:>12,.0f} teacher env-steps/s")
    print(
        f"{result['batched_teachers']:.0f} teachers batched: {result['batched_teacher_steps_per_s']:>10,.0f} "
        f"teacher env-steps/s"
    )
    verdict = "met" if result["speedup"] >= TARGET_SPEEDUP else "MISSED"
    print(
        f"ratio {result['speedup']:.1f}x, median of the rounds (range {result['speedup_min']:.1f}-"
        f"{result['speedup_max']:.1f}x; target >= {TARGET_SPEEDUP:.0f}x: {verdict})"
    )


if __name__ == "__main__":
    main()
