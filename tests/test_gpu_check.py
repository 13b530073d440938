"""scripts/gpu_check.py, its CPU part: its stages run here at a tiny budget (--quick: the test
suite and the bench are left out; the kill -9 resume stage is tests/test_signals.py's check), so
the script is known to work before a GPU machine is lent to run it in full."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_stage_at_a_tiny_budget(tmp_path):
    # the resume stage is left out here: tests/test_signals.py runs the same kill -9 check
    stages = ["tokenizers", "tokens", "generators", "sampling"]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--quick", "--out", str(tmp_path),
                           "--stages", *stages], capture_output=True, text=True, timeout=900)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {name: r.get("error") for name, r in report.items() if not r.get("passed")}
    assert done.returncode == 0 and not failed, (failed, done.stderr[-3000:])
    assert set(report) == {"machine", *stages}
    assert set(report["tokenizers"]["result"]) == {"shapes-tiny", "shapes-tiny-msvq", "shapes-tiny-fsq",
                                                   "shapes-tiny-lfq"}
    assert all(r["steps"] == 2 for r in report["generators"]["result"].values())
    assert all(r["same_seed_same_images"] for r in report["sampling"]["result"].values())
