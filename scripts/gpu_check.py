"""The GPU check: what only a machine with CUDA can tell us, in one run, with one JSON summary.

    python scripts/gpu_check.py --out runs/gpu-check          # on a CUDA machine (about 10 minutes on one GPU)
    python scripts/gpu_check.py --quick --out /tmp/gpu-check  # the same stages, tiny, on any machine (CI runs it)

Stages, each recorded as passed or failed (with its error) in <out>/gpu_check.json, so that one
failure does not hide the others; the exit code is 1 when any stage failed:

  tests        the test suite, with the device-parametrised contract tests on every device seen
               (tests/test_device_contract.py: TOKGEN_TEST_DEVICES=cpu,cuda)    [skipped by --quick]
  tokenizers   each quantizer kind (vq, msvq, fsq, lfq) trained for --tokenizer-steps in
               --precision (bf16 on a GPU that has it), reconstructions measured and judged
  tokens       the multi-scale tokenizer's tokens of the shapes data
  generators   each family trained for --generator-steps on them in --precision, judged samples
  resume       a maskgit run killed (SIGKILL) after its first checkpoint and run again gives the
               same final weights as a run that was never killed (bit-identical is the goal; the
               largest difference is recorded: some CUDA kernels are not deterministic)
  sampling     every family's pipeline: a seeded batch on the device, with a generator on the device
  bench        bench/bench_generators.py on the device, fp32 and bf16                [skipped by --quick]

Everything runs through the same library functions as the `tokgen` commands (tokgen.train.jobs),
so a stage that passes here is the command passing on this device.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))        # a source checkout runs without installing (tokgen/ extends its own path)
TOKENIZER_PRESETS = ("shapes-tiny", "shapes-tiny-msvq", "shapes-tiny-fsq", "shapes-tiny-lfq")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu-check", help="folder for the runs and gpu_check.json")
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets and no test suite / bench: checks that every stage runs (CI, CPU)")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16", "fp16"],
                   help="training and sampling precision (default: bf16 on CUDA, auto elsewhere)")
    p.add_argument("--tokenizer-steps", type=int, default=None, help="default 300 (quick: 2)")
    p.add_argument("--generator-steps", type=int, default=None, help="default 300 (quick: 2)")
    p.add_argument("--stages", nargs="+", default=None,
                   help="run only these stages (tests tokenizers tokens generators resume sampling bench)")
    args = p.parse_args(argv)
    import torch

    args.cuda = torch.cuda.is_available()
    args.precision = args.precision or ("bf16" if args.cuda else "auto")
    args.tokenizer_steps = args.tokenizer_steps or (2 if args.quick else 300)
    args.generator_steps = args.generator_steps or (2 if args.quick else 300)
    return args


class Stages:
    """Runs each stage, records its outcome and seconds; later stages skip when an input is missing."""

    def __init__(self, out: Path, only: list[str] | None):
        self.out, self.only, self.results = out, only, {}

    def run(self, name: str, fn, *args):
        if self.only and name not in self.only:
            return None
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            value = fn(*args)
            self.results[name] = {"passed": True, "seconds": round(time.perf_counter() - start, 1), "result": value}
        except Exception as e:                     # recorded, and the next stage still runs
            traceback.print_exc()
            self.results[name] = {"passed": False, "seconds": round(time.perf_counter() - start, 1),
                                  "error": f"{type(e).__name__}: {e}"}
            value = None
        self.write()
        return value

    def write(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=2, default=str))


def machine() -> dict:
    import torch

    from tokgen.train.machine import describe

    cuda = torch.cuda.is_available()
    info = describe("cuda" if cuda else "cpu")
    if cuda:
        info.update(gpus=torch.cuda.device_count(), bf16=torch.cuda.is_bf16_supported())
    return info


def run_tests(args) -> dict:
    env = {**os.environ, "TOKGEN_TEST_DEVICES": "cpu,cuda" if args.cuda else "cpu"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    tail = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    if done.returncode != 0:
        raise RuntimeError(f"pytest exited {done.returncode}: {done.stdout[-3000:]}")
    return {"summary": tail[0] if tail else ""}


def train_tokenizers(args, out: Path) -> dict:
    from tokgen.train.jobs import TokenizerRunConfig, train_tokenizer
    from tokgen.train.jobs.tokenizer import preset_train_config

    results = {}
    for preset in TOKENIZER_PRESETS:
        overrides = {"scales": [1, 2, 4, 8]} if preset.endswith("msvq") else {}
        train = preset_train_config(preset, max_steps=args.tokenizer_steps, out_dir=str(out / preset),
                                    mixed_precision=args.precision, save_every=10**9, sample_every=0,
                                    resume="none", **({"batch_size": 8} if args.quick else {}))
        r = train_tokenizer(TokenizerRunConfig(preset=preset, overrides=overrides, train=train,
                                               eval_n=16 if args.quick else 500))
        results[preset] = {"steps": r.steps, "minutes": round(r.minutes, 2), "precision": r.precision,
                           "psnr": (r.test or {}).get("psnr"), "judged": ((r.test or {}).get("judge") or {})}
    return results


def extract(args, out: Path) -> dict:
    from tokgen.train.jobs import ExtractConfig, extract_tokens

    r = extract_tokens(ExtractConfig(tokenizer=str(out / "shapes-tiny-msvq" / "tokenizer"), out=str(out / "tokens"),
                                     limit=64 if args.quick else 20_000, precision=args.precision))
    return {"items": r.items, "precision": r.precision}


def generator_config(args, out: Path, family: str, steps: int, **train):
    """One family on the multi-scale tokenizer's tokens in out/, its run in out/gen/<family>."""
    from tokgen.train.engine import TrainConfig
    from tokgen.train.jobs import GeneratorRunConfig

    return GeneratorRunConfig(
        tokens=str(out / "tokens"), tokenizer=str(out / "shapes-tiny-msvq" / "tokenizer"), family=family,
        size="tiny" if args.quick else "mini", condition="text", val_n=0 if args.quick else 256,
        eval_n=0 if args.quick else 200, preview_n=2,
        train=TrainConfig(**{"out_dir": str(out / "gen" / family), "max_steps": steps, "batch_size": 8 if args.quick else 16,
                             "lr": 1e-3, "mixed_precision": args.precision, "save_every": 10**9, "sample_every": 0,
                             "log_every": 1 if args.quick else 25, "resume": "none", **train}))


def train_generators(args, out: Path) -> dict:
    from tokgen.generators import FAMILIES
    from tokgen.train.jobs import train_generator

    results = {}
    for family in sorted(FAMILIES):
        r = train_generator(generator_config(args, out, family, args.generator_steps))
        results[family] = {"steps": r.steps, "minutes": round(r.minutes, 2), "precision": r.precision,
                           "loss": r.logs.get("loss"), "caption_match": ((r.eval or {}).get("judge") or {}).get(
                               "caption_match")}
    return results


def resume(args, out: Path) -> dict:
    """A run SIGKILLed after its first checkpoint and started again against a run never stopped."""
    import torch
    from safetensors.torch import load_file

    from tokgen.train.checkpoint import list_checkpoints

    steps, save = (6, 2) if args.quick else (200, 50)
    common = ["--tokens", str(out / "tokens"), "--tokenizer", str(out / "shapes-tiny-msvq" / "tokenizer"),
              "--family", "maskgit", "--size", "tiny" if args.quick else "mini", "--condition", "text",
              "--max-steps", str(steps), "--batch-size", "8", "--lr", "1e-3", "--mixed-precision", args.precision,
              "--save-every", str(save), "--sample-every", "0", "--eval-n", "0", "--val-n", "0"]
    tokgen = [sys.executable, "-m", "tokgen", "train-generator"]
    straight, killed = out / "resume-straight", out / "resume-killed"
    subprocess.run(tokgen + common + ["--out-dir", str(straight)], check=True, cwd=ROOT, capture_output=True)
    proc = subprocess.Popen(tokgen + common + ["--out-dir", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list_checkpoints(killed) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed_at = list_checkpoints(killed)[-1][0] if list_checkpoints(killed) else None
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(tokgen + common + ["--out-dir", str(killed)], check=True, cwd=ROOT, capture_output=True)
    a = load_file(str(straight / "generator" / "model.safetensors"))
    b = load_file(str(killed / "generator" / "model.safetensors"))
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    identical = all(torch.equal(a[k], b[k]) for k in a)
    if not args.cuda and not identical:       # on the CPU resume is exact: anything else is a bug
        raise AssertionError(f"resumed weights differ from the straight run's by up to {diff:g}")
    return {"killed_after_checkpoint": killed_at, "bit_identical": identical, "max_abs_diff": diff}


def sampling(args, out: Path) -> dict:
    import torch

    import tokgen
    from tokgen.generators import FAMILIES

    device = "cuda" if args.cuda else "cpu"
    results = {}
    for family in sorted(FAMILIES):
        pipe = tokgen.Pipeline.from_pretrained(out / "gen" / family / "generator", device=device)
        steps = None if pipe.generator.fixed_steps else 4
        gen = torch.Generator(device=device).manual_seed(0)
        start = time.perf_counter()
        images = pipe(["a large red circle at the top left"], num_per_prompt=4, steps=steps, generator=gen,
                      output_type="pt")
        again = pipe(["a large red circle at the top left"], num_per_prompt=4, steps=steps,
                     generator=torch.Generator(device=device).manual_seed(0), output_type="pt")
        results[family] = {"shape": list(images.shape), "seconds": round(time.perf_counter() - start, 2),
                           "same_seed_same_images": bool(torch.equal(images, again))}
    return results


def bench(args) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_generators.py"), "--device",
                           "cuda" if args.cuda else "cpu", "--precisions", "fp32", "bf16"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, args.stages)
    stages.results["machine"] = {"passed": True, "result": machine(), "quick": args.quick,
                                 "precision": args.precision}
    if not args.quick:
        stages.run("tests", run_tests, args)
    stages.run("tokenizers", train_tokenizers, args, out)
    stages.run("tokens", extract, args, out)
    stages.run("generators", train_generators, args, out)
    stages.run("resume", resume, args, out)
    stages.run("sampling", sampling, args, out)
    if not args.quick:
        stages.run("bench", bench, args)
    failed = [name for name, r in stages.results.items() if not r.get("passed")]
    print(json.dumps({"failed": failed, "report": str(out / "gpu_check.json")}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
