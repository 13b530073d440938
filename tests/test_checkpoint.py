"""Atomic checkpoints and exact resume (train/checkpoint.py through train/engine.py)."""
from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tokgen.train.checkpoint as ckpt
from tokgen.train.checkpoint import NonFiniteError, latest_checkpoint, list_checkpoints, resolve_resume
from tokgen.train.engine import TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import ToyDataset, ToyTask  # noqa: E402  (the test helper beside this file)

torch.set_num_threads(1)


def run(out_dir, steps, *, resume=None, init_seed=0, **overrides):
    """Train ToyTask (dropout, RNG noise, a scheduler, a critic that starts at step 2, EMA)."""
    task_kw = {k: overrides.pop(k) for k in ("nan_at", "poison_at", "noise", "dropout", "sleep") if k in overrides}
    task = ToyTask(init_seed=init_seed, **task_kw)
    settings = dict(batch_size=4, grad_accum=2, lr=0.02, grad_clip=0.5, ema_decay=0.8, save_every=0,
                    log_every=1, seed=3, tensorboard=False)
    config = TrainConfig(out_dir=str(out_dir), max_steps=steps, resume=resume, **{**settings, **overrides})
    trainer = Trainer(task, ToyDataset(n=22), config)  # 5 global batches an epoch, 2 items dropped
    logs = trainer.fit()
    return trainer, task, logs


def snapshot(trainer) -> dict[str, torch.Tensor]:
    """Everything that must match: weights, optimizer and scheduler state, EMA, the RNG streams."""
    out = {}
    for name in trainer.modules:
        out.update({f"w.{name}.{k}": v.clone() for k, v in trainer.unwrap(name).state_dict().items()})
    for name, opt in trainer.optimizers.items():
        for i, s in opt.state_dict()["state"].items():
            out.update({f"opt.{name}.{i}.{k}": torch.as_tensor(v).clone() for k, v in s.items()})
    for name, sched in trainer.schedulers.items():
        out[f"sched.{name}"] = torch.tensor(sched.scheduler.last_epoch)
        out[f"lr.{name}"] = torch.tensor(sched.get_last_lr())
    for name, ema in trainer.ema.items():
        out.update({f"ema.{name}.{k}": v.clone() for k, v in ema.shadow.items()})
        out[f"ema_n.{name}"] = torch.tensor(ema.num_updates)
    out["rng.torch"] = torch.get_rng_state()
    out["rng.python"] = torch.tensor(random.getstate()[1])
    out["rng.numpy"] = torch.tensor(np.random.get_state()[1].astype(np.int64))
    out["data"] = torch.tensor([trainer.epoch, trainer.batch_in_epoch])
    return out


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_resume_is_bit_identical_to_a_straight_run(tmp_path):
    straight, straight_task, _ = run(tmp_path / "straight", 7)
    first, _, _ = run(tmp_path / "resumed", 3)  # 6 micro-batches: epoch 1, one batch in
    assert (first.epoch, first.batch_in_epoch) == (1, 1)
    # a fresh task with other initial weights: everything must come from the checkpoint
    resumed, resumed_task, logs = run(tmp_path / "resumed", 7, resume="auto", init_seed=123)
    assert logs["step"] == 7
    assert_identical(snapshot(straight), snapshot(resumed))
    assert resumed_task.seen_indices == straight_task.seen_indices[6:]  # same data, same order
    # the data order really is shuffled and changes between epochs
    assert straight_task.seen_indices[:5] != straight_task.seen_indices[5:10]


def test_checkpoint_cut_off_mid_write_is_ignored(tmp_path, monkeypatch):
    straight, _, _ = run(tmp_path / "straight", 6)
    out = tmp_path / "crashed"
    write_marker = ckpt._write_marker

    def crash_at_step_4(folder, step):
        if step == 4:
            raise KeyboardInterrupt("killed while writing checkpoint-4")
        write_marker(folder, step)

    monkeypatch.setattr(ckpt, "_write_marker", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(out, 6, save_every=2)
    monkeypatch.undo()
    assert (out / ".tmp-checkpoint-4").is_dir() and not (out / "checkpoint-4").exists()
    # a folder with the final name but no completion marker (e.g. an interrupted copy)
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-5")
    (out / "checkpoint-5" / ckpt.COMPLETE_MARKER).unlink()
    assert latest_checkpoint(out) == out / "checkpoint-2"
    assert [s for s, _ in list_checkpoints(out)] == [2]

    resumed, _, logs = run(out, 6, resume="auto", init_seed=7)
    assert_identical(snapshot(straight), snapshot(resumed))
    assert not (out / ".tmp-checkpoint-4").exists()  # the stale temp folder was cleaned up
    assert latest_checkpoint(out) == out / "checkpoint-6"
    # log.jsonl holds each step once: the crashed run's lines after step 2 were dropped on resume
    steps = [int(line.split(",")[0].split(":")[1]) for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_checkpoint_contents_and_keep_last(tmp_path):
    trainer, _, _ = run(tmp_path, 5, save_every=1, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    final = tmp_path / "checkpoint-5"
    names = list(trainer.modules)  # model.safetensors, model_1.safetensors, ... in this order
    for i, name in enumerate(names):
        weights = load_file(final / f"model{'' if i == 0 else f'_{i}'}.safetensors")
        for k, v in trainer.unwrap(name).state_dict().items():
            assert torch.equal(weights[k], v.cpu())
    ema = load_file(final / ckpt.EMA_FILE)
    assert torch.equal(ema["net.0.weight"], trainer.ema["net"].shadow["0.weight"].cpu())


def test_non_finite_weights_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteError, match="refusing to save.*'net'.*0.weight"):
        run(tmp_path, 4, save_every=2, sample_every=2, poison_at=2, ema_decay=0.0)
    assert list(tmp_path.glob("checkpoint-*")) == [] and list(tmp_path.glob(".tmp-*")) == []

    with pytest.raises(NonFiniteError, match="bad.w"):
        ckpt.check_finite({"good": torch.ones(2), "bad.w": torch.tensor([1.0, float("inf")])}.items(), "x")


def test_resume_argument(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("none", tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None  # nothing there yet: start afresh
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)
    (tmp_path / "checkpoint-9").mkdir()
    with pytest.raises(ValueError, match="incomplete"):
        resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)
