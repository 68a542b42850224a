"""How far can the A1 model fly at all? A bound on forward jumps that no policy is needed for.

    python bench/jump_reach.py [--iterations 60] [--population 1024]

The cross-entropy method searches open-loop joint targets: symmetric legs, the thigh and calf targets
of the front and of the rear pair held for `--knot-steps` policy steps each, then one landing pose held
to the episode's end (hips at the default). Each candidate runs in the jump env itself (nominal robot,
the training gains, clip and 50 Hz), scored by the base's forward position at its first landing after
a flight, with 1 m off for a fall, a trunk contact, a drift of more than 0.1 m after the landing or no
flight. The landing-error termination is off, so a far jump is not cut short for missing a target.

It prints, per iteration, the elite's mean landing and apex gain, the farthest landing and the
farthest one that then held still (what a jump must do to count as a success), each also as a ratio
to the 0.9 m of the paper's real robot (ANCHORS §3). Open loop cannot react to the touchdown, so the
second number says little: the first bounds what the flight phase allows.
"""

from __future__ import annotations

import argparse
import time

import torch

from robotrl.envs.quadruped.curriculum import CurriculumConfig
from robotrl.envs.quadruped.jump_env import QuadrupedJumpEnv, QuadrupedJumpEnvConfig, TerminationConfig
from robotrl.envs.quadruped.model import NUM_JOINTS

PAPER_JUMP_M = 0.9
THIGH_CALF = [[3 * leg + 1, 3 * leg + 2] for leg in range(4)]  # LEGS order FR, FL, RR, RL


def joint_actions(params: torch.Tensor, steps: int, knot_steps: int) -> torch.Tensor:
    """[steps, N, 12] actions from params [N, knots + 1, 4] (front thigh, calf, rear thigh, calf)."""
    knot = (torch.arange(steps) // knot_steps).clamp_max(params.shape[1] - 1)
    per_step = params[:, knot].transpose(0, 1)  # [steps, N, 4]
    actions = torch.zeros(steps, params.shape[0], NUM_JOINTS)
    for leg, joints in enumerate(THIGH_CALF):
        pair = slice(0, 2) if leg < 2 else slice(2, 4)
        actions[..., joints] = per_step[..., pair]
    return actions


def rollout(env: QuadrupedJumpEnv, params: torch.Tensor, knot_steps: int) -> dict[str, torch.Tensor]:
    """Each candidate's first-landing position and apex gain, whether it landed after a flight, and
    whether its episode was terminated (a fall, a trunk contact, drifting after the landing)."""
    n, steps = env.num_envs, int(env.max_episode_steps[0])
    actions = joint_actions(params, steps, knot_steps)
    env.reset(seed=0)
    done = torch.zeros(n, dtype=torch.bool)
    out = {
        "landing_x": torch.zeros(n),
        "apex_gain": torch.zeros(n),
        "landed": torch.zeros(n, dtype=torch.bool),
        "terminated": torch.zeros(n, dtype=torch.bool),
    }
    for t in range(steps):
        _, _, terminated, truncated, info = env.step(actions[t])
        ended = (terminated | truncated) & ~done
        if ended.any():
            final = info["final"]
            ended_values = {
                "landing_x": final["landing_pos_rel_m"][:, 0],
                "apex_gain": final["apex_gain_m"],
                "landed": final["has_landed"],
                "terminated": terminated,
            }
            for key, value in ended_values.items():
                out[key] = torch.where(ended, value, out[key])
        done |= ended
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--population", type=int, default=1024)
    parser.add_argument("--elite", type=int, default=64)
    parser.add_argument("--knots", type=int, default=16)
    parser.add_argument("--knot-steps", type=int, default=2, help="policy steps (20 ms) per knot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = QuadrupedJumpEnvConfig(
        num_envs=args.population,
        termination=TerminationConfig(max_landing_error_m=float("inf")),
        curriculum=CurriculumConfig(stage="forward", fixed_landing_m=(PAPER_JUMP_M, 0.0)),
    )
    env = QuadrupedJumpEnv(config)
    clip = config.action_clip
    mean, std = torch.zeros(args.knots + 1, 4), torch.full((args.knots + 1, 4), 0.4 * clip)
    generator = torch.Generator().manual_seed(args.seed)
    best_flight = best_held = float("-inf")
    for iteration in range(args.iterations):
        start = time.perf_counter()
        noise = torch.randn(args.population, *mean.shape, generator=generator)
        params = (mean + std * noise).clamp(-clip, clip)
        result = rollout(env, params, args.knot_steps)
        landed, held = result["landed"], result["landed"] & ~result["terminated"]
        score = result["landing_x"] - result["terminated"].float() - (~landed).float()
        elite = score.topk(args.elite).indices
        mean = 0.7 * params[elite].mean(0) + 0.3 * mean
        std = (0.7 * params[elite].std(0) + 0.3 * std).clamp_min(0.03 * clip)
        if landed.any():
            best_flight = max(best_flight, float(result["landing_x"][landed].max()))
        if held.any():
            best_held = max(best_held, float(result["landing_x"][held].max()))
        print(
            f"iteration {iteration:3d}: elite landing {result['landing_x'][elite].mean():.3f} m, "
            f"apex gain {result['apex_gain'][elite].mean():.3f} m; "
            f"farthest landing {best_flight:.3f} m ({best_flight / PAPER_JUMP_M:.2f}x the paper's), "
            f"farthest held {best_held:.3f} m ({best_held / PAPER_JUMP_M:.2f}x)  "
            f"[{time.perf_counter() - start:.1f} s]",
            flush=True,
        )
    env.close()


if __name__ == "__main__":
    main()
