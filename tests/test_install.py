"""The install path: torch first when missing, an existing torch left alone, the package's
metadata and the `tokgen` console command."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
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
                   "accelerate", "datasets", "numpy", "pillow", "safetensors", "huggingface_hub",
                   "scikit-learn", "matplotlib", "tqdm"]:
        assert needed in names, needed
        assert needed in (ROOT / "README.md").read_text(), f"README does not say why {needed} is here"
    assert "torchvision" not in names
    assert any(d.startswith("pytest") for d in meta["optional-dependencies"]["dev"])
    assert meta["scripts"]["tokgen"] == "tokgen.train.cli:main"
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
    out = subprocess.run([sys.executable, "-m", "tokgen", *argv], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    from tokgen.train.cli import COMMANDS

    for name in COMMANDS:
        assert name in out.stdout


def test_every_command_has_help():
    from tokgen.train.cli import COMMANDS, _module

    for name in COMMANDS:
        parser = _module(name).build_parser()
        assert parser.prog == f"tokgen {name}"
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["--help"])
        assert exit_info.value.code == 0


def test_unknown_command_is_an_error():
    out = subprocess.run([sys.executable, "-m", "tokgen", "frobnicate"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0 and "invalid choice" in out.stderr


# ---------------------------------------------------------------------------- one `tokgen` package

USER_SCRIPT = """
import sys, torch, tokgen
assert tokgen.__file__.startswith(sys.prefix), (tokgen.__file__, sys.prefix)     # the wheel, not the checkout
tok = tokgen.VQTokenizer(tokgen.get_preset("shapes-tiny-msvq", base_width=8, z_channels=8, scales=(1, 2, 4),
                                           channel_mults=(1, 2, 2, 2), codebook_size=32, kmeans_init=False))
gen = tokgen.build_generator("maskgit", tok.spec, dict(width=32, depth=1, heads=4, condition="text"),
                             text_tokenizer=tokgen.train_text_tokenizer(["a red circle", "a blue square"], 300))
tokgen.Pipeline(gen, tok).save_pretrained("pipe")
# the three lines a user writes
pipe = tokgen.Pipeline.from_pretrained("pipe")
images = pipe(["a red circle"], num_per_prompt=2, seed=0)
print(tokgen.__version__, "x".join(map(str, images[0].size)) + f"x{len(images)}",
      sorted(m for m in sys.modules if m in ("train", "eval", "generators")))
"""


def test_the_built_wheel_installs_one_tokgen_package_that_a_users_train_and_eval_do_not_shadow(tmp_path):
    """`pip install` of the wheel into a fresh virtual environment, then, from a folder holding its
    own train.py, eval.py and generators.py (as research repositories do), `import tokgen` and a
    three-line pipeline sample work; the wheel holds `tokgen` alone, with every sub-package folder in it."""
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)]
    # with the installed setuptools when it is recent enough (offline, fast), else in pip's isolated
    # build environment (setuptools>=68 from the package index, as `pip install` does)
    if subprocess.run(build + ["--no-build-isolation"], capture_output=True).returncode != 0:
        out = subprocess.run(build, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(wheels.glob("tokgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"tokgen"}
    folders = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("*/**/__init__.py")
               if p.parts[len(ROOT.parts)] in ("generators", "tokenizers_vq", "train", "eval")}
    folders |= {str(p.parent.relative_to(ROOT)).removeprefix("tokgen/") for p in (ROOT / "tokgen").glob("*/**/__init__.py")}
    assert {f"tokgen/{f}/__init__.py" for f in folders} <= set(names), "a sub-package is missing from pyproject"

    venv = tmp_path / "venv"        # the test machine's torch and dependencies, this wheel on top
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    user = tmp_path / "project"
    user.mkdir()
    for name in ("train", "eval", "generators"):
        (user / f"{name}.py").write_text(f"raise SystemExit('the user {name}.py was imported')\n")
    out = subprocess.run([str(python), "-c", USER_SCRIPT], cwd=user, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    version, shape, shadowed = out.stdout.split(" ", 2)
    assert version == "0.1.0" and shape == "32x32x2" and shadowed.strip() == "[]", out.stdout
    console = subprocess.run([str(venv / "bin" / "tokgen"), "--help"], cwd=user, capture_output=True, text=True)
    assert console.returncode == 0 and "train-generator" in console.stdout


def test_no_module_imports_a_part_by_its_folder_name():
    """`import generators` would load a second copy beside `tokgen.generators` (two registries)."""
    pattern = re.compile(r"^\s*(from|import) (generators|tokenizers_vq|train|eval|tokgen_io)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for folder in ("generators", "tokenizers_vq", "train", "eval", "tokgen",
                                                         "tests", "bench", "scripts")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
