"""The closed loop through the ROS 2 graph at 100 Hz, composed in one process, against the same pieces
flown without ROS in the same run: missed deadlines, state -> filtered motor command latency, and the
figure-8 tracking RMSE ratio (graph / direct).

    python bench/bench_ros_loop.py [--bundle runs/demo/bundle] [--seconds 60]

Needs a bundle (`robotrl demo` makes one). Targets: <= 0.5% missed deadlines, latency p50 <= 1 ms and
p99 <= 3 ms, RMSE within 10% of the direct flight.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from robotrl.cli import DEMO_DEPLOYMENT
from robotrl.deployment import load_deployment


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="runs/demo/bundle")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="runs/bench_ros_loop")
    args = parser.parse_args()
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from robotrl_ros.flight import fly_and_compare

    r = fly_and_compare(load_deployment(DEMO_DEPLOYMENT, args.bundle), args.seconds, Path(args.out))
    print(f"{args.seconds:.0f} s at 100 Hz, composed: {r['ticks']:.0f} periods")
    print(
        f"missed deadlines      {r['missed_deadlines']:.0f} ({100 * r['missed_fraction']:.2f}%)"
        "  target <= 0.5%"
    )
    print(
        f"latency p50 / p99     {r['latency_ms_p50']:.2f} / {r['latency_ms_p99']:.2f} ms   target <= 1 / 3 ms"
    )
    print(
        f"round trip p50 / p99  {r['round_trip_ms_p50']:.2f} / {r['round_trip_ms_p99']:.2f} ms"
        " (bridge -> bridge)"
    )
    print(
        f"figure-8 RMSE         graph {r['ros_rmse_m']:.3f} m, direct {r['direct_rmse_m']:.3f} m, "
        f"ratio {r['rmse_ratio']:.3f}   target <= 1.10"
    )
    print(f"safety mode at the end: {r['safety_mode']} {r['first_fault']}")


if __name__ == "__main__":
    main()
