"""Stopping a run from outside: SIGTERM / SIGINT finish the step, checkpoint and exit 143 / 130;
kill -9 loses at most the steps since the last checkpoint. Either way the rerun of the same command
ends bit-identical to a straight run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tokgen.train.checkpoint import LOCK_FILE, RunLockedError, is_complete, list_checkpoints

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import ToyTask  # noqa: E402
from test_checkpoint import assert_identical, run, snapshot  # noqa: E402

WORKER = Path(__file__).with_name("_resume_worker.py")
REPO = Path(__file__).resolve().parents[1]


class SignalledTask(ToyTask):
    """ToyTask that sends itself `signum` during the micro-batch of step `at` (0-based)."""

    def __init__(self, signum, at, **kw):
        super().__init__(**kw)
        self.signum, self.at = signum, at

    def losses(self, batch, step):
        if step == self.at and len(self.seen_indices) == 2 * self.at:  # first micro-batch of that step
            os.kill(os.getpid(), self.signum)
        return super().losses(batch, step)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_step_checkpoints_and_exits(tmp_path, capsys, monkeypatch, signum, code):
    import tokgen.train.engine as engine

    straight, _, _ = run(tmp_path / "straight", 6)
    before = signal.getsignal(signum)
    real_task = engine.Trainer.__init__

    def with_signalling_task(self, task, dataset, config):  # the same run, with a task that signals
        real_task(self, SignalledTask(signum, 2, init_seed=0), dataset, config)

    monkeypatch.setattr(engine.Trainer, "__init__", with_signalling_task)
    out = tmp_path / "stopped"
    with pytest.raises(SystemExit) as stop:
        run(out, 6, save_every=0)
    monkeypatch.undo()
    assert stop.value.code == code
    name = signal.Signals(signum).name
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == f"stopped by {name} at step 3: checkpoint {out / 'checkpoint-3'}; resume with the same command"
    assert [s for s, _ in list_checkpoints(out)] == [3]  # the step under way was finished, then saved
    assert signal.getsignal(signum) is before  # the handlers are put back
    assert not (out / LOCK_FILE).exists()

    resumed, _, logs = run(out, 6, resume="auto", init_seed=99)
    assert logs["step"] == 6
    assert_identical(snapshot(straight), snapshot(resumed))


def _start(out: Path, steps: int, save_every: int, sleep: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(steps), str(save_every), str(sleep)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.05)


def _logged_steps(out: Path) -> int:
    log = out / "log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_sigterm_to_a_training_process_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    proc = _start(out, 200, 0, 0.05)
    try:
        _wait_for(lambda: _logged_steps(out) >= 2, proc)
        # a second run on the same folder is refused while this one lives, and changes nothing
        (out / ".tmp-checkpoint-77").mkdir()  # as if the live run were writing a checkpoint
        lines = _logged_steps(out)
        with pytest.raises(RunLockedError, match=f"{out} is in use by another training run \\(pid {proc.pid} "):
            run(out, 3, resume="auto")
        assert (out / ".tmp-checkpoint-77").is_dir()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    line = err.strip().splitlines()[-1]
    step = int(line.split(" at step ")[1].split(":")[0])
    assert line == f"stopped by SIGTERM at step {step}: checkpoint {out / f'checkpoint-{step}'}; resume with the same command"
    assert step >= lines and is_complete(out / f"checkpoint-{step}")
    assert not (out / LOCK_FILE).exists()
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == list(range(1, step + 1))

    resumed, _, _ = run(out, step + 2, resume="auto", init_seed=5)
    straight, _, _ = run(tmp_path / "straight", step + 2)
    assert_identical(snapshot(straight), snapshot(resumed))


def test_kill_9_and_rerun_is_bit_identical_to_a_straight_run(tmp_path, capsys):
    out = tmp_path / "run"
    proc = _start(out, 200, 2, 0.02)
    try:
        _wait_for(lambda: len(list_checkpoints(out)) >= 2, proc)
        proc.kill()  # SIGKILL: no handler runs, the lock file stays behind
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert (out / LOCK_FILE).exists()
    last = list_checkpoints(out)[-1][0]
    resumed, _, logs = run(out, last + 3, resume="auto", save_every=2, init_seed=5)
    err = capsys.readouterr().err
    assert f"taking over the lock of a run that is gone (pid {proc.pid} is not running" in err, err
    straight, _, _ = run(tmp_path / "straight", last + 3)
    assert_identical(snapshot(straight), snapshot(resumed))
    assert not list(out.glob(".tmp-*")) and not (out / LOCK_FILE).exists()
