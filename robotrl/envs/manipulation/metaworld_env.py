"""Meta-World manipulation tasks as one batched env (DESIGN.md's contract), stepped in worker processes.

Meta-World steps at 1-2k env-steps/s per core in Python and MuJoCo, so the batch is split over one
worker process per core, each stepping its share of envs in a loop. Ours rather than gymnasium's
AsyncVectorEnv: that one runs a process per env and gained only 1.35x on 2 cores here (DESIGN.md), and
it cannot run an action chunk in the worker: `step_chunk` sends a whole chunk in one message, and each
env stops at the end of its episode instead of running the rest of the chunk into the next one.

Reward is sparse: 1 on the step the task succeeds, which ends the episode (terminated); the time limit
truncates. Episode starts are seeded: env i of a batch reset with seed s draws the same task variation
(goal and object positions) every time.
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

OBSERVATION_DIM = 39
ACTION_DIM = 4


@dataclass
class MetaWorldConfig:
    task: str = "assembly-v3"
    """Any Meta-World v3 task name (`robotrl demos tasks` lists them)."""
    num_envs: int = 8
    workers: int = 2
    """Worker processes; one per core."""
    max_episode_steps: int = 200
    """Time limit [steps] (Meta-World's own is 500; the scripted experts finish these tasks in < 150)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_envs < 1 or self.workers < 1:
            raise ValueError(f"need num_envs >= 1 and workers >= 1, got {self.num_envs}, {self.workers}")
        if not 1 <= self.max_episode_steps <= 500:
            raise ValueError(
                f"max_episode_steps must be in [1, 500] (Meta-World's limit), got {self.max_episode_steps}"
            )


def task_names() -> list[str]:
    """The Meta-World v3 tasks that ship a scripted expert."""
    from metaworld.policies import ENV_POLICY_MAP

    return sorted(ENV_POLICY_MAP)


def check_task(task: str) -> None:
    names = task_names()
    if task not in names:
        close = [n for n in names if task.split("-")[0] in n][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"'{task}' is not a Meta-World v3 task{hint}; `robotrl demos tasks` lists them")


def make_env(task: str, seed: int, max_episode_steps: int) -> Any:
    """One Meta-World env: random task variation on each reset, episode ends on success."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/ ids)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(
            "Meta-World/MT1",
            env_name=task,
            seed=seed,
            max_episode_steps=max_episode_steps,
            terminate_on_success=True,
            disable_env_checker=True,
        )


class _Envs:
    """A worker's share of the batch: plain Meta-World envs, stepped in a loop, reset when done."""

    def __init__(self, task: str, seeds: list[int], max_episode_steps: int):
        self.envs = [make_env(task, s, max_episode_steps) for s in seeds]
        self.obs = np.zeros((len(seeds), OBSERVATION_DIM), dtype=np.float32)

    def reset(self, seeds: list[int] | None) -> np.ndarray:
        for i, env in enumerate(self.envs):
            if seeds is not None:
                env.unwrapped.seed(seeds[i])  # Meta-World ignores reset(seed=...)
            self.obs[i] = env.reset()[0]
        return self.obs.copy()

    def step_chunk(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Each env runs its chunk [k, A] until the chunk or its episode ends."""
        m = len(self.envs)
        out = {
            "reward": np.zeros(m, np.float32),
            "terminated": np.zeros(m, bool),
            "truncated": np.zeros(m, bool),
            "success": np.zeros(m, bool),
            "steps": np.zeros(m, np.int64),
            "final_obs": np.zeros((m, OBSERVATION_DIM), np.float32),
        }
        for i, env in enumerate(self.envs):
            for action in actions[i]:
                obs, _, terminated, truncated, info = env.step(action)
                out["steps"][i] += 1
                success = bool(info["success"])
                if success or terminated or truncated:
                    out["reward"][i] = float(success)
                    out["success"][i] = success
                    out["terminated"][i] = success or terminated
                    out["truncated"][i] = not out["terminated"][i]
                    out["final_obs"][i] = obs
                    obs = env.reset()[0]
                    self.obs[i] = obs
                    break
                self.obs[i] = obs
        out["obs"] = self.obs.copy()
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _worker(conn: Connection, task: str, seeds: list[int], max_episode_steps: int) -> None:
    torch.set_num_threads(1)
    try:
        envs = _Envs(task, seeds, max_episode_steps)
        conn.send(("ok", None))
    except Exception as error:  # the parent raises it with the worker's message
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        command, payload = conn.recv()
        try:
            if command == "reset":
                conn.send(("ok", envs.reset(payload)))
            elif command == "chunk":
                conn.send(("ok", envs.step_chunk(payload)))
            elif command == "close":
                envs.close()
                conn.send(("ok", None))
                return
        except Exception as error:
            conn.send(("error", f"{type(error).__name__}: {error}"))


class MetaWorldVecEnv:
    """`num_envs` Meta-World envs of one task over `workers` processes; torch tensors in and out."""

    observation_dim = OBSERVATION_DIM
    action_dim = ACTION_DIM

    def __init__(self, config: MetaWorldConfig):
        check_task(config.task)
        self.config = config
        self.num_envs = config.num_envs
        self.device = torch.device("cpu")
        workers = min(config.workers, config.num_envs)
        self._slices = [s.tolist() for s in np.array_split(np.arange(config.num_envs), workers)]
        context = mp.get_context("spawn")  # never fork a process that holds torch's thread pools
        self._conns: list[Connection] = []
        self._procs = []
        for ids in self._slices:
            parent, child = context.Pipe()
            seeds = [config.seed * 100_003 + i for i in ids]
            proc = context.Process(
                target=_worker, args=(child, config.task, seeds, config.max_episode_steps), daemon=True
            )
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        for i in range(len(self._conns)):
            self._receive(i)
        self._obs = torch.zeros(self.num_envs, OBSERVATION_DIM)
        self.episode_step = torch.zeros(self.num_envs, dtype=torch.long)
        self.episode_return = torch.zeros(self.num_envs)

    def _receive(self, worker: int) -> Any:
        conn, proc = self._conns[worker], self._procs[worker]
        while not conn.poll(0.5):
            if not proc.is_alive():
                raise RuntimeError(
                    f"Meta-World worker {worker} died (exit code {proc.exitcode}); its envs are lost, "
                    "make a new MetaWorldVecEnv"
                )
        try:
            status, payload = conn.recv()
        except EOFError:
            proc.join(timeout=5.0)
            raise RuntimeError(
                f"Meta-World worker {worker} exited (code {proc.exitcode}) before answering; a script run "
                "from standard input cannot start spawned workers: run it from a file"
            ) from None
        if status != "ok":
            raise RuntimeError(f"Meta-World worker failed: {payload}")
        return payload

    def _broadcast(self, command: str, payloads: list[Any]) -> list[Any]:
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send((command, payload))
        return [self._receive(i) for i in range(len(self._conns))]

    # ------------------------------------------------------------------------------- contract
    def reset(self, seed: int | None = None) -> torch.Tensor:
        """Reset every env; with a seed, env i starts from the variation that (seed, i) always gives."""
        seeds = [None if seed is None else [seed * 100_003 + i for i in ids] for ids in self._slices]
        self._obs = torch.from_numpy(np.concatenate(self._broadcast("reset", seeds)))
        self.episode_step.zero_()
        self.episode_return.zero_()
        return self._obs.clone()

    def privileged_observation(self) -> torch.Tensor:
        return self._obs.clone()

    def step(
        self, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One step of every env: actions [N, 4] in [-1, 1]."""
        if action.shape != (self.num_envs, ACTION_DIM):
            raise ValueError(
                f"action must have shape ({self.num_envs}, {ACTION_DIM}), got {tuple(action.shape)}"
            )
        return self.step_chunk(action.unsqueeze(1))

    def step_chunk(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Each env executes up to k actions of its chunk [N, k, 4], stopping where its episode ends.

        reward is the sum over the executed steps; info["steps"] says how many each env executed.
        """
        if actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[2] != ACTION_DIM:
            raise ValueError(
                f"actions must have shape ({self.num_envs}, k, {ACTION_DIM}), got {tuple(actions.shape)}"
            )
        if not torch.isfinite(actions).all():
            bad = (~torch.isfinite(actions).flatten(1).all(1)).nonzero().squeeze(-1).tolist()
            raise ValueError(f"non-finite actions for envs {bad}: the policy produced NaN or inf")
        chunk = actions.detach().clamp(-1.0, 1.0).cpu().numpy().astype(np.float64)
        parts = self._broadcast("chunk", [chunk[ids] for ids in self._slices])
        out = {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}
        self._obs = out.pop("obs")
        reward, terminated, truncated = out.pop("reward"), out.pop("terminated"), out.pop("truncated")
        self.episode_step += out["steps"]
        self.episode_return += reward
        done = terminated | truncated
        info: dict[str, Any] = {
            "steps": out["steps"],
            "success": out["success"],
            "final_obs": out["final_obs"],
            "time_outs": truncated,
            "privileged_obs": self._obs.clone(),
        }
        if done.any():
            info["final_privileged_obs"] = out["final_obs"]
            ids = done.nonzero().squeeze(-1)
            info["episode"] = {
                "success_rate": out["success"][ids].float().mean().item(),
                "episode_length": self.episode_step[ids].float().mean().item(),
            }
            info["episode_length"] = self.episode_step.clone()
            self.episode_step[ids] = 0
            self.episode_return[ids] = 0.0
        return self._obs.clone(), reward, terminated, truncated, info

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if proc.is_alive():
                try:
                    conn.send(("close", None))
                    conn.poll(10.0) and conn.recv()
                except (BrokenPipeError, EOFError):
                    pass
            proc.join(timeout=10.0)
            if proc.is_alive():
                proc.kill()
        self._procs = []

    def __enter__(self) -> MetaWorldVecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()
