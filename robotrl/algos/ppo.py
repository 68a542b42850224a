"""PPO with an asymmetric critic. No training loop here: the runner owns it (rsl_rl's split).

Our own rather than rsl_rl's: the quadrotor critic reads privileged observations and the teacher
farm batches the weights of many teachers (robotrl.policies.grouped_mlp), which rsl_rl's PPO does not
do. With a policy of G groups every member learns as if alone: minibatches hold the same number of
samples of each member, advantages are normalised and gradients clipped per member.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from robotrl.policies.mlp import ActorCritic


@dataclass
class PPOConfig:
    num_steps: int = 32
    """Env steps per env in one rollout."""
    num_epochs: int = 4
    num_minibatches: int = 4
    gamma: float = 0.99
    lam: float = 0.95
    clip: float = 0.2
    learning_rate: float = 1e-3
    value_coef: float = 1.0
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    desired_kl: float = 0.01
    """Adaptive learning rate: halve/raise it when the KL leaves [desired_kl/2, 2 desired_kl]; 0 disables."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this before learning (keeps values near unit scale)."""
    max_rows_per_pass: int = 16384
    """Networks run over at most this many rows at once: a larger minibatch is split into passes whose
    gradients add up to the minibatch's (the same update), and the rollout's values are computed in
    slices of steps. Activations of ~16k rows stay in this CPU's cache. Measured on the 64-teacher
    farm: alone, a 65k-row minibatch's forward and backward ran 1.8x faster in 4 passes and the 262k-row
    value pass 3.7x faster in slices; in the whole PPO iteration 1.15-1.35x (bench/bench_teacher_farm.py,
    README). 0: whole minibatches and rollouts."""


class RolloutStorage:
    """Preallocated [num_steps, num_envs, ...] buffers for one rollout."""

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, privileged_dim: int, action_dim: int):
        def buf(*shape: int) -> torch.Tensor:
            return torch.zeros(num_steps, num_envs, *shape)

        self.obs = buf(obs_dim)
        self.privileged_obs = buf(privileged_dim)
        self.actions = buf(action_dim)
        self.log_probs = buf()
        self.values = buf()
        self.rewards = buf()
        self.dones = buf()
        self.returns = buf()
        self.advantages = buf()
        self.step = 0

    def minibatches(
        self, num_minibatches: int, generator: torch.Generator, groups: int = 1, max_rows: int = 0
    ) -> Iterator[list[dict[str, torch.Tensor]]]:
        """Shuffled minibatches, each as passes of at most `max_rows` rows (0: one pass); with groups,
        each pass holds the same samples of every member, group-major.

        Sample j of member g is storage row (step, g * E + env) for order[j] = step * E + env: one gather
        from the flat storage per tensor. Regrouping a copy of the whole rollout first and indexing that
        took 5x as long, a tenth of a farm's PPO update.
        """
        steps, num_envs = self.obs.shape[:2]
        per_group = num_envs // groups
        n = steps * per_group
        order = torch.randperm(n, generator=generator)
        size = n // num_minibatches
        flat = {
            k: getattr(self, k).flatten(0, 1)
            for k in ("obs", "privileged_obs", "actions", "log_probs", "values", "returns", "advantages")
        }
        member_start = torch.arange(groups).unsqueeze(-1) * per_group
        passes = -(-size * groups // max_rows) if max_rows > 0 else 1
        for i in range(num_minibatches):
            batch = []
            for idx in order[i * size : (i + 1) * size].chunk(passes):
                rows = ((idx // per_group) * num_envs + idx % per_group + member_start).flatten()
                batch.append({k: v.index_select(0, rows) for k, v in flat.items()})  # 2x faster than v[rows]
            yield batch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over [T, N] rollouts (dones mark the step's end)."""
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(last_values)
    next_value = last_values
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        next_advantage = delta + gamma * lam * not_done * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages, advantages + values


MIN_LEARNING_RATE, MAX_LEARNING_RATE = 1e-5, 1e-2
"""The adaptive learning rate's range."""


class PPO:
    def __init__(self, policy: ActorCritic, config: PPOConfig, num_envs: int, seed: int = 0):
        self.policy = policy
        self.config = config
        self.learning_rate = config.learning_rate
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
        self.groups = policy.groups
        if num_envs % self.groups:
            raise ValueError(f"{num_envs} envs cannot be split evenly over {self.groups} policy groups")
        actor_out = policy.log_std.shape[-1]
        self.storage = RolloutStorage(
            config.num_steps,
            num_envs,
            policy.obs_normalizer.mean.shape[0],
            policy.privileged_normalizer.mean.shape[0],
            actor_out,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.actor_held_updates = 0
        """Updates left in which only the critic learns: the actor, its std and its normaliser are held,
        the learning rate does not adapt and the value loss is not clipped (a critic warm-up under an
        actor loaded without its critic)."""

    @torch.no_grad()
    def act(self, obs: torch.Tensor, privileged_obs: torch.Tensor) -> torch.Tensor:
        """Sample actions and remember what the update needs (values come later, in one batch)."""
        dist = self.policy.distribution(obs)
        actions = dist.sample()
        s, t = self.storage, self.storage.step
        s.obs[t] = obs
        s.privileged_obs[t] = privileged_obs
        s.actions[t] = actions
        s.log_probs[t] = dist.log_prob(actions).sum(-1)
        return actions

    @torch.no_grad()
    def process_env_step(
        self,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        final_privileged_obs: torch.Tensor | None,
    ) -> None:
        """Store the step's reward; a time-out bootstraps from the value of its final observation."""
        s, t = self.storage, self.storage.step
        rewards = rewards * self.config.reward_scale
        if final_privileged_obs is not None and truncated.any():
            ids = truncated.nonzero().squeeze(-1)
            rewards = rewards.clone()
            if self.groups == 1:
                bootstrap = self.policy.value(final_privileged_obs[ids])
            else:  # a grouped critic needs its full group-major batch
                bootstrap = self.policy.value(final_privileged_obs)[ids]
            rewards[ids] += self.config.gamma * bootstrap
        s.rewards[t] = rewards
        s.dones[t] = (terminated | truncated).float()
        s.step += 1

    @torch.no_grad()
    def compute_returns(self, last_privileged_obs: torch.Tensor) -> None:
        s = self.storage
        steps, num_envs = s.privileged_obs.shape[:2]
        rows = self.config.max_rows_per_pass
        per_slice = max(1, rows // num_envs) if rows > 0 else steps
        for t in range(0, steps, per_slice):
            # Rows in group-major order for a grouped critic: [S, G*E] -> [G, S, E] and back.
            by_group = s.privileged_obs[t : t + per_slice].unflatten(1, (self.groups, -1)).transpose(0, 1)
            values = self.policy.value(by_group.flatten(0, 2)).view(by_group.shape[:3])
            s.values[t : t + per_slice] = values.transpose(0, 1).flatten(1, 2)
        s.advantages, s.returns = compute_gae(
            s.rewards,
            s.values,
            s.dones,
            self.policy.value(last_privileged_obs),
            self.config.gamma,
            self.config.lam,
        )

    def update(self) -> dict[str, float]:
        """Epochs of clipped-surrogate updates over the stored rollout; returns mean losses."""
        cfg, s = self.config, self.storage
        adv = s.advantages.unflatten(1, (self.groups, -1))
        mean, std = adv.mean((0, 2), keepdim=True), adv.std((0, 2), keepdim=True)
        s.advantages = ((adv - mean) / (std + 1e-8)).flatten(1, 2)
        totals = {"loss/surrogate": 0.0, "loss/value": 0.0, "loss/entropy": 0.0, "loss/kl": 0.0}
        updates = 0
        held = self.actor_held_updates > 0
        actor_params = [*self.policy.actor.parameters(), self.policy.log_std] if held else []
        for _ in range(cfg.num_epochs):
            for passes in s.minibatches(
                cfg.num_minibatches, self.generator, self.groups, cfg.max_rows_per_pass
            ):
                self.optimizer.zero_grad(set_to_none=True)
                rows = sum(batch["obs"].shape[0] for batch in passes)
                losses = dict.fromkeys(totals, 0.0)
                for batch in passes:
                    share = batch["obs"].shape[0] / rows
                    loss, parts = self._pass_loss(batch, held)
                    # The sum of the members' mean losses: each member's gradient is what it would be alone.
                    (loss * (self.groups * share)).backward()
                    for k, v in parts.items():
                        losses[k] += share * v
                if not held:
                    self._adapt_learning_rate(losses["loss/kl"])
                for param in actor_params:
                    param.grad = None  # Adam skips a parameter without a gradient
                self._clip_gradients()
                self.optimizer.step()
                for k, v in losses.items():
                    totals[k] += v
                updates += 1
        s.step = 0
        # Normaliser statistics move only between rollouts, so a rollout's log-probs and its update agree.
        if not held:
            self.policy.obs_normalizer.update(s.obs.flatten(0, 1))
        self.policy.privileged_normalizer.update(s.privileged_obs.flatten(0, 1))
        self.actor_held_updates = max(0, self.actor_held_updates - 1)
        if held and self.actor_held_updates == 0:
            self.restart_learning_rate()
        out = {k: v / updates for k, v in totals.items()}
        out["train/learning_rate"] = self.learning_rate
        out["train/action_std"] = self.policy.log_std.exp().mean().item()
        return out

    def _pass_loss(self, batch: dict[str, torch.Tensor], held: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped-surrogate loss of one pass over a minibatch, and its parts as numbers."""
        cfg = self.config
        dist = self.policy.distribution(batch["obs"])
        log_prob = dist.log_prob(batch["actions"]).sum(-1)
        log_ratio = log_prob - batch["log_probs"]
        ratio = log_ratio.exp()
        with torch.no_grad():
            kl = ((ratio - 1.0) - log_ratio).mean()
        surrogate = -torch.min(
            ratio * batch["advantages"], ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * batch["advantages"]
        ).mean()
        value = self.policy.value(batch["privileged_obs"])
        value_loss = (value - batch["returns"]) ** 2
        if not held:
            # Clipped about the rollout's values; a critic warming up is far from its targets and
            # would move only cfg.clip an update (measured: loss 1000 -> 900 in 100 iterations).
            value_clipped = batch["values"] + (value - batch["values"]).clamp(-cfg.clip, cfg.clip)
            value_loss = torch.max(value_loss, (value_clipped - batch["returns"]) ** 2)
        value_loss = value_loss.mean()
        entropy = dist.entropy().sum(-1).mean()
        loss = surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
        parts = {
            "loss/surrogate": surrogate.item(),
            "loss/value": value_loss.item(),
            "loss/entropy": entropy.item(),
            "loss/kl": kl.item(),
        }
        return loss, parts

    def _clip_gradients(self) -> None:
        if self.groups == 1:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.config.max_grad_norm)
            return
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (self.config.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.ndim - 1))))

    def hold_actor(self, updates: int) -> None:
        """Only a fresh critic learns for `updates` updates under a trained actor; the actor's first
        update, after them or at once for 0, starts the adaptive rate at its floor."""
        self.actor_held_updates = updates
        if updates == 0:
            self.restart_learning_rate()

    def fix_action_std(self, std: float | None = None) -> None:
        """Hold the action std (at `std`, or where it is) while the rest learns: Adam skips a parameter
        that gets no gradient. Kept in the checkpoint, so a resumed run holds it too."""
        if std is not None:
            with torch.no_grad():
                self.policy.log_std.fill_(math.log(std))
        self.policy.log_std.requires_grad_(False)

    def restart_learning_rate(self) -> None:
        """Start the adaptive rate from its floor: for a trained actor under an optimiser that never saw
        it (a bundle's actor, released after its critic's warm-up or at once). Adam's first steps move
        every weight by about the rate whatever the gradient: at 1e-3 a bundle's first update had KL 10
        and its jumps went from 35% to 1% success (measured). From the floor the KL rule raises the rate,
        minibatch by minibatch, as far as the KL allows. A fixed rate (desired_kl 0) stays.

        Not used between stages: the forward stage's first update from the upward weights had KL 0.88,
        but restarted (KL 0.006) the stage learnt no better (measured, README)."""
        if self.config.desired_kl > 0:
            self._set_learning_rate(MIN_LEARNING_RATE)

    def _adapt_learning_rate(self, kl: float) -> None:
        target = self.config.desired_kl
        if target <= 0:
            return
        if kl > 2.0 * target:
            self._set_learning_rate(max(MIN_LEARNING_RATE, self.learning_rate / 1.5))
        elif kl < 0.5 * target:
            self._set_learning_rate(min(MAX_LEARNING_RATE, self.learning_rate * 1.5))

    def _set_learning_rate(self, rate: float) -> None:
        self.learning_rate = rate
        for group in self.optimizer.param_groups:
            group["lr"] = rate

    def state_dict(self) -> dict[str, object]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "learning_rate": self.learning_rate,
            "generator": self.generator.get_state(),
            "actor_held_updates": self.actor_held_updates,
            "action_std_fixed": not self.policy.log_std.requires_grad,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.policy.load_state_dict(state["policy"])  # type: ignore[arg-type]
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        self.learning_rate = float(state["learning_rate"])  # type: ignore[arg-type]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
        self.actor_held_updates = int(state.get("actor_held_updates", 0))  # type: ignore[call-overload]
        if state.get("action_std_fixed", False):
            self.fix_action_std()
