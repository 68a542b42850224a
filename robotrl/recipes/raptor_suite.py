"""`robotrl eval --suite raptor`: the student, baselines and teachers through RAPTOR's evaluation suite.

Fleets and controllers:
- unseen: 100 held-out quadrotors (RAPTOR's distribution, seed 1) and the named platforms, flown by the
  student, the geometric controller tuned for the nominal Crazyflie and the official RAPTOR checkpoint
  (PyPI foundation-policy; a comparison only, skipped with a logged note when it is not installed);
- training (with a RAPTOR run directory): the run's training quadrotors, flown by the student and by each
  quadrotor's own teacher. That is where a teacher exists, so that is where the student is held to them.
Writes suite.csv, suite.json, suite.md and PNGs (robotrl.recipes.raptor_report).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.envs.quadrotor.evaluation import Controller
from robotrl.envs.quadrotor.raptor_suite import (
    NAMED_PLATFORMS,
    Fleet,
    Flight,
    SuiteConfig,
    held_out_fleet,
    named_fleet,
    run_scenario,
    scenarios,
    training_fleet,
)
from robotrl.recipes.raptor_report import GEOMETRIC, RAPTOR, STUDENT, TEACHERS, write_report

log = logging.getLogger(__name__)


class RaptorCheckpoint:
    """The official RAPTOR checkpoint behind the Controller protocol.

    Its evaluator keeps the GRU state itself: `reset()` drops it and the next step tiles the initial state to
    that step's batch. The suite's flights start with a previous action of 0, as the checkpoint was trained.
    """

    def __init__(self) -> None:
        from foundation_policy import Raptor

        self._policy = Raptor()

    def reset(self, batch_size: int) -> None:
        del batch_size  # the evaluator sizes its state on the next step
        self._policy.reset()

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self._policy.evaluate_step(np.asarray(obs, dtype=np.float64)).astype(np.float32)


def raptor_checkpoint() -> RaptorCheckpoint | None:
    """The checkpoint, or None (with a logged note) when foundation-policy is not installed."""
    try:
        return RaptorCheckpoint()
    except ImportError as exc:
        log.warning(
            "the official RAPTOR checkpoint is skipped: %s (pip install 'foundation-policy==1.0.2', "
            "part of robotrl[train])",
            exc,
        )
        return None


def geometric_baseline(dt: float) -> Controller:
    """The geometric controller with the nominal Crazyflie as its model, whatever it flies."""
    from robotrl.control.geometric import GeometricController, NominalQuadrotor
    from robotrl.envs.quadrotor.platforms import platform_path

    return GeometricController(NominalQuadrotor.from_platform_yaml(platform_path("crazyflie")), dt=dt)


def fly_suite(
    runs: list[tuple[Fleet, dict[str, Controller]]], config: SuiteConfig, progress: bool = True
) -> list[Flight]:
    """Every scenario with every controller of each (fleet, controllers) pair, under a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    todo = [
        (fleet, scenario, name, controller)
        for fleet, controllers in runs
        for scenario in scenarios(config)
        for name, controller in controllers.items()
    ]
    flights = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("suite", total=len(todo))
        for fleet, scenario, name, controller in todo:
            bar.update(task, description=f"{fleet.name}/{scenario.name}/{name}")
            flights.append(Flight(fleet, name, scenario, run_scenario(controller, fleet, scenario, config)))
            bar.advance(task)
    return flights


def run_raptor_suite(
    out_dir: Path,
    student: Controller | None = None,
    teachers: Path | None = None,
    quadrotors: int = 100,
    config: SuiteConfig | None = None,
    named: tuple[str, ...] = NAMED_PLATFORMS,
    progress: bool = True,
) -> dict[str, Any]:
    """Fly the suite and write its report to out_dir; returns the report (what suite.json holds).

    student: any Controller (a bundle through PolicyRunner in the CLI), or None for the baselines alone.
    teachers: a RAPTOR run directory (robotrl.recipes.raptor.load_teacher_farm) to also fly its training
    quadrotors with the student and their own teachers.
    """
    config = config or SuiteConfig()
    start = time.perf_counter()
    skipped: dict[str, str] = {}
    unseen: dict[str, Controller] = {} if student is None else {STUDENT: student}
    unseen[GEOMETRIC] = geometric_baseline(config.dt)
    checkpoint = raptor_checkpoint()
    if checkpoint is None:
        skipped[RAPTOR] = "foundation-policy is not installed"
    else:
        unseen[RAPTOR] = checkpoint
    parts = ([held_out_fleet(quadrotors)] if quadrotors > 0 else []) + ([named_fleet(named)] if named else [])
    if not parts:
        raise ValueError("nothing to fly: give quadrotors > 0 or at least one named platform")
    runs = [(Fleet.cat("unseen", parts), unseen)]
    if teachers is not None:
        from robotrl.recipes.raptor import load_teacher_farm

        farm = load_teacher_farm(teachers)
        trained = {} if student is None else {STUDENT: student}
        trained[TEACHERS] = farm.controller(config.episodes_per_quadrotor)
        runs.append((training_fleet(farm.params, farm.kept), trained))
    flights = fly_suite(runs, config, progress)
    return write_report(flights, config, out_dir, skipped, wall_s=time.perf_counter() - start)
