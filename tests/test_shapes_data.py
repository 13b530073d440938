"""The procedural shapes dataset: determinism, disjoint splits, captions, geometry, validation."""

import hashlib
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from tokgen.data.shapes import (
    COLORS, POSITIONS, SHAPES, SIZES, ShapesDataset, caption_for, coverage, geometry,
    parse_caption, render, shape_area_factor,
)

NAMES = ("shape", "color", "size", "position")


def _hash(image: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("size,objects", [(32, 1), (64, 1), (32, 2), (48, 2)])
def test_items_have_the_contract_types_and_range(size, objects):
    ds = ShapesDataset("val", image_size=size, num_objects=objects)
    assert len(ds) == 2_000 and ds.num_classes == 24 and len(ds.class_names) == 24
    for i in (0, 7, len(ds) - 1):
        item = ds[i]
        assert set(item) == {"image", "label", "caption"}
        assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
        assert item["image"].min() >= 0 and item["image"].max() <= 1
        assert isinstance(item["label"], int) and 0 <= item["label"] < 24
        assert len(parse_caption(item["caption"])) == objects
    assert torch.equal(ds[-1]["image"], ds[len(ds) - 1]["image"])


def test_same_arguments_give_the_same_item_and_seeds_differ():
    a, b = ShapesDataset("train", seed=3), ShapesDataset("train", seed=3)
    other = ShapesDataset("train", seed=4)
    for i in (0, 1, 999, 49_999):
        assert torch.equal(a[i]["image"], b[i]["image"]) and a[i]["caption"] == b[i]["caption"]
    assert sum(not torch.equal(a[i]["image"], other[i]["image"]) for i in range(50)) == 50


def test_items_are_the_same_in_another_process():
    code = ("import hashlib; from tokgen.data.shapes import ShapesDataset; "
            "ds = ShapesDataset('test', image_size=64, num_objects=2, seed=5); "
            "print(' '.join(hashlib.sha1(ds[i]['image'].numpy().tobytes()).hexdigest() for i in range(5)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ds = ShapesDataset("test", image_size=64, num_objects=2, seed=5)
    assert out.stdout.split() == [_hash(ds[i]["image"]) for i in range(5)]


@pytest.mark.parametrize("objects", [1, 2])
def test_splits_never_share_an_image(objects):
    hashes = {s: {_hash(ShapesDataset(s, num_objects=objects)[i]["image"]) for i in range(n)}
              for s, n in (("train", 3000), ("val", 1500), ("test", 1500))}
    assert [len(h) for h in hashes.values()] == [3000, 1500, 1500]  # no repeats inside a split
    for x, y in itertools.combinations(hashes.values(), 2):
        assert not (x & y)


@pytest.mark.parametrize("objects", [1, 2])
def test_caption_label_and_attributes_agree(objects):
    ds = ShapesDataset("train", num_objects=objects)
    n_colors = len(COLORS)
    for i in range(500):
        item, attrs = ds[i], ds.attributes(i)
        names = [{k: a[k] for k in NAMES} for a in attrs]
        assert parse_caption(item["caption"]) == names
        assert caption_for(names) == item["caption"]
        first = attrs[0]
        assert item["label"] == SHAPES.index(first["shape"]) * n_colors + list(COLORS).index(first["color"])
        assert ds.class_names[item["label"]] == f"{first['color']} {first['shape']}"
        assert [a["cell"] for a in attrs] == sorted(a["cell"] for a in attrs)  # reading order


def test_every_attribute_value_occurs_and_jitter_stays_in_range():
    ds = ShapesDataset("train", image_size=64)
    g = geometry(64)
    attrs = [ds.attributes(i)[0] for i in range(2000)]
    for key, values in (("shape", SHAPES), ("color", COLORS), ("size", SIZES), ("position", POSITIONS)):
        assert {a[key] for a in attrs} == set(values)
    for a in attrs:
        lo, hi = g["sizes"][a["size"]]
        assert lo <= a["size_px"] <= hi
        assert np.all(np.abs(np.subtract(a["rgb"], COLORS[a["color"]])) <= 0.05 + 1e-9)
        cell = POSITIONS.index(a["position"])
        assert abs(a["cx"] - g["cell_centers"][cell % 3]) <= g["position_jitter"]
        assert abs(a["cy"] - g["cell_centers"][cell // 3]) <= g["position_jitter"]


def test_one_caption_many_different_images():
    ds = ShapesDataset("train")
    by_caption = {}
    for i in range(3000):
        by_caption.setdefault(ds[i]["caption"], []).append(i)
    caption, idx = max(by_caption.items(), key=lambda kv: len(kv[1]))
    assert len(idx) >= 5
    images = [ds[i]["image"] for i in idx]
    assert all(not torch.equal(x, y) for x, y in itertools.combinations(images, 2))
    assert all(ds[i]["caption"] == caption for i in idx)
    sizes = {round(ds.attributes(i)[0]["size_px"], 6) for i in idx}
    assert len(sizes) == len(idx)


@pytest.mark.parametrize("size,objects", [(32, 1), (32, 2), (64, 2)])
def test_objects_stay_inside_and_never_touch(size, objects):
    ds = ShapesDataset("test", image_size=size, num_objects=objects)
    s = size / 32
    for i in range(1000):
        attrs = ds.attributes(i)
        for a in attrs:
            half = a["size_px"] / 2
            margin = half + 0.25 * s  # the docstring's promise: 0.25 px to spare at 32 px
            assert margin - 1e-9 <= a["cx"] <= size - margin + 1e-9
            assert margin - 1e-9 <= a["cy"] <= size - margin + 1e-9
        if objects == 2:
            a, b = attrs
            ra, ca, rb, cb = a["cell"] // 3, a["cell"] % 3, b["cell"] // 3, b["cell"] % 3
            assert max(abs(ra - rb), abs(ca - cb)) == 2 and 4 not in (a["cell"], b["cell"])
            gap = max(abs(a["cx"] - b["cx"]), abs(a["cy"] - b["cy"])) - (a["size_px"] + b["size_px"]) / 2
            assert gap >= 2.5 * s - 1e-9


@pytest.mark.parametrize("shape", SHAPES)
def test_antialiased_coverage_has_the_shape_area_and_renders_items(shape):
    errors = []
    for d in np.linspace(8, 26, 40):  # every object size at 32 and 64 px
        cov = coverage(shape, 20.37 + d / 100, 19.81 - d / 70, d, 40)
        assert 0 <= cov.min() and cov.max() <= 1
        errors.append(cov.sum() / (shape_area_factor(shape) * d * d) - 1)
    assert np.abs(errors).max() < 0.02 and np.abs(errors).mean() < 0.005
    batch = coverage(shape, np.array([10.2, 20.6]), np.array([11.1, 19.9]), np.array([8.5, 12.5]), 32)
    assert batch.shape == (2, 32, 32)
    assert np.array_equal(batch[1], coverage(shape, 20.6, 19.9, 12.5, 32))
    ds = ShapesDataset("val", num_objects=2)
    for i in range(20):
        assert torch.equal(torch.from_numpy(render(ds.attributes(i), 32)), ds[i]["image"])


def test_colours_are_well_separated():
    rgb = np.array(list(COLORS.values()))
    dists = [np.linalg.norm(x - y) for x, y in itertools.combinations(rgb, 2)]
    assert min(dists) > 0.45 and rgb.min() >= 0.05 and rgb.max() <= 0.95  # jitter never clips


def test_parse_caption_reads_variants_and_rejects_garbage():
    two = "A large red circle at the top left and a small blue square at the bottom right."
    assert parse_caption(two) == [
        {"shape": "circle", "color": "red", "size": "large", "position": "top left"},
        {"shape": "square", "color": "blue", "size": "small", "position": "bottom right"},
    ]
    assert parse_caption("a small cyan diamond in the center")[0]["position"] == "center"
    assert parse_caption("a small cyan diamond on the left")[0]["position"] == "left"
    for bad in ("", "a huge red circle at the top", "a red circle at the top",
                "a small red hexagon at the top", "a small red circle somewhere",
                "a small red circle at the top and"):
        with pytest.raises(ValueError, match="cannot parse"):
            parse_caption(bad)
    with pytest.raises(ValueError):
        caption_for([{"shape": "circle", "color": "pink", "size": "small", "position": "top"}])


def test_bad_arguments_raise_with_the_fix():
    with pytest.raises(ValueError, match="split must be one of"):
        ShapesDataset("training")
    for size in (16, 40, 33, 31):
        with pytest.raises(ValueError, match="multiple of 16"):
            ShapesDataset(image_size=size)
    with pytest.raises(ValueError, match="num_objects must be 1 or 2"):
        ShapesDataset(num_objects=3)
    with pytest.raises(ValueError, match="length"):
        ShapesDataset(length=0)
    ds = ShapesDataset("val", length=10)
    assert len(ds) == 10
    for i in (10, -11, 10**6):
        with pytest.raises(IndexError):
            ds[i]
