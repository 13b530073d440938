"""The peers' own benchmark scripts, run as subprocesses in their own venv, so that their figures
and ours come from one run on one machine.

The scripts are the shared harness `../shared/peers-bench/bench_<peer>.py` (set up by its
`setup_peers.sh`: a venv with the peers installed, the GitHub peers extracted); nothing of them is
copied here.  Each prints one JSON line whose `headline` (guided generation, training) and
`headline_nocfg` (unguided generation) hold the figures compared.  Where the venv, the harness or a
peer is missing, `discover` says which and why, and the bench prints ours and the limit alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HARNESS_DEFAULT = REPO.parent / "shared" / "peers-bench"
SETUP_HINT = ("VAR_SRC=<git dir of FoundationVision/VAR> LLAMAGEN_SRC=<git dir of FoundationVision/LlamaGen> "
              "bash ../shared/peers-bench/setup_peers.sh (bench/README.md)")


@dataclass(frozen=True)
class Peer:
    key: str            # the harness's name: bench_<key>.py, and the --peers value
    name: str           # as the JSON and the table print it
    family: str         # which of our families it is compared with
    kind: str           # its condition kind as ours names them: "class" or "text"
    condition: str      # what the peer conditions on (ours: --condition, class by default)
    guidance: str       # how the peer guides; the cost of guidance does not depend on its scale
    module: str | None = None                       # a pip peer: imported in the venv to probe it
    checkout: tuple[str, str, str] | None = None    # a GitHub peer: (env variable, default dir, a file in it)

    def checkout_dir(self) -> Path:
        env, default, _ = self.checkout
        return Path(os.environ.get(env) or os.path.join(os.environ.get("TMPDIR", "/tmp"), default))


PEERS = {p.key: p for p in [
    Peer("llamagen", "LlamaGen", "ar", "class", "class (1000, 1 class token)",
         "cfg 4.0: conditional and null rows in one doubled batch (2B = 16), as ours",
         checkout=("LLAMAGEN_DIR", "peer_LlamaGen", "autoregressive/models/gpt.py")),
    Peer("dalle", "DALLE-pytorch", "ar", "text", "text (32 caption tokens in the causal sequence)",
         "cond_scale 3: two forwards per token (conditional, then null), KV cache on", module="dalle_pytorch"),
    Peer("muse", "muse-maskgit-pytorch", "maskgit", "text", "text (32 fixed T5-sized embeddings, cross-attention)",
         "cond_scale 3: two sequential passes per step at batch 8 (ours: one pass at batch 16)",
         module="muse_maskgit_pytorch"),
    Peer("var", "VAR", "var", "class", "class (1000)",
         "cfg 1.5: batch always doubled (2B = 16), as ours; no unguided path in its API",
         checkout=("VAR_DIR", "peer_VAR", "models/var.py")),
]}


def harness_dir() -> Path:
    return Path(os.environ.get("PEERS_BENCH_DIR", HARNESS_DEFAULT))


def peers_python() -> Path:
    """PEERS_PY, else $PEERS_VENV/bin/python, else the harness's default venv $TMPDIR/peers."""
    if os.environ.get("PEERS_PY"):
        return Path(os.environ["PEERS_PY"])
    venv = os.environ.get("PEERS_VENV") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "peers")
    return Path(venv) / "bin" / "python"


def parse_selection(values: list[str]) -> list[str] | str:
    """--peers: "auto", "none", or peer keys.  Returns "auto" or the list (empty for none)."""
    if values in (["auto"], ["none"]):
        return "auto" if values == ["auto"] else []
    if "auto" in values or "none" in values:
        raise SystemExit(f"error: --peers {' '.join(values)}: auto and none stand alone, not beside peer names")
    unknown = [v for v in values if v not in PEERS]
    if unknown:
        raise SystemExit(f"error: --peers {' '.join(values)}: unknown peer {', '.join(unknown)}; give auto, none, "
                         f"or some of {sorted(PEERS)}")
    return list(dict.fromkeys(values))


def auto_selection(condition: str) -> dict[str, Peer]:
    """--peers auto: per family, the peers conditioned like ours (--condition), else all of the
    family's (MaskGIT's only peer, muse, is text-conditioned)."""
    out = {}
    for family in dict.fromkeys(p.family for p in PEERS.values()):
        mine = [p for p in PEERS.values() if p.family == family]
        out.update({p.key: p for p in ([p for p in mine if p.kind == condition] or mine)})
    return out


def discover(selection: list[str] | str, families: list[str], device_type: str, condition: str = "class") -> dict:
    """Which peers can run here: {"available": [keys], "missing": [keys], "why": {key: reason}, ...}.
    Every peer of a timed family that will not run is listed in `missing` with its reason (not
    requested, no venv, no checkout, an import error, a GPU run), so a JSON without a peer column
    always says why."""
    py, harness = peers_python(), harness_dir()
    named = auto_selection(condition) if selection == "auto" else {k: PEERS[k] for k in selection}
    out = {"selection": selection if selection == "auto" else list(selection), "available": [], "missing": [],
           "why": {}, "python": str(py), "harness": str(harness),
           "families_without_peer": sorted(set(families) - {p.family for p in PEERS.values()})}

    def miss(key: str, why: str) -> None:
        out["missing"].append(key)
        out["why"][key] = why

    for key, peer in PEERS.items():
        if peer.family not in families:
            if key in named and selection != "auto":
                miss(key, f"its family {peer.family!r} is not timed in this run (--families)")
        elif key not in named and selection == "auto":
            miss(key, f"--peers auto takes the peers conditioned like ours (--condition {condition}); "
                      f"name it to run it too (--peers {key} ...)")
        elif key not in named:
            miss(key, f"not requested (--peers {' '.join(selection) or 'none'})")
        elif device_type != "cpu":
            miss(key, "the harness's peer scripts run on the CPU only (they never move a model to a GPU)")
        elif not (harness / f"bench_{key}.py").is_file():
            miss(key, f"no harness script {harness / f'bench_{key}.py'} (PEERS_BENCH_DIR)")
        elif not py.is_file():
            miss(key, f"no peers venv: {py} does not exist (PEERS_PY / PEERS_VENV); set it up with {SETUP_HINT}")
        elif peer.checkout and not (peer.checkout_dir() / peer.checkout[2]).is_file():
            miss(key, f"no checkout at {peer.checkout_dir()} ({peer.checkout[0]}); set it up with {SETUP_HINT}")
        elif peer.module and (err := _import_error(py, peer.module)):
            miss(key, f"{peer.module} does not import in the peers venv: {err}")
        else:
            out["available"].append(key)
    return out


# Runs a harness script as `python bench_<peer>.py` would, except that the peer's image decoder,
# which the script also times and the bench does not compare (ours is never timed), runs once with
# no warm-up: at 5 + 1 runs VAR's 109 M-parameter decoder alone takes minutes on 2 cores.  The
# harness's own timer is wrapped, by the name of the function it times ("decode" in every script).
RUNNER = """
import os, runpy, sys
script = sys.argv[1]
sys.path.insert(0, os.path.dirname(script))
import _common
timer = _common.time_fn
def time_fn(fn, runs=None, warmup=None):
    if fn.__name__ == "decode":
        return timer(fn, runs=1, warmup=0)
    return timer(fn, runs, warmup)
_common.time_fn = time_fn
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def run_peer(key: str, *, runs: int, warmup: int, threads: int, seed: int = 0, timeout_s: int = 3600) -> dict:
    """One invocation of the peer's harness script: its figures, or {"error", "stderr_tail"}."""
    env = {**os.environ, "BENCH_RUNS": str(runs), "BENCH_WARMUP": str(warmup), "BENCH_THREADS": str(threads),
           "BENCH_SEED": str(seed), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    try:
        proc = subprocess.run([str(peers_python()), "-c", RUNNER, str(harness_dir() / f"bench_{key}.py")], env=env,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s} s"}
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"exit code {proc.returncode}", "stderr_tail": _tail(proc.stderr, 2000)}
    return figures(json.loads(lines[-1]), wall)


def figures(result: dict, wall_s: float | None = None) -> dict:
    """The compared figures from one harness result (its `headline` / `headline_nocfg` / `train`)."""
    head, nocfg, train = result.get("headline", {}), result.get("headline_nocfg", {}), result.get("train", {})
    out = {"guided_s": head.get("gen_median_s"), "unguided_s": nocfg.get("gen_median_s"),
           "train_s": train.get("median_s"), "train_img_s": head.get("train_images_per_s"),
           "train_tok_s": head.get("train_tokens_per_s"), "params_M": round(head["params"] / 1e6, 2)
           if head.get("params") else None, "forward_passes": head.get("forward_passes"),
           "note": head.get("note"), "threads": result.get("env", {}).get("threads"),
           "runs": result.get("env", {}).get("runs"), "commit": result.get("commit") or result.get("version")}
    if wall_s is not None:
        out["script_wall_s"] = wall_s          # the whole script, set-up and its decoder's one run included
    return out


def _import_error(py: Path, module: str) -> str | None:
    """The error importing `module` with `py`, or None when it imports.  The harness's torchvision
    shim goes first, as in its scripts (the PyPI torchvision wheel does not import beside the CPU torch)."""
    code = f"import sys; sys.path.insert(0, {str(harness_dir())!r}); import _common; _common.tv_shim(); import {module}"
    probe = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
    return probe.stderr.strip().splitlines()[-1][:400] if probe.returncode else None


def _tail(text: str, n: int) -> str:
    text = text.strip()
    return text[-n:] if len(text) > n else text


if __name__ == "__main__":    # python bench/peer_harness.py: what would run here
    print(json.dumps(discover("auto", sorted({p.family for p in PEERS.values()}), "cpu"), indent=2))
    sys.exit(0)
