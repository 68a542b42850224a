"""Cost of the teachers' labels in a RAPTOR distillation step, against one batched call for all of them.

The student's DAgger flights are labelled every step by their teachers (TeacherFarm.actor): one call per
trained group, the retry group's teachers interleaved with the others'. The baseline is the least that
labelling can cost: every labelling row's teacher in one grouped network, one call. Synthetic farm of
untrained teachers (the cost does not depend on the weights) shaped as a distillation of the config's.

    python bench/bench_teacher_labels.py --teachers 1000 --retried 50 --set student.envs_per_teacher=1
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import torch

from robotrl.envs.quadrotor.env import TEACHER_OBSERVATION_DIM
from robotrl.recipes.raptor import distillation_teachers
from robotrl.recipes.raptor_config import load_config
from robotrl.recipes.raptor_farm import TeacherFarm, build_group, group_members, sample_quadrotors


def per_step_s(fn: Callable[[torch.Tensor], torch.Tensor], obs: torch.Tensor, steps: int) -> float:
    with torch.no_grad():
        for _ in range(10):
            fn(obs)
        start = time.perf_counter()
        for _ in range(steps):
            fn(obs)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teachers", type=int, default=1000)
    parser.add_argument("--retried", type=int, default=50, help="teachers retrained in the retry group")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(None, [f"farm.num_teachers={args.teachers}", *args.set])
    params = sample_quadrotors(config.farm)
    retry = sorted(random.Random(0).sample(range(args.teachers), args.retried))
    members = [*group_members(config.farm), retry]
    groups = [build_group(config, params.index(torch.as_tensor(m))) for m in members]
    farm = TeacherFarm(params, torch.ones(args.teachers, dtype=torch.bool), groups, members)
    teachers = distillation_teachers(config, farm)
    k = config.student.envs_per_teacher
    obs = torch.randn(len(teachers) * k, TEACHER_OBSERVATION_DIM)
    farm_labels = farm.actor(teachers, k)
    one_call = build_group(config, params.index(torch.as_tensor(teachers))).deterministic_actor()
    farm_s = per_step_s(farm_labels, obs, args.steps)
    one_s = per_step_s(one_call, obs, args.steps)
    steps = config.student.distill.total_rollouts * config.student.distill.rollout_steps
    print(
        f"{args.teachers} teachers in {len(members)} groups ({args.retried} retried), "
        f"{len(teachers)} labelling teachers x {k} envs, {args.threads} threads"
    )
    for name, s in ((f"farm ({len(farm_labels.actors)} calls)", farm_s), ("one call", one_s)):
        print(f"{name:>16}: {s * 1e3:6.2f} ms a step, {s * steps:5.0f} s a distillation")
    print(f"ratio farm / one call: {farm_s / one_s:.2f}x")


if __name__ == "__main__":
    main()
