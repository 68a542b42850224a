"""Batched SAC, with DSRL's noise aliasing (DSRL-NA) as an option. No training loop: the runner owns it.

Our own rather than stable-baselines3's: DSRL-NA needs two critics over two different action spaces (the
executed action chunk and the diffusion policy's latent noise), and our envs are batched torch envs that
hand over num_envs transitions a step, not gymnasium vector envs.

Plain SAC: twin Q critics with Polyak-averaged targets, a tanh-squashed Gaussian actor scaled to
[-action_bound, action_bound], automatic entropy tuning. DSRL-SAC is plain SAC on LatentNoiseEnv, whose
action is the noise w. DSRL-NA (Wagenmaker et al. 2025): the TD critic Q^A reads the executed action
chunk instead; a noise critic Q^W(s, w) is regressed onto Q^A(s, decode(s, w)) for fresh w ~ N(0, I), so
all the noise that decodes to one chunk ("aliases") shares that chunk's value; the actor maximises Q^W
plus entropy. Its actions stay within action_bound (upstream DSRL-NA ignores the bound: ANCHORS.md §5).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from robotrl.policies.mlp import activation_class


class NoiseDecoder(Protocol):
    """The frozen base policy seen from DSRL-NA (robotrl.wrappers.latent_noise.LatentNoiseEnv is one)."""

    executed_action_dim: int
    """Size of the flattened executed chunk, Q^A's action."""

    def decode(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """obs [B, O] and flat noise [B, W] -> the executed chunk, [B, k, A] or [B, k*A]."""
        ...


@dataclass
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor and of each critic; their number is the depth (DSRL: 3 x 2048)."""
    activation: str = "relu"
    """Hidden activation: tanh, relu or elu (DSRL: tanh)."""
    layer_norm: bool = False
    """LayerNorm after each hidden Linear, before its activation (DSRL: on)."""
    gamma: float = 0.99
    """Discount per transition: one agent step, which is one action chunk on a chunked env."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    batch_size: int = 256
    buffer_size: int = 1_000_000
    """Transitions kept (one transition is one env's row of one step)."""
    utd_ratio: float = 1.0
    """Gradient updates per stored transition (DSRL: 20); fractions carry over between steps."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    initial_alpha: float = 1.0
    target_q_range: tuple[float, float] | None = None
    """Clamp TD targets to the returns the task can have (sparse success reward, episode ends on success:
    [0, 1]). Without it, failed episodes that end by time-out are only ever bootstrapped, nothing grounds
    their values, and the actor climbs the critic's extrapolation (measured on peg insertion: Q near 35
    where no return exceeds 1, and success fell from 0.9 to 0.02)."""
    target_entropy: float | None = None
    """Entropy the temperature steers to; None: -(action dim)."""
    warmup_steps: int = 5_000
    """Transitions of uniform random actions before the actor explores and updates start."""
    action_bound: float = 1.0
    """Actions lie in [-bound, bound]: bound * tanh(Gaussian). DSRL's noise_bound: 1.5 (2.5 for walker)."""
    log_std_range: tuple[float, float] = (-5.0, 2.0)
    noise_aliasing: bool = False
    """DSRL-NA: Q^A on executed chunks, Q^W on noise; needs a NoiseDecoder."""

    def __post_init__(self) -> None:
        activation_class(self.activation)  # raises on an unknown name
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ValueError(
                f"need 1 <= batch_size <= buffer_size, got {self.batch_size}, {self.buffer_size}"
            )
        if self.utd_ratio < 0 or not 0 < self.tau <= 1 or self.action_bound <= 0:
            raise ValueError(
                f"need utd_ratio >= 0, 0 < tau <= 1, action_bound > 0; "
                f"got {self.utd_ratio}, {self.tau}, {self.action_bound}"
            )


def build_mlp(in_dim: int, out_dim: int, config: SACConfig) -> nn.Sequential:
    activation = activation_class(config.activation)
    layers: list[nn.Module] = []
    for width in config.hidden:
        layers.append(nn.Linear(in_dim, width))
        if config.layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(activation())
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class TwinQ(nn.Module):
    """Two independent Q networks on (obs, action); forward gives both, [2, B]."""

    def __init__(self, obs_dim: int, action_dim: int, config: SACConfig):
        super().__init__()
        self.nets = nn.ModuleList(build_mlp(obs_dim + action_dim, 1, config) for _ in range(2))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in self.nets])


class SquashedGaussianActor(nn.Module):
    """bound * tanh(u), u ~ N(mean(s), std(s)); log-probabilities are those of the bounded action."""

    def __init__(self, obs_dim: int, action_dim: int, config: SACConfig):
        super().__init__()
        self.net = build_mlp(obs_dim, 2 * action_dim, config)
        self.bound = config.action_bound
        self.log_std_range = config.log_std_range

    def forward(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(action [B, A], log-prob [B]); the sample draws from `generator` so a resumed run repeats it."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        if deterministic:
            return self.bound * torch.tanh(mean), torch.zeros(obs.shape[0], device=obs.device)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return self.sample_from(mean, log_std, eps)

    def with_noise(self, obs: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The action that the standard-normal draw `eps` gives (an exported stochastic actor's input)."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return self.sample_from(mean, log_std, eps)[0]

    def sample_from(
        self, mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = log_std.clamp(*self.log_std_range)
        u = mean + log_std.exp() * eps
        gaussian = -0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi)
        # log |d(bound tanh u)/du| = log bound + log(1 - tanh^2 u), the latter written stably.
        squash = math.log(self.bound) + 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
        return self.bound * torch.tanh(u), (gaussian - squash).sum(-1)


class ReplayBuffer:
    """Preallocated circular transitions. done is `terminated` only: a time-out still bootstraps."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device):
        self.capacity = capacity
        self.data = {
            "obs": torch.zeros(capacity, obs_dim, device=device),
            "action": torch.zeros(capacity, action_dim, device=device),
            "reward": torch.zeros(capacity, device=device),
            "next_obs": torch.zeros(capacity, obs_dim, device=device),
            "done": torch.zeros(capacity, device=device),
        }
        self.position = 0
        self.size = 0

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        n = obs.shape[0]
        if n > self.capacity:
            raise ValueError(f"{n} transitions a step do not fit a buffer of {self.capacity}")
        idx = (self.position + torch.arange(n, device=self.data["obs"].device)) % self.capacity
        rows = {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": terminated}
        for key, value in rows.items():
            self.data[key][idx] = value.to(self.data[key])
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        device = self.data["obs"].device
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=generator.device).to(device)
        return {key: value[idx] for key, value in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """The filled rows only (a young buffer checkpoints small)."""
        return {
            "data": {k: v[: self.size].cpu() for k, v in self.data.items()},
            "position": self.position,
            "size": self.size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        if size > self.capacity:
            raise ValueError(f"checkpointed buffer holds {size} transitions, this one only {self.capacity}")
        for key, value in state["data"].items():
            self.data[key][:size] = value.to(self.data[key])
        self.position = int(state["position"])
        self.size = size


class SAC:
    """act/explore, store, update -> loss dict, state_dict/load_state_dict; the runner drives them."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        config: SACConfig,
        seed: int = 0,
        decoder: NoiseDecoder | None = None,
        device: str | torch.device = "cpu",
    ):
        if config.noise_aliasing != (decoder is not None):
            raise ValueError("noise_aliasing needs a decoder (the LatentNoiseEnv), and a decoder needs it on")
        self.config = config
        self.decoder = decoder
        self.device = torch.device(device)
        self.action_dim = action_dim
        critic_action_dim = decoder.executed_action_dim if decoder is not None else action_dim
        self.actor = SquashedGaussianActor(obs_dim, action_dim, config).to(self.device)
        self.critic = TwinQ(obs_dim, critic_action_dim, config).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.noise_critic = (
            TwinQ(obs_dim, action_dim, config).to(self.device) if decoder is not None else None
        )
        self.log_alpha = torch.tensor(math.log(config.initial_alpha), device=self.device, requires_grad=True)
        self.target_entropy = (
            -float(action_dim) if config.target_entropy is None else float(config.target_entropy)
        )
        self.optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=config.alpha_lr),
        }
        if self.noise_critic is not None:
            noise_params = self.noise_critic.parameters()
            self.optimizers["noise_critic"] = torch.optim.Adam(noise_params, lr=config.critic_lr)
        self.buffer = ReplayBuffer(config.buffer_size, obs_dim, critic_action_dim, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.transitions = 0
        """Transitions stored since the start (past the buffer's capacity too)."""
        self.updates = 0
        self._update_credit = 0.0

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    @property
    def learning(self) -> bool:
        return self.transitions >= max(self.config.warmup_steps, self.config.batch_size)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        action, _ = self.actor(obs.to(self.device), self.generator, deterministic)
        return action.to(obs.device)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """Uniform random actions during warm-up, the actor's samples after it."""
        if self.transitions >= self.config.warmup_steps:
            return self.act(obs)
        shape = (obs.shape[0], self.action_dim)
        uniform = torch.rand(shape, generator=self.generator, device=self.device)
        return ((2.0 * uniform - 1.0) * self.config.action_bound).to(obs.device)

    def store(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """One step of every env. action is the critic's: the executed chunk under noise aliasing."""
        self.buffer.add(obs, action, reward, next_obs, terminated)
        self.transitions += obs.shape[0]
        self._update_credit += self.config.utd_ratio * obs.shape[0]

    def update(self) -> dict[str, float]:
        """The gradient updates the stored transitions earned (utd_ratio each); mean losses, {} if none."""
        if not self.learning:
            self._update_credit = 0.0
            return {}
        count = int(self._update_credit)
        self._update_credit -= count
        totals: dict[str, torch.Tensor] = {}
        for _ in range(count):
            for key, value in self.gradient_step().items():
                totals[key] = totals.get(key, 0.0) + value
        return {key: (value / count).item() for key, value in totals.items()}

    def gradient_step(self) -> dict[str, torch.Tensor]:
        cfg = self.config
        batch = self.buffer.sample(cfg.batch_size, self.generator)
        out = {"loss/critic": self._step("critic", self._critic_loss(batch))}
        policy_critic = self.critic
        if self.noise_critic is not None:
            noise_loss = self._noise_critic_loss(self.noise_critic, batch["obs"])
            out["loss/noise_critic"] = self._step("noise_critic", noise_loss)
            policy_critic = self.noise_critic
        action, log_prob = self.actor(batch["obs"], self.generator)
        policy_critic.requires_grad_(False)  # the actor's loss needs no gradients of the critic's weights
        q = policy_critic(batch["obs"], action).min(0).values
        out["loss/actor"] = self._step("actor", (self.alpha * log_prob - q).mean())
        policy_critic.requires_grad_(True)
        entropy = -log_prob.detach()
        out["loss/alpha"] = self._step("alpha", (self.log_alpha * (entropy - self.target_entropy)).mean())
        with torch.no_grad():
            for target, online in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                target.lerp_(online, cfg.tau)
        self.updates += 1
        out["train/alpha"] = self.alpha
        out["train/entropy"] = entropy.mean()
        return out

    @torch.no_grad()
    def td_target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """r + gamma (1 - terminated) (min Q_target(s', a') - alpha log pi(a'|s')), a' from the actor."""
        next_action, next_log_prob = self.actor(batch["next_obs"], self.generator)
        critic_action = self._critic_action(batch["next_obs"], next_action)
        next_q = self.critic_target(batch["next_obs"], critic_action).min(0).values
        soft_value = next_q - self.alpha * next_log_prob
        target = batch["reward"] + self.config.gamma * (1.0 - batch["done"]) * soft_value
        if self.config.target_q_range is not None:
            target = target.clamp(*self.config.target_q_range)
        return target

    def _critic_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        q = self.critic(batch["obs"], batch["action"])
        return ((q - self.td_target(batch)) ** 2).mean(-1).sum()

    def _noise_critic_loss(self, noise_critic: TwinQ, obs: torch.Tensor) -> torch.Tensor:
        """Q^W(s, w) onto min Q^A(s, decode(s, w)), w ~ N(0, I) clipped to the bound (the actor's range)."""
        bound = self.config.action_bound
        noise = torch.randn(obs.shape[0], self.action_dim, generator=self.generator, device=self.device)
        noise = noise.clamp(-bound, bound)
        with torch.no_grad():
            target = self.critic(obs, self._critic_action(obs, noise)).min(0).values
        return ((noise_critic(obs, noise) - target) ** 2).mean(-1).sum()

    def _critic_action(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return action
        return self.decoder.decode(obs, action).flatten(1).to(self.device)

    def _step(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue as if never stopped, the replay buffer included.

        Like torch's state_dicts it holds references to live tensors: save it before training on.
        """
        modules = {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}
        if self.noise_critic is not None:
            modules["noise_critic"] = self.noise_critic
        return {
            **{name: module.state_dict() for name, module in modules.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "log_alpha": self.log_alpha.detach().cpu(),
            "buffer": self.buffer.state_dict(),
            "generator": self.generator.get_state(),
            "transitions": self.transitions,
            "updates": self.updates,
            "update_credit": self._update_credit,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        if self.noise_critic is not None:
            self.noise_critic.load_state_dict(state["noise_critic"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])  # in place: the alpha optimiser holds this tensor
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])
        self.transitions = int(state["transitions"])
        self.updates = int(state["updates"])
        self._update_credit = float(state["update_credit"])
