"""The install path: torch first when missing, an existing torch left alone, the package's
metadata and the `tokgen` console command."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: records pip calls, answers `import torch` as told by FAKE_TORCH.
if [ "$1" = "-c" ]; then
  case "$2" in
    *"import torch; print"*) echo "9.9.9+fake"; exit 0 ;;
    *"import torch"*) [ "$FAKE_TORCH" = "1" ]; exit $? ;;
  esac
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "$*" >> "$PIP_LOG"; exit 0; fi
exit 3
"""


def _run_install(tmp_path: Path, torch_present: bool, *args: str) -> list[str]:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "pip.log"
    env = dict(os.environ, PYTHON=str(fake), FAKE_TORCH="1" if torch_present else "0", PIP_LOG=str(log))
    env["PATH"] = "/usr/bin:/bin"  # no pyenv rehash side effects in the test
    subprocess.run(["bash", str(ROOT / "scripts/install.sh"), *args], check=True, env=env,
                   capture_output=True, text=True)
    return log.read_text().splitlines()


def test_install_puts_torch_first_when_missing(tmp_path):
    calls = _run_install(tmp_path, torch_present=False)
    assert len(calls) == 2
    assert "torch==2.13.0" in calls[0].split()
    assert "-e" in calls[1].split() and calls[1].split()[-1] == "."


def test_install_leaves_existing_torch_alone(tmp_path):
    calls = _run_install(tmp_path, True, "--dev")
    assert len(calls) == 1, calls
    assert not any("torch" in word for word in calls[0].split())
    assert calls[0].split()[-1] == ".[dev]"


def test_pyproject_declares_what_the_readme_promises():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in meta["dependencies"]}
    for needed in ["torch", "transformers", "tokenizers", "einops", "vector-quantize-pytorch",
                   "accelerate", "datasets", "numpy", "pillow", "safetensors", "scikit-learn",
                   "matplotlib", "tqdm"]:
        assert needed in names, needed
        assert needed in (ROOT / "README.md").read_text(), f"README does not say why {needed} is here"
    assert "torchvision" not in names
    assert any(d.startswith("pytest") for d in meta["optional-dependencies"]["dev"])
    assert meta["scripts"]["tokgen"] == "train.cli:main"
    # torch must stay a range that the local CPU wheel satisfies, so pip never replaces it
    torch_req = next(d for d in meta["dependencies"] if d.startswith("torch"))
    assert "==" not in torch_req and "<" not in torch_req


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    command = "bash scripts/install.sh --dev && python3 -m pytest"
    assert command in readme and command in ci


@pytest.mark.parametrize("argv", [["--help"], []])
def test_tokgen_help_lists_commands(argv):
    out = subprocess.run([sys.executable, "-m", "train.cli", *argv], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    from train.cli import COMMANDS

    for name in COMMANDS:
        assert name in out.stdout


def test_every_command_has_help():
    from train.cli import COMMANDS, _module

    for name in COMMANDS:
        parser = _module(name).build_parser()
        assert parser.prog == f"tokgen {name}"
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--help"])
        assert exit_info.value.code == 0


def test_unknown_command_is_an_error():
    out = subprocess.run([sys.executable, "-m", "train.cli", "frobnicate"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "invalid choice" in out.stderr
