"""Image folders and Hugging Face datasets, offline, with datasets' cache in a temp dir."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tokgen.data.folder import SPLITS, ImageFolderDataset  # noqa: E402
from tokgen.data.hf import HFImageDataset  # noqa: E402
from tokgen.data.transforms import square_tensor  # noqa: E402

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


@pytest.fixture(autouse=True)
def offline_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return str(tmp_path / "hf_cache")


def _save(path, colour=(10, 200, 30), size=(24, 20)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _sizes(path, cache, **kw):
    n = {}
    for s in SPLITS:
        try:
            n[s] = ImageFolderDataset(path, s, 8, cache_dir=cache, **kw)
        except ValueError as e:
            assert "is empty" in str(e)
    return n


def test_corrupt_files_are_skipped_counted_and_named(tmp_path, offline_cache):
    root = tmp_path / "imgs"
    for i in range(3):
        _save(str(root / f"good{i}.png"), (40 * i, 100, 200))
        _save(str(root / f"good{i}.jpg"), (200, 40 * i, 100))
    jpeg = (root / "good0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "notes.png").write_text("this is not a PNG")
    (root / "empty.jpg").write_bytes(b"")

    # lazy: nothing is decoded up front (but the first item); a bad file is met, skipped and recorded
    # when an item needs it, and item i then is the next readable one (i + 1, ... modulo the length)
    splits = _sizes(str(root), offline_cache)
    assert sum(len(d) for d in splits.values()) == 9  # every file, in exactly one split
    assert len(splits["train"]) >= 1
    skipped = []
    for ds in splits.values():
        paths = [ds.item_path(i) for i in range(len(ds))]
        bad = [os.path.basename(p) in ("truncated.jpg", "notes.png", "empty.jpg") for p in paths]
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, 8, 8) and item["image"].dtype == torch.float32
            assert 0 <= item["image"].min() and item["image"].max() <= 1
            assert item["label"] == -1 and item["caption"] == ""  # flat folder: no classes
            good = next((i + s) % len(ds) for s in range(len(ds)) if not bad[(i + s) % len(ds)])
            with Image.open(paths[good]) as img:
                assert torch.equal(item["image"], square_tensor(img, 8))  # the next readable one
        if any(bad):
            with pytest.warns(UserWarning, match=rf"skipped {sum(bad)} unreadable image\(s\) of {len(ds)}") as rec:
                reported = ds.report_skipped()
            assert all(os.path.basename(p) in str(rec[0].message) for p, b in zip(paths, bad) if b)
            assert [r for _, r in reported] == ds.skip_reasons and len(ds.skip_reasons) == sum(bad)
        skipped += ds.skipped
    assert sorted(os.path.basename(p) for p in skipped) == ["empty.jpg", "notes.png", "truncated.jpg"]


def test_labels_from_class_subfolders(tmp_path, offline_cache):
    for name, rgb in COLOURS.items():
        for i in range(4):
            _save(str(tmp_path / "d" / name / f"{i}.png"), rgb)
    splits = _sizes(str(tmp_path / "d"), offline_cache)
    for ds in splits.values():
        assert ds.classes == sorted(COLOURS)
        for i in range(len(ds)):
            item = ds[i]
            colour = ds.classes[item["label"]]
            channel = list(COLOURS).index(colour)
            assert item["image"][channel].mean() > 0.99 and item["image"].sum(0).mean() < 1.01
            assert f"/{colour}/" in ds.item_path(i).replace(os.sep, "/")


def test_hash_split_disjoint_deterministic_and_complete(tmp_path, offline_cache):
    for i in range(60):
        _save(str(tmp_path / "flat" / f"img{i:03d}.png"), (i * 4, 0, 0), size=(8, 8))
    paths = {s: [d.item_path(i) for i in range(len(d))] for s, d in _sizes(str(tmp_path / "flat"), offline_cache).items()}
    sets = {s: set(p) for s, p in paths.items()}
    assert sum(len(s) for s in sets.values()) == 60 and len(set.union(*sets.values())) == 60
    assert len(sets["train"]) >= 45
    again = ImageFolderDataset(str(tmp_path / "flat"), "train", 8, cache_dir=offline_cache)
    assert [again.item_path(i) for i in range(len(again))] == paths["train"]


def test_split_subfolders_are_used_as_given(tmp_path, offline_cache):
    counts = {"train": 5, "validation": 3, "test": 2}
    for split, n in counts.items():
        for i in range(n):
            _save(str(tmp_path / "s" / split / "cls" / f"{split}{i}.png"))
    for ours, theirs in zip(SPLITS, counts):
        ds = ImageFolderDataset(str(tmp_path / "s"), ours, 8, cache_dir=offline_cache)
        assert len(ds) == counts[theirs] and ds.source_split == theirs
        assert all(f"/{theirs}/" in ds.item_path(i).replace(os.sep, "/") for i in range(len(ds)))


def test_folder_errors(tmp_path, offline_cache):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataset(str(tmp_path / "nope"), cache_dir=offline_cache)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images found .*expected .*\.png"):
        ImageFolderDataset(str(tmp_path / "empty"), cache_dir=offline_cache)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="no images found"):
        ImageFolderDataset(str(tmp_path / "texts"), cache_dir=offline_cache)
    _save(str(tmp_path / "one" / "a.png"))
    with pytest.raises(ValueError, match="split"):
        ImageFolderDataset(str(tmp_path / "one"), "validation", cache_dir=offline_cache)


def test_resize_shorter_side_then_center_crop():
    # 60x30: red | green (the middle 30 px) | blue; 16 px output = the green middle only
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, :15] = COLOURS["red"]
    arr[:, 15:45] = COLOURS["green"]
    arr[:, 45:] = COLOURS["blue"]
    x = square_tensor(Image.fromarray(arr), 16)
    assert x.shape == (3, 16, 16)
    inner = x[:, :, 1:-1]  # bicubic resampling lets the outermost columns see a little red/blue
    assert torch.allclose(inner[1], torch.ones(16, 14), atol=0.02) and inner[0].max() < 0.05 and inner[2].max() < 0.05
    assert x[1].min() > 0.9 and x[0].max() < 0.15 and x[2].max() < 0.15
    tall = square_tensor(Image.fromarray(arr.transpose(1, 0, 2).copy()).convert("L"), 16)  # grey, portrait
    assert tall.shape == (3, 16, 16) and torch.equal(tall[0], tall[1])


def _digits_dict(n=30):
    import datasets

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (12, 18, 3), dtype=np.uint8)) for _ in range(n)]
    features = datasets.Features({"img": datasets.Image(), "digit": datasets.ClassLabel(names=list("0123456789")),
                                  "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(
        {"img": images, "digit": [i % 10 for i in range(n)], "text": [f"number {i % 10}" for i in range(n)]},
        features=features)


def test_hf_dataset_saved_to_disk(tmp_path, offline_cache):
    import datasets

    train = _digits_dict(40)
    test = _digits_dict(10)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
    ds = HFImageDataset(str(tmp_path / "saved"), "test", image_size=8, caption_column="text")
    assert len(ds) == 10 and ds.image_column == "img" and ds.label_column == "digit"  # auto-detected
    item = ds[3]
    assert item["image"].shape == (3, 8, 8) and item["label"] == 3 and item["caption"] == "number 3"
    # no val split in the source: it is carved out of train, disjointly
    tr, va = (HFImageDataset(str(tmp_path / "saved"), s, 8) for s in ("train", "val"))
    assert len(tr) + len(va) == 40 and not set(tr.indices) & set(va.indices)


def test_hf_parquet_file_and_columns(tmp_path, offline_cache):
    path = str(tmp_path / "digits.parquet")
    _digits_dict(20).to_parquet(path)
    ds = HFImageDataset(path, "train", 16, image_column="img", label_column="digit", cache_dir=offline_cache)
    assert ds[0]["image"].shape == (3, 16, 16) and ds[0]["label"] in range(10) and ds[0]["caption"] == ""
    with pytest.raises(ValueError, match=r"'photo' not in .*available columns are \['img', 'digit', 'text'\]"):
        HFImageDataset(path, image_column="photo", cache_dir=offline_cache)
    with pytest.raises(ValueError, match=r"'caption' not in .*\['img', 'digit', 'text'\]"):
        HFImageDataset(path, caption_column="caption", cache_dir=offline_cache)
    with pytest.raises(ValueError, match="not datasets.Image"):
        HFImageDataset(path, image_column="text", cache_dir=offline_cache)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HFImageDataset(str(tmp_path / "missing.parquet"), cache_dir=offline_cache)


def test_hf_bad_bytes_are_skipped(tmp_path):
    import datasets

    good = _digits_dict(4).cast_column("img", datasets.Image(decode=False))
    cells = list(good["img"]) + [{"bytes": b"not an image", "path": None}]
    ds = datasets.Dataset.from_dict({"img": cells}, features=datasets.Features({"img": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "bad"))
    loaded = HFImageDataset(str(tmp_path / "bad"), "train", 8)
    assert loaded.label_column is None and loaded[0]["label"] == -1
    assert [loaded[i]["image"].shape for i in range(len(loaded))] == [(3, 8, 8)] * len(loaded)
    if 4 in loaded.indices:  # row 4 fell in train: met, skipped and reported
        with pytest.warns(UserWarning, match="skipped 1 unreadable"):
            loaded.report_skipped()
        assert loaded.skipped == ["row 4"] and "UnidentifiedImageError" in loaded.skip_reasons[0]
    else:
        assert loaded.skipped == []
