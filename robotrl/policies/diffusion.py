"""A diffusion policy over action chunks (Diffusion Policy's recipe), conditioned on the observation.

The denoiser is an MLP over the noisy chunk, the normalised observation and a sinusoidal timestep
embedding: on this CPU it is several times cheaper per call than a 1D temporal-conv UNet of the same
width, and the chunks here are short (8 steps). Training uses diffusers' DDPM noise schedule.

Sampling is deterministic DDIM (eta = 0) from a given initial noise, with the timesteps and cumulative
alphas taken from diffusers' DDIMScheduler and its update written out here: the loop then has no Python
scheduler object in it, so it traces into one ONNX graph (the exported bundles run it inside the graph)
and runs faster (bench/bench_diffusion_sampler.py measures both; tests/test_diffusion.py checks that the
two agree step for step). The same noise always gives the same chunk, which is what DSRL steers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robotrl.policies.mlp import RunningNormalizer


@dataclass
class DiffusionConfig:
    prediction_horizon: int = 8
    """Actions predicted per chunk (H)."""
    action_horizon: int = 4
    """Actions of a chunk executed before the next one is sampled (k <= H)."""
    train_timesteps: int = 100
    inference_steps: int = 8
    """DDIM steps when sampling (DSRL uses 5-8)."""
    hidden: int = 512
    layers: int = 3
    time_embedding: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.action_horizon <= self.prediction_horizon:
            raise ValueError(
                f"need 1 <= action_horizon <= prediction_horizon, got {self.action_horizon}, "
                f"{self.prediction_horizon}"
            )
        if not 1 <= self.inference_steps <= self.train_timesteps:
            raise ValueError(
                "need 1 <= inference_steps <= train_timesteps, "
                f"got {self.inference_steps}, {self.train_timesteps}"
            )


def noise_scheduler(train_timesteps: int):  # -> diffusers.DDPMScheduler
    """The training schedule: squared-cosine betas, epsilon prediction, samples clipped to [-1, 1]."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        prediction_type="epsilon",
    )


def ddim_scheduler(train_timesteps: int, inference_steps: int):  # -> diffusers.DDIMScheduler
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        num_train_timesteps=train_timesteps,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=True,
        set_alpha_to_one=True,
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(inference_steps)
    return scheduler


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float().unsqueeze(-1) * freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class MLPDenoiser(nn.Module):
    """epsilon(x_t, obs, t): the noise in a normalised chunk, from the chunk, the observation and t."""

    def __init__(self, chunk_dim: int, obs_dim: int, hidden: int, layers: int, time_embedding: int):
        super().__init__()
        self.time_embedding = time_embedding
        self.time_mlp = nn.Sequential(
            nn.Linear(time_embedding, time_embedding), nn.Mish(), nn.Linear(time_embedding, time_embedding)
        )
        blocks: list[nn.Module] = []
        width = chunk_dim + obs_dim + time_embedding
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.Mish()]
            width = hidden
        blocks.append(nn.Linear(width, chunk_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """t: [N] timesteps, or [1] for the whole batch."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_embedding)).expand(x.shape[0], -1)
        return self.net(torch.cat((x, obs, emb), dim=-1))


class DiffusionPolicy(nn.Module):
    """Observation normaliser, action scaling, denoiser and DDIM coefficients: all that a chunk needs."""

    def __init__(self, obs_dim: int, action_dim: int, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.prediction_horizon = config.prediction_horizon
        self.action_horizon = config.action_horizon
        chunk_dim = config.prediction_horizon * action_dim
        self.obs_normalizer = RunningNormalizer(obs_dim, clip=5.0)
        # Actions are scaled per dimension from the data's range to [-1, 1], as Diffusion Policy does.
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))
        self.denoiser = MLPDenoiser(chunk_dim, obs_dim, config.hidden, config.layers, config.time_embedding)
        self.set_inference_steps(config.inference_steps)

    @property
    def noise_shape(self) -> tuple[int, int]:
        return (self.prediction_horizon, self.action_dim)

    def set_inference_steps(self, steps: int) -> None:
        """DDIM timesteps and the coefficients of its update, as diffusers' DDIMScheduler computes them."""
        scheduler = ddim_scheduler(self.config.train_timesteps, steps)
        timesteps = scheduler.timesteps.long()
        alpha = scheduler.alphas_cumprod[timesteps]
        prev = timesteps - self.config.train_timesteps // steps
        alpha_prev = torch.where(
            prev >= 0, scheduler.alphas_cumprod[prev.clamp_min(0)], scheduler.final_alpha_cumprod
        )
        self.inference_steps = steps
        for name, value in (
            ("ddim_timesteps", timesteps),
            ("ddim_sqrt_alpha", alpha.sqrt()),
            ("ddim_sqrt_one_minus_alpha", (1 - alpha).sqrt()),
            ("ddim_sqrt_alpha_prev", alpha_prev.sqrt()),
            ("ddim_sqrt_one_minus_alpha_prev", (1 - alpha_prev).sqrt()),
        ):
            self.register_buffer(name, value.float() if name != "ddim_timesteps" else value, persistent=False)

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return 2.0 * (actions - self.action_low) / (self.action_high - self.action_low) - 1.0

    def unnormalize_actions(self, x: torch.Tensor) -> torch.Tensor:
        return self.action_low + (x + 1.0) * 0.5 * (self.action_high - self.action_low)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM: the chunk [N, H, A] in env units that `noise` [N, H, A] denoises to."""
        n = obs.shape[0]
        cond = self.obs_normalizer(obs)
        x = noise.reshape(n, -1)
        for i in range(self.inference_steps):
            eps = self.denoiser(x, cond, self.ddim_timesteps[i : i + 1])
            x0 = ((x - self.ddim_sqrt_one_minus_alpha[i] * eps) / self.ddim_sqrt_alpha[i]).clamp(-1.0, 1.0)
            x = self.ddim_sqrt_alpha_prev[i] * x0 + self.ddim_sqrt_one_minus_alpha_prev[i] * eps
        return self.unnormalize_actions(x.view(n, self.prediction_horizon, self.action_dim)).clamp(-1.0, 1.0)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sample(obs, noise)

    def state(self) -> dict[str, object]:
        """What `from_state` needs to rebuild this policy (config, sizes and weights)."""
        from dataclasses import asdict

        return {
            "config": asdict(self.config),
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "weights": self.state_dict(),
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> DiffusionPolicy:
        policy = cls(int(state["obs_dim"]), int(state["action_dim"]), DiffusionConfig(**state["config"]))  # type: ignore[arg-type]
        policy.load_state_dict(state["weights"])  # type: ignore[arg-type]
        return policy.eval()
