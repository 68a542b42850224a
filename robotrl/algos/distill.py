"""Distilling teachers into a recurrent student: behaviour cloning, then on-policy DAgger.

Env-agnostic: it needs a batched env (DESIGN.md's contract) whose `info["privileged_obs"]` is what the
teachers read, and a `teacher` function from privileged observations to actions. A rollout is one
whole episode of every env from a fresh reset, so a sequence never spans two episodes and the student's
hidden state needs no reset inside it; steps after an env's episode ended are masked out of the loss.
The student is trained by backpropagation through each whole rollout (RAPTOR: BPTT over 500 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from robotrl.algos.on_policy_runner import VecEnv
from robotrl.policies.recurrent_student import RecurrentStudent

Teacher = Callable[[torch.Tensor], torch.Tensor]
"""Privileged observations [N, P] -> deterministic teacher actions [N, A]."""


@dataclass
class DistillConfig:
    bc_rollouts: int = 10
    """Rollouts the teachers fly before the student takes over (RAPTOR: 10 epochs of teacher-driven BC)."""
    dagger_rollouts: int = 290
    """Rollouts the student flies while the teachers label every step."""
    rollout_steps: int = 500
    """Steps of a rollout: one episode (5 s at 100 Hz), all of it backpropagated through."""
    buffer_rollouts: int = 16
    """The aggregated dataset: the latest rollouts kept for training."""
    updates_per_rollout: int = 16
    minibatch_sequences: int = 256
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-4
    """Cosine decay to this by the last rollout."""
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.rollout_steps < 1 or self.buffer_rollouts < 1 or self.minibatch_sequences < 1:
            raise ValueError("rollout_steps, buffer_rollouts and minibatch_sequences must be >= 1")

    @property
    def total_rollouts(self) -> int:
        return self.bc_rollouts + self.dagger_rollouts


class DAgger:
    """Collects labelled rollouts (teacher or student driving) and fits the student to the labels."""

    def __init__(self, student: RecurrentStudent, teacher: Teacher, config: DistillConfig, seed: int = 0):
        self.student = student
        self.teacher = teacher
        self.config = config
        self.optimizer = torch.optim.Adam(
            [p for p in student.parameters() if p.requires_grad], lr=config.learning_rate
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer: list[dict[str, torch.Tensor]] = []
        self.rollouts = 0

    @torch.no_grad()
    def collect(self, env: VecEnv, teacher_drives: bool) -> dict[str, float]:
        """One rollout of every env into the buffer; returns how the driver did."""
        steps, n = self.config.rollout_steps, env.num_envs
        obs = env.reset()
        privileged = env.privileged_observation()
        hidden = self.student.initial(n)
        alive = torch.ones(n, dtype=torch.bool)
        record = {"obs": [], "labels": [], "mask": []}
        sq_error = torch.zeros(())
        for _ in range(steps):
            labels = self.teacher(privileged)
            student_action, hidden = self.student(obs, hidden)
            record["obs"].append(obs)
            record["labels"].append(labels)
            record["mask"].append(alive.clone())
            sq_error += (((student_action - labels) ** 2).sum(-1) * alive).sum()
            obs, _, terminated, truncated, info = env.step(labels if teacher_drives else student_action)
            privileged = info["privileged_obs"]
            alive &= ~(terminated | truncated)
        rollout = {k: torch.stack(v) for k, v in record.items()}
        self.buffer = [*self.buffer, rollout][-self.config.buffer_rollouts :]
        self.rollouts += 1
        valid = rollout["mask"].sum().clamp_min(1)
        # An episode that ends before the last step was terminated (a crash); the last step truncates.
        return {
            "distill/driver_survival": rollout["mask"][-1].float().mean().item(),
            "distill/on_policy_action_mse": (sq_error / valid / labels.shape[-1]).item(),
            "distill/teacher_drives": float(teacher_drives),
        }

    def update(self) -> dict[str, float]:
        """Minibatches of whole sequences drawn from the buffer; masked MSE to the teacher's actions."""
        cfg = self.config
        self._set_learning_rate()
        obs = torch.cat([r["obs"] for r in self.buffer], dim=1)
        labels = torch.cat([r["labels"] for r in self.buffer], dim=1)
        mask = torch.cat([r["mask"] for r in self.buffer], dim=1).unsqueeze(-1).float()
        total = 0.0
        for _ in range(cfg.updates_per_rollout):
            idx = torch.randint(
                obs.shape[1], (min(cfg.minibatch_sequences, obs.shape[1]),), generator=self.generator
            )
            actions, _ = self.student.sequence(obs[:, idx])
            m = mask[:, idx]
            loss = (((actions - labels[:, idx]) ** 2) * m).sum() / (
                m.sum().clamp_min(1.0) * actions.shape[-1]
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            total += loss.item()
        return {"loss/distill_mse": total / cfg.updates_per_rollout, "train/learning_rate": self._lr()}

    def _lr(self) -> float:
        cfg = self.config
        progress = min(1.0, self.rollouts / max(1, cfg.total_rollouts))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.final_learning_rate + (cfg.learning_rate - cfg.final_learning_rate) * cosine

    def _set_learning_rate(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()

    def state_dict(self) -> dict[str, Any]:
        return {
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rollouts": self.rollouts,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: weights, optimiser and counters; the buffer refills from the next rollouts."""
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.rollouts = int(state["rollouts"])
