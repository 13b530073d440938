"""Token extraction at scale: shards that 1 and 2 processes write alike, a killed run resumed
without redoing its finished shards, flipped views, int16 storage read as int64 through memory
maps, incomplete splits refused, and the first (single-file) token folders still read."""
from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tokgen.data.shapes import ShapesDataset
from tokgen.data.tokens import TokenDataset, finish_split, shard_ranges, split_plan, start_split, \
    write_token_shard, write_token_split
from tokgen.tokenizers_vq import VQTokenizer, get_preset
from tokgen.train.jobs import ExtractConfig, extract_tokens

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_extract_worker.py"
ITEMS, SHARD, BATCH = 10, 8, 4          # with flips 20 items: 3 shards (8, 8, 4), shared unevenly by 2 processes
SPEC = {"codebook_size": 32, "scales": [1, 2, 4], "image_size": 32, "channels": 3, "factor": 8}


def tiny_tokenizer() -> VQTokenizer:
    """A random multi-scale tokenizer, 32 px -> scales 1, 2, 4, codebook 32 (as test_compare)."""
    torch.manual_seed(0)
    settings = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), scales=(1, 2, 4), codebook_size=32,
                    kmeans_init=False)
    return VQTokenizer(get_preset("shapes-tiny-msvq", **settings)).eval()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny tokenizer and a straight one-process extraction of the train split (with flips)."""
    root = tmp_path_factory.mktemp("extract")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    extract_tokens(config(root, root / "one"))
    torch.set_num_threads(threads)
    return root


def config(root: Path, out: Path, **changes) -> ExtractConfig:
    return ExtractConfig(**{**dict(tokenizer=str(root / "tokenizer"), out=str(out), splits=("train",), limit=ITEMS,
                                   batch_size=BATCH, shard_size=SHARD, views=("flip",), device="cpu",
                                   precision="fp32"), **changes})


def worker(root: Path, out: Path, processes: int = 1, **extra) -> list[str]:
    """The command that runs _extract_worker.py on `out` (under accelerate launch for 2 processes)."""
    cfg = {**{k: v for k, v in vars(config(root, out)).items()}, **extra}
    args = [str(WORKER), json.dumps(cfg)]
    if processes == 1:
        return [sys.executable, *args]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), *args]


ENV = {**os.environ, "ACCELERATE_USE_CPU": "true", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT)}


def shard_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "train").glob("shard-*"))}


def assert_same_split(a: Path, b: Path) -> None:
    assert shard_files(a) == shard_files(b)          # bitwise: tokens, labels, captions, hashes
    x, y = TokenDataset(a, "train"), TokenDataset(b, "train")
    assert len(x) == len(y) == 2 * ITEMS
    for i in range(len(x)):
        assert all(torch.equal(p, q) for p, q in zip(x[i]["tokens"], y[i]["tokens"]))
        assert (x[i]["label"], x[i]["caption"]) == (y[i]["label"], y[i]["caption"])


def test_two_processes_write_the_same_tokens_as_one(root, tmp_path):
    log = tmp_path / "log"
    done = subprocess.run(worker(root, tmp_path / "two", processes=2), env={**ENV, "TOKGEN_EXTRACT_LOG": str(log)},
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_split(root / "one", tmp_path / "two")
    written = sorted(line.split()[2:] for line in log.read_text().splitlines())   # "rank R wrote train shard K"
    assert written == [["0", "wrote", "train", "shard", "0"], ["0", "wrote", "train", "shard", "2"],
                       ["1", "wrote", "train", "shard", "1"]]
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["splits"] == {"train": 2 * ITEMS} and meta["views"] == {"train": ["none", "flip"]}


def test_a_killed_extraction_resumes_without_redoing_finished_shards(root, tmp_path):
    out, log = tmp_path / "killed", tmp_path / "log"
    proc = subprocess.Popen(worker(root, out, pause_after_shard=60), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "train" / "shard-00000.json").exists():     # the shard's record: it is finished
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else "slow"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first = out / "train" / "shard-00000.npy"
    stamp = first.stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"incomplete .*1 of 3 shards are written, missing shard-00001, "
                                         r"shard-00002; rerun `tokgen extract-tokens"):
        TokenDataset(out, "train")
    assert not (out / "meta.json").exists()

    os.environ["TOKGEN_EXTRACT_LOG"] = str(log)
    try:
        result = extract_tokens(config(root, out))
    finally:
        del os.environ["TOKGEN_EXTRACT_LOG"]
    assert result.shards["train"] == {"total": 3, "encoded": 2, "kept": 1}
    assert [line.split()[-1] for line in log.read_text().splitlines()] == ["1", "2"]   # shard 0 not redone
    assert first.stat().st_mtime_ns == stamp
    assert_same_split(root / "one", out)

    again = extract_tokens(config(root, out))        # a finished split: nothing encoded
    assert again.shards["train"] == {"total": 3, "encoded": 0, "kept": 3}
    changed = extract_tokens(config(root, out, views=()))   # other settings: the split starts over
    assert changed.shards["train"]["encoded"] == 2 and len(TokenDataset(out, "train")) == ITEMS


def test_flipped_views_are_the_mirrors_tokens_stored_int16_read_int64(root):
    ds = TokenDataset(root / "one", "train")
    assert np.load(root / "one" / "train" / "shard-00000.npy", mmap_mode="r").dtype == np.int16
    assert all(s.dtype == torch.int64 and s[0:3].dtype == torch.int64 for s in ds.scales)
    tokenizer = VQTokenizer.from_pretrained(root / "tokenizer")
    images = torch.stack([ShapesDataset("train")[i]["image"] for i in range(ITEMS)])
    plain, mirrored = tokenizer.encode(images), tokenizer.encode(images.flip(-1))
    for k in range(3):
        assert torch.equal(ds.scales[k][:ITEMS], plain[k]) and torch.equal(ds.scales[k][ITEMS:], mirrored[k])
    assert ds.labels[:ITEMS].tolist() == ds.labels[ITEMS:].tolist() == [ShapesDataset("train")[i]["label"]
                                                                        for i in range(ITEMS)]
    assert ds.captions[ITEMS:] == ds.captions[:ITEMS]
    # any index across shards: a batch gather equals the items one by one
    idx = torch.tensor([19, 0, 8, 7, 13, 8])
    batch = ds.read(idx)
    assert all(torch.equal(batch[k][j], ds[int(i)]["tokens"][k]) for j, i in enumerate(idx) for k in range(3))
    assert torch.equal(ds.scales[2][idx], batch[2]) and ds.scales[2][5:18].shape == (13, 4, 4)
    # DataLoader workers get the dataset without its memory maps (reopened there)
    clone = pickle.loads(pickle.dumps(ds))
    assert all(m is None for m in clone._store._maps) and torch.equal(clone.read(idx)[2], batch[2])


def test_incomplete_and_damaged_splits_are_refused(root, tmp_path):
    out = tmp_path / "partial"
    plan = split_plan(SPEC, "shapes", {}, 10, [], 4, "fp32")
    start_split(out, "train", plan, "new")
    g = torch.Generator().manual_seed(0)
    for k, (lo, hi) in enumerate(shard_ranges(10, 4)):
        if k != 1:
            maps = [torch.randint(0, 32, (hi - lo, s, s), generator=g) for s in SPEC["scales"]]
            write_token_shard(out, "train", k, plan, maps, list(range(lo, hi)), [f"c{i}" for i in range(lo, hi)])
    with pytest.raises(ValueError, match=r"2 of 3 shards are written, missing shard-00001;"):
        TokenDataset(out, "train")
    with pytest.raises(ValueError, match=r"1 of 3 shards are missing or damaged \(shard-00001\)"):
        finish_split(out, "train", plan)
    write_token_shard(out, "train", 1, plan, [torch.zeros(4, s, s, dtype=torch.long) for s in SPEC["scales"]],
                      [4, 5, 6, 7], ["c"] * 4)
    finish_split(out, "train", plan)
    ds = TokenDataset(out, "train", verify=True)
    assert len(ds) == 10 and ds.labels.tolist() == list(range(10)) and ds.scales[0][4:8].sum() == 0
    path = out / "train" / "shard-00002.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(ValueError, match=r"shard-00002\.npy has \d+ bytes, the manifest records"):
        TokenDataset(out, "train")
    path.write_bytes(data[:-2] + np.array([40], np.int16).tobytes())    # an id out of range, same size
    with pytest.raises(ValueError, match=r"shard-00002\.npy: token ids outside \[0, 31\]"):
        TokenDataset(out, "train")[9]
    with pytest.raises(ValueError, match=r"sha256 differs"):
        TokenDataset(out, "train", verify=True)


def test_large_codebooks_are_stored_int32():
    spec = {**SPEC, "codebook_size": 40_000}
    plan = split_plan(spec, "shapes", {}, 3, [], 4, "fp32")
    assert plan["dtype"] == "int32"
    assert split_plan(SPEC, "shapes", {}, 3, [], 4, "fp32")["dtype"] == "int16"


def test_int32_shards_round_trip(tmp_path):
    spec = {**SPEC, "codebook_size": 40_000}
    plan = split_plan(spec, "shapes", {}, 3, [], 4, "fp32")
    start_split(tmp_path, "val", plan, "new")
    maps = [torch.full((3, s, s), 39_999) for s in spec["scales"]]
    write_token_shard(tmp_path, "val", 0, plan, maps, [0, 1, 2], ["a", "b", "c"])
    finish_split(tmp_path, "val", plan)
    assert np.load(tmp_path / "val" / "shard-00000.npy").dtype == np.int32
    assert TokenDataset(tmp_path, "val")[2]["tokens"][2].unique().tolist() == [39_999]


def test_single_file_folders_still_load_and_give_way_to_shards(tmp_path):
    n = 5
    maps = [torch.randint(0, 32, (n, s, s)) for s in SPEC["scales"]]
    write_token_split(tmp_path, "train", maps, torch.arange(n), [f"c{i}" for i in range(n)], SPEC, "shapes")
    ds = TokenDataset(tmp_path, "train")
    assert all(torch.equal(ds.scales[k][:], maps[k]) and ds.scales[k][1:3].dtype == torch.int64 for k in range(3))
    assert ds[4]["tokens"][2].shape == (4, 4) and ds[4]["caption"] == "c4" and ds[4]["label"] == 4
    assert ds._store.maps[0].dtype == torch.int16          # held in its stored dtype, widened on read
    plan = split_plan(SPEC, "shapes", {}, 2, [], 4, "fp32")
    start_split(tmp_path, "train", plan, "new")
    write_token_shard(tmp_path, "train", 0, plan, [m[:2] for m in maps], [0, 1], ["x", "y"])
    finish_split(tmp_path, "train", plan)
    assert not (tmp_path / "train.safetensors").exists() and TokenDataset(tmp_path, "train").captions == ["x", "y"]


def test_generator_training_reads_a_sharded_folder_lazily(root, tmp_path):
    """GeneratorTask indexes `train.scales[k][index_tensor]` per scale: the memory-mapped split
    answers like the in-memory tensors did, and a few steps train."""
    from tokgen.train.engine import TrainConfig, Trainer
    from tokgen.train.tasks.generator import GeneratorTask, build_from_tokens

    train = TokenDataset(root / "one", "train")
    torch.manual_seed(0)
    generator = build_from_tokens(train, "maskgit", dict(width=32, depth=1, heads=4, condition="class"))
    task = GeneratorTask(generator, train)
    batch = task.collate([{"index": i} for i in (17, 3, 9)])
    assert all(torch.equal(t, r) for t, r in zip(batch["tokens"], train.read([17, 3, 9])))
    Trainer(task, task.dataset, TrainConfig(out_dir=str(tmp_path), max_steps=2, batch_size=4, save_every=0,
                                            resume=None, tensorboard=False)).fit()
