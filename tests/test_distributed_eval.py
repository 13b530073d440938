"""Distributed evaluation: the samples split over 2 gloo processes give the figures of one
process, bit for bit (uneven shares; a process with no batch); and the FID reference read from a
statistics file (.npz with mu and sigma)."""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _eval_worker import CASES, figures  # noqa: E402  (the test helper beside this file)

WORKER = Path(__file__).with_name("_eval_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # the default suite runs the same split end to end through compare (below)
def test_two_processes_give_the_figures_of_one(tmp_path):
    out = tmp_path / "two.pkl"
    # CPU processes talking over gloo, also on a machine with GPUs
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(WORKER), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = pickle.loads(out.read_bytes())
    one = figures()
    assert set(one) == set(two)
    for n, _, keep in CASES:
        a, b = one[("sample", n)], two[("sample", n)]
        assert a["processes"] == 1 and b["processes"] == 2
        assert a["judge"] == b["judge"] and a["nfe"] == b["nfe"]         # exact: the same sums in the same order
        assert a["features"].shape == (n, 48) and np.array_equal(a["features"], b["features"])
        assert len(a["images"]) == keep and torch.equal(a["images"], b["images"])
        assert a["metrics"] == b["metrics"] and all(v is not None for k, v in a["metrics"].items())
        assert a["seconds"] > 0 and b["seconds"] > 0                    # wall times differ, of course
    for key in one:
        if key[0] == "nll":
            assert one[key] == two[key] and one[key][0] > 0, key
    assert one[("nll", "d3pm", 36)][1] == "elbo" and one[("nll", "ar", 36)][1] == "exact"


def test_the_batchwise_path_gives_what_drawing_batch_by_batch_gives():
    """One process: the evaluation equals sampling batch i with seed + i, decoding the whole set
    and streaming it through judge_and_features (the path compare's figures were made with)."""
    from _eval_worker import BrightnessJudge, PooledFeatures, TinySplit, tiny_generator, tiny_tokenizer

    from tokgen.eval.compare import judge_and_features
    from tokgen.pipeline import SampleConfig, condition_rows, decode_tokens, sample_tokens
    from tokgen.train.evaluation import EvalConfig, evaluate_generator

    tokenizer = tiny_tokenizer()
    split, generator = TinySplit(tokenizer.spec), tiny_generator("maskgit", tokenizer)
    n, batch, judge = 20, 8, BrightnessJudge()
    config = EvalConfig(n=n, seed=5, batch_size=batch, sampling=SampleConfig(steps=2), batchwise=True, keep=11)
    ev = evaluate_generator(generator, tokenizer, split, config, judge=judge, extractor=PooledFeatures())
    rows = condition_rows(generator, split.labels[:n], list(split.captions[:n]))
    chunks = [sample_tokens(generator, {k: v[lo:lo + batch] for k, v in rows.items()}, min(n, lo + batch) - lo,
                            config.sampling, 5 + i, batch) for i, lo in enumerate(range(0, n, batch))]
    maps = [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    targets = judge.targets(None, split.labels[:n])
    images = list(decode_tokens(tokenizer, maps, batch))
    scores, feats, first = judge_and_features(
        [(im, targets[i * batch:i * batch + len(im)]) for i, im in enumerate(images)], judge, PooledFeatures(), keep=11)
    assert ev.judge == scores and np.array_equal(ev.features, feats) and torch.equal(ev.images, first)
    assert ev.processes == 1 and len(first) == 11


def test_one_stream_does_not_split_across_processes(monkeypatch):
    from _eval_worker import TinySplit, tiny_generator, tiny_tokenizer

    from tokgen.train.evaluation import EvalConfig, evaluate_generator, likelihood

    monkeypatch.setenv("WORLD_SIZE", "2")
    tokenizer = tiny_tokenizer()
    split = TinySplit(tokenizer.spec)
    with pytest.raises(ValueError, match="distributed evaluation draws batchwise"):
        evaluate_generator(tiny_generator("maskgit", tokenizer), tokenizer, split,
                           EvalConfig(n=8, distributed=True), judge=None)
    with pytest.raises(ValueError, match="distributed ELBO seeds its batches one by one"):
        likelihood(tiny_generator("d3pm", tokenizer, timesteps=4), split, 8, distributed=True)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A tiny comparison run by one process (maskgit and d3pm trained 2 steps): the folder and the
    command's arguments (without --out)."""
    from test_compare import TINY, tiny_tokenizer

    from tokgen.train.cli import main as tokgen

    root = tmp_path_factory.mktemp("compared")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    assert tokgen(["extract-tokens", "--tokenizer", str(root / "tokenizer"), "--out", str(root / "tokens"),
                   "--limit", "16", "--device", "cpu"]) == 0
    args = ["compare", "--tokens", str(root / "tokens"), "--tokenizer", str(root / "tokenizer"),
            "--runs", str(root / "runs"), *TINY, "--families", "maskgit", "d3pm", "--sample-steps", "maskgit=2",
            "d3pm=2", "--curve-points", "0", "--n", "12", "--nll-n", "12", "--grid-n", "6",
            "--sample-batch-size", "5"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # as each launched process (OMP_NUM_THREADS=1): CPU sums split by thread count
    try:
        assert tokgen([*args, "--out", str(root / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, args


def test_compare_under_two_processes_gives_the_figures_of_one(compared):
    """The done-when of distributed compare, at small size: the same command evaluated by 1 and by
    2 processes (the runs loaded, not trained again) gives the same figures.  12 samples in
    batches of 5: 3 batches, 2 on process 0 and a short one on process 1."""
    root, args = compared
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "tokgen", *args, "--out", str(root / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "loading the generator finished" in done.stdout and "train maskgit" not in done.stdout
    one, two = (json.loads((root / d / "results.json").read_text()) for d in ("one", "two"))
    assert one["settings"]["processes"] == 1 and two["settings"]["processes"] == 2
    timing = ("seconds_per_image", "processes")
    assert len(one["rows"]) == len(two["rows"]) == 4
    for a, b in zip(one["rows"], two["rows"]):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
        assert a["fd"] is not None and (a["kind"] != "generator" or a["seconds_per_image"] > 0)
        assert a["kind"] != "generator" or (a["processes"], b["processes"]) == (1, 2)
    assert next(r for r in two["rows"] if r["label"] == "d3pm")["nll_kind"] == "elbo"
    for name in ("grid-maskgit-2.png", "grid-real.png", "grid-tokenizer.png"):
        assert (root / "two" / name).is_file(), name
    assert "split over 2 processes" in (root / "two" / "report.md").read_text()


def test_compare_takes_the_fd_against_a_statistics_file(compared, tmp_path, monkeypatch):
    """--fid-stats: the FD of every row against the file's mu and sigma, in the extractor's space
    (Inception's, here a 48-d stand-in: no weights offline); no test features, so KID, precision
    and recall are n/a; a bad file is refused before anything runs."""
    from _eval_worker import PooledFeatures

    import tokgen.eval.features as features
    from tokgen.train.cli import main as tokgen
    from tokgen.train.jobs.comparison import plan

    class Extractor(PooledFeatures):
        def to(self, device):
            return self

    monkeypatch.setattr(features, "feature_extractor", lambda name, **kw: Extractor())
    monkeypatch.setattr(features, "find_inception_weights", lambda weights=None: tmp_path)
    monkeypatch.setattr(plan, "INCEPTION_DIM", 48)
    root, args = compared
    stats = tmp_path / "stats.npz"
    np.savez(stats, mu=np.full(48, 0.5), sigma=np.eye(48) * 0.01)
    assert tokgen([*args, "--out", str(tmp_path / "out"), "--fid-stats", str(stats)]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["settings"]["reference"] == f"the statistics in {stats}"
    assert "the real statistics from" in results["settings"]["feature_space"]
    for r in results["rows"]:
        assert r["fd"] > 0 and r["kid"] is r["precision"] is r["recall"] is None, r
    np.savez(stats, mu=np.zeros(47), sigma=np.eye(47))
    with pytest.raises(SystemExit, match="holds 47-d statistics, but the feature extractor gives 48-d"):
        tokgen([*args, "--out", str(tmp_path / "bad"), "--fid-stats", str(stats)])
    np.savez(stats, m=np.zeros(48))
    with pytest.raises(SystemExit, match=r"holds the arrays \['m'\], but FID statistics need 'mu'"):
        tokgen([*args, "--out", str(tmp_path / "bad"), "--fid-stats", str(stats)])
    assert not (tmp_path / "bad").exists()
