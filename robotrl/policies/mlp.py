"""MLP actor-critic with observation normalisers, and the stripped deterministic actor that is exported."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
"""Hidden-layer activations by their config name."""


def activation_class(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation '{name}' is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(
    in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: type[nn.Module] = nn.Tanh
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), activation()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class RunningNormalizer(nn.Module):
    """Running mean/std of inputs (Chan's parallel update), frozen outside training.

    Stored as buffers so it travels with state_dict and is baked into exported graphs.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-2, enabled: bool = True):
        super().__init__()
        self.clip = clip
        self.eps = eps
        self.enabled = enabled  # False: the identity, whatever update() sees
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if not self.enabled:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        n = x.shape[0]
        total = self.count + n
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (n / total).float()
        m2 = self.var * self.count.float() + batch_var * n + delta**2 * (self.count * n / total).float()
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total.float())
        self.count.copy_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return ((x - self.mean) / torch.sqrt(self.var + self.eps**2)).clamp(-self.clip, self.clip)


class ActorCritic(nn.Module):
    """Gaussian actor on the policy observation, critic on the privileged observation (asymmetric)."""

    groups = 1
    """One policy (robotrl.policies.grouped_mlp holds many)."""

    def __init__(
        self,
        obs_dim: int,
        privileged_dim: int,
        action_dim: int,
        actor_hidden: tuple[int, ...] = (64, 64),
        critic_hidden: tuple[int, ...] = (64, 64),
        init_log_std: float = -0.5,
        action_offset: torch.Tensor | None = None,
        normalize_obs: bool = True,
        activation: str = "tanh",
        action_clip: float = 1.0,
        offset_obs_columns: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.action_clip = action_clip
        """Bound of the deterministic actor's output: the env's own action clip, so that what leaves
        training acts as the mean did in training (a jump env clips at 10, not 1)."""
        self.offset_obs_columns = offset_obs_columns
        """[start, stop) of raw observation columns added to the actor's output: a feedforward the env
        already knows (a quadrotor teacher's per-rotor hover action), so the network learns only the
        feedback around it."""
        self.obs_normalizer = RunningNormalizer(obs_dim, enabled=normalize_obs)
        self.privileged_normalizer = RunningNormalizer(privileged_dim)
        self.actor = mlp(obs_dim, actor_hidden, action_dim, activation_class(activation))
        self.critic = mlp(privileged_dim, critic_hidden, 1, activation_class(activation))
        self.log_std = nn.Parameter(torch.full((action_dim,), init_log_std))
        # Small last actor layer: the untrained policy starts near its offset, not at a random corner.
        nn.init.orthogonal_(self.actor[-1].weight, gain=0.01)
        nn.init.zeros_(self.actor[-1].bias)
        self.register_buffer(
            "action_offset", torch.zeros(action_dim) if action_offset is None else action_offset
        )

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        return with_obs_offset(
            self.actor(self.obs_normalizer(obs)) + self.action_offset, obs, self.offset_obs_columns
        )

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        return torch.distributions.Normal(self.action_mean(obs), self.log_std.exp().expand(obs.shape[0], -1))

    def value(self, privileged_obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.privileged_normalizer(privileged_obs)).squeeze(-1)

    def deterministic_actor(self) -> DeterministicActor:
        return DeterministicActor(self)


class DeterministicActor(nn.Module):
    """What leaves training: normaliser, actor MLP, offset and the env's action clip; `obs` -> `actions`."""

    def __init__(self, policy: ActorCritic):
        super().__init__()
        self.obs_normalizer = policy.obs_normalizer
        self.actor = policy.actor
        self.register_buffer("action_offset", policy.action_offset.clone())
        self.action_clip = policy.action_clip
        self.offset_obs_columns = policy.offset_obs_columns

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        clip = self.action_clip
        mean = self.actor(self.obs_normalizer(obs)) + self.action_offset
        return with_obs_offset(mean, obs, self.offset_obs_columns).clamp(-clip, clip)


def with_obs_offset(mean: torch.Tensor, obs: torch.Tensor, columns: tuple[int, int] | None) -> torch.Tensor:
    """`mean` plus the observation's `columns` (ActorCritic.offset_obs_columns), or `mean` itself."""
    return mean if columns is None else mean + obs[..., columns[0] : columns[1]]
