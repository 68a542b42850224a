"""SAC on a toy batched env: it learns, it bootstraps through time-outs only, the runner checkpoints and
resumes to an identical state."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from robotrl.algos.off_policy_runner import OffPolicyRunner, OffPolicyRunnerConfig
from robotrl.algos.sac import SAC, SACConfig

StepResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


class TargetEnv:
    """Batched toy task: obs = a target t in [-0.6, 0.6]^A drawn per episode, reward -|a - t|^2 a step.

    The best action is a = t, so learning is quick and its success is known. Episodes last `horizon`
    steps and end truncated, or terminated with terminal=True. step_chunk runs chunks as Meta-World's
    batched env does: each env stops at the end of its episode and resets. `chunks` records what it ran.
    """

    def __init__(self, num_envs: int = 8, action_dim: int = 2, horizon: int = 5, terminal: bool = False):
        self.num_envs = num_envs
        self.observation_dim = action_dim
        self.action_dim = action_dim
        self.horizon = horizon
        self.terminal = terminal
        self.generator = torch.Generator().manual_seed(0)
        self.target = torch.zeros(num_envs, action_dim)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.chunks: list[torch.Tensor] = []

    def reset(self, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            self.generator.manual_seed(seed)
        self._restart(torch.ones(self.num_envs, dtype=torch.bool))
        return self.target.clone()

    def _restart(self, ids: torch.Tensor) -> None:
        fresh = (torch.rand(self.num_envs, self.action_dim, generator=self.generator) - 0.5) * 1.2
        self.target = torch.where(ids.unsqueeze(-1), fresh, self.target)
        self.t[ids] = 0

    def step_chunk(self, actions: torch.Tensor) -> StepResult:
        self.chunks.append(actions.clone())
        reward = torch.zeros(self.num_envs)
        steps = torch.zeros(self.num_envs, dtype=torch.long)
        success = torch.zeros(self.num_envs, dtype=torch.bool)
        active = torch.ones(self.num_envs, dtype=torch.bool)
        for j in range(actions.shape[1]):
            error = ((actions[:, j] - self.target) ** 2).sum(-1)
            reward += torch.where(active, -error, 0.0)
            success |= active & (error < 0.01)
            steps += active.long()
            self.t += active.long()
            active &= self.t < self.horizon
        ended = self.t >= self.horizon
        info = {"final_obs": self.target.clone(), "steps": steps, "success": success}
        self._restart(ended)
        no = torch.zeros_like(ended)
        terminated, truncated = (ended, no) if self.terminal else (no, ended)
        return self.target.clone(), reward, terminated, truncated, info

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.step_chunk(actions.unsqueeze(1))
        del info["steps"]  # a plain env: the runner counts one step per env
        return obs, reward, terminated, truncated, info

    def privileged_observation(self) -> torch.Tensor:
        return self.target.clone()


def tiny_config(**overrides: Any) -> SACConfig:
    base = SACConfig(
        hidden=(64, 64),
        batch_size=64,
        buffer_size=10_000,
        warmup_steps=256,
        gamma=0.9,
        actor_lr=1e-3,
        critic_lr=1e-3,
        alpha_lr=1e-3,
        initial_alpha=0.1,
    )
    return dataclasses.replace(base, **overrides)


def tiny_runner(env: Any, sac: SAC, run_dir: Path, **config: Any) -> OffPolicyRunner:
    return OffPolicyRunner(env, sac, run_dir, OffPolicyRunnerConfig(**config), progress=False)


def episode_return(env: TargetEnv, policy: Any) -> float:
    """Mean return of one episode of every env from a fresh reset."""
    obs, total = env.reset(seed=123), torch.zeros(env.num_envs)
    for _ in range(env.horizon):
        obs, reward, *_ = env.step(policy(obs))
        total += reward
    return total.mean().item()


def uniform_policy(seed: int = 1) -> Any:
    generator = torch.Generator().manual_seed(seed)
    return lambda obs: torch.rand(obs.shape[0], 2, generator=generator) * 2 - 1


# ------------------------------------------------------------------------------------------ learning
def test_sac_learns_the_target_task(tmp_path: Path) -> None:
    torch.manual_seed(0)
    env = TargetEnv()
    sac = SAC(env.observation_dim, env.action_dim, tiny_config(utd_ratio=0.5), seed=0)
    tiny_runner(env, sac, tmp_path, total_env_steps=2_000, checkpoint_every=10_000).learn()
    random_return = episode_return(TargetEnv(256), uniform_policy())
    learned = episode_return(TargetEnv(256), lambda o: sac.act(o, deterministic=True))
    # Random actions miss by about 0.9 a step (-4.5 an episode); a learned policy by < 0.02 a step.
    assert random_return < -3.0
    assert learned > -0.1, (learned, random_return)


# ------------------------------------------------------------------------------------------ bootstrapping
def test_the_buffer_marks_terminations_only_and_keeps_the_real_last_observation(tmp_path: Path) -> None:
    for terminal in (False, True):
        env = TargetEnv(num_envs=4, horizon=3, terminal=terminal)
        sac = SAC(2, 2, tiny_config(warmup_steps=10_000), seed=0)
        tiny_runner(env, sac, tmp_path / str(terminal), total_env_steps=60, checkpoint_every=1_000).learn()
        data, n = sac.buffer.data, sac.buffer.size
        assert n == 60
        # obs is the episode's constant target: a next_obs from the following episode would differ.
        torch.testing.assert_close(data["next_obs"][:n], data["obs"][:n])
        expected_dones = 60 // 3 if terminal else 0
        assert data["done"][:n].sum().item() == expected_dones


def constant_target_q(config: SACConfig, value: float) -> SAC:
    """A SAC whose target critics say `value` everywhere."""
    sac = SAC(2, 2, config, seed=0)
    with torch.no_grad():
        for net in sac.critic_target.nets:
            for layer in net:
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.zero_()
                    layer.bias.zero_()
            net[-1].bias.fill_(value)
    return sac


def td_batch(reward: float = 1.0) -> dict[str, torch.Tensor]:
    return {
        "obs": torch.zeros(2, 2),
        "action": torch.zeros(2, 2),
        "reward": torch.tensor([reward, reward]),
        "next_obs": torch.zeros(2, 2),
        "done": torch.tensor([0.0, 1.0]),  # row 0 timed out (stored as not done), row 1 terminated
    }


def test_the_td_target_bootstraps_unless_terminated() -> None:
    sac = constant_target_q(tiny_config(initial_alpha=1e-9, gamma=0.5), 4.0)
    torch.testing.assert_close(sac.td_target(td_batch()), torch.tensor([1.0 + 0.5 * 4.0, 1.0]))


def test_td_targets_stay_within_the_returns_the_task_can_have() -> None:
    sac = constant_target_q(tiny_config(initial_alpha=1e-9, gamma=0.5, target_q_range=(0.0, 1.0)), 35.0)
    torch.testing.assert_close(sac.td_target(td_batch(0.0)), torch.tensor([1.0, 0.0]))


# ------------------------------------------------------------------------------------------ bounds
def test_actions_never_leave_the_bound() -> None:
    sac = SAC(2, 3, tiny_config(action_bound=1.5, warmup_steps=8), seed=0)
    obs = torch.randn(256, 2) * 10
    warmup = sac.explore(obs)
    assert warmup.abs().max() <= 1.5 and warmup.abs().max() > 1.0  # uniform over the whole range
    with torch.no_grad():
        sac.actor.net[-1].bias[:3] = torch.tensor([100.0, -100.0, 0.0])  # means far out of range
    sac.transitions = 8  # warm-up over
    for action in (sac.explore(obs), sac.act(obs, deterministic=True)):
        assert action.abs().max() <= 1.5
    _, log_prob = sac.actor(obs, sac.generator)
    assert torch.isfinite(log_prob).all()


def test_update_to_data_ratio_sets_the_number_of_gradient_steps() -> None:
    sac = SAC(2, 2, tiny_config(utd_ratio=0.75, warmup_steps=64, batch_size=32), seed=0)

    def store(n: int) -> None:
        sac.store(torch.randn(n, 2), torch.rand(n, 2), torch.randn(n), torch.randn(n, 2), torch.zeros(n))

    store(60)
    assert sac.update() == {} and sac.updates == 0  # still warming up: no credit carried over
    store(4)
    metrics = sac.update()
    assert sac.updates == 3  # 0.75 * 4
    assert {"loss/critic", "loss/actor", "loss/alpha", "train/alpha"} <= metrics.keys()
    store(2)
    sac.update()
    assert sac.updates == 4  # 1.5: one now, half carried
    store(2)
    sac.update()
    assert sac.updates == 6


# ------------------------------------------------------------------------------------------ runner
def test_runner_checkpoints_and_resumes_to_the_same_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = tiny_config(warmup_steps=64, batch_size=32, utd_ratio=0.5)
    first = SAC(2, 2, cfg, seed=0)
    runner = tiny_runner(
        TargetEnv(4), first, tmp_path, total_env_steps=400, checkpoint_every=160, log_every=80
    )
    runner.learn()
    files = sorted(p.name for p in runner.checkpoint_dir.iterdir())
    assert files == ["latest.txt", "steps_0000000400.pt"]  # the buffer is in it: only the latest is kept
    assert [h["env_steps"] for h in runner.history] == [80.0, 160.0, 240.0, 320.0, 400.0]
    assert runner.history[-1]["episode/length"] == 5.0
    assert any((tmp_path / "tb").iterdir())

    torch.manual_seed(1)  # different initial weights: everything must come from the checkpoint
    second = SAC(2, 2, cfg, seed=7)
    resumed = tiny_runner(TargetEnv(4), second, tmp_path, total_env_steps=480, log_every=80)
    resumed.load(resumed.latest_checkpoint())  # type: ignore[arg-type]
    assert (resumed.env_steps, second.transitions, second.updates) == (400, 400, first.updates)
    assert second.buffer.size == first.buffer.size == 400
    obs = torch.randn(5, 2)
    torch.testing.assert_close(second.explore(obs), first.explore(obs))
    torch.testing.assert_close(second.gradient_step(), first.gradient_step())
    for a, b in zip(first.actor.parameters(), second.actor.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    resumed.learn()
    assert resumed.env_steps == 480 and resumed.history[-1]["env_steps"] == 480.0
    assert len(resumed.history) == 6


def test_evaluation_runs_on_schedule_and_its_criterion_stops_training(tmp_path: Path) -> None:
    calls: list[int] = []
    sac = SAC(2, 2, tiny_config(warmup_steps=10_000), seed=0)
    runner = tiny_runner(TargetEnv(4), sac, tmp_path, total_env_steps=400, eval_every=100, log_every=1_000)

    def evaluate(algo: SAC) -> dict[str, float]:
        calls.append(algo.transitions)
        return {"success_rate": 0.5, "criterion_met": float(len(calls) == 2)}

    runner.evaluate = evaluate
    runner.learn()
    assert calls == [100, 200]
    assert runner.env_steps == 200
    assert runner.history[-1]["eval/success_rate"] == 0.5
    assert runner.latest_checkpoint() is not None
