"""Accelerate as users configure it (issue 16, items 4 and 5): precision from `accelerate launch`
/ `accelerate config` unless mixed_precision says otherwise, clipping through the Accelerator,
FSDP / DeepSpeed refused, trackers by report_to, logs read once per log window, --compile."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, is_tensorboard_available

from tokgen.errors import ConfigValueError
from tokgen.train import accelerate_setup
from tokgen.train.checkpoint import read_trainer_state
from tokgen.train.engine import TrainConfig, Trainer, _Window

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import ToyDataset, ToyTask  # noqa: E402


def config(tmp_path, **overrides) -> TrainConfig:
    settings = dict(out_dir=str(tmp_path), max_steps=1, batch_size=4, save_every=0, log_every=1, resume=None,
                    tensorboard=False, cpu=True)
    return TrainConfig(**{**settings, **overrides})


def toy(tmp_path, **overrides) -> Trainer:
    return Trainer(ToyTask(dropout=0.0, noise=False), ToyDataset(n=8), config(tmp_path, **overrides))


# ---------------------------------------------------------------------------- precision

def test_accelerate_launch_precision_reaches_the_accelerator_and_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")   # what `accelerate launch --mixed_precision bf16` sets
    trainer = toy(tmp_path)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert trainer.precision.chosen == "bf16" and "ACCELERATE_MIXED_PRECISION=bf16" in trainer.precision.source
    logs = trainer.fit()
    assert logs["precision"]["chosen"] == "bf16" and "ACCELERATE_MIXED_PRECISION" in logs["precision"]["source"]
    assert read_trainer_state(logs["checkpoint"])["precision"] == logs["precision"]
    assert math.isfinite(logs["loss/net"])


def test_an_explicit_mixed_precision_wins_over_the_launcher(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    trainer = toy(tmp_path, mixed_precision="fp32")
    assert trainer.accelerator.mixed_precision == "no"
    assert trainer.precision.source.startswith("mixed_precision")


def test_without_the_launcher_auto_is_the_devices_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    trainer = toy(tmp_path)
    assert trainer.accelerator.mixed_precision == "no" and trainer.precision.source.startswith("auto")


def test_launcher_fp16_on_a_cpu_and_fp8_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="ACCELERATE_MIXED_PRECISION fp16 needs a CUDA device"):
        toy(tmp_path)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp8")
    with pytest.raises(ConfigValueError, match="--mixed-precision"):
        toy(tmp_path)


# ---------------------------------------------------------------------------- clipping, sharding

def test_gradients_are_clipped_through_the_accelerator(tmp_path, monkeypatch):
    seen = []
    original = Accelerator.clip_grad_norm_

    def spy(self, parameters, max_norm, norm_type=2):
        parameters = list(parameters)
        expected = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        norm = original(self, parameters, max_norm, norm_type)
        seen.append((float(expected), float(norm), max_norm))
        return norm

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", spy)
    logs = toy(tmp_path, max_steps=3, grad_clip=0.5).fit()
    assert len(seen) >= 3 and all(e == n and m == 0.5 for e, n, m in seen)
    assert logs["grad_norm/net"] in {norm for _, norm, _ in seen[-2:]}   # the last step's (critic, net)


@pytest.mark.parametrize("env, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_fsdp_and_deepspeed_are_refused_naming_the_fix(tmp_path, monkeypatch, env, name):
    monkeypatch.setenv(env, "true")
    with pytest.raises(ValueError, match=f"{name} is not supported.*--multi_gpu"):
        toy(tmp_path)


def test_a_sharded_accelerator_state_is_refused():
    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(ValueError, match="DDP instead"):
            accelerate_setup.refuse_sharding(kind)
    accelerate_setup.refuse_sharding(DistributedType.MULTI_GPU)
    accelerate_setup.refuse_sharding(DistributedType.NO)


# ---------------------------------------------------------------------------- trackers

def test_report_to_none_and_auto_without_tensorboard_log_nowhere(tmp_path):
    assert toy(tmp_path / "a", report_to="none", tensorboard=True).accelerator.log_with == []
    assert toy(tmp_path / "b", report_to="auto", tensorboard=False).accelerator.log_with == []


@pytest.mark.skipif(not is_tensorboard_available(), reason="tensorboard is not installed")
def test_report_to_tensorboard_writes_events(tmp_path):
    toy(tmp_path, report_to="tensorboard", max_steps=2).fit()
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_an_unknown_or_missing_tracker_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigValueError, match="unknown tracker nope"):
        toy(tmp_path, report_to="nope")
    import accelerate.utils as U

    missing = next((t for t in ("wandb", "comet_ml", "aim", "clearml", "swanlab")
                    if not getattr(U, f"is_{t}_available")()), None)
    if missing is None:
        pytest.skip("every tracker is installed")
    with pytest.raises(ConfigValueError, match=f"{missing} is not installed: `pip install {missing}`"):
        toy(tmp_path, report_to=f" {missing.upper()} ")


# ---------------------------------------------------------------------------- host syncs

def test_the_window_reads_tensors_as_their_item_values_would_sum():
    values = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 2.7, 3.3333, 1e-7)]
    on_device, as_items = _Window(), _Window()
    for v in values:
        on_device.add({"loss": v, "bits": v.double() / math.log(2), "n": 3})
        as_items.add({"loss": v.item(), "bits": v.item() / math.log(2), "n": 3})
    assert on_device.means() == as_items.means()


def test_family_losses_log_without_a_host_sync(monkeypatch):
    """No .item() in any family's loss: its logs are detached 0-dim tensors."""
    from test_train_generator import tiny_tokenizer

    from tokgen.generators import FAMILIES
    from tokgen.train.tasks.generator import build_from_tokens

    class Tokens:  # what build_from_tokens reads of a TokenDataset
        def __init__(self, spec):
            self.spec, self.labels, self.captions = spec, torch.arange(4) % 2, ["a"] * 4
            self.scales = [torch.randint(0, spec["codebook_size"], (4, s, s)) for s in spec["scales"]]

        def __len__(self):
            return 4

    tokenizer = tiny_tokenizer()
    split = Tokens(tokenizer.spec.to_dict())
    for family in sorted(FAMILIES):
        torch.manual_seed(0)
        gen = build_from_tokens(split, family, dict(width=32, depth=1, heads=4, condition="class"))
        gen.attach_tokenizer(tokenizer)
        cond = gen.make_condition(labels=split.labels)

        def no_item(self):
            raise AssertionError(f"{family}: .item() in loss()")

        monkeypatch.setattr(torch.Tensor, "item", no_item)
        loss, logs = gen.loss(split.scales, cond)
        monkeypatch.undo()
        assert loss.requires_grad and logs
        for key, v in logs.items():
            assert torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad, (family, key)


# ---------------------------------------------------------------------------- compile

def test_compile_trains_a_tiny_model(tmp_path):
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is unavailable here")
    start = time.monotonic()
    trainer = toy(tmp_path, max_steps=3, compile=True)
    assert trainer.unwrap("net")._compiled_call_impl is not None
    logs = trainer.fit()
    assert math.isfinite(logs["loss/net"]) and logs["step"] == 3
    assert trainer.unwrap("net")._compiled_call_impl is None      # taken off after fit()
    entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(entries) == 3 and all(math.isfinite(e["loss/net"]) for e in entries)
    print(f"compile test took {time.monotonic() - start:.1f} s")
