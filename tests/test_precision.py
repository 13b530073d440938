"""train/precision.py: the per-device precision choice, without timing anything (the CPU's flags
and the matmul probe are replaced by fakes), and its wiring into the Trainer and the commands."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from tokgen.train import precision as P
from tokgen.train.precision import autocast, resolve_precision

sys.path.insert(0, str(Path(__file__).parent))
from _ddp_worker import ToyDataset, ToyTask  # noqa: E402  (the test helper beside this file)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def rates(speedup: float) -> dict:
    return {"shape": [512, 512, 512], "threads": 1, "fp32_gflops": 100.0, "bf16_gflops": 100.0 * speedup,
            "speedup": speedup, "isa": "AVX2"}


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(flags, speedup): a CPU reporting `flags` whose probe measures `speedup`
    (None: the probe must not run)."""
    monkeypatch.delenv(P.FORCE_ENV, raising=False)        # conftest forces fp32; these tests decide
    P.clear_cache()

    def make(flags, speedup):
        def probe():
            if speedup is None:
                raise AssertionError("the probe ran, but the flags already decided")
            return rates(speedup)
        monkeypatch.setattr(P, "cpu_bf16_flags", lambda: flags)
        monkeypatch.setattr(P, "probe_bf16_matmul", probe)
    yield make
    P.clear_cache()


def test_cpu_without_bf16_flags_picks_fp32_without_probing(fake_cpu):
    fake_cpu([], None)
    choice = resolve_precision("auto", CPU)
    assert (choice.requested, choice.chosen, choice.accelerate_mixed_precision) == ("auto", "fp32", "no")
    assert str(choice) == "fp32 (auto: CPU without native bfloat16)"


def test_cpu_with_flags_but_slow_kernels_picks_fp32(fake_cpu):
    fake_cpu(["amx_bf16"], 1 / 78)
    choice = resolve_precision("auto", CPU)
    assert choice.chosen == "fp32" and "78x slower" in choice.why and "(AVX2)" in choice.why
    assert choice.probe["speedup"] == pytest.approx(1 / 78)
    fake_cpu(["amx_bf16"], 1.1)                      # faster, but not by enough
    P.clear_cache()
    assert resolve_precision("auto", CPU).chosen == "fp32"


def test_cpu_with_flags_and_fast_kernels_picks_bf16(fake_cpu):
    fake_cpu(["amx_bf16", "avx512_bf16"], 6.0)
    choice = resolve_precision("auto", CPU)
    assert (choice.chosen, choice.dtype, choice.accelerate_mixed_precision) == ("bf16", torch.bfloat16, "bf16")
    assert "6.0x faster" in choice.why and choice.to_dict()["probe"]["speedup"] == 6.0


def test_unknown_flags_leave_it_to_the_probe(fake_cpu):
    fake_cpu(None, 6.0)
    assert resolve_precision("auto", CPU).chosen == "bf16"
    fake_cpu(None, 0.02)
    P.clear_cache()
    assert resolve_precision("auto", CPU).chosen == "fp32"


def test_the_probe_runs_once_per_process(fake_cpu, monkeypatch):
    calls = []
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ["amx_bf16"])
    monkeypatch.setattr(P, "probe_bf16_matmul", lambda: calls.append(1) or rates(5.0))
    for _ in range(3):
        resolve_precision("auto", CPU)
    assert len(calls) == 1
    P.clear_cache()
    resolve_precision("auto", CPU)
    assert len(calls) == 2


def test_bf16_asked_on_a_slow_cpu_warns_once_and_runs_bf16(fake_cpu):
    fake_cpu([], 1 / 78)
    with pytest.warns(UserWarning, match=r"--precision bf16: .*78x slower than float32 on this CPU \(AVX2\).*"
                                         r"pass --precision fp32"):
        choice = resolve_precision("bf16", CPU)
    assert choice.chosen == "bf16" and choice.requested == "bf16" and "78x slower" in choice.why
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # a second time: no second warning
        assert resolve_precision("bf16", CPU).chosen == "bf16"


def test_bf16_asked_on_a_fast_cpu_is_quiet(fake_cpu):
    fake_cpu(["amx_bf16"], 6.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert str(resolve_precision("bf16", CPU)) == "bf16 (requested)"


def test_cuda_picks_bf16_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    choice = resolve_precision("auto", CUDA)
    assert choice.chosen == "bf16" and str(choice) == "bf16 (auto: CUDA device supports bfloat16)"
    assert resolve_precision("fp16", CUDA).accelerate_mixed_precision == "fp16"   # when asked


def test_cuda_without_bf16_picks_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert resolve_precision("auto", CUDA).chosen == "fp32"
    P.clear_cache()                                      # warnings are given once per process
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert resolve_precision("bf16", CUDA).chosen == "bf16"


def test_fp16_on_a_cpu_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match=r"--mixed-precision fp16 needs a CUDA device.*bf16, fp32 or auto"):
        resolve_precision("fp16", CPU, flag="--mixed-precision")


def test_vocabulary():
    choice = resolve_precision("no", CPU)                # accelerate's word, kept for old commands
    assert (choice.requested, choice.chosen, choice.accelerate_mixed_precision) == ("fp32", "fp32", "no")
    assert resolve_precision("FP32", CPU).chosen == "fp32"
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16, no"):
        resolve_precision("half", CPU)


def test_the_env_var_forces_the_cpu_answer(fake_cpu, monkeypatch):
    fake_cpu(["amx_bf16"], None)                         # the probe fails the test if it runs
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: pytest.fail("the flags were read"))
    monkeypatch.setenv(P.FORCE_ENV, "1")
    assert str(resolve_precision("auto", CPU)) == "bf16 (auto: TOKGEN_CPU_BF16=1)"
    monkeypatch.setenv(P.FORCE_ENV, "0")
    assert resolve_precision("auto", CPU).chosen == "fp32"


def test_autocast_follows_the_choice(fake_cpu):
    fake_cpu(["amx_bf16"], 6.0)
    a = torch.randn(4, 4)
    with autocast(resolve_precision("fp32", CPU), CPU):
        assert (a @ a).dtype == torch.float32
    with autocast("auto", CPU):                          # a string is resolved first
        assert (a @ a).dtype == torch.bfloat16


def test_the_real_probe_reports_rates():
    """Shape only, no timing assertion: the figures depend on the machine and its load."""
    r = P.probe_bf16_matmul(shape=(32, 32, 32), rounds=2, budget_s=0.01)
    assert r["fp32_gflops"] > 0 and r["bf16_gflops"] > 0 and r["speedup"] > 0 and r["threads"] >= 1
    assert isinstance(P.cpu_bf16_flags(), (list, type(None)))


# ---------------------------------------------------------------------------- wiring

def test_the_trainer_resolves_auto_and_records_it(tmp_path, capsys):
    from tokgen.train.checkpoint import read_trainer_state
    from tokgen.train.engine import TrainConfig, Trainer

    config = TrainConfig(out_dir=str(tmp_path), max_steps=2, batch_size=4, save_every=0, resume=None,
                         tensorboard=False, cpu=True)
    assert config.mixed_precision == "auto"
    trainer = Trainer(ToyTask(dropout=0.0, noise=False), ToyDataset(n=8), config)
    assert trainer.precision.chosen == "fp32" and trainer.accelerator.mixed_precision == "no"
    assert "precision: fp32 (auto: TOKGEN_CPU_BF16=0)" in capsys.readouterr().out   # conftest's setting
    logs = trainer.fit()
    assert logs["precision"]["requested"] == "auto" and logs["precision"]["chosen"] == "fp32"
    assert read_trainer_state(logs["checkpoint"])["precision"] == logs["precision"]


def test_the_trainer_trains_in_bf16_where_auto_picks_it(tmp_path, monkeypatch):
    from tokgen.train.engine import TrainConfig, Trainer

    monkeypatch.setenv(P.FORCE_ENV, "1")
    config = TrainConfig(out_dir=str(tmp_path), max_steps=1, batch_size=4, save_every=0, resume=None,
                         tensorboard=False, cpu=True)
    trainer = Trainer(ToyTask(dropout=0.0, noise=False), ToyDataset(n=8), config)
    assert trainer.accelerator.mixed_precision == "bf16" and trainer.fit()["precision"]["chosen"] == "bf16"
    with pytest.raises(ValueError, match="mixed_precision.*must be one of auto, fp32"):
        Trainer(ToyTask(), ToyDataset(n=8), TrainConfig(out_dir=str(tmp_path), mixed_precision="half"))


def test_the_commands_take_the_vocabulary_with_auto_by_default():
    from tokgen.train.commands import compare, demo, extract_tokens, sample, train_generator, train_tokenizer

    gen = train_generator.build_parser()
    assert gen.parse_args(["--tokens", "t"]).mixed_precision == "auto"
    for value in ("auto", "fp32", "bf16", "fp16", "no"):
        assert gen.parse_args(["--tokens", "t", "--mixed-precision", value]).mixed_precision == value
    with pytest.raises(SystemExit):
        gen.parse_args(["--tokens", "t", "--mixed-precision", "half"])
    cmp = compare.build_parser().parse_args(["--tokens", "t", "--tokenizer", "k"])
    assert (cmp.mixed_precision, cmp.precision) == ("auto", "auto")
    cmp = compare.build_parser().parse_args(["--tokens", "t", "--tokenizer", "k", "--mixed-precision", "auto",
                                            "--precision", "fp32"])
    assert (cmp.mixed_precision, cmp.precision) == ("auto", "fp32")
    with pytest.raises(SystemExit):
        compare.build_parser().parse_args(["--tokens", "t", "--tokenizer", "k", "--precision", "fp16"])
    d = demo.build_parser().parse_args([])
    assert (d.tokenizer_precision, d.generator_precision, d.precision) == ("fp32", "auto", "auto")
    assert sample.build_parser().parse_args(["--generator", "g", "--tokenizer", "k"]).precision == "auto"
    assert extract_tokens.build_parser().parse_args(["--tokenizer", "k", "--out", "o"]).precision == "auto"
    # the shapes presets stay float32 (bf16 hurt their codebook); the GPU presets follow the device
    assert train_tokenizer.build_parser("shapes-tiny").parse_args([]).mixed_precision == "fp32"
    assert train_tokenizer.build_parser("imagenet-256").parse_args([]).mixed_precision == "auto"


def test_the_report_states_the_chosen_precision():
    from tokgen.eval.compare import precision_text as _precision

    auto = resolve_precision("auto", CPU).to_dict()     # conftest: fp32
    assert _precision(auto) == "fp32 (auto: TOKGEN_CPU_BF16=0)"
    assert _precision({"requested": "auto", "chosen": "fp32", "why": "CPU without native bfloat16"}) == \
        "fp32 (auto: CPU without native bfloat16)"
    assert _precision("no") == "fp32" and _precision("bf16") == "bf16"   # results.json written before
