"""Smoke runs of the `robotrl` command with tiny budgets: train, resume, export, eval, and its error exits."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robotrl.algos.checkpoints import run_dir_lock
from robotrl.cli import main
from robotrl.config import ConfigError
from robotrl.recipes.quadrotor import load_config, load_run, train
from robotrl.runtime.policy_runner import PolicyRunner

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = [
    "--num-envs", "64", "--threads", "1", "--no-progress",
    "--set", "runner.eval_every=1", "--set", "eval.episodes=16", "--set", "runner.checkpoint_every=1",
    "--set", "eval.duration_s=2",
]  # fmt: skip
HOLD_LOCK = """
import sys, time
from pathlib import Path
from robotrl.algos.checkpoints import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""
"""A second process training in a run directory, as far as its lock is concerned."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "quadrotor", "--run-dir", str(run), "--max-iterations", "2", *SMALL]) == 0
    return run


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundle"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    return out


def _summary(run: Path) -> dict[str, object]:
    return json.loads((run / "summary.json").read_text())


def _steps_per_iteration(run: Path) -> int:
    config = yaml.safe_load((run / "config.yaml").read_text())
    return int(config["ppo"]["num_steps"]) * int(config["env"]["num_envs"])


def test_train_writes_a_complete_run_directory(run_dir: Path) -> None:
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "summary.json").is_file()
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest.txt").read_text().strip() == "iter_000002.pt"
    assert (checkpoints / "iter_000001.pt").is_file() and (checkpoints / "iter_000002.pt").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["env"]["num_envs"] == 64 and config["runner"]["max_iterations"] == 2  # flags recorded
    summary = _summary(run_dir)
    assert summary["iterations"] == 2
    assert summary["env_steps"] == 2 * _steps_per_iteration(run_dir)
    assert summary["eval"]["episodes"] == 16.0  # type: ignore[index]


def test_resume_continues_the_run(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert (
        main(["train", "quadrotor", "--run-dir", str(run), "--resume", "--max-iterations", "3", *SMALL]) == 0
    )
    summary = _summary(run)
    assert summary["iterations"] == 3
    assert summary["env_steps"] == 3 * _steps_per_iteration(run)
    assert (run / "checkpoints" / "latest.txt").read_text().strip() == "iter_000003.pt"
    history = torch.load(run / "checkpoints" / "iter_000003.pt", weights_only=False)["history"]
    assert [h["iteration"] for h in history] == [1.0, 2.0, 3.0]
    assert "after 3 iterations" in capsys.readouterr().out


def test_training_into_a_non_empty_directory_needs_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert main(["train", "quadrotor", "--run-dir", str(run), "--max-iterations", "1", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    # --resume on something that is not a run names the file it needs.
    assert main(["train", "quadrotor", "--run-dir", str(run), "--resume", *SMALL]) == 2
    assert f"{run / 'config.yaml'} does not exist" in capsys.readouterr().err


def test_a_second_writer_on_a_run_is_refused_and_changes_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert (
            main(["train", "quadrotor", "--run-dir", str(run), "--resume", "--max-iterations", "3", *SMALL])
            == 2
        )
        err = capsys.readouterr().err
        assert f"another process is training in {run}" in err and "--resume" in err
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, yet the kernel drops the lock with the process
        holder.wait()
    with run_dir_lock(run):
        pass


def test_resuming_a_run_that_is_not_there_leaves_no_directory(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    with pytest.raises(ConfigError, match="cannot resume"):
        train(load_config(), missing, resume=True, progress=False)
    assert not missing.exists()


def test_unknown_override_exits_2_naming_the_allowed_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "quadrotor", "--run-dir", str(run), "--set", "ppo.learnin_rate=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learnin_rate'" in err
    assert "'learning_rate'" in err and "'num_steps'" in err
    assert not run.exists()


def test_export_writes_a_bundle_of_the_latest_checkpoint(run_dir: Path, bundle: Path) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == ["policy.onnx", "policy.pt", "policy.yaml"]
    spec = yaml.safe_load((bundle / "policy.yaml").read_text())
    assert spec["robot"] == "crazyflie" and spec["task"] == "quadrotor_hover"
    # The bundle computes what the run's policy computes.
    _, policy = load_run(run_dir)
    obs = np.random.default_rng(0).normal(0.0, 0.3, (5, 22)).astype(np.float32)
    runner = PolicyRunner(bundle)
    runner.reset(5)
    with torch.no_grad():
        expected = policy.deterministic_actor()(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(runner.step(obs), expected, atol=1e-5)


def test_export_refuses_to_overwrite_a_bundle(
    run_dir: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    assert main(["export", str(run_dir), "--out", str(bundle)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before


def test_eval_a_bundle_against_the_baseline(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["eval", str(bundle), "--baseline", "--episodes", "16", "--duration", "4", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {f"bundle:{bundle.name}", "geometric"}
    assert all(m["episodes"] == 16.0 for m in metrics.values())
    assert metrics["geometric"]["crashes"] == 0.0  # the classical baseline flies
    assert (out / "metrics.md").read_text().count("| geometric |") == 1
    assert (out / "flights.png").read_bytes()[:8] == PNG_MAGIC


def test_eval_the_baseline_alone_and_a_run_directory(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "geometric"
    assert main(["eval", "geometric", "--episodes", "8", "--duration", "3", "--out", str(out)]) == 0
    assert set(json.loads((out / "metrics.json").read_text())) == {"geometric"}
    assert (out / "flights.png").read_bytes()[:8] == PNG_MAGIC
    out = tmp_path / "run"
    assert main(["eval", str(run_dir), "--episodes", "8", "--duration", "1", "--out", str(out)]) == 0
    assert set(json.loads((out / "metrics.json").read_text())) == {f"run:{run_dir.name}"}


def test_eval_of_something_else_exits_2_saying_what_it_expected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "'/nonexistent'" in err
    assert "policy bundle (no policy.yaml)" in err and "training run (no config.yaml)" in err
    assert "'geometric'" in err
