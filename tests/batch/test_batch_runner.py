"""Executing batches: failures recorded while the others complete, resume, kill and resume, blocked runs,
the lock, and the submitit code path (its local executor)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from batch_helpers import toy_spec, write_spec
from click.testing import CliRunner

from semkit.batch import BatchBusyError, load_spec, plan_batch, read_status, run_batch
from semkit.cli.batch import batch


def _runs(path, root):
    return {(r.parameters["x"], r.parameters["y"]): r for r in plan_batch(load_spec(path), root / "tiny")}


def test_failure_is_recorded_others_complete_and_resume(tmp_path):
    path = toy_spec(tmp_path)
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "2-bb").touch()
    root, figures = tmp_path / "runs", tmp_path / "figures"
    summary = run_batch(path, root, figures, workers=2, progress=False)
    runs = _runs(path, root)
    bad = runs[(2, "bb")].run_id
    assert sorted(summary.failed) == [bad] and len(summary.done) == 3 and not summary.skipped
    assert not summary.ok and "was made to fail" in summary.errors[bad]
    status = read_status(root / "tiny" / bad)
    assert status["state"] == "failed"
    assert status["error"] == "RuntimeError: run x=2 y=bb was made to fail"
    assert "raise RuntimeError" in status["traceback"] and "\x1b[" not in status["traceback"]
    assert {"started", "finished", "host", "wall_s", "parameters"} <= set(status)
    assert (root / "tiny" / bad / "toy.ipynb").exists()  # the partly executed notebook is kept
    for key, run in runs.items():
        if key == (2, "bb"):
            continue
        folder = root / "tiny" / run.run_id
        assert read_status(folder)["state"] == "done"
        assert json.loads((folder / "metrics.json").read_text())["score"] == 10 * key[0] + len(key[1])
        assert json.loads((folder / "parameters.json").read_text())["output_dir"] == str(folder)
        assert f"toy run x={key[0]} y={key[1]}" in (folder / "run.log").read_text()
        assert (figures / "tiny" / run.run_id / "toy.txt").read_text() == "figure"
        assert (folder / "timing.json").exists()
    assert json.loads((root / "tiny" / "batch.json").read_text())["name"] == "tiny"
    assert not (root / "tiny" / ".lock").exists()

    # second invocation: the three finished runs are skipped, the failed one is executed again (and fails)
    first_start = status["started"]
    time.sleep(1.1)
    again = run_batch(path, root, figures, progress=False)
    assert len(again.skipped) == 3 and again.failed == [bad] and not again.done
    assert read_status(root / "tiny" / bad)["started"] != first_start
    assert "3 skipped (already done), 1 failed, 0 blocked" in str(again) and "executed again by the next" in str(again)

    # the cause removed, a third invocation completes the batch without touching the others
    (tmp_path / "fail" / "2-bb").unlink()
    done_metrics = {r.run_id: (root / "tiny" / r.run_id / "metrics.json").stat().st_mtime_ns for r in runs.values()
                    if r.run_id != bad}
    third = run_batch(path, root, figures, progress=False)
    assert third.done == [bad] and len(third.skipped) == 3 and third.ok
    assert json.loads((root / "tiny" / bad / "metrics.json").read_text())["score"] == 22
    for rid, mtime in done_metrics.items():
        assert (root / "tiny" / rid / "metrics.json").stat().st_mtime_ns == mtime

    # --force executes everything again
    forced = run_batch(path, root, figures, force=True, workers=2, progress=False)
    assert len(forced.done) == 4 and not forced.skipped


def test_blocked_downstream_runs_and_only(tmp_path):
    toy_spec(tmp_path)
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "2-a").touch()
    path = write_spec(tmp_path / "chain.yaml", {"name": "chain", "stages": [
        {"name": "up", "notebook": "./toy.ipynb", "parameters": {"fail_dir": str(tmp_path / "fail")},
         "grid": {"x": [1, 2]}},
        {"name": "down", "notebook": "./toy.ipynb", "parameters": {"y": "${up.output_dir}"}, "grid": {"x": [1, 2]}},
    ]})
    runs = plan_batch(load_spec(path), tmp_path / "runs" / "chain")
    up = {r.parameters["x"]: r for r in runs if r.stage == "up"}
    down = {r.parameters["x"]: r for r in runs if r.stage == "down"}
    assert down[2].dependencies == {"up": up[2].run_id}  # paired on x
    summary = run_batch(path, tmp_path / "runs", None, progress=False)
    assert summary.failed == [up[2].run_id] and summary.blocked == [down[2].run_id]
    assert sorted(summary.done) == sorted([up[1].run_id, down[1].run_id])
    status = read_status(down[2].run_dir)
    assert status["state"] == "blocked" and status["error"] == f"dependency not done: up {up[2].run_id}"
    assert not (down[2].run_dir / "metrics.json").exists()
    assert (down[1].run_dir / "figures" / "toy.txt").exists()  # figures_root None: figures inside the run

    # --only down: up is not executed again, so down x=2 stays blocked
    only = run_batch(path, tmp_path / "runs", None, only=["down"], progress=False)
    assert only.blocked == [down[2].run_id] and only.skipped == [down[1].run_id] and not only.failed
    (tmp_path / "fail" / "2-a").unlink()
    fixed = run_batch(path, tmp_path / "runs", None, progress=False)
    assert fixed.done == [up[2].run_id, down[2].run_id] and fixed.ok
    with pytest.raises(KeyError, match="unknown stage 'sideways'; stages: up, down"):
        run_batch(path, tmp_path / "runs", only=["sideways"], progress=False)


def test_killed_run_is_completed_on_resume(tmp_path):
    path = toy_spec(tmp_path, grid={"x": [1]}, parameters={"hold_file": str(tmp_path / "hold")})
    (tmp_path / "hold").touch()
    root = tmp_path / "runs"
    (run,) = plan_batch(load_spec(path), root / "tiny")
    code = "import sys; from semkit.cli.batch import batch; batch(sys.argv[1:])"
    driver = subprocess.Popen([sys.executable, "-c", code, "run", str(path), "--runs-root", str(root),
                               "--figures-root", str(tmp_path / "figures")],
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        log = run.run_dir / "run.log"
        while not (log.exists() and "toy run" in log.read_text()):  # the kernel is inside the run
            assert driver.poll() is None and time.monotonic() < deadline, "the run never started"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its kernel, as when a job is killed
        driver.wait()
    assert read_status(run.run_dir)["state"] == "running"
    assert not (run.run_dir / "metrics.json").exists()
    assert (root / "tiny" / ".lock").exists()  # left behind by the killed driver
    (tmp_path / "hold").unlink()
    summary = run_batch(path, root, tmp_path / "figures", progress=False)  # takes over the stale lock
    assert summary.done == [run.run_id]
    assert read_status(run.run_dir)["state"] == "done"
    assert json.loads((run.run_dir / "metrics.json").read_text())["score"] == 11


def test_lock_refuses_a_second_driver(tmp_path):
    path = toy_spec(tmp_path)
    lock = tmp_path / "runs" / "tiny" / ".lock"
    lock.parent.mkdir(parents=True)
    import socket

    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}))
    with pytest.raises(BatchBusyError, match=f"being run by pid {os.getpid()}"):
        run_batch(path, tmp_path / "runs", progress=False)
    assert lock.exists()


def test_cli_run_status_exit_codes(tmp_path):
    path = toy_spec(tmp_path)
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "1-a").touch()
    args = ["--runs-root", str(tmp_path / "runs")]
    result = CliRunner().invoke(batch, ["run", str(path), "-j", "2", *args, "--figures-root", str(tmp_path / "f")])
    assert result.exit_code == 1
    assert "tiny: 4 runs: 3 done, 0 skipped (already done), 1 failed, 0 blocked" in result.output
    assert "RuntimeError: run x=1 y=a was made to fail" in result.output
    status = CliRunner().invoke(batch, ["status", "tiny", *args])
    assert status.exit_code == 0 and status.output.strip().endswith("3 done, 1 failed")
    # from the spec: the same plan, the same states
    status = CliRunner().invoke(batch, ["status", str(path), *args])
    assert status.output.strip().endswith("3 done, 1 failed")
    missing = CliRunner().invoke(batch, ["status", "nothing-here", *args])
    assert missing.exit_code != 0 and "no such spec file" in missing.output


def test_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    path = toy_spec(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["resources"] = {"timeout_min": 5, "slurm_partition": "ignored-by-local"}
    write_spec(path, spec)
    (tmp_path / "fail").mkdir()
    (tmp_path / "fail" / "1-bb").touch()
    summary = run_batch(path, tmp_path / "runs", tmp_path / "figures", executor="submitit-local", progress=False)
    runs = _runs(path, tmp_path / "runs")
    assert summary.failed == [runs[(1, "bb")].run_id] and len(summary.done) == 3
    for key, run in runs.items():
        status = read_status(run.run_dir)
        assert status["state"] == ("failed" if key == (1, "bb") else "done")
        assert status["pid"] != os.getpid()  # executed in a job process, not in the driver
    again = run_batch(path, tmp_path / "runs", tmp_path / "figures", executor="submitit-local", progress=False)
    assert len(again.skipped) == 3 and len(again.failed) == 1
    with pytest.raises(ValueError, match="unknown executor 'pbs'; choose one of: local, slurm, submitit-local"):
        run_batch(path, tmp_path / "runs", executor="pbs")


CWD_CODE = '''import os
import time
from pathlib import Path

from semkit.batch import write_results

time.sleep(0.5)  # keep the runs overlapping
Path(figures_dir, "toy.txt").write_text("figure")
write_results(output_dir, {"kernel_cwd": os.getcwd(), "x": x})'''


def test_parallel_runs_never_move_the_working_directory(tmp_path, monkeypatch):
    """Runs execute from threads; none may os.chdir the process (papermill's cwd= does), or relative paths of
    the caller and of the other runs resolve against the wrong folder (`make demo` lost its batch.json)."""
    from batch_helpers import make_notebook

    nb_dir = tmp_path / "nbs"
    make_notebook(nb_dir / "where.ipynb", 'x: int = 0  # grid value\noutput_dir: str = "."\nfigures_dir: str = "."',
                  CWD_CODE)
    start = tmp_path / "start"
    start.mkdir()
    write_spec(start / "where.yaml", {"name": "where", "notebook": "../nbs/where.ipynb", "grid": {"x": [1, 2, 3, 4]},
                                      "timeout_s": 120})
    monkeypatch.chdir(start)
    moves: list[str] = []
    real_chdir = os.chdir

    def spy(path):
        moves.append(str(path))
        real_chdir(path)

    monkeypatch.setattr(os, "chdir", spy)
    summary = run_batch("where.yaml", "runs", "figs", workers=4, progress=False)  # all relative
    assert summary.ok and len(summary.done) == 4
    assert moves == [] and os.getcwd() == str(start)
    runs = plan_batch(load_spec(start / "where.yaml"), start / "runs" / "where")
    for run in runs:
        folder = start / "runs" / "where" / run.run_id
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["x"] == run.parameters["x"]
        assert metrics["kernel_cwd"] == str(nb_dir.resolve())  # the notebook still runs in its own folder
        assert (start / "figs" / "where" / run.run_id / "toy.txt").read_text() == "figure"
    assert (start / "runs" / "where" / "batch.json").is_file()
    assert not (nb_dir / "runs").exists() and not (nb_dir / "figs").exists()
