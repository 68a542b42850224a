"""The report of RAPTOR's evaluation suite: suite.csv, suite.json, suite.md, PNGs, and the terminal tables.

suite.csv is long-form, one value a row: fleet, group, controller, scenario, metric, quadrotor (a label, or
'all' for the group's summary), mass_kg, thrust_to_weight and roll_authority (rad/s^2, QuadrotorParams;
empty for 'all'), value. Values follow the suite's convention (robotrl.envs.quadrotor.raptor_suite): 'inf'
failed, 'nan' no episode counted.
suite.json holds the summaries (group -> controller -> scenario -> metric; NaN and Infinity written as
Python's json writes them), the config, what was skipped and the student-versus-teachers check; suite.md
has one table per group.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.envs.quadrotor.plots import plot_event_traces, plot_versus_mass
from robotrl.envs.quadrotor.raptor_suite import TRAINING_GROUP, Flight, SuiteConfig, scenarios
from robotrl.tables import markdown_table, rich_table

STUDENT = "student"
TEACHERS = "teachers"
GEOMETRIC = "geometric_crazyflie"
RAPTOR = "raptor_official"
TEACHER_RMSE_LIMIT = 1.5
"""The student's median hover RMSE on the training quadrotors may be at most this times the teachers'."""
CSV_COLUMNS = (
    "fleet", "group", "controller", "scenario", "metric", "quadrotor", "mass_kg", "thrust_to_weight",
    "roll_authority", "value",
)  # fmt: skip


def summary_columns(config: SuiteConfig) -> tuple[tuple[str, str, str, str], ...]:
    """(scenario, metric, header, format) of each column of the summary tables."""
    deadline = f"<={config.recovery_deadline_s:g}s"
    return (
        ("hover", "success", "hover ok", "{:.3f}"),
        ("hover", "rmse_m", "hover RMSE m", "{:.3f}"),
        ("step", "rise_s", "rise s", "{:.2f}"),
        ("step", "overshoot_pct", "overshoot %", "{:.0f}"),
        ("step", "settle_s", "settle s", "{:.2f}"),
        ("figure8", "success", "fig-8 ok", "{:.3f}"),
        ("figure8", "rmse_m", "fig-8 RMSE m", "{:.3f}"),
        ("adapt_mass", "recovered_in_time", f"mass {deadline}", "{:.2f}"),
        ("adapt_rotor", "recovered_in_time", f"rotor {deadline}", "{:.2f}"),
        ("adapt_gust", "recovered_in_time", f"gust {deadline}", "{:.2f}"),
    )


def _cell(value: float, fmt: str) -> str:
    return "-" if math.isnan(value) else fmt.format(value)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a rate of k in n (95 % at z = 1.96).

    Written out because the suite's crash counts are a handful in hundreds, where the normal
    approximation gives negative bounds, and scipy is not among the train extra's dependencies."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def crash_line(by_controller: dict[str, dict[str, dict[str, float]]], n: int) -> str:
    """Hover crashes of each controller in a group's n hovers, as counts with their interval: the suite
    flies a few hundred hovers, so one crash more or less (0.999 against 1.000) is within sampling; more
    starts (`--episodes`, `--seed`) tell them apart."""
    parts = []
    for name, results in by_controller.items():
        k = round((1.0 - results["hover"]["success"]) * n)
        low, high = wilson_interval(k, n)
        parts.append(f"{name} {k} of {n} ({100 * low:.2g}-{100 * high:.2g} %)")
    return "Hover crashes (95 % Wilson interval of the rate): " + "; ".join(parts) + "."


# ------------------------------------------------------------------------------------------ report
def build_report(
    flights: list[Flight], config: SuiteConfig, skipped: dict[str, str], wall_s: float
) -> dict[str, Any]:
    summary: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    fleets: dict[str, dict[str, Any]] = {}
    for flight in flights:
        fleet = flight.fleet
        fleets[fleet.name] = {
            "quadrotors": fleet.num_quadrotors,
            "groups": {g: int(fleet.members(g).size) for g in fleet.group_names},
        }
        for group, metrics in flight.summary().items():
            summary.setdefault(group, {}).setdefault(flight.controller, {})[flight.scenario.name] = metrics
    report: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "fleets": fleets,
        "skipped": skipped,
        "summary": summary,
        "wall_s": wall_s,
    }
    check = student_vs_teachers(flights)
    if check is not None:
        report["student_vs_teachers"] = check
    return report


def student_vs_teachers(flights: list[Flight]) -> dict[str, float] | None:
    """Hover RMSE of the student against the teachers on the kept training quadrotors (None if not flown)."""
    hover = {
        f.controller: f for f in flights if f.scenario.name == "hover" and TRAINING_GROUP in f.fleet.groups
    }
    if STUDENT not in hover or TEACHERS not in hover:
        return None
    student, teachers = hover[STUDENT], hover[TEACHERS]
    members = student.fleet.members(TRAINING_GROUP)
    per_student = student.per_quadrotor()["rmse_m"][members]
    per_teacher = teachers.per_quadrotor()["rmse_m"][members]
    s = student.summary()[TRAINING_GROUP]["rmse_m"]
    t = teachers.summary()[TRAINING_GROUP]["rmse_m"]
    ratio = s / t if t > 0 else math.inf
    return {
        "student_hover_rmse_m": s,
        "teachers_hover_rmse_m": t,
        "ratio": ratio,
        "limit": TEACHER_RMSE_LIMIT,
        "met": float(ratio <= TEACHER_RMSE_LIMIT),
        "quadrotors": float(members.size),
        "quadrotors_within_limit": float(
            np.mean(np.isfinite(per_student) & (per_student <= TEACHER_RMSE_LIMIT * per_teacher))
        ),
    }


def write_report(
    flights: list[Flight], config: SuiteConfig, out_dir: Path, skipped: dict[str, str], wall_s: float
) -> dict[str, Any]:
    """Write suite.csv, suite.json, suite.md and the PNGs; returns the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(flights, config, skipped, wall_s)
    _write_csv(flights, out_dir / "suite.csv")
    files = ["suite.csv", "suite.json", "suite.md"]
    files += [p.name for p in _plots(flights, config, out_dir)]
    report["files"] = files
    (out_dir / "suite.json").write_text(json.dumps(report, indent=2))
    (out_dir / "suite.md").write_text(markdown(report))
    return report


def _write_csv(flights: list[Flight], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for flight in flights:
            fleet, scenario = flight.fleet, flight.scenario.name
            p = fleet.params
            mass, tw, roll = p.mass.tolist(), p.thrust_to_weight.tolist(), p.roll_authority.tolist()
            for metric, values in flight.per_quadrotor().items():
                for q, value in enumerate(values.tolist()):
                    writer.writerow(
                        (fleet.name, fleet.groups[q], flight.controller, scenario, metric, fleet.labels[q],
                         f"{mass[q]:.5g}", f"{tw[q]:.4g}", f"{roll[q]:.4g}", f"{value:.6g}")
                    )  # fmt: skip
            for group, metrics in flight.summary().items():
                for metric, value in metrics.items():
                    writer.writerow(
                        (
                            fleet.name,
                            group,
                            flight.controller,
                            scenario,
                            metric,
                            "all",
                            "",
                            "",
                            "",
                            f"{value:.6g}",
                        )
                    )


# ------------------------------------------------------------------------------------------ tables
def summary_tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, headers, rows, crash line) of one table per group: rows are controllers."""
    config = SuiteConfig(**report["config"])
    columns = summary_columns(config)
    sizes = {g: n for fleet in report["fleets"].values() for g, n in fleet["groups"].items()}
    tables = []
    for group, by_controller in report["summary"].items():
        rows = [
            [name] + [_cell(results[s][m], fmt) for s, m, _, fmt in columns]
            for name, results in by_controller.items()
        ]
        title = f"{group}: {sizes[group]} quadrotor(s) x {config.episodes_per_quadrotor} episodes"
        crashes = crash_line(by_controller, sizes[group] * config.episodes_per_quadrotor)
        tables.append((title, ["controller"] + [h for _, _, h, _ in columns], rows, crashes))
    return tables


def _teacher_line(check: dict[str, float]) -> str:
    verdict = "met" if check["met"] else "NOT met"
    return (
        f"Student vs teachers on their own (kept) training quadrotors: median hover RMSE "
        f"{check['student_hover_rmse_m']:.3f} m vs {check['teachers_hover_rmse_m']:.3f} m, ratio "
        f"{check['ratio']:.2f} (limit {check['limit']:g}x: {verdict}); "
        f"{check['quadrotors_within_limit']:.0%} of {check['quadrotors']:.0f} quadrotors within the limit."
    )


def markdown(report: dict[str, Any]) -> str:
    c = SuiteConfig(**report["config"])
    changes = "; ".join(
        f"{s.name.removeprefix('adapt_')}: {s.title}" for s in scenarios(c) if s.name.startswith("adapt_")
    )
    lines = [
        "# RAPTOR evaluation suite",
        "",
        f"Success: no crash (termination) in the flight. Hover ({c.hover_s:g} s) and figure-8 "
        f"({c.figure8_s:g} s) RMSE over the last {c.rmse_window_s:g} s. Step: the target jumps "
        f"{c.step_m:g} m along x at {c.step_at_s:g} s; rise 10 -> 90 %, overshoot of the jump, settle to "
        f"{c.within_m:g} m. Adaptation: a change during a hover at {c.change_at_s:g} s ({changes}); the "
        f"fraction of episodes back within {c.within_m:g} m of the target for good within "
        f"{c.recovery_deadline_s:g} s. Step and "
        f"adaptation count only episodes within {c.within_m:g} m of the target at the jump or change. Errors "
        "and times are medians over episodes, where a crash counts as inf; '-': no episode counted. Random "
        f"starts: 0.5 m, 30 deg, 0.5 m/s, 1 rad/s, seed {c.seed}; all controllers fly the same ones.",
        "",
    ]
    for name, why in report["skipped"].items():
        lines += [f"Skipped: {name} ({why}).", ""]
    if "student_vs_teachers" in report:
        lines += [_teacher_line(report["student_vs_teachers"]), ""]
    for title, headers, rows, crashes in summary_tables(report):
        lines += [f"## {title}", "", markdown_table(headers, rows), "", crashes, ""]
    lines.append(f"Flown in {report['wall_s']:.0f} s; files: {', '.join(report.get('files', []))}.")
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any]) -> None:
    """The summary tables in the terminal."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and pipes: the full width of the tables, not 80 columns
        console = Console(width=160)
    for title, headers, rows, crashes in summary_tables(report):
        console.print(rich_table(headers, rows, title))
        console.print(crashes)
    if "student_vs_teachers" in report:
        console.print(_teacher_line(report["student_vs_teachers"]))
    for name, why in report["skipped"].items():
        console.print(f"skipped {name}: {why}")


# ------------------------------------------------------------------------------------------ plots
def _plots(flights: list[Flight], config: SuiteConfig, out_dir: Path) -> list[Path]:
    """Per fleet: hover success and RMSE against mass, and the error around each jump or change."""
    paths = []
    for fleet_name in dict.fromkeys(f.fleet.name for f in flights):
        mine = [f for f in flights if f.fleet.name == fleet_name]
        fleet = mine[0].fleet
        hover = {f.controller: f.per_quadrotor() for f in mine if f.scenario.name == "hover"}
        panels = {
            "hover success": ("fraction", {c: m["success"] for c, m in hover.items()}),
            "hover RMSE [m]": ("log", {c: m["rmse_m"] for c, m in hover.items()}),
        }
        mass = fleet.params.mass.numpy()
        paths.append(plot_versus_mass(mass, panels, out_dir / f"{fleet_name}_vs_mass.png", fleet_name))
        events: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for f in mine:
            if f.result.trace_t is not None and f.result.trace_m is not None:
                events.setdefault(f.scenario.title, {})[f.controller] = (f.result.trace_t, f.result.trace_m)
        if events:
            paths.append(plot_event_traces(events, out_dir / f"{fleet_name}_events.png", config.within_m))
    return paths
