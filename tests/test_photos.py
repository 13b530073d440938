"""Crops of the photographs bundled with scikit-learn and scikit-image."""

import numpy as np
import pytest
import torch

from tokgen.data.photos import PHOTO_NAMES, SPLITS, PhotosDataset, crop_region, load_photo, split_band


def test_every_photo_loads_offline_as_rgb():
    for name in PHOTO_NAMES:
        img = load_photo(name)
        assert img.mode == "RGB" and min(img.size) >= 300, (name, img.size)


@pytest.mark.parametrize("size", [32, 64])
def test_items_shape_range_label_caption(size):
    ds = PhotosDataset("train", image_size=size, length=20)
    assert len(ds) == 20 and ds.scale == min(1.0, size / 64)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert item["caption"] == PHOTO_NAMES[item["label"]]
    assert {ds[i]["label"] for i in range(len(ds))} == set(range(len(PHOTO_NAMES)))  # photos cycle


def test_crops_are_the_photo_pixels():
    ds = PhotosDataset("val", image_size=64, scale=1.0, length=7)
    for i in range(len(ds)):
        p, y, x = ds.crop_box(i)
        ref = np.asarray(load_photo(ds.names[p]))[y:y + 64, x:x + 64].astype(np.float32) / 255
        assert np.allclose(ds[i]["image"].permute(1, 2, 0).numpy(), ref)


def test_deterministic_from_seed_split_index():
    a, b = PhotosDataset("test", 32, seed=3, length=10), PhotosDataset("test", 32, seed=3, length=10)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(10))
    c = PhotosDataset("test", 32, seed=4, length=10)
    assert [a.crop_box(i) for i in range(10)] != [c.crop_box(i) for i in range(10)]
    # item i does not depend on the dataset's length
    assert torch.equal(PhotosDataset("test", 32, seed=3, length=100)[7]["image"], a[7]["image"])


@pytest.mark.parametrize("size,scale", [(64, 1.0), (32, 0.5), (32, 1.0)])
def test_split_regions_are_disjoint_and_crops_stay_inside(size, scale):
    sets = {s: PhotosDataset(s, size, length=70, scale=scale) for s in SPLITS}
    for p, name in enumerate(PHOTO_NAMES):
        regions = [sets[s].regions[p] for s in SPLITS]  # (top, left, bottom, right)
        for r1, r2 in zip(regions, regions[1:]):
            overlap_y = min(r1[2], r2[2]) - max(r1[0], r2[0])
            overlap_x = min(r1[3], r2[3]) - max(r1[1], r2[1])
            assert overlap_y <= 0 or overlap_x <= 0, (name, r1, r2)
    for s, ds in sets.items():
        for i in range(len(ds)):
            p, y, x = ds.crop_box(i)
            top, left, bottom, right = ds.regions[p]
            assert top <= y and y + size <= bottom and left <= x and x + size <= right


def test_bands_are_fixed_in_photo_coordinates():
    assert [split_band(1000, s) for s in SPLITS] == [(0, 600), (600, 800), (800, 1000)]
    # the same photo area at every scale: the val band starts at 60 % of the longer side
    for scale in (1.0, 0.5):
        top, left, bottom, right = crop_region("china", "val", scale)
        w = round(640 * scale)
        assert abs(left - 2 - 0.6 * w) <= 1 and abs(right + 2 - 0.8 * w) <= 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        PhotosDataset("validation")
    with pytest.raises(ValueError, match="too small"):
        PhotosDataset("val", image_size=64, scale=0.5)
    with pytest.raises(ValueError, match="names"):
        PhotosDataset("train", names=["lena"])
    with pytest.raises(ValueError, match="scale"):
        PhotosDataset("train", scale=0)


def test_subset_of_photos_keeps_global_labels():
    ds = PhotosDataset("train", 32, length=4, names=["flower", "rocket"])
    assert [ds[i]["label"] for i in range(4)] == [1, 5, 1, 5]
