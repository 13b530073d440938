"""Data at scale (issue 16, item 1): folders listed without decoding, bad files skipped lazily and
reported from the DataLoader workers, augmentation seeded per (seed, epoch, index) so that any
num_workers gives the same items, Hugging Face datasets streamed."""

import importlib.util
import os
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from tokgen.data import build_dataset, default_num_workers  # noqa: E402
from tokgen.data.folder import ImageFolderDataset  # noqa: E402
from tokgen.data.hf import HFImageDataset, HFStreamingDataset  # noqa: E402
from tokgen.data.transforms import resize_shorter_side, square_tensor, to_pixels  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pattern(i: int, w: int = 20, h: int = 16) -> Image.Image:
    """An image with no left-right symmetry, different for each i."""
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 12 + i * 7) % 256, (y * 15 + x * x) % 256, np.full_like(x, i * 31 % 256)], -1)
    return Image.fromarray(arr.astype(np.uint8))


def _folder(root, n_per_class=6, classes=("a", "b"), bad=()):
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(n_per_class):
            _pattern(i + 10 * classes.index(c)).save(root / c / f"{i:02d}.png")
    for name in bad:
        (root / name).write_bytes(b"not an image")
    return root


def _batches(ds, workers, batch_size=4, seed=0):
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    return list(loader)


def test_bad_file_skipped_lazily_batches_stay_full_and_workers_report(tmp_path):
    root = _folder(tmp_path / "d", bad=("a/zz_broken.png", "b/03_cut.png"))  # b/03 replaced by a bad file
    ds = ImageFolderDataset(str(root), "train", 8)
    assert ds.skipped == []                                         # nothing decoded but the first item
    paths = [os.path.basename(ds.item_path(i)) for i in range(len(ds))]
    for workers in (0, 2):
        fresh = ImageFolderDataset(str(root), "train", 8)
        batches = _batches(fresh, workers)
        sizes = [4] * (len(fresh) // 4) + ([len(fresh) % 4] if len(fresh) % 4 else [])
        assert [len(b["label"]) for b in batches] == sizes                # no item lost to a bad file
        assert all(torch.isfinite(b["image"]).all() for b in batches)
        with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of \d+ .*zz_broken\.png") as rec:
            reported = fresh.report_skipped()                         # gathered from the workers' records
        assert "03_cut.png" in str(rec[0].message)
        assert sorted(os.path.basename(p) for p, _ in reported) == ["03_cut.png", "zz_broken.png"]
        assert all(r.startswith("UnidentifiedImageError") for _, r in reported)
    # item i of a bad file is the next good item, the same every time
    i = paths.index("zz_broken.png")
    assert torch.equal(ds[i]["image"], ds[(i + 1) % len(ds)]["image"])


def test_no_readable_image_fails_at_construction(tmp_path):
    (tmp_path / "broken").mkdir()
    for i in range(3):
        (tmp_path / "broken" / f"{i}.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped \d unreadable"), \
            pytest.raises(ValueError, match="no readable images"):
        ImageFolderDataset(str(tmp_path / "broken"), "train", 8)


def test_augmentation_is_deterministic_per_seed_epoch_and_index(tmp_path):
    root = _folder(tmp_path / "d")
    make = lambda **kw: ImageFolderDataset(str(root), "train", 8, augment="crop_flip", **kw)  # noqa: E731
    a, b, other = make(), make(), make(seed=1)
    items = [a[i]["image"] for i in range(len(a))]
    assert all(torch.equal(x, b[i]["image"]) for i, x in enumerate(items))
    assert all(torch.equal(x, a[i]["image"]) for i, x in enumerate(items))     # the same when read again
    assert not all(torch.equal(x, other[i]["image"]) for i, x in enumerate(items))
    a.set_epoch(1)
    assert not all(torch.equal(x, a[i]["image"]) for i, x in enumerate(items))
    with pytest.raises(ValueError, match="augment must be one of"):
        ImageFolderDataset(str(root), augment="rotate")
    with pytest.raises(ValueError, match="crop_ratio must be a number >= 1"):
        ImageFolderDataset(str(root), augment="crop", crop_ratio=0.9)


def test_flip_is_an_exact_mirror_and_crop_a_window_of_the_enlarged_image(tmp_path):
    root = _folder(tmp_path / "d")
    plain = ImageFolderDataset(str(root), "train", 12)
    flip = ImageFolderDataset(str(root), "train", 12, augment="flip")
    assert all(torch.equal(plain[i]["image"], square_tensor(Image.open(plain.item_path(i)), 12))
               for i in range(len(plain)))                          # "none" is the old pipeline, unchanged
    mirrored = []
    for i in range(len(plain)):
        x, y = plain[i]["image"], flip[i]["image"]
        assert torch.equal(y, x) or torch.equal(y, x.flip(-1))
        mirrored.append(not torch.equal(y, x))
    assert any(mirrored) and not all(mirrored)

    # crop: the shorter side to 18 (crop_ratio 1.5), or to 12..15 (the default (1, 1.25), ADM's
    # random_crop_arr), then a 12 x 12 window at a random position
    for ratio, sides in ((1.5, [18]), (None, [12, 13, 14, 15])):
        crop = ImageFolderDataset(str(root), "train", 12, augment="crop",
                                  **({"crop_ratio": ratio} if ratio else {}))
        seen = set()
        for i in range(len(crop)):
            y = crop[i]["image"]
            found = []
            for side in sides:
                with Image.open(crop.item_path(i)) as img:
                    enlarged = resize_shorter_side(to_pixels(img), side)
                full = torch.from_numpy(np.asarray(enlarged, dtype=np.float32) / 255).permute(2, 0, 1)
                found += [(side, t, l) for t in range(full.shape[1] - 11) for l in range(full.shape[2] - 11)
                          if torch.equal(full[:, t:t + 12, l:l + 12], y)]
            assert found, (ratio, i)
            seen.add(found[0])
        assert len({(t, l) for _, t, l in seen}) > 1                 # the window moves
        assert ratio or len({s for s, _, _ in seen}) > 1             # and, with a range, the scale


def test_workers_give_the_same_items_as_no_workers(tmp_path):
    root = _folder(tmp_path / "d", bad=("a/zz_broken.png",))
    runs = []
    for workers in (0, 2):
        ds = ImageFolderDataset(str(root), "train", 8, augment="crop_flip", seed=3)
        ds.set_epoch(2)
        runs.append(_batches(ds, workers, seed=5))
    assert len(runs[0]) == len(runs[1])
    for b0, b2 in zip(*runs):
        assert torch.equal(b0["image"], b2["image"]) and torch.equal(b0["label"], b2["label"])


def test_resumed_epoch_sees_the_same_augmented_items(tmp_path):
    # the trainer's sampler from batch 2 on (a resume mid-epoch): the very items of the full epoch
    from tokgen.train.engine import EpochBatchSampler

    root = _folder(tmp_path / "d")
    ds = ImageFolderDataset(str(root), "train", 8, augment="crop_flip")
    ds.set_epoch(1)
    load = lambda start, workers: list(DataLoader(ds, num_workers=workers, batch_sampler=EpochBatchSampler(  # noqa: E731
        len(ds), 3, seed=7, epoch=1, start=start)))
    full, resumed = load(0, 0), load(2, 2)
    assert len(resumed) == len(full) - 2 >= 1
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(full[2:], resumed))


def test_two_thousand_files_list_in_well_under_a_second(tmp_path):
    buf = tmp_path / "one.png"
    _pattern(0, 4, 4).save(buf)
    data = buf.read_bytes()
    root = tmp_path / "big"
    for c in range(20):
        os.makedirs(root / f"c{c:02d}")
        for i in range(100):
            (root / f"c{c:02d}" / f"{i:03d}.png").write_bytes(data)
    start = time.perf_counter()
    splits = {s: ImageFolderDataset(str(root), s, 8) for s in ("train", "val", "test")}
    seconds = time.perf_counter() - start
    assert sum(len(d) for d in splits.values()) == 2000 and splits["train"].classes == [f"c{c:02d}" for c in range(20)]
    assert seconds < 1.0, f"listing 2,000 files three times took {seconds:.2f} s"


def test_make_jpeg_folder_script(tmp_path):
    script = os.path.join(ROOT, "scripts", "make_jpeg_folder.py")
    spec = importlib.util.spec_from_file_location("make_jpeg_folder", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.make_folder(str(tmp_path / "j"), count=12, size=32, classes=3, workers=1)
    ds = build_dataset(f"folder:{tmp_path / 'j'}", "train", 16)
    assert ds.classes == ["class_0000", "class_0001", "class_0002"] and ds[0]["image"].shape == (3, 16, 16)
    with Image.open(ds.item_path(0)) as img:
        assert img.format == "JPEG" and img.size == (32, 32)
    with pytest.raises(SystemExit, match="inside the repository"):
        mod.make_folder(os.path.join(ROOT, "tmp_jpegs"), count=1)


def test_default_num_workers(tmp_path):
    ds = ImageFolderDataset(str(_folder(tmp_path / "d")), "train", 8)
    assert default_num_workers(torch.utils.data.TensorDataset(torch.zeros(4)), "cuda") == 0  # held in memory
    assert 1 <= default_num_workers(ds, "cuda") <= 8
    assert 0 <= default_num_workers(ds, "cpu") <= 4


def _parquet(tmp_path, n=40):
    import datasets

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"img": datasets.Image(), "digit": datasets.ClassLabel(names=list("0123456789"))})
    ds = datasets.Dataset.from_dict({"img": images, "digit": [i % 10 for i in range(n)]}, features=features)
    path = str(tmp_path / "digits.parquet")
    ds.to_parquet(path)
    return path


def test_streaming_gives_the_map_style_items_and_refuses_len(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    path = _parquet(tmp_path)
    for split in ("train", "val"):
        mapped = HFImageDataset(path, split, 8, cache_dir=str(tmp_path / "hf_cache"))
        streamed = build_dataset(f"hf:{path}", split, 8, streaming=True, cache_dir=str(tmp_path / "hf_cache"))
        assert isinstance(streamed, HFStreamingDataset) and streamed.label_column == "digit"
        items = list(streamed)
        assert len(items) == len(mapped)                             # the same hash carving, as it streams
        assert all(torch.equal(a["image"], mapped[i]["image"]) and a["label"] == mapped[i]["label"]
                   for i, a in enumerate(items))
    with pytest.raises(TypeError, match="streams: it has no length.*trainer.*extract-tokens"):
        len(streamed)
    with pytest.raises(ValueError, match="HFStreamingDataset"):
        HFImageDataset(path, streaming=True)
