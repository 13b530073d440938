"""One writer per run folder (train/checkpoint.py RunLock, taken by Trainer.fit)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tokgen.train.checkpoint import LOCK_FILE, RunLock, RunLockedError

sys.path.insert(0, str(Path(__file__).parent))
from test_checkpoint import run  # noqa: E402


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(out: Path, pid: int, host: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "time": "2024-01-01 00:00:00"}))
    return lock


def test_a_second_writer_is_refused_and_touches_nothing(tmp_path):
    holder = RunLock.acquire(tmp_path)  # a live run: this very process
    (tmp_path / ".tmp-checkpoint-8").mkdir()  # its checkpoint being written
    with pytest.raises(RunLockedError) as caught:
        run(tmp_path, 2)
    message = str(caught.value)
    assert f"{tmp_path} is in use by another training run (pid {os.getpid()} on {socket.gethostname()}" in message
    assert str(tmp_path / LOCK_FILE) in message
    assert (tmp_path / ".tmp-checkpoint-8").is_dir()  # start-up cleanup waits for the lock
    assert not (tmp_path / "log.jsonl").exists() and not list(tmp_path.glob("checkpoint-*"))
    holder.release()
    assert not (tmp_path / LOCK_FILE).exists()
    run(tmp_path, 2)  # now it may
    assert not (tmp_path / ".tmp-checkpoint-8").exists() and not (tmp_path / LOCK_FILE).exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    _, _, logs = run(tmp_path, 2)
    assert logs["step"] == 2
    assert f"taking over the lock of a run that is gone (pid {pid} is not running" in capsys.readouterr().err
    assert not (tmp_path / LOCK_FILE).exists()


def test_a_reused_pid_is_recognised(tmp_path):
    lock = write_lock(tmp_path, os.getpid())  # our pid, but "started" at another time
    holder = json.loads(lock.read_text())
    lock.write_text(json.dumps({**holder, "started": "1"}))
    RunLock.acquire(tmp_path, warn=lambda m: None).release()


def test_a_lock_from_another_host_is_refused(tmp_path):
    write_lock(tmp_path, 1234, host="some-other-machine")
    with pytest.raises(RunLockedError, match="pid 1234 on some-other-machine.*delete .*run.lock"):
        RunLock.acquire(tmp_path)


def test_the_lock_is_released_when_fit_fails(tmp_path):
    from tokgen.train.checkpoint import NonFiniteError

    with pytest.raises(NonFiniteError):
        run(tmp_path, 4, save_every=2, sample_every=2, poison_at=2, ema_decay=0.0)
    assert not (tmp_path / LOCK_FILE).exists()


def test_release_leaves_another_runs_lock_alone(tmp_path):
    mine = RunLock.acquire(tmp_path)
    (tmp_path / LOCK_FILE).unlink()  # someone removed it by hand and another run took the folder
    other = RunLock.acquire(tmp_path)
    mine.release()
    assert (tmp_path / LOCK_FILE).exists()
    other.release()
    assert not (tmp_path / LOCK_FILE).exists()
