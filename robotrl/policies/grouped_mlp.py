"""Many independent actor-critics in one module: a teacher farm trained as one batch.

G teachers with the same architecture keep their weights stacked ([G, in, out]) and run as batched
matrix products over their own envs, so 64 small MLPs cost about as much Python and dispatch overhead
as one (bench/bench_teacher_farm.py measures the ratio). Env rows are group-major: row g * E + e is
env e of teacher g. Each member is an `ActorCritic` of robotrl.policies.mlp, layer for layer, so a
teacher leaves the farm as a plain policy (`member`) and exports like any other.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robotrl.policies.mlp import ActorCritic, RunningNormalizer, activation_class, with_obs_offset


class GroupedLinear(nn.Module):
    """G independent linear layers, [G, B, in] -> [G, B, out]."""

    def __init__(self, groups: int, in_dim: int, out_dim: int):
        super().__init__()
        # nn.Linear's default initialisation, so a member starts like a lone ActorCritic would.
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(groups, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def grouped_mlp(
    groups: int, in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: type[nn.Module] = nn.Tanh
) -> nn.Sequential:
    """The grouped twin of robotrl.policies.mlp.mlp (hidden layers with `activation`, linear output)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [GroupedLinear(groups, in_dim, width), activation()]
        in_dim = width
    layers.append(GroupedLinear(groups, in_dim, out_dim))
    return nn.Sequential(*layers)


class GroupedActorCritic(nn.Module):
    """G Gaussian actors on the policy observation and G critics on the privileged one, batched.

    The observation normalisers are shared by the group (their statistics pool every member's envs);
    everything else is per member. Same interface as ActorCritic, so robotrl.algos.ppo trains either.
    """

    def __init__(
        self,
        groups: int,
        obs_dim: int,
        privileged_dim: int,
        action_dim: int,
        actor_hidden: tuple[int, ...] = (64, 64),
        critic_hidden: tuple[int, ...] = (64, 64),
        init_log_std: float = -0.5,
        action_offset: torch.Tensor | None = None,
        normalize_obs: bool = True,
        activation: str = "tanh",
        offset_obs_columns: tuple[int, int] | None = None,
    ):
        """`action_offset` [G, action_dim] centres each member's untrained actor (e.g. its hover action);
        `offset_obs_columns` adds those (raw) observation columns to the actor's output as well (see
        ActorCritic)."""
        super().__init__()
        self.groups = groups
        # What one member is, for member() and select().
        self.member_kwargs = {
            "obs_dim": obs_dim,
            "privileged_dim": privileged_dim,
            "action_dim": action_dim,
            "actor_hidden": actor_hidden,
            "critic_hidden": critic_hidden,
            "normalize_obs": normalize_obs,
            "activation": activation,
            "offset_obs_columns": offset_obs_columns,
        }
        self.obs_normalizer = RunningNormalizer(obs_dim, enabled=normalize_obs)
        self.privileged_normalizer = RunningNormalizer(privileged_dim)
        self.actor = grouped_mlp(groups, obs_dim, actor_hidden, action_dim, activation_class(activation))
        self.critic = grouped_mlp(groups, privileged_dim, critic_hidden, 1, activation_class(activation))
        self.log_std = nn.Parameter(torch.full((groups, action_dim), init_log_std))
        last = self.actor[-1]
        for g in range(groups):  # small last layer, as in ActorCritic
            nn.init.orthogonal_(last.weight.data[g], gain=0.01)
        nn.init.zeros_(last.bias)
        offset = torch.zeros(groups, action_dim) if action_offset is None else action_offset
        if offset.shape != (groups, action_dim):
            raise ValueError(f"action_offset must be [{groups}, {action_dim}], got {tuple(offset.shape)}")
        self.register_buffer("action_offset", offset.clone())

    def _grouped(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.groups:
            raise ValueError(
                f"{x.shape[0]} rows cannot be split over {self.groups} members; rows must be group-major "
                "with the same number of envs per member"
            )
        return x.view(self.groups, x.shape[0] // self.groups, x.shape[-1])

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        out = self.actor(self._grouped(self.obs_normalizer(obs))) + self.action_offset.unsqueeze(1)
        return with_obs_offset(out.reshape(obs.shape[0], -1), obs, self.member_kwargs["offset_obs_columns"])

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        per_env = obs.shape[0] // self.groups
        std = self.log_std.exp().repeat_interleave(per_env, dim=0)
        return torch.distributions.Normal(self.action_mean(obs), std)

    def value(self, privileged_obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self._grouped(self.privileged_normalizer(privileged_obs))).reshape(-1)

    def deterministic_actor(self) -> GroupedDeterministicActor:
        return GroupedDeterministicActor(self)

    def select(self, members: list[int]) -> GroupedActorCritic:
        """A farm of only these members, in this order (shared normalisers copied)."""
        subset = GroupedActorCritic(len(members), **self.member_kwargs)
        index = torch.as_tensor(members, dtype=torch.long)
        shared = ("obs_normalizer.", "privileged_normalizer.")
        subset.load_state_dict(
            {k: v if k.startswith(shared) else v[index] for k, v in self.state_dict().items()}
        )
        return subset

    def member(self, index: int) -> ActorCritic:
        """Member `index` as a standalone ActorCritic (a copy: training the farm further leaves it alone)."""
        policy = ActorCritic(**self.member_kwargs, action_offset=self.action_offset[index].clone())
        with torch.no_grad():
            for single, grouped in ((policy.actor, self.actor), (policy.critic, self.critic)):
                for layer, stacked in zip(single, grouped, strict=True):
                    if isinstance(layer, nn.Linear):
                        layer.weight.copy_(stacked.weight[index].T)
                        layer.bias.copy_(stacked.bias[index, 0])
            policy.log_std.copy_(self.log_std[index])
        policy.obs_normalizer.load_state_dict(self.obs_normalizer.state_dict())
        policy.privileged_normalizer.load_state_dict(self.privileged_normalizer.state_dict())
        return policy


class GroupedDeterministicActor(nn.Module):
    """Every member's deterministic action, clipped to [-1, 1]; rows group-major as in training."""

    def __init__(self, policy: GroupedActorCritic):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.action_mean(obs).clamp(-1.0, 1.0)
