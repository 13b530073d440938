"""Shared test settings."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test on one thread: tiny models run as fast, results do not depend on the machine's
    core count, and a test never competes with itself for the 2 cores CI has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32_on_every_cpu():
    """`auto` precision resolves to float32 on the CPU under test, whatever this CPU's bfloat16
    (TOKGEN_CPU_BF16=0: no flags read, no probe; the subprocesses some tests start inherit it), so
    the tests' numbers do not depend on the machine. Set directly, not with monkeypatch: a test's
    monkeypatch.undo() would lift it. tests/test_precision.py lifts it on purpose."""
    before = os.environ.get("TOKGEN_CPU_BF16")
    os.environ["TOKGEN_CPU_BF16"] = "0"
    yield
    if before is None:
        os.environ.pop("TOKGEN_CPU_BF16", None)
    else:
        os.environ["TOKGEN_CPU_BF16"] = before
