"""Per-env curriculum of jump commands, after the reference-free jumping curriculum (ANCHORS §3).

Stage "upward" asks for jumps in place. Stage "forward" gives each env a level: level k asks for a
forward distance in the k-th of `num_levels - 1` equal bands of [0, max_forward_m] (level 0 in place)
and a lateral distance within +-max_lateral_m scaled by k / (num_levels - 1); a fraction of episodes
are in-place jumps mixed in so the first skill is not forgotten. One success moves an env's level up,
two consecutive failures move it down. Stage "obstacle" adds a box between start and landing whose
height grows with the level; the command is sampled here, and the env places the box in its MuJoCo model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

Stage = Literal["upward", "forward", "obstacle"]
STAGES: tuple[str, ...] = ("upward", "forward", "obstacle")

COMMAND_FIELDS: tuple[tuple[str, int, str, str], ...] = (
    ("landing_position_rel", 3, "m", "landing base position minus the start one; start heading frame"),
    ("landing_quat_wxyz", 4, "1", "landing orientation relative to the start heading; yaw only"),
    ("obstacle_centre_rel", 3, "m", "box centre: x, y from the start, z above the ground; 0 if none"),
    ("obstacle_size", 3, "m", "box extents along x, y, z; 0 if none"),
)
"""(name, size, unit, frame) of each command field, in order."""
COMMAND_DIM = sum(size for _, size, _, _ in COMMAND_FIELDS)
LANDING_POS = slice(0, 3)
LANDING_QUAT = slice(3, 7)
OBSTACLE_CENTRE = slice(7, 10)
OBSTACLE_SIZE = slice(10, 13)


Distance = TypeVar("Distance", float, torch.Tensor)


@dataclass
class CurriculumConfig:
    stage: Stage = "upward"
    num_levels: int = 11
    """Levels of the forward and obstacle stages (ANCHORS §3: 11); the upward stage has one."""
    max_forward_m: float = 1.0
    """Forward distance of the top level [m] (ANCHORS §3: 0-1.0 m)."""
    max_lateral_m: float = 0.3
    """Lateral distance of the top level, either side [m] (ANCHORS §3: +-0.3 m)."""
    max_yaw_rad: float = 0.0
    """Landing yaw, uniform in +-max_yaw_rad at every level [rad]; 0 until turning jumps are trained."""
    upward_fraction: float = 0.1
    """Share of in-place jumps mixed into the forward and obstacle stages (ANCHORS §3: 10%)."""
    rehearsal_fraction: float = 0.0
    """Share of obstacle-stage jumps that are forward-stage ones with no box, at any level's distance
    (ours): the obstacle stage otherwise asks for 0.6-0.8 m landings only, and the forward stage's
    short jumps drift away from what they were (measured: after 350 obstacle iterations, 0.2 m jumps
    succeed in 22% of pybullet episodes, from 100%)."""
    successes_to_level_up: int = 1
    failures_to_level_down: int = 2
    """Consecutive results that move an env's level (ANCHORS §3: one success up, two failures down)."""
    initial_level: int = 0
    obstacle_height_m: tuple[float, float] = (0.0, 0.3)
    """Box height at the first and the top obstacle level [m] (ANCHORS §3)."""
    obstacle_width_m: tuple[float, float] = (0.6, 1.2)
    """Box extent across the jump (y), uniform [m] (ANCHORS §3)."""
    obstacle_depth_m: float = 0.1
    """Box extent along the jump (x) [m] (ours: a hurdle)."""
    obstacle_centre_offset_m: float = -0.025
    """Box centre minus half the landing distance [m] (ours): the middle of the free floor between the
    A1's front feet at the start (toes to x = 0.18 m) and its hind feet at the landing (landing - 0.23 m).
    That gap is landing - 0.41 m long, so a 0.1 m box leaves 0.045 m either side at a 0.6 m jump."""
    obstacle_min_forward_m: float = 0.6
    """Shortest jump over a box [m], so the box fits between the feet at start and landing (ours)."""
    obstacle_max_forward_m: float = 0.8
    """Longest jump over a box [m] (ours: within what the forward stage's jumps reach under
    randomisation; ANCHORS §3 jumps reach max_forward_m)."""
    fixed_landing_m: tuple[float, float] | None = None
    """(forward, lateral) [m]: every command asks for this landing, whatever the stage and level (for
    evaluations that score one jump on many robots)."""
    fixed_obstacle_height_m: float | None = None
    """Obstacle stage: every box this high, whatever the level (for evaluations) [m]."""

    def obstacle_centre_x_m(self, forward_m: Distance) -> Distance:
        """Where along the jump a box stands for a landing forward_m ahead [m] (float or tensor)."""
        return 0.5 * forward_m + self.obstacle_centre_offset_m

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"curriculum stage {self.stage!r} is not one of {STAGES}")
        if self.num_levels < 2 or not 0 <= self.initial_level < self.num_levels:
            raise ValueError(
                f"need num_levels >= 2 and 0 <= initial_level < num_levels, got {self.num_levels}, "
                f"{self.initial_level}"
            )
        if self.fixed_obstacle_height_m is not None and self.fixed_obstacle_height_m < 0:
            raise ValueError(f"fixed_obstacle_height_m must be >= 0, got {self.fixed_obstacle_height_m}")
        if not 0 < self.obstacle_min_forward_m <= self.obstacle_max_forward_m:
            raise ValueError(
                f"need 0 < obstacle_min_forward_m <= obstacle_max_forward_m, got "
                f"{self.obstacle_min_forward_m}, {self.obstacle_max_forward_m}"
            )
        if not 0.0 <= self.upward_fraction <= 1.0 or not 0.0 <= self.rehearsal_fraction <= 1.0:
            raise ValueError(
                f"upward_fraction and rehearsal_fraction must be in [0, 1], got {self.upward_fraction}, "
                f"{self.rehearsal_fraction}"
            )
        if self.successes_to_level_up < 1 or self.failures_to_level_down < 1:
            raise ValueError(
                f"successes_to_level_up and failures_to_level_down must be >= 1, got "
                f"{self.successes_to_level_up}, {self.failures_to_level_down}"
            )


class JumpCurriculum:
    """Levels [num_envs] and the commands [len, COMMAND_DIM] drawn from them."""

    def __init__(self, config: CurriculumConfig, num_envs: int, device: str | torch.device = "cpu"):
        self.config = config
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.stage: Stage = config.stage
        self.level = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.successes = torch.zeros_like(self.level)
        self.failures = torch.zeros_like(self.level)
        self.from_level = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        """Whether each env's current command was drawn at its level (a mixed-in upward jump was not)."""
        self.set_stage(config.stage)

    @property
    def num_levels(self) -> int:
        return 1 if self.stage == "upward" else self.config.num_levels

    def set_stage(self, stage: Stage) -> None:
        """Start a stage: every env at the initial level (level 0 in the upward stage)."""
        if stage not in STAGES:
            raise ValueError(f"curriculum stage {stage!r} is not one of {STAGES}")
        self.stage = stage
        self.level[:] = 0 if stage == "upward" else self.config.initial_level
        self.successes[:] = 0
        self.failures[:] = 0

    # ----------------------------------------------------------------------------------- sample
    def sample(self, env_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Commands [len(env_ids), COMMAND_DIM] for new episodes at the envs' levels."""
        cfg, n, dev = self.config, env_ids.numel(), self.device

        def uniform(low: torch.Tensor | float, high: torch.Tensor | float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator, device=dev)

        level = self.level[env_ids]
        draw = torch.rand(n, generator=generator, device=dev)
        upward = draw < cfg.upward_fraction
        if self.stage == "upward":
            upward[:] = True
        rehearsing = self.stage == "obstacle" and cfg.rehearsal_fraction > 0
        rehearsal = ~upward & (draw < cfg.upward_fraction + cfg.rehearsal_fraction) & rehearsing
        self.from_level[env_ids] = ~upward & ~rehearsal
        command = torch.zeros(n, COMMAND_DIM, device=dev)
        yaw = uniform(-cfg.max_yaw_rad, cfg.max_yaw_rad)
        zero = torch.zeros_like(yaw)
        command[:, LANDING_QUAT] = torch.stack((torch.cos(0.5 * yaw), zero, zero, torch.sin(0.5 * yaw)), -1)
        if self.stage == "obstacle":
            forward = uniform(cfg.obstacle_min_forward_m, cfg.obstacle_max_forward_m)
            lateral = zero
            height = uniform(*self._band(level, *cfg.obstacle_height_m))
            if cfg.fixed_obstacle_height_m is not None:
                height = torch.full_like(height, cfg.fixed_obstacle_height_m)
            depth = torch.full_like(height, cfg.obstacle_depth_m)
            box = ~(upward | rehearsal).unsqueeze(-1)
            size = torch.stack((depth, uniform(*cfg.obstacle_width_m), height), dim=-1)
            centre = torch.stack((cfg.obstacle_centre_x_m(forward), zero, 0.5 * height), dim=-1)
            command[:, OBSTACLE_SIZE] = torch.where(box, size, 0.0)
            command[:, OBSTACLE_CENTRE] = torch.where(box, centre, 0.0)
            if rehearsing:  # off, no random number is drawn: the stage samples as it did before
                any_level = torch.randint(cfg.num_levels, (n,), generator=generator, device=dev)
                forward_jump, sideways = self._forward_landing(any_level, uniform)
                forward = torch.where(rehearsal, forward_jump, forward)
                lateral = torch.where(rehearsal, sideways, lateral)
        else:
            forward, lateral = self._forward_landing(level, uniform)
        command[:, 0] = torch.where(upward, 0.0, forward)
        command[:, 1] = torch.where(upward, 0.0, lateral)
        if cfg.fixed_landing_m is not None:
            command[:, 0:2] = torch.tensor(cfg.fixed_landing_m, device=dev)
        return command

    def _forward_landing(
        self,
        level: torch.Tensor,
        uniform: Callable[[torch.Tensor | float, torch.Tensor | float], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, lateral) landings [len(level)] of the forward stage at the given levels [m]."""
        cfg = self.config
        forward = uniform(*self._band(level, 0.0, cfg.max_forward_m))
        side = cfg.max_lateral_m * level.float() / (cfg.num_levels - 1)
        return forward, uniform(-side, side)

    def _band(self, level: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Level k's share of [low, high]: the k-th of num_levels - 1 equal bands; level 0 is `low` alone."""
        step = (high - low) / (self.config.num_levels - 1)
        top = low + step * level.float()
        return (top - step).clamp_min(low), top

    # ----------------------------------------------------------------------------------- update
    def update(self, env_ids: torch.Tensor, success: torch.Tensor) -> None:
        """Move the levels of envs whose episodes ended (success [len] bool); mixed-in jumps do not count."""
        counted = self.from_level[env_ids]
        ids, won = env_ids[counted], success[counted]
        self.successes[ids] = torch.where(won, self.successes[ids] + 1, 0)
        self.failures[ids] = torch.where(won, 0, self.failures[ids] + 1)
        up = self.successes[ids] >= self.config.successes_to_level_up
        down = self.failures[ids] >= self.config.failures_to_level_down
        moved = self.level[ids] + up.long() - down.long()
        self.level[ids] = moved.clamp(0, self.num_levels - 1)
        self.successes[ids] = torch.where(up, 0, self.successes[ids])
        self.failures[ids] = torch.where(down, 0, self.failures[ids])

    # ----------------------------------------------------------------------------------- resume, logging
    def state_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "level": self.level.clone(),
            "successes": self.successes.clone(),
            "failures": self.failures.clone(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        level = torch.as_tensor(state["level"], device=self.device)
        if level.shape != self.level.shape:
            raise ValueError(
                f"curriculum state holds {tuple(level.shape)} levels, this one has {self.num_envs} envs: "
                "resume with the same num_envs"
            )
        stage = str(state["stage"])
        if stage not in STAGES:
            raise ValueError(f"curriculum state has stage {stage!r}, not one of {STAGES}")
        self.stage = stage  # type: ignore[assignment]
        self.level[:] = level
        self.successes[:] = torch.as_tensor(state["successes"], device=self.device)
        self.failures[:] = torch.as_tensor(state["failures"], device=self.device)

    def level_counts(self) -> torch.Tensor:
        """Envs at each level [num_levels] (for a TensorBoard histogram)."""
        return torch.bincount(self.level, minlength=self.num_levels)

    def summary(self) -> dict[str, float]:
        """Scalars for TensorBoard: mean and max level, and the share of envs at each level."""
        share = self.level_counts().float() / self.num_envs
        out = {
            "curriculum/level_mean": self.level.float().mean().item(),
            "curriculum/level_max": float(self.level.max().item()),
        }
        out.update({f"curriculum/share_level_{k:02d}": share[k].item() for k in range(self.num_levels)})
        return out
