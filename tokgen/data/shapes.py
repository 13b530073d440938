"""shapes: procedurally drawn images of one or two coloured objects, with captions and labels.

Every item is drawn on the fly from ``np.random.default_rng([seed, split_id, index])``, so the
same arguments give the same image in any process and no files are needed.  Each object has

- a shape: circle, square, triangle (pointing up), diamond;
- a colour: one of six well separated RGB prototypes on a black background, jittered by up to
  +-0.05 per channel per image;
- a size class: small (8 to 9 px across at 32 px) or large (12 to 13 px across), jittered
  uniformly inside its class.  The gap keeps every attribute visible at a tokenizer's 8x8 grid
  (one token per 4x4 px): a small diamond is still clearly not a small square after 4x pooling;
- a position: a cell of a 3x3 grid, jittered by up to +-0.75 px (at 32 px) inside its cell.

All geometry is given at 32 px and scales with ``image_size / 32``.  The cell centres (7.5, 16,
24.5 px at 32 px) keep a whole large object inside the image at any jitter (at least 0.25 px to
spare), and two objects always sit in cells at Chebyshev distance 2, which leaves a gap of at
least 2.5 px between them: they never touch, even after a slight blur.

Objects are rendered anti-aliased by 16 samples per pixel and box averaging, only inside each
object's bounding box (about 0.1 ms per 32x32 image).  ``render`` and ``coverage`` are public
because the shapes judge draws its prototypes with exactly the same code.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "SHAPES", "COLORS", "SIZES", "POSITIONS", "SPLITS", "DEFAULT_LENGTHS",
    "ShapesDataset", "render", "coverage", "caption_for", "parse_caption",
    "geometry", "shape_area_factor", "shape_centroid_offset",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

# RGB prototypes in [0, 1]: every channel stays in [0.10, 0.92] so the +-0.05 jitter never clips,
# and every pair is at least 0.45 apart (Euclidean), far more than jitter plus a colour shift.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.12, 0.80, 0.15),
    "blue": (0.15, 0.30, 0.92),
    "yellow": (0.92, 0.85, 0.10),
    "purple": (0.62, 0.15, 0.88),
    "cyan": (0.10, 0.82, 0.88),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

# Object extent ("across": diameter, side, base = height of the triangle, diagonal of the
# diamond) in px at 32 px, as (low, high) of the uniform jitter inside each class.
SIZES: dict[str, tuple[float, float]] = {"small": (8.0, 9.0), "large": (12.0, 13.0)}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)

# 3x3 grid cells in reading order; cell i is at row i // 3, column i % 3.
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
# How each position reads in a caption; ``parse_caption`` accepts any of at/on/in.
_POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}

SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_LENGTHS: dict[str, int] = {"train": 50_000, "val": 2_000, "test": 2_000}

_BASE = 32.0  # the geometry below is in px at this image size
_CELL_CENTERS = (7.5, 16.0, 24.5)  # px at 32 px; see the module docstring for why
_POSITION_JITTER = 0.75  # px at 32 px, uniform in [-j, j] per axis
_COLOR_JITTER = 0.05  # per channel, uniform in [-j, j]

# Pairs of cells at Chebyshev distance 2 (the centre cell has none), in reading order.
_CELL_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in range(9) for b in range(a + 1, 9)
    if max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) == 2
)


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, (int, np.integer)) or image_size < 32 or image_size % 16:
        raise ValueError(
            f"image_size must be a multiple of 16 that is at least 32 (32 is the default, 64 the "
            f"usual option), got {image_size!r}"
        )


def _check_num_objects(num_objects: int) -> None:
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {num_objects!r}")


def geometry(image_size: int) -> dict:
    """Geometry in px for ``image_size``: cell centres, size ranges, jitter, class threshold."""
    _check_image_size(image_size)
    s = image_size / _BASE
    return {
        "scale": s,
        "cell_centers": tuple(c * s for c in _CELL_CENTERS),
        "cell_edges": tuple((a + b) / 2 * s for a, b in zip(_CELL_CENTERS, _CELL_CENTERS[1:])),
        "sizes": {k: (lo * s, hi * s) for k, (lo, hi) in SIZES.items()},
        "size_threshold": (SIZES["small"][1] + SIZES["large"][0]) / 2 * s,
        "position_jitter": _POSITION_JITTER * s,
    }


def shape_area_factor(shape: str) -> float:
    """Area of ``shape`` divided by the square of its extent."""
    return {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5}[shape]


def shape_centroid_offset(shape: str) -> float:
    """Downward offset of the area centroid from the bounding-box centre, as a share of the extent.

    Only the triangle has one: its centroid lies 2/3 of the way from apex to base.
    """
    return 1.0 / 6.0 if shape == "triangle" else 0.0


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Whether the offsets ``(dx, dy)`` from an object's centre fall inside it."""
    if shape == "circle":
        return dx * dx + dy * dy <= half * half
    if shape == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= half
    if shape == "triangle":  # apex at dy = -half, base at dy = +half, base width = height
        return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape {shape!r}: expected one of {SHAPES}")


# Sample offsets inside a pixel, in 1/16 px: 16 samples with 16 distinct x, y, x+y, x-y,
# 2x+y, 2x-y, x+2y and x-2y and one sample in each quarter-pixel cell (found by a small
# backtracking search; it is the lattice y = 4x + 3 mod 17).  Every edge of the four shapes
# (slopes 0, infinite, +-1, +-2) is thus resolved to 1/16 px, not 1/4 as on a 4x4 grid.
_SAMPLE_X = (np.arange(16) + 0.5) / 16
_SAMPLE_Y = (np.array([3, 7, 11, 15, 2, 6, 10, 14, 1, 5, 9, 13, 0, 4, 8, 12]) + 0.5) / 16


def coverage(shape: str, cx, cy, size_px, height: int, width: int | None = None) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of objects of one shape, on a ``height x width`` canvas.

    ``cx, cy, size_px`` are scalars or 1-d arrays of N objects (continuous px coordinates: pixel
    ``(i, j)`` spans ``[j, j+1] x [i, i+1]``).  Returns ``(H, W)`` for scalars, else ``(N, H, W)``
    float32.  Each pixel is the mean of 16 samples (see ``_SAMPLE_X``), so the coverage sums to
    the object's area to within about 1%.
    """
    width = height if width is None else width
    scalar = np.ndim(cx) == 0
    cx, cy, size_px = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (cx, cy, size_px))
    xs = np.arange(width)[:, None] + _SAMPLE_X[None]  # (W, 16)
    ys = np.arange(height)[:, None] + _SAMPLE_Y[None]  # (H, 16)
    dx = (xs[None, None] - cx[:, None, None, None]).astype(np.float32)  # (N, 1, W, 16)
    dy = (ys[None, :, None] - cy[:, None, None, None]).astype(np.float32)  # (N, H, 1, 16)
    half = (size_px / 2)[:, None, None, None].astype(np.float32)
    inside = _inside(shape, dx, dy, half)  # (N, H, W, 16)
    cov = inside.mean(axis=-1, dtype=np.float32)  # (N, H, W)
    return cov[0] if scalar else cov


def _object_rgb(obj: dict) -> np.ndarray:
    rgb = obj.get("rgb")
    if rgb is None:
        rgb = COLORS[obj["color"]]
    return np.asarray(rgb, dtype=np.float32)


def render(objects: list[dict], image_size: int = 32) -> np.ndarray:
    """Draw ``objects`` on a black ``image_size`` canvas; returns float32 ``(3, H, W)`` in [0, 1].

    Each object dict needs ``shape``, ``cx``, ``cy``, ``size_px`` and ``rgb`` (or a ``color``
    name, which then uses the prototype colour).  Only the bounding box of each object is
    supersampled, which keeps a 32x32 image at about 0.1 ms.
    """
    image = np.zeros((3, image_size, image_size), dtype=np.float32)
    for obj in objects:
        half = obj["size_px"] / 2
        x0 = max(int(np.floor(obj["cx"] - half)) - 1, 0)
        y0 = max(int(np.floor(obj["cy"] - half)) - 1, 0)
        x1 = min(int(np.ceil(obj["cx"] + half)) + 1, image_size)
        y1 = min(int(np.ceil(obj["cy"] + half)) + 1, image_size)
        if x1 <= x0 or y1 <= y0:
            continue
        cov = coverage(obj["shape"], obj["cx"] - x0, obj["cy"] - y0, obj["size_px"], y1 - y0, x1 - x0)
        image[:, y0:y1, x0:x1] += _object_rgb(obj)[:, None, None] * cov[None]
    return np.clip(image, 0.0, 1.0, out=image)


def caption_for(objects: list[dict]) -> str:
    """Caption naming every attribute, e.g. ``"a large red circle at the top left and a small
    blue square at the bottom right"``.  Objects need ``size``, ``color``, ``shape``, ``position``."""
    parts = []
    for obj in objects:
        for key, names in (("shape", SHAPES), ("color", COLOR_NAMES), ("size", SIZE_NAMES),
                           ("position", POSITIONS)):
            if obj.get(key) not in names:
                raise ValueError(f"object {key} must be one of {names}, got {obj.get(key)!r}")
        parts.append(f"a {obj['size']} {obj['color']} {obj['shape']} "
                     f"{_POSITION_PHRASES[obj['position']]}")
    return " and ".join(parts)


_OBJECT_RE = re.compile(
    r"an? (?P<size>{}) (?P<color>{}) (?P<shape>{}) (?:at|on|in) the (?P<position>{})".format(
        "|".join(SIZE_NAMES), "|".join(COLOR_NAMES), "|".join(SHAPES),
        "|".join(sorted(POSITIONS, key=len, reverse=True)),
    )
)


def parse_caption(caption: str) -> list[dict]:
    """Inverse of ``caption_for``: a list of ``{"shape", "color", "size", "position"}`` names.

    Case, surrounding spaces and a final full stop are ignored; anything else that does not
    read as ``caption_for`` writes raises ``ValueError``.
    """
    if not isinstance(caption, str):
        raise ValueError(f"caption must be a str, got {type(caption).__name__}")
    text = " ".join(caption.strip().lower().rstrip(".").split())
    objects = []
    for part in text.split(" and "):
        m = _OBJECT_RE.fullmatch(part)
        if m is None:
            raise ValueError(
                f"cannot parse shapes caption {caption!r}: each object must read "
                f"'a <small|large> <colour> <shape> at the <position>' (colours {COLOR_NAMES}, "
                f"shapes {SHAPES}, positions {POSITIONS}), objects joined by ' and '"
            )
        objects.append({k: m.group(k) for k in ("shape", "color", "size", "position")})
    return objects


class ShapesDataset(Dataset):
    """Procedural shapes: items ``{"image": (3, H, W) float32 in [0, 1], "label", "caption"}``.

    ``label = shape_index * len(COLORS) + colour_index`` of the first object (objects are in
    reading order of their cells), so there are 24 classes named like ``"red circle"``.
    """

    def __init__(self, split: str = "train", image_size: int = 32, num_objects: int = 1,
                 seed: int = 0, length: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        _check_image_size(image_size)
        _check_num_objects(num_objects)
        if length is None:
            length = DEFAULT_LENGTHS[split]
        if not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length must be a positive int (or None for the default "
                             f"{DEFAULT_LENGTHS[split]}), got {length!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.split, self.image_size, self.num_objects = split, int(image_size), num_objects
        self.seed, self.length = int(seed), int(length)
        self._split_id = SPLITS.index(split)
        self._geom = geometry(self.image_size)

    @property
    def num_classes(self) -> int:
        return len(SHAPES) * len(COLORS)

    @property
    def class_names(self) -> list[str]:
        return [f"{c} {s}" for s in SHAPES for c in COLOR_NAMES]

    def __len__(self) -> int:
        return self.length

    def _index(self, index) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i = int(index) + (self.length if index < 0 else 0)
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for ShapesDataset of length {self.length}")
        return i

    def attributes(self, index: int) -> list[dict]:
        """The objects of item ``index``: attribute names (``shape``, ``color``, ``size``,
        ``position``) and exact values (``cx``, ``cy``, ``size_px`` in px, ``rgb``, ``cell``)."""
        rng = np.random.default_rng([self.seed, self._split_id, self._index(index)])
        g = self._geom
        if self.num_objects == 1:
            cells = (int(rng.integers(9)),)
        else:
            cells = _CELL_PAIRS[int(rng.integers(len(_CELL_PAIRS)))]
        objects = []
        for cell in cells:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
            size = SIZE_NAMES[int(rng.integers(len(SIZE_NAMES)))]
            size_px = float(rng.uniform(*g["sizes"][size]))
            jx, jy = rng.uniform(-g["position_jitter"], g["position_jitter"], size=2)
            rgb = np.clip(np.asarray(COLORS[color]) + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, 3), 0, 1)
            objects.append({
                "shape": shape, "color": color, "size": size, "position": POSITIONS[cell],
                "cx": g["cell_centers"][cell % 3] + float(jx),
                "cy": g["cell_centers"][cell // 3] + float(jy),
                "size_px": size_px, "rgb": tuple(float(v) for v in rgb), "cell": cell,
            })
        return objects

    def __getitem__(self, index: int) -> dict:
        objects = self.attributes(index)
        first = objects[0]
        label = SHAPES.index(first["shape"]) * len(COLORS) + COLOR_NAMES.index(first["color"])
        return {
            "image": torch.from_numpy(render(objects, self.image_size)),
            "label": label,
            "caption": caption_for(objects),
        }

    def __repr__(self) -> str:
        return (f"ShapesDataset(split={self.split!r}, image_size={self.image_size}, "
                f"num_objects={self.num_objects}, seed={self.seed}, length={self.length})")
