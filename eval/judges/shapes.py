"""The shapes judge: reads a shapes image back into its objects' attributes, with no network.

Method, and why each step holds up when a tokenizer or generator blurs, adds noise to or
shifts the colours of an image (it judges content, not sharpness):

1. Background = per-channel median of the image (objects cover at most a third of it), so an
   overall colour shift or a grey veil cancels.  Foreground = pixels whose largest channel is
   above 40% of the image's bright level (at least 0.15), grouped into connected components;
   components smaller than half a small triangle or larger than 1.6 large squares are not
   objects.  The threshold only finds objects, it measures nothing, so blur cannot bias it.
2. Colour = per-channel median of the brightest quarter of the component (the pixels fully
   inside the object, which blur leaves intact), then the nearest palette prototype.
3. Soft occupancy = each pixel's projection onto that colour, ``(x - bg) . c / |c|^2``, so a
   pixel half covered by the object reads 0.5 whatever the colour; the mean occupancy of the
   far background is subtracted to cancel the bias of clipped noise.  Every pixel goes to the
   nearest object, and only pixels within 3 px (at 32 px) of it count.  Blur moves occupancy
   around but keeps its sum (the area) and its centroid, and zero-mean noise cancels in both.
4. For each shape hypothesis the area gives the extent (area = factor * extent^2), the centroid
   gives the centre (the triangle's centroid sits extent/6 below its box centre), and
   ``tokgen.data.shapes.coverage`` draws that prototype with the dataset's own renderer, at a
   few blur levels.  The shape is the hypothesis with the smallest squared error to the
   occupancy map: matching whole prototypes uses every pixel of the object, so it does not
   depend on any edge being sharp.
5. Size class = the fitted extent against the midpoint between the classes (10.5 px at 32 px,
   1.5 px away from either class); position = the fitted centre's 3x3 cell (cell edges are at
   least 3.5 px from any object centre).
6. Anything that fits no prototype well (relative error above ``max_rel_error``), is not one
   colour (``max_color_residual``), is too small or too large, is "no object": blank, white and
   noise images read as ``[]`` and fail their captions; nothing crashes.  Objects beyond the
   expected number are reported too (up to two more), so an image with too many fails
   ``found``.  A smooth blob of one colour does read as the nearest shape: it is one.

Run ``python -m tokgen.eval.judges.shapes --n 2000`` to measure accuracy on clean and degraded test
images and the judging speed (JSON on stdout).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch
from scipy import ndimage

from tokgen.data.shapes import (
    COLOR_NAMES, COLORS, POSITIONS, SHAPES, ShapesDataset, coverage, geometry, parse_caption,
    shape_area_factor, shape_centroid_offset,
)

__all__ = ["ShapesJudge", "degrade", "measure"]

_PALETTE = np.asarray([COLORS[c] for c in COLOR_NAMES], dtype=np.float32)  # (6, 3)
_AREA_FACTORS = np.asarray([shape_area_factor(s) for s in SHAPES])  # (4,)
_CENTROID_OFFSETS = np.asarray([shape_centroid_offset(s) for s in SHAPES])  # (4,)
_ATTRIBUTES = ("shape", "color", "size", "position")


class ShapesJudge:
    """Reads shapes images into attributes; ``score`` compares them with captions.

    ``image_size`` and ``num_objects`` must match the data (``ShapesDataset`` arguments).
    """

    condition = "caption"  # what score() compares images with (CONTRIBUTING.md, Judges)
    headline = "caption_match"  # the one figure of score() that sums a sample set up (a report's quality axis)

    @staticmethod
    def targets(captions, labels) -> list[str]:
        """What score() compares images with, out of their items' captions and labels."""
        return list(captions)

    def __init__(self, image_size: int = 32, num_objects: int = 1, max_rel_error: float = 0.35,
                 max_color_residual: float = 0.12,
                 blur_levels: tuple[float, ...] = (0.0, 0.35, 0.7, 1.05)):
        self.geom = geometry(image_size)  # validates image_size
        if num_objects not in (1, 2):
            raise ValueError(f"num_objects must be 1 or 2, got {num_objects!r}")
        self.image_size, self.num_objects = int(image_size), num_objects
        self.max_rel_error = max_rel_error  # E / area above this is not an object
        self.max_color_residual = max_color_residual  # colour energy one colour cannot explain
        s = self.geom["scale"]
        self.blur_levels = tuple(b * s for b in blur_levels)  # prototype blurs tried, in px
        self.window = int(round(20 * s))  # side of the fitting window: a large object + blur
        lo_small, hi_large = self.geom["sizes"]["small"][0], self.geom["sizes"]["large"][1]
        self.min_area = 0.5 * 0.5 * lo_small ** 2  # half the smallest triangle
        self.max_area = 1.6 * hi_large ** 2  # 1.6 large squares
        self.support_radius = max(2, int(round(3 * s)))  # occupancy counted this near an object
        self.dilate = max(2, int(round(2 * s)))  # far background starts this far from objects

    # ----------------------------------------------------------------------------- input
    def _check(self, images) -> np.ndarray:
        if not isinstance(images, (torch.Tensor, np.ndarray)):
            raise ValueError(f"images must be a tensor (B, 3, H, W), got {type(images).__name__}")
        shape = tuple(images.shape)
        S = self.image_size
        if len(shape) != 4 or shape[1] != 3 or shape[2:] != (S, S):
            hint = ""
            if len(shape) == 4 and shape[1] == 1:
                hint = ": convert grey images to RGB with x.repeat(1, 3, 1, 1)"
            elif len(shape) == 3:
                hint = ": add the batch dimension with x.unsqueeze(0)"
            elif len(shape) == 4 and shape[2:] != (S, S):
                hint = f": build ShapesJudge(image_size={shape[-1]}) or resize the images"
            raise ValueError(f"expected images of shape (B, 3, {S}, {S}), got {shape}{hint}")
        x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) \
            else np.asarray(images, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ValueError("images contain NaN or inf: check the model that produced them")
        if x.size and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
            raise ValueError(f"expected images in [0, 1], got values in [{x.min():.3f}, "
                             f"{x.max():.3f}]: map [-1, 1] outputs with (x + 1) / 2 and uint8 images with "
                             f"x / 255, then clamp(0, 1)")
        return x

    # ----------------------------------------------------------------------------- analysis
    def _components(self, img: np.ndarray):
        """Background-subtracted image (3, H, W), its intensity (H, W), object masks by mass."""
        bg = np.median(img.reshape(3, -1), axis=1)  # (3,)
        x = img - bg[:, None, None]  # (3, H, W)
        inten = x.max(axis=0)  # (H, W)
        thr = max(0.15, 0.4 * float(np.percentile(inten, 99.5)))
        labels, n = ndimage.label(inten > thr, structure=np.ones((3, 3)))
        if n == 0:
            return x, inten, []
        idx = np.arange(1, n + 1)
        area = ndimage.sum_labels(np.ones_like(inten), labels, idx)
        mass = ndimage.sum_labels(inten, labels, idx)
        ok = (area >= self.min_area) & (area <= self.max_area)
        # Extra objects are kept (up to two more than expected), so that an image showing too
        # many objects fails ``found`` instead of passing on its largest ones.
        order = [int(i) for i in idx[np.argsort(-mass)] if ok[i - 1]][: self.num_objects + 2]
        return x, inten, [labels == i for i in order]

    def _occupancies(self, x, inten, masks):
        """Per object: colour estimate, colour residual, background-corrected occupancy (H, W)."""
        lab = np.zeros(masks[0].shape, np.int32)
        for k, m in enumerate(masks):
            lab[m] = k + 1
        # Distance to, and owner of, the nearest object pixel: every pixel goes to the nearest
        # object, and only pixels near it count for it (far pixels add noise to its area and
        # centroid); the far background measures the noise bias.
        dist, (iy, ix) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
        owner = lab[iy, ix]
        far = dist > self.dilate
        out = []
        for k, m in enumerate(masks):
            vals = inten[m]
            top = max(3, int(round(0.25 * vals.size)))
            core = np.argpartition(-vals, top - 1)[:top]
            color = np.median(x[:, m][:, core], axis=1)  # (3,)
            norm2 = float(color @ color)
            if norm2 < 0.05:  # too dark to be an object
                continue
            occ = np.clip(np.einsum("chw,c->hw", x, color) / norm2, -1.0, 2.0)
            # An object is one colour times its coverage: what the colour leaves unexplained
            # inside the object (share of its energy) is noise for a real object, large for a
            # smooth field of changing colour.
            xm = x[:, m]  # (3, n)
            spill = float(((xm - color[:, None] * occ[m][None]) ** 2).sum() / (xm ** 2).sum())
            if far.any():
                occ = occ - occ[far].mean()
            support = (owner == k + 1) & (dist <= self.support_radius)
            out.append((color, spill, np.where(support, occ, 0.0)))
        return out

    def _window(self, occ: np.ndarray):
        """Cut a window around the occupancy mass; returns (window, x0, y0), or None if empty."""
        S, W = self.image_size, self.window
        pos = np.clip(occ, 0, None)
        tot = pos.sum()
        if tot < 1e-6:
            return None
        ys, xs = np.indices(occ.shape)
        cy, cx = (pos * ys).sum() / tot + 0.5, (pos * xs).sum() / tot + 0.5
        x0 = int(np.clip(round(cx - W / 2), 0, S - W))
        y0 = int(np.clip(round(cy - W / 2), 0, S - W))
        return occ[y0:y0 + W, x0:x0 + W], x0, y0

    def _fit(self, wins: np.ndarray):
        """Per window (N, W, W): area, centroid, extent and box centre per hypothesis (N, 4),
        and each shape prototype's squared error at its best blur level (N, 4)."""
        N, W = wins.shape[0], self.window
        area = np.maximum(wins.sum(axis=(1, 2)), 1e-3)  # (N,)
        grid = np.arange(W) + 0.5
        mx = (wins.sum(axis=1) * grid).sum(axis=1) / area  # (N,) px in window
        my = (wins.sum(axis=2) * grid).sum(axis=1) / area
        ext = np.sqrt(area[:, None] / _AREA_FACTORS[None])  # (N, 4) extent per hypothesis
        cyk = my[:, None] - _CENTROID_OFFSETS[None] * ext  # (N, 4) box centre per hypothesis
        errs = np.empty((N, len(SHAPES)))
        for k, shape in enumerate(SHAPES):
            proto = coverage(shape, mx, cyk[:, k], ext[:, k], W, W)  # (N, W, W)
            best = np.full(N, np.inf)
            for sig in self.blur_levels:
                p = ndimage.gaussian_filter(proto, (0, sig, sig), mode="constant") if sig else proto
                best = np.minimum(best, ((wins - p) ** 2).sum(axis=(1, 2)))
            errs[:, k] = best
        return area, mx, ext, cyk, errs

    def _analyse(self, x: np.ndarray) -> list[list[dict]]:
        """Objects per image, with names, continuous estimates and shape errors."""
        per_image, wins, meta = [[] for _ in range(len(x))], [], []
        for b, img in enumerate(x):
            xb, inten, masks = self._components(img)
            if not masks:
                continue
            for color, spill, occ in self._occupancies(xb, inten, masks):
                cut = self._window(occ)
                if cut is not None:
                    wins.append(cut[0])
                    meta.append((b, color, spill, cut[1], cut[2]))
        if not wins:
            return per_image
        wins = np.stack(wins).astype(np.float32)  # (N, W, W)
        chunk = 256  # bounds the supersampled prototypes' memory
        fits = [self._fit(wins[i:i + chunk]) for i in range(0, len(wins), chunk)]
        area, mx, ext, cyk, errs = (np.concatenate(f) for f in zip(*fits))
        g = self.geom
        for i, (b, color, spill, x0, y0) in enumerate(meta):
            k = int(np.argmin(errs[i]))
            rel = errs[i] / area[i]
            if rel[k] > self.max_rel_error or spill > self.max_color_residual \
                    or area[i] < self.min_area:
                continue
            cx, cy, d = x0 + mx[i], y0 + cyk[i, k], float(ext[i, k])
            col, row = (int(np.searchsorted(g["cell_edges"], v)) for v in (cx, cy))
            per_image[b].append({
                "shape": SHAPES[k],
                "color": COLOR_NAMES[int(np.argmin(((_PALETTE - color) ** 2).sum(axis=1)))],
                "size": "small" if d < g["size_threshold"] else "large",
                "position": POSITIONS[row * 3 + col],
                "cx": float(cx), "cy": float(cy), "size_px": d,
                "rgb": tuple(float(v) for v in color), "rel_errors": tuple(float(v) for v in rel),
                "color_residual": spill,
            })
        for objs in per_image:  # reading order, like the captions
            objs.sort(key=lambda o: (POSITIONS.index(o["position"]), o["cx"]))
        return per_image

    # ----------------------------------------------------------------------------- API
    def read(self, images) -> list[list[dict]]:
        """Per image, the objects found in reading order: dicts with ``shape``, ``color``,
        ``size``, ``position`` names, plus the estimates ``cx``, ``cy``, ``size_px`` (px),
        ``rgb``, ``rel_errors`` (each shape prototype's squared error / area) and
        ``color_residual``.  ``[]``: no object found."""
        return self._analyse(self._check(images))

    def score(self, images, captions) -> dict[str, float]:
        """Accuracies in [0, 1] of ``images`` against their ``captions``.

        ``shape``/``color``/``size``/``position``: share of captioned objects whose matched
        object has that attribute right (found objects are matched to captioned ones by the
        assignment that agrees on most attributes; an object not found is wrong on all four).
        ``found``: share of images with exactly ``num_objects`` objects found.
        ``caption_match``: share of images whose objects match the caption entirely.
        """
        x = self._check(images)
        if isinstance(captions, str) or len(captions) != len(x):
            raise ValueError(f"expected a list of {len(x)} captions (one per image), "
                             f"got {type(captions).__name__} of length {len(captions)}")
        wanted = [parse_caption(c) for c in captions]
        for c, w in zip(captions, wanted):
            if len(w) != self.num_objects:
                raise ValueError(f"caption {c!r} names {len(w)} objects but the judge reads "
                                 f"{self.num_objects}: build ShapesJudge(num_objects={len(w)})")
        found = self._analyse(x)
        right = {a: 0 for a in _ATTRIBUTES}
        n_found = n_match = 0
        for want, got in zip(wanted, found):
            n_found += len(got) == len(want)
            hits = _best_assignment(want, got)  # (len(want), 4) booleans
            for j, a in enumerate(_ATTRIBUTES):
                right[a] += int(hits[:, j].sum())
            n_match += len(got) == len(want) and bool(hits.all())
        n_obj = max(1, sum(len(w) for w in wanted))
        n_img = max(1, len(x))
        out = {a: right[a] / n_obj for a in _ATTRIBUTES}
        out.update(found=n_found / n_img, caption_match=n_match / n_img)
        return out

    @property
    def feature_dim(self) -> int:
        return 11 * self.num_objects + 48

    def features(self, images) -> torch.Tensor:
        """Feature vector per image for Frechet distances, ``(B, 11 * num_objects + 48)``.

        Per object slot (reading order): found flag, the four shape-prototype errors relative
        to the area, the colour (3), the centre and the extent relative to the image size;
        slots with no object are found = 0, errors = 1, the rest 0.  Then a 4x4 colour
        thumbnail (48).  Deterministic; every entry is finite.
        """
        x = self._check(images)
        objs = self._analyse(x)
        S = float(self.image_size)
        slots = np.zeros((len(x), self.num_objects, 11), dtype=np.float32)
        slots[:, :, 1:5] = 1.0
        for b, found in enumerate(objs):
            for j, o in enumerate(found[: self.num_objects]):
                slots[b, j] = [1.0, *np.minimum(o["rel_errors"], 10.0), *o["rgb"],
                               o["cx"] / S, o["cy"] / S, o["size_px"] / S]
        q = self.image_size // 4
        thumb = x.reshape(len(x), 3, 4, q, 4, q).mean(axis=(3, 5)).reshape(len(x), 48)
        feats = np.concatenate([slots.reshape(len(x), -1), thumb], axis=1)
        return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))


def _best_assignment(want: list[dict], got: list[dict]) -> np.ndarray:
    """(len(want), 4) booleans: attribute hits under the one-to-one assignment of found objects
    to captioned ones with the most hits (a captioned object left without one misses all)."""
    best = np.zeros((len(want), len(_ATTRIBUTES)), dtype=bool)
    slots = list(range(len(got))) + [None] * len(want)  # None: no found object for it
    for cand in set(itertools.permutations(slots, len(want))):
        hits = np.zeros_like(best)
        for i, j in enumerate(cand):
            if j is not None:
                hits[i] = [want[i][a] == got[j][a] for a in _ATTRIBUTES]
        if hits.sum() > best.sum():
            best = hits
    return best


def degrade(images: torch.Tensor, blur_sigma: float = 0.7, noise_sigma: float = 0.05,
            color_shift: float = 0.05, generator: torch.Generator | None = None) -> torch.Tensor:
    """Degrade images the way a tokenizer does: Gaussian blur (``blur_sigma`` px, edges
    replicated), a per-image per-channel colour shift uniform in ``[-color_shift, color_shift]``
    added to the whole image, Gaussian noise of ``noise_sigma``, then clip to [0, 1]."""
    x = images.float()
    if blur_sigma > 0:
        r = max(1, int(np.ceil(3 * blur_sigma)))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        k = torch.exp(-0.5 * (t / blur_sigma) ** 2)
        k = (k / k.sum()).to(x.device)
        B, C, H, W = x.shape
        y = torch.nn.functional.pad(x.reshape(B * C, 1, H, W), (r, r, r, r), mode="replicate")
        y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1))
        y = torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1))
        x = y.reshape(B, C, H, W)
    if color_shift > 0:
        shift = torch.rand(x.shape[0], 3, 1, 1, generator=generator) * 2 - 1
        x = x + color_shift * shift.to(x.device)
    if noise_sigma > 0:
        x = x + noise_sigma * torch.randn(x.shape, generator=generator).to(x.device)
    return x.clamp(0, 1)


def measure(n: int = 2000, image_size: int = 32, num_objects: int = 1, seed: int = 0,
            blur_sigma: float = 0.7, noise_sigma: float = 0.05, color_shift: float = 0.05) -> dict:
    """Judge ``n`` test images clean and degraded; returns the scores and the judging speed."""
    ds = ShapesDataset("test", image_size=image_size, num_objects=num_objects, length=n)
    items = [ds[i] for i in range(n)]
    images = torch.stack([it["image"] for it in items])
    captions = [it["caption"] for it in items]
    judge = ShapesJudge(image_size, num_objects)
    t0 = time.perf_counter()
    clean = judge.score(images, captions)
    dt = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    noisy = degrade(images, blur_sigma, noise_sigma, color_shift, generator=gen)
    degraded = judge.score(noisy, captions)
    return {"n": n, "image_size": image_size, "num_objects": num_objects,
            "degradation": {"blur_sigma": blur_sigma, "noise_sigma": noise_sigma,
                            "color_shift": color_shift},
            "clean": clean, "degraded": degraded,
            "judge_seconds": round(dt, 3), "images_per_second": round(n / dt, 1)}


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    sizes = [args.image_size] if args.image_size else [32, 64]
    counts = [args.num_objects] if args.num_objects else [1, 2]
    for objs in counts:
        for size in sizes:
            print(json.dumps(measure(args.n, size, objs, args.seed, args.blur, args.noise,
                                     args.shift)), flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Measure the shapes judge on clean and degraded "
                                "test images (one JSON line per configuration).")
    p.add_argument("--n", type=int, default=2000, help="test images per configuration")
    p.add_argument("--image-size", type=int, default=None, help="default: 32 and 64")
    p.add_argument("--num-objects", type=int, default=None, help="default: 1 and 2")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradation")
    p.add_argument("--blur", type=float, default=0.7, help="Gaussian blur sigma in px")
    p.add_argument("--noise", type=float, default=0.05, help="Gaussian noise sigma")
    p.add_argument("--shift", type=float, default=0.05, help="max colour shift per channel")
    main(p.parse_args())
