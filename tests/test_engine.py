"""The generic training loop (train/engine.py) on a tiny task."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import is_tensorboard_available
from safetensors.torch import load_file

from tokgen.train.checkpoint import NonFiniteError, is_complete
from tokgen.train.engine import EpochBatchSampler, TrainConfig, Trainer

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import ToyDataset, ToyTask, make_trainer  # noqa: E402  (the test helper beside this file)

torch.set_num_threads(1)
WORKER = Path(__file__).with_name("_ddp_worker.py")


def trainer_for(out_dir, steps, task=None, dataset=None, **overrides) -> Trainer:
    settings = dict(batch_size=4, lr=0.02, grad_clip=1.0, save_every=0, log_every=1, resume=None,
                    tensorboard=False)
    config = TrainConfig(out_dir=str(out_dir), max_steps=steps, **{**settings, **overrides})
    return Trainer(task or ToyTask(dropout=0.0, noise=False), dataset or ToyDataset(n=24), config)


def weights(trainer) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.clone() for n in trainer.modules for k, v in trainer.unwrap(n).state_dict().items()}


def read_log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def test_a_tiny_model_learns(tmp_path):
    dataset = ToyDataset(n=64)
    logs = trainer_for(tmp_path, 150, dataset=dataset, batch_size=16, lr=0.03, log_every=10,
                       tensorboard=True).fit()
    history = read_log(tmp_path)
    assert logs["stopped"] == "max_steps" and logs["step"] == 150
    assert history[-1]["loss/net"] < 0.2 * history[0]["loss/net"]
    assert history[-1]["loss/critic"] < history[0]["loss/critic"]  # the critic (from step 2) learns too
    assert [h["step"] for h in history] == list(range(10, 151, 10))
    assert is_complete(tmp_path / "checkpoint-150")
    if is_tensorboard_available():
        assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    big = trainer_for(tmp_path / "big", 6, batch_size=8, ema_decay=0.9)
    initial = weights(big)
    big.fit()
    accumulated = trainer_for(tmp_path / "acc", 6, batch_size=4, grad_accum=2, ema_decay=0.9)
    accumulated.fit()
    a, b = weights(big), weights(accumulated)
    assert all(not torch.equal(a[k], initial[k]) for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(big.ema["net"].shadow["0.weight"], accumulated.ema["net"].shadow["0.weight"])


def test_non_finite_loss_is_skipped_and_counted(tmp_path):
    before = trainer_for(tmp_path / "a", 3, task=ToyTask(dropout=0.0, noise=False))
    before.fit()
    skipped = trainer_for(tmp_path / "b", 5, task=ToyTask(dropout=0.0, noise=False, nan_at={3, 4}))
    logs = skipped.fit()
    # steps 3 and 4 changed nothing: no optimizer step, no scheduler step, no EMA update
    a, b = weights(before), weights(skipped)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert logs["nonfinite_steps"] == 2
    assert read_log(tmp_path / "b")[-1]["nonfinite_steps"] == 2
    # training goes on afterwards, and the loss is finite again
    go_on = trainer_for(tmp_path / "c", 8, task=ToyTask(dropout=0.0, noise=False, nan_at={3, 4}))
    logs = go_on.fit()
    assert logs["step"] == 8 and logs["nonfinite_steps"] == 2
    assert torch.isfinite(torch.tensor(logs["loss/net"]))


def test_too_many_non_finite_steps_in_a_row_stop_training(tmp_path):
    task = ToyTask(dropout=0.0, noise=False, nan_at=set(range(2, 100)))
    with pytest.raises(NonFiniteError, match="3 non-finite steps in a row"):
        trainer_for(tmp_path, 50, task=task, max_nonfinite=3).fit()
    assert len(task.seen_indices) == 5  # steps 0-4: two good, three bad


def test_max_minutes_stops_and_checkpoints(tmp_path):
    task = ToyTask(dropout=0.0, noise=False, sleep=0.02)
    logs = trainer_for(tmp_path, 100_000, task=task, max_minutes=0.3 / 60).fit()
    assert logs["stopped"] == "max_minutes"
    assert 1 <= logs["step"] < 100
    assert is_complete(tmp_path / f"checkpoint-{logs['step']}")
    # the budget counts across resumes: a resumed run with the same budget stops at once
    again = trainer_for(tmp_path, 100_000, task=ToyTask(dropout=0.0, noise=False), max_minutes=0.3 / 60,
                        resume="auto")
    assert again.fit()["step"] == logs["step"]


def test_under_a_time_budget_the_bar_counts_seconds_and_shows_the_step(tmp_path, capfd):
    task = ToyTask(dropout=0.0, noise=False, sleep=0.02)
    logs = trainer_for(tmp_path, 100_000, task=task, max_minutes=2 / 60).fit()
    bar = capfd.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert "/2 s [" in bar and f"step={logs['step']}" in bar, bar  # not 'n/100000' with a meaningless ETA


def test_hooks_see_ema_weights_and_do_not_change_training(tmp_path):
    plain = trainer_for(tmp_path / "plain", 6, task=ToyTask(), ema_decay=0.5)
    plain.fit()
    seen = []

    class Sampling(ToyTask):
        def on_interval(self, step):
            seen.append(self.trainer.unwrap("net")[0].weight.clone())
            torch.randn(10), torch.nn.functional.dropout(torch.ones(3))  # uses the RNG
            assert not self.trainer.modules["net"].training and not torch.is_grad_enabled()

    hooked = trainer_for(tmp_path / "hooked", 6, task=Sampling(), ema_decay=0.5, sample_every=2)
    hooked.fit()
    a, b = weights(plain), weights(hooked)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert len(seen) == 3 and torch.equal(seen[-1], hooked.ema["net"].shadow["0.weight"])


def test_sampler_shards_global_batches():
    one = list(EpochBatchSampler(20, 4, seed=1, epoch=2))
    two = [list(EpochBatchSampler(20, 2, 2, r, seed=1, epoch=2)) for r in range(2)]
    assert [a + b for a, b in zip(*two)] == one
    assert list(EpochBatchSampler(20, 4, seed=1, epoch=2, start=3)) == one[3:]
    assert one != list(EpochBatchSampler(20, 4, seed=1, epoch=3))
    assert sorted(sum(one, [])) == list(range(20))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    steps, out2 = 5, tmp_path / "two"
    # CPU processes talking over gloo, also on a machine with GPUs (where accelerate's barrier
    # would otherwise pick a CUDA device per rank)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(WORKER), str(out2), "2", str(steps)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    state = json.loads((out2 / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["global_batch"] == 4

    one = make_trainer(str(tmp_path / "one"), 4, steps)
    one.fit()
    for i, name in enumerate(one.modules):
        suffix = "" if i == 0 else f"_{i}"
        two_weights = load_file(out2 / f"checkpoint-{steps}" / f"model{suffix}.safetensors")
        for k, v in one.unwrap(name).state_dict().items():
            torch.testing.assert_close(two_weights[k], v, rtol=1e-5, atol=1e-6)
    two_ema = load_file(out2 / f"checkpoint-{steps}" / "ema.safetensors")
    torch.testing.assert_close(two_ema["net.0.weight"], one.ema["net"].shadow["0.weight"],
                               rtol=1e-5, atol=1e-6)
    for a, b in zip(read_log(tmp_path / "one"), read_log(out2), strict=True):
        assert a["step"] == b["step"]
        assert a["loss/net"] == pytest.approx(b["loss/net"], rel=1e-5)
        assert a["grad_norm/net"] == pytest.approx(b["grad_norm/net"], rel=1e-5)
