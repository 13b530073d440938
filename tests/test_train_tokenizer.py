"""The tokenizer trained through the shared loop: exact resume, multi-process parity with the
codebook in sync, the command line end to end, token extraction."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ddp_tokenizer_worker import make_trainer, tiny_config  # noqa: E402
from tokgen.tokenizers_vq import VQTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_ddp_tokenizer_worker.py"


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.unwrap("autoencoder").state_dict().items()}


def test_resume_is_bit_identical_with_codebook_and_ema(tmp_path):
    """N steps + resume + M steps == N + M steps straight: weights, EMA codebook and EMA weights."""
    torch.set_num_threads(1)
    straight = make_trainer(str(tmp_path / "a"), 8, 6, kmeans=True, ema_decay=0.9)
    straight.fit()
    first = make_trainer(str(tmp_path / "b"), 8, 3, kmeans=True, ema_decay=0.9, resume="auto")
    first.fit()
    resumed = make_trainer(str(tmp_path / "b"), 8, 6, kmeans=True, ema_decay=0.9, resume="auto")
    resumed.fit()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with straight.ema_weights(), resumed.ema_weights():
        for k, v in _weights(straight).items():
            assert torch.equal(v, _weights(resumed)[k]), f"EMA {k}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(out: Path, steps: int, kmeans: bool) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(WORKER), str(out), "4", str(steps), "1" if kmeans else "0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_processes_match_one_process_codebook_included(tmp_path):
    """2 processes x batch 4 == 1 process x batch 8: the EMA codebook statistics are all-reduced,
    so the codebook follows the global batch, not one process's half of it."""
    steps = 4
    _launch_two(tmp_path / "two", steps, kmeans=False)
    two = load_file(str(tmp_path / "two" / f"checkpoint-{steps}" / "model.safetensors"))
    torch.set_num_threads(1)
    one = make_trainer(str(tmp_path / "one"), 8, steps, kmeans=False)
    one.fit()
    ref = _weights(one)
    assert two.keys() == ref.keys()
    for k in ref:
        assert torch.allclose(two[k], ref[k], atol=1e-5, rtol=1e-4), k
    torch.manual_seed(0)
    initial = VQTokenizer(tiny_config(kmeans=False)).state_dict()["quantizer.vq._codebook.embed"]
    assert not torch.allclose(ref["quantizer.vq._codebook.embed"], initial), "the codebook must have moved"


def test_two_processes_keep_kmeans_init_and_dead_codes_in_sync(tmp_path):
    """With k-means init and dead-code restarts, both processes end with the same codebook (no
    hang, no drift): the k-means statistics and the restarts are shared across processes."""
    _launch_two(tmp_path / "two", 3, kmeans=True)
    ranks = [load_file(str(tmp_path / "two" / f"codebook-rank{r}.safetensors")) for r in (0, 1)]
    assert ranks[0]["initted"].item() == 1 and ranks[1]["initted"].item() == 1
    assert torch.equal(ranks[0]["embed"], ranks[1]["embed"])


def test_command_line_trains_saves_evaluates_and_extracts(tmp_path):
    run, tokens = tmp_path / "run", tmp_path / "tokens"
    common = [sys.executable, "-m", "tokgen"]
    train = subprocess.run(common + ["train-tokenizer", "--preset", "shapes-tiny-msvq", "--set", "base_width=8",
                                     "--set", "z_channels=8", "--max-steps", "4", "--batch-size", "8",
                                     "--out-dir", str(run), "--eval-n", "16", "--sample-every", "2",
                                     "--tensorboard", "false"],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    result = json.loads((run / "eval.json").read_text())
    assert result["steps"] == 4 and set(result["test"]["scales"]) == {"1", "2", "3", "4", "6", "8"}
    assert 0 <= result["test"]["judge"]["caption_match"] <= 1 and result["test"]["psnr"] > 0
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["recon-0000002.png", "recon-0000004.png"]
    saved = json.loads((run / "tokenizer" / "config.json").read_text())
    assert saved["config"]["sync_codebook"] is None  # a runtime setting, never baked in

    extract = subprocess.run(common + ["extract-tokens", "--tokenizer", str(run / "tokenizer"), "--out", str(tokens),
                                       "--limit", "10", "--splits", "train,test"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert extract.returncode == 0, extract.stderr[-3000:]
    from tokgen.data.shapes import ShapesDataset
    from tokgen.data.tokens import TokenDataset

    ds = TokenDataset(tokens, "test")
    assert len(ds) == 10 and [t.shape[-1] for t in ds[0]["tokens"]] == [1, 2, 3, 4, 6, 8]
    test = ShapesDataset("test")
    assert ds[3]["caption"] == test[3]["caption"] and ds[3]["label"] == test[3]["label"]
    tokenizer = VQTokenizer.from_pretrained(run / "tokenizer")
    again = tokenizer.encode(test[3]["image"][None])
    assert all(torch.equal(a[0], b) for a, b in zip(again, ds[3]["tokens"]))
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        TokenDataset(tokens, "val")
    assert (ds.source, ds.dataset_options) == ("shapes", {})

    # Dataset options travel with the tokens, so the generator side judges the same data.
    two = subprocess.run(common + ["extract-tokens", "--tokenizer", str(run / "tokenizer"), "--out", str(tokens),
                                   "--limit", "4", "--splits", "val", "--num-objects", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert two.returncode != 0 and "not 'shapes' with {'num_objects': 2}" in two.stderr, two.stderr[-2000:]
    assert not (tokens / "val.safetensors").exists()  # refused before anything was written
    two = subprocess.run(common + ["extract-tokens", "--tokenizer", str(run / "tokenizer"), "--out",
                                   str(tmp_path / "two"), "--limit", "4", "--splits", "val", "--num-objects", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    ds2 = TokenDataset(tmp_path / "two", "val")
    assert ds2.dataset_options == {"num_objects": 2}
    assert ds2[1]["caption"] == ShapesDataset("val", num_objects=2)[1]["caption"] != ShapesDataset("val")[1]["caption"]
    from tokgen.eval.judges import judge_for
    assert judge_for(ds2.source, 32, ds2.dataset_options).num_objects == 2


def test_the_same_seed_trains_the_same_tokenizer(tmp_path):
    """Two runs of the command in one process (whose global RNG the first run has moved on) with
    the same --seed end with the same weights: the initial weights come from the seed."""
    from tokgen.train.cli import main as tokgen

    def train(out: Path) -> dict[str, torch.Tensor]:
        assert tokgen(["train-tokenizer", "--preset", "shapes-tiny", "--set", "base_width=8", "--set", "z_channels=8",
                       "--set", "codebook_size=32", "--max-steps", "2", "--batch-size", "8", "--out-dir", str(out),
                       "--eval-n", "0", "--sample-every", "0", "--tensorboard", "false", "--seed", "3"]) == 0
        return load_file(out / "tokenizer" / "model.safetensors")

    first, second = train(tmp_path / "a"), train(tmp_path / "b")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
