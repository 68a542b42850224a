"""One PPO learner iteration of our PPO against rsl-rl-lib 5.5.1's, on the same settings, in the same run.

Quadruped jumping trains with our own PPO (robotrl.algos.ppo) rather than rsl_rl's, which most legged
robot work uses. This bench gives a measured reason for that choice, or against it, on the cost that
PPO owns on this CPU-only project. The settings are the jump recipe's (configs/train/quadruped_jump.yaml):
1024 envs x 24 steps, actor obs 57, privileged critic obs 75, 12 actions, actor and critic MLPs 256-128-64
ELU, 5 epochs x 4 minibatches, lr 1e-3 adaptive on KL 0.01, clip 0.2, entropy 0.01, gamma 0.99,
lambda 0.95. Both algorithms start from the same weights. Their rollout storage is filled with the same
synthetic rollout (random observations, rewards, terminations and time-outs), and each samples its
actions through its own act() path. Timed per algorithm: the rollout-side bookkeeping (act() and
process_env_step() x 24, without the env), compute_returns() and update(). The figure is the median of
`--repeats` after one warm-up, with the two algorithms alternating so that load from other processes
hits both alike. torch runs on one thread because the env's MuJoCo rollout has the other core.

rsl-rl-lib is not a project dependency. To compare, install it in a separate venv and run from there:

    python3 -m venv --system-site-packages /tmp/rslvenv
    /tmp/rslvenv/bin/pip install torch==2.13.0     # the CPU wheel the project pins, first
    /tmp/rslvenv/bin/pip install rsl-rl-lib==5.5.1
    /tmp/rslvenv/bin/pip install -e . --no-deps
    /tmp/rslvenv/bin/python bench/bench_ppo_update.py

Without rsl_rl, the bench times ours alone and says how to install it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch

from robotrl.algos.ppo import PPO, PPOConfig
from robotrl.policies.mlp import ActorCritic

NUM_ENVS = 1024
NUM_STEPS = 24
OBS_DIM = 57
PRIVILEGED_DIM = 75
ACTION_DIM = 12
HIDDEN = (256, 128, 64)
TERMINATION_P = 0.01
"""Per-step chance of a termination in the synthetic rollout."""
TIME_OUT_P = 0.005
"""Per-step chance of a time-out (bootstrapped by both algorithms)."""

PPO_CONFIG = PPOConfig(
    num_steps=NUM_STEPS,
    num_epochs=5,
    num_minibatches=4,
    gamma=0.99,
    lam=0.95,
    clip=0.2,
    learning_rate=1e-3,
    value_coef=1.0,
    entropy_coef=0.01,
    max_grad_norm=1.0,
    desired_kl=0.01,
    reward_scale=0.1,
)

INSTALL_HINT = (
    "rsl_rl is not importable here, so only ours is timed. To compare with rsl-rl-lib 5.5.1 (not a project "
    "dependency), use a separate venv:\n"
    "    python3 -m venv --system-site-packages /tmp/rslvenv\n"
    "    /tmp/rslvenv/bin/pip install torch==2.13.0   # CPU wheel first\n"
    "    /tmp/rslvenv/bin/pip install rsl-rl-lib==5.5.1\n"
    "    /tmp/rslvenv/bin/pip install -e . --no-deps\n"
    "    /tmp/rslvenv/bin/python bench/bench_ppo_update.py"
)

PHASES = ("act+store x24", "compute_returns", "update")


@dataclass
class Rollout:
    """One synthetic rollout, shared by both algorithms: [T, N, ...] per step plus the last observation."""

    obs: torch.Tensor
    privileged: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_privileged: torch.Tensor
    last_obs: torch.Tensor
    last_privileged: torch.Tensor


def make_rollout(generator: torch.Generator) -> Rollout:
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    def privileged(obs: torch.Tensor) -> torch.Tensor:
        # As in the jump env: the critic sees the actor's observation plus the privileged extras.
        return torch.cat([obs, randn(*obs.shape[:-1], PRIVILEGED_DIM - OBS_DIM)], dim=-1)

    obs = randn(NUM_STEPS, NUM_ENVS, OBS_DIM)
    last_obs = randn(NUM_ENVS, OBS_DIM)
    terminated = torch.rand(NUM_STEPS, NUM_ENVS, generator=generator) < TERMINATION_P
    truncated = ~terminated & (torch.rand(NUM_STEPS, NUM_ENVS, generator=generator) < TIME_OUT_P)
    return Rollout(
        obs=obs,
        privileged=privileged(obs),
        rewards=randn(NUM_STEPS, NUM_ENVS),
        terminated=terminated,
        truncated=truncated,
        final_privileged=randn(NUM_STEPS, NUM_ENVS, PRIVILEGED_DIM),
        last_obs=last_obs,
        last_privileged=privileged(last_obs),
    )


def timed(call: Callable[..., object], *args: object) -> tuple[float, float]:
    """(wall, CPU) milliseconds of one call; CPU is this process's, which other processes do not inflate."""
    start, start_cpu = time.perf_counter(), time.process_time()
    call(*args)
    return (time.perf_counter() - start) * 1e3, (time.process_time() - start_cpu) * 1e3


class Ours:
    name = "ours"

    def __init__(self, policy: ActorCritic, validate_args: bool) -> None:
        self.ppo = PPO(policy, PPO_CONFIG, NUM_ENVS, seed=0)
        self.validate_args = validate_args
        """torch.distributions argument checks: on in our training (torch's default)."""

    def prepare(self, r: Rollout) -> None:
        pass

    def fill(self, r: Rollout) -> None:
        for t in range(NUM_STEPS):
            self.ppo.act(r.obs[t], r.privileged[t])
            self.ppo.process_env_step(r.rewards[t], r.terminated[t], r.truncated[t], r.final_privileged[t])

    def compute_returns(self, r: Rollout) -> None:
        self.ppo.compute_returns(r.last_privileged)

    def update(self) -> None:
        self.ppo.update()

    @property
    def learning_rate(self) -> float:
        return self.ppo.learning_rate


class RslRl:
    """rsl_rl's PPO built as its OnPolicyRunner builds it (PPO.construct_algorithm), without an env.

    Observation groups as Isaac Lab names them: 'policy' (57) for the actor, 'critic' (75, the privileged
    observation) for the critic. The rollout and compute_returns run under inference_mode, as its runner's.
    """

    name = "rsl-rl"
    validate_args = False
    """Its GaussianDistribution turns torch.distributions' argument checks off, process-wide."""

    def __init__(self, policy: ActorCritic) -> None:
        from rsl_rl.algorithms import PPO as RslPPO
        from rsl_rl.models import MLPModel
        from rsl_rl.storage import RolloutStorage
        from tensordict import TensorDict

        self.TensorDict = TensorDict
        obs = self.observations(torch.zeros(NUM_ENVS, OBS_DIM), torch.zeros(NUM_ENVS, PRIVILEGED_DIM))
        obs_groups = {"actor": ["policy"], "critic": ["critic"]}
        distribution = {"class_name": "GaussianDistribution", "init_std": 1.0, "std_type": "scalar"}
        actor = MLPModel(
            obs,
            obs_groups,
            "actor",
            ACTION_DIM,
            HIDDEN,
            "elu",
            obs_normalization=True,
            distribution_cfg=distribution,
        )
        critic = MLPModel(obs, obs_groups, "critic", 1, HIDDEN, "elu", obs_normalization=True)
        # The same starting weights as ours (identical layer layout; std 1 = exp(our log_std 0)).
        actor.mlp.load_state_dict(policy.actor.state_dict())
        critic.mlp.load_state_dict(policy.critic.state_dict())
        with torch.no_grad():
            actor.distribution.std_param.copy_(policy.log_std.exp())
        storage = RolloutStorage("rl", NUM_ENVS, NUM_STEPS, obs, [ACTION_DIM], "cpu")
        cfg = PPO_CONFIG
        self.ppo = RslPPO(
            actor,
            critic,
            storage,
            num_learning_epochs=cfg.num_epochs,
            num_mini_batches=cfg.num_minibatches,
            clip_param=cfg.clip,
            gamma=cfg.gamma,
            lam=cfg.lam,
            value_loss_coef=cfg.value_coef,
            entropy_coef=cfg.entropy_coef,
            learning_rate=cfg.learning_rate,
            max_grad_norm=cfg.max_grad_norm,
            use_clipped_value_loss=True,
            schedule="adaptive",
            desired_kl=cfg.desired_kl,
            device="cpu",
        )
        self.ppo.train_mode()

    def observations(self, obs: torch.Tensor, privileged: torch.Tensor) -> Any:
        return self.TensorDict({"policy": obs, "critic": privileged}, batch_size=[obs.shape[0]])

    def prepare(self, r: Rollout) -> None:
        """What its env would hand over, built untimed: TensorDicts, dones with time-outs, scaled rewards."""
        self.steps = [self.observations(r.obs[t], r.privileged[t]) for t in range(NUM_STEPS)]
        self.last = self.observations(r.last_obs, r.last_privileged)
        self.dones = r.terminated | r.truncated
        # Our reward scale, applied here, so that both learn from the same numbers.
        self.rewards = r.rewards * PPO_CONFIG.reward_scale

    def fill(self, r: Rollout) -> None:
        with torch.inference_mode():
            for t in range(NUM_STEPS):
                self.ppo.act(self.steps[t])
                # The next observation is read by RND only (off), so the step's own stands in.
                self.ppo.process_env_step(
                    self.steps[t], self.rewards[t], self.dones[t], {"time_outs": r.truncated[t]}
                )

    def compute_returns(self, r: Rollout) -> None:
        with torch.inference_mode():
            self.ppo.compute_returns(self.last)

    def update(self) -> None:
        self.ppo.update()

    @property
    def learning_rate(self) -> float:
        return self.ppo.learning_rate


Samples = dict[str, dict[str, list[tuple[float, float]]]]
"""(wall, CPU) ms per algorithm name, phase and timed repeat."""


def print_table(samples: Samples) -> None:
    """Medians per phase (total: their sum); ratios ours/rsl-rl by wall and by CPU time."""

    def median(name: str, phase: str, index: int) -> float:
        return statistics.median(t[index] for t in samples[name][phase])

    with_rsl = "rsl-rl" in samples
    header = f"\n{'ms':<16} {'ours':>8} {'(cpu)':>8}"
    if with_rsl:
        header += f" {'rsl-rl':>8} {'(cpu)':>8} {'ours/rsl-rl':>12} {'(cpu)':>7}"
    print(header)
    for phase in (*PHASES, "total"):
        phases = PHASES if phase == "total" else (phase,)
        ours_wall, ours_cpu = (sum(median("ours", p, i) for p in phases) for i in (0, 1))
        row = f"{phase:<16} {ours_wall:8.1f} {ours_cpu:8.1f}"
        if with_rsl:
            rsl_wall, rsl_cpu = (sum(median("rsl-rl", p, i) for p in phases) for i in (0, 1))
            row += f" {rsl_wall:8.1f} {rsl_cpu:8.1f} {ours_wall / rsl_wall:11.2f}x {ours_cpu / rsl_cpu:6.2f}x"
        print(row)
    if with_rsl:
        print(
            "\nratio < 1: ours is faster; trust the CPU ratio when wall exceeds CPU (other processes held "
            "the core). Ours runs its critic in compute_returns (one batched pass over the rollout) and, in "
            "process_env_step, on the final observations of steps with time-outs; rsl-rl runs it in act() "
            "every step and bootstraps time-outs from that value. Compare compute_returns only together "
            "with act+store."
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations after one warm-up")
    parser.add_argument(
        "--no-validate-args",
        action="store_true",
        help="run ours without torch.distributions argument checks too, as rsl-rl runs",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    policy = ActorCritic(
        OBS_DIM,
        PRIVILEGED_DIM,
        ACTION_DIM,
        actor_hidden=HIDDEN,
        critic_hidden=HIDDEN,
        init_log_std=0.0,
        normalize_obs=True,
        activation="elu",
    )
    algos: list[Ours | RslRl] = []
    rsl: str | None = None
    try:
        algos.append(RslRl(policy))  # before ours: it copies the initial weights, which ours then trains
        rsl = version("rsl-rl-lib")
    except ImportError:
        pass
    algos.insert(0, Ours(policy, validate_args=not args.no_validate_args))

    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (other processes share them); "
        f"torch {torch.__version__}, 1 torch thread (the env's rollout uses the other core)"
    )
    print(
        f"{NUM_ENVS} envs x {NUM_STEPS} steps, obs {OBS_DIM} / privileged {PRIVILEGED_DIM} / actions "
        f"{ACTION_DIM}, MLPs {'-'.join(map(str, HIDDEN))} ELU, {PPO_CONFIG.num_epochs} epochs x "
        f"{PPO_CONFIG.num_minibatches} minibatches; median of {args.repeats} after a warm-up"
    )
    if rsl is None:
        print(INSTALL_HINT)
    else:
        print(f"rsl-rl-lib {rsl}")
    checks = {a.name: "on" if a.validate_args else "off" for a in algos}
    print("torch.distributions argument checks: " + ", ".join(f"{k} {v}" for k, v in checks.items()))

    generator = torch.Generator().manual_seed(1)
    samples: Samples = {a.name: {phase: [] for phase in PHASES} for a in algos}
    for repeat in range(args.repeats + 1):
        rollout = make_rollout(generator)
        order = algos if repeat % 2 == 0 else algos[::-1]
        for algo in order:
            algo.prepare(rollout)
            torch.distributions.Distribution.set_default_validate_args(algo.validate_args)
            times = (
                timed(algo.fill, rollout),
                timed(algo.compute_returns, rollout),
                timed(algo.update),
            )
            if repeat > 0:  # repeat 0 is the warm-up
                for phase, t in zip(PHASES, times, strict=True):
                    samples[algo.name][phase].append(t)

    print_table(samples)
    print("learning rate after the runs: " + ", ".join(f"{a.name} {a.learning_rate:.2e}" for a in algos))


if __name__ == "__main__":
    main()
