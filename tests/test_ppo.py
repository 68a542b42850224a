"""PPO pieces against hand-computed numbers, the runner's checkpoints and resume, a short real training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrl.algos.on_policy_runner import OnPolicyRunner, RunnerConfig
from robotrl.algos.ppo import MIN_LEARNING_RATE, PPO, PPOConfig, RolloutStorage, compute_gae
from robotrl.envs.quadrotor.env import QuadrotorEnv
from robotrl.policies.mlp import ActorCritic, RunningNormalizer
from robotrl.recipes.quadrotor import build_policy, load_config


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def tiny_ppo(num_envs: int = 4, num_steps: int = 2, **config: float) -> PPO:
    torch.manual_seed(0)
    policy = ActorCritic(3, 5, 2, actor_hidden=(16,), critic_hidden=(16,))
    return PPO(policy, PPOConfig(num_steps=num_steps, **config), num_envs, seed=0)  # type: ignore[arg-type]


def constant_critic(policy: ActorCritic, value: float) -> None:
    """Make V(s) == value for every input."""
    with torch.no_grad():
        for layer in policy.critic:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        policy.critic[-1].bias.fill_(value)


# ------------------------------------------------------------------------------------------ GAE
def test_gae_matches_a_hand_computed_example() -> None:
    # env 0: a done at t=1 cuts the bootstrap; env 1: no done, bootstraps from last_values.
    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    last_values = torch.tensor([2.0, 1.0])
    advantages, returns = compute_gae(rewards, values, dones, last_values, gamma=0.9, lam=0.8)
    # env 0, backwards: t=2: 3 + 0.9*2.0 - 1.5 = 3.3
    #                   t=1: 2 - 1.0 = 1.0 (done: no value, no advantage from t=2)
    #                   t=0: (1 + 0.9*1.0 - 0.5) + 0.9*0.8*1.0 = 1.4 + 0.72 = 2.12
    # env 1:            t=2: 1 + 0.9*1.0 = 1.9;  t=1: 0.72*1.9 = 1.368;  t=0: 0.72*1.368 = 0.98496
    expected = torch.tensor([[2.12, 0.98496], [1.0, 1.368], [3.3, 1.9]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)


# ------------------------------------------------------------------------------------------ PPO steps
@pytest.mark.parametrize(("groups", "max_rows"), [(1, 0), (4, 0), (4, 8)])
def test_minibatches_cover_the_rollout_once_and_pair_the_members_samples(groups: int, max_rows: int) -> None:
    """Every (step, env) sample lands in exactly one pass of one minibatch of an epoch; with groups, the
    k-th sample of each member's block is the same step and env-within-member for all members."""
    steps, envs = 6, 4 * 5
    storage = RolloutStorage(steps, envs, obs_dim=2, privileged_dim=1, action_dim=1)
    step, env = torch.meshgrid(torch.arange(steps), torch.arange(envs), indexing="ij")
    storage.obs.copy_(torch.stack((step, env), dim=-1).float())
    seen = []
    batches = [
        p for b in storage.minibatches(3, torch.Generator().manual_seed(0), groups, max_rows) for p in b
    ]
    assert len(batches) == (3 if max_rows == 0 else 3 * 5)  # 40-row minibatches in passes of <= 8 rows
    for batch in batches:
        assert max_rows == 0 or batch["obs"].shape[0] <= max_rows
        per_member = batch["obs"].view(groups, -1, 2)
        member_envs = per_member[..., 1] // (envs // groups)
        assert torch.equal(member_envs, torch.arange(groups).float().unsqueeze(-1).expand_as(member_envs))
        within = per_member.clone()
        within[..., 1] %= envs // groups
        assert (within == within[0]).all()
        seen.append(batch["obs"])
    pairs = torch.cat(seen)
    assert pairs.shape[0] == steps * envs
    assert torch.unique(pairs[:, 0] * envs + pairs[:, 1]).numel() == steps * envs


def test_time_outs_bootstrap_from_the_final_value_only() -> None:
    ppo = tiny_ppo(num_envs=4, gamma=0.9, reward_scale=0.5)
    constant_critic(ppo.policy, 2.0)
    rewards = torch.tensor([1.0, 1.0, 1.0, 4.0])
    terminated = torch.tensor([False, True, False, False])
    truncated = torch.tensor([False, False, True, False])
    final_privileged = torch.randn(4, 5)
    ppo.process_env_step(rewards, terminated, truncated, final_privileged)
    # scaled reward, plus gamma * V(final) = 0.9 * 2.0 for the timed-out env 2 only
    torch.testing.assert_close(ppo.storage.rewards[0], torch.tensor([0.5, 0.5, 2.3, 2.0]))
    torch.testing.assert_close(ppo.storage.dones[0], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(
        rewards, torch.tensor([1.0, 1.0, 1.0, 4.0])
    )  # the caller's tensor is untouched
    assert ppo.storage.step == 1
    # No final observation (no episode ended): nothing to bootstrap.
    ppo.process_env_step(rewards, terminated, torch.zeros(4, dtype=torch.bool), None)
    torch.testing.assert_close(ppo.storage.rewards[1], torch.tensor([0.5, 0.5, 0.5, 2.0]))


def _fill_rollout(ppo: PPO, num_envs: int, num_steps: int) -> None:
    """A rollout whose reward is higher the closer the action is to the first two observation values."""
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(num_steps + 1, num_envs, 3, generator=g)
    privileged = torch.cat((obs, torch.randn(num_steps + 1, num_envs, 2, generator=g)), -1)
    # Normaliser statistics from this very data: update()'s own normaliser step then changes nothing.
    ppo.policy.obs_normalizer.update(obs[:num_steps].flatten(0, 1))
    ppo.policy.privileged_normalizer.update(privileged[:num_steps].flatten(0, 1))
    no = torch.zeros(num_envs, dtype=torch.bool)
    for t in range(num_steps):
        actions = ppo.act(obs[t], privileged[t])
        ppo.process_env_step(-((actions - obs[t, :, :2]) ** 2).sum(-1), no, no, None)
    ppo.compute_returns(privileged[num_steps])


def _losses(ppo: PPO, advantages: torch.Tensor) -> tuple[float, float]:
    """(unclipped surrogate, value loss) of the current policy on the stored rollout."""
    s = ppo.storage
    with torch.no_grad():
        log_prob = ppo.policy.distribution(s.obs.flatten(0, 1)).log_prob(s.actions.flatten(0, 1)).sum(-1)
        ratio = (log_prob - s.log_probs.flatten()).exp()
        surrogate = -(ratio * advantages.flatten()).mean()
        value = ((ppo.policy.value(s.privileged_obs.flatten(0, 1)) - s.returns.flatten()) ** 2).mean()
    return surrogate.item(), value.item()


def test_update_on_a_fixed_rollout_lowers_both_losses() -> None:
    num_envs, num_steps = 64, 8
    ppo = tiny_ppo(num_envs, num_steps, learning_rate=3e-3, desired_kl=0.0)
    _fill_rollout(ppo, num_envs, num_steps)
    s = ppo.storage
    advantages = (s.advantages - s.advantages.mean()) / (s.advantages.std() + 1e-8)
    surrogate_before, value_before = _losses(ppo, advantages)
    weights_before = {k: v.clone() for k, v in ppo.policy.state_dict().items()}

    out = ppo.update()

    expected_keys = {"loss/surrogate", "loss/value", "loss/entropy", "loss/kl", "train/learning_rate"}
    assert expected_keys <= set(out)
    assert all(np.isfinite(v) for v in out.values())
    assert s.step == 0, "the storage is ready for the next rollout"
    for name in ("actor.0.weight", "critic.0.weight", "log_std"):
        assert not torch.equal(ppo.policy.state_dict()[name], weights_before[name]), name
    surrogate_after, value_after = _losses(ppo, advantages)
    assert abs(surrogate_before) < 1e-5  # ratio 1 on normalised advantages
    assert surrogate_after < -0.01
    assert value_after < 0.9 * value_before


def test_an_update_in_passes_is_the_update_of_whole_minibatches() -> None:
    """Splitting each minibatch into passes changes the speed only: same values, losses and weights."""
    num_envs, num_steps = 64, 8
    results = []
    for max_rows in (0, 40):  # 128-row minibatches in passes of 32 rows; the values in slices of 1 step
        ppo = tiny_ppo(num_envs, num_steps, learning_rate=3e-3, max_rows_per_pass=max_rows)
        _fill_rollout(ppo, num_envs, num_steps)
        values = ppo.storage.values.clone()
        out = ppo.update()
        results.append((values, out, ppo.policy.state_dict()))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-5, abs=1e-7)
    for name, tensor in results[0][2].items():
        torch.testing.assert_close(tensor, results[1][2][name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_held_actor_leaves_only_the_critic_learning_and_unclipped() -> None:
    def one_update(held: int) -> tuple[PPO, dict[str, torch.Tensor], float]:
        num_envs, num_steps = 64, 8
        ppo = tiny_ppo(num_envs, num_steps, learning_rate=3e-2, desired_kl=0.01, clip=0.01)
        _fill_rollout(ppo, num_envs, num_steps)
        before = {k: v.clone() for k, v in ppo.policy.state_dict().items()}
        ppo.actor_held_updates = held
        ppo.update()
        return ppo, before, _losses(ppo, ppo.storage.advantages)[1]

    ppo, before, held_loss = one_update(held=2)
    after = ppo.policy.state_dict()
    for name in ("actor.0.weight", "actor.2.bias", "log_std", "obs_normalizer.mean"):
        assert torch.equal(after[name], before[name]), f"{name} moved while held"
    assert not torch.equal(after["critic.0.weight"], before["critic.0.weight"])
    assert ppo.learning_rate == 3e-2, "no KL to adapt the rate to while the actor is held"
    assert ppo.actor_held_updates == 1, "one held update used"
    # A tight value clip (0.01) barely moves the critic of a normal update; the warm-up ignores it.
    free, _, free_loss = one_update(held=0)
    assert not torch.equal(free.policy.state_dict()["log_std"], before["log_std"])
    assert held_loss < 0.7 * free_loss


def test_a_fixed_action_std_holds_through_updates_and_a_checkpoint() -> None:
    num_envs, num_steps = 64, 8
    ppo = tiny_ppo(num_envs, num_steps, learning_rate=3e-3)
    ppo.fix_action_std(0.02)
    actor_before = ppo.policy.state_dict()["actor.0.weight"].clone()
    _fill_rollout(ppo, num_envs, num_steps)
    out = ppo.update()
    assert ppo.policy.log_std.exp() == pytest.approx(torch.full((2,), 0.02))
    assert out["train/action_std"] == pytest.approx(0.02)
    assert not torch.equal(ppo.policy.state_dict()["actor.0.weight"], actor_before), "the mean learns"
    resumed = tiny_ppo(num_envs, num_steps, learning_rate=3e-3)
    resumed.load_state_dict(ppo.state_dict())
    _fill_rollout(resumed, num_envs, num_steps)
    resumed.update()
    assert resumed.policy.log_std.exp() == pytest.approx(torch.full((2,), 0.02)), "resumed, it still holds"


def test_a_released_actor_starts_from_the_lowest_rate_and_keeps_its_kl() -> None:
    """A fine-tuned actor (std 0.1) released after its warm-up: Adam's first steps on moments that never
    saw the actor move every weight by about the rate (KL 0.037 at 1e-3 here without the restart)."""
    torch.manual_seed(0)
    policy = ActorCritic(3, 5, 2, actor_hidden=(256, 128), critic_hidden=(64,))
    with torch.no_grad():
        policy.log_std.fill_(math.log(0.1))
    ppo = PPO(policy, PPOConfig(num_steps=8, learning_rate=1e-3, desired_kl=0.01), 64, seed=0)
    ppo.actor_held_updates = 1
    _fill_rollout(ppo, 64, 8)
    ppo.update()
    assert ppo.actor_held_updates == 0 and ppo.learning_rate == MIN_LEARNING_RATE
    _fill_rollout(ppo, 64, 8)
    out = ppo.update()
    assert ppo.learning_rate > MIN_LEARNING_RATE, "the KL rule lifts the rate"
    assert out["loss/kl"] < 2 * ppo.config.desired_kl


# ------------------------------------------------------------------------------------------ normaliser
def test_a_disabled_normalizer_is_the_identity_even_after_updates() -> None:
    normalizer = RunningNormalizer(3, enabled=False)
    x = 50.0 * torch.randn(64, 3) + 7.0  # large values: a clip at +-10 would show
    normalizer.update(x)
    assert torch.equal(normalizer(x), x)
    assert normalizer.count == 0


def test_running_normalizer_matches_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    scale, offset = np.array([0.1, 1.0, 5.0]), np.array([-2.0, 0.0, 30.0])
    batches = [
        (rng.standard_normal((n, 3)) * scale + offset).astype(np.float32) for n in (7, 100, 1, 33, 250)
    ]
    normalizer = RunningNormalizer(3)
    for batch in batches:
        normalizer.update(torch.from_numpy(batch))
    data = np.concatenate(batches).astype(np.float64)
    assert normalizer.count.item() == len(data)
    np.testing.assert_allclose(normalizer.mean.numpy(), data.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(normalizer.var.numpy(), data.var(0), rtol=1e-5, atol=1e-5)
    normalised = normalizer(torch.from_numpy(data.astype(np.float32))).numpy()
    np.testing.assert_allclose(normalised.mean(0), 0.0, atol=1e-4)
    assert normalizer(torch.full((1, 3), 1e6)).max().item() == normalizer.clip


# ------------------------------------------------------------------------------------------ runner
def _small_runner(run_dir: Path, max_iterations: int, **runner: object) -> OnPolicyRunner:
    config = load_config(None, ["env.num_envs=16", "ppo.num_steps=4", "ppo.num_minibatches=2"])
    torch.manual_seed(0)
    env = QuadrotorEnv(config.env)
    ppo = PPO(build_policy(config, env), config.ppo, env.num_envs)
    runner_config = RunnerConfig(max_iterations=max_iterations, **runner)  # type: ignore[arg-type]
    return OnPolicyRunner(env, ppo, run_dir, runner_config, evaluate=None, progress=False)


def test_checkpoints_and_resume(tmp_path: Path) -> None:
    first = _small_runner(tmp_path, 3, checkpoint_every=1, eval_every=0)
    first.learn()
    checkpoints = first.checkpoint_dir
    assert sorted(p.name for p in checkpoints.glob("*.pt")) == [f"iter_00000{i}.pt" for i in (1, 2, 3)]
    latest = first.latest_checkpoint()
    assert latest is not None and latest.is_file()
    assert (checkpoints / "latest.txt").read_text().strip() == "iter_000003.pt"
    assert not list(checkpoints.glob("*.tmp"))

    second = _small_runner(tmp_path, 5, checkpoint_every=1, eval_every=0)
    second.load(latest)
    assert second.iteration == 3
    assert second.env_steps == first.env_steps == 3 * 4 * 16
    for name, value in first.ppo.policy.state_dict().items():
        assert torch.equal(second.ppo.policy.state_dict()[name], value), name
    assert second.ppo.learning_rate == first.ppo.learning_rate
    second.learn()
    assert second.iteration == 5
    assert second.env_steps == 5 * 4 * 16
    assert [h["iteration"] for h in second.history] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert second.history[:3] == first.history
    assert (checkpoints / "latest.txt").read_text().strip() == "iter_000005.pt"
    assert not list(checkpoints.glob("*.tmp"))


def test_the_criterion_stops_training_and_writes_a_checkpoint(tmp_path: Path) -> None:
    calls: list[int] = []

    def evaluate(ppo: PPO) -> dict[str, float]:
        calls.append(len(calls) + 1)
        return {"success_rate": 1.0, "criterion_met": float(len(calls) == 2)}

    runner = _small_runner(tmp_path, 10, checkpoint_every=100, eval_every=2)
    runner.evaluate = evaluate
    result = runner.learn()
    assert runner.iteration == 4  # evaluated at 2 (not met) and 4 (met)
    assert result["criterion_met"] == 1.0
    assert runner.history[-1]["eval/criterion_met"] == 1.0
    assert runner.latest_checkpoint() == runner.checkpoint_dir / "iter_000004.pt"


# ------------------------------------------------------------------------------------------ learning
def test_short_training_raises_the_reward(tmp_path: Path) -> None:
    """256 envs, 48 iterations of 16 steps on the Crazyflie hover task (about 10 s on one thread).

    Episodes are 0.64 s = 4 rollouts, so a block of 4 iterations averages whole episodes (early in an
    episode nobody has crashed yet; comparing single iterations would compare different episode phases).
    """
    config = load_config(
        None,
        [
            "env.num_envs=256",
            "env.episode_length_s=0.64",
            "ppo.num_steps=16",
            "policy.init_log_std=-1.0",
            # The plain RAPTOR-style reward: a crash costs -100, so fewer crashes raise the mean clearly.
            "env.reward.position_norm=0.0",
            "env.reward.non_negative=false",
            "seed=0",
        ],
    )
    torch.manual_seed(config.seed)
    env = QuadrotorEnv(config.env)
    ppo = PPO(build_policy(config, env), config.ppo, env.num_envs, seed=config.seed)
    runner_config = RunnerConfig(max_iterations=48, checkpoint_every=1000)
    runner = OnPolicyRunner(env, ppo, tmp_path, runner_config, evaluate=None, progress=False)
    runner.learn()
    rewards = [h["reward/step_mean"] for h in runner.history]
    assert len(rewards) == 48 and all(np.isfinite(rewards))
    first, last = np.mean(rewards[:4]), np.mean(rewards[-4:])
    # Untrained: about -3 per step (most episodes end in a -100 crash); trained: above -1.5.
    assert last > first + 0.5 * abs(first), (first, last)
