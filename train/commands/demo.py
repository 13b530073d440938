"""`tokgen demo`: the main job on the embedded data, offline, on a laptop CPU.

Today it shows the embedded data, measures the judges that referee every quality figure, and
trains the shapes tokenizer from scratch and judges its reconstructions; each later stage of the
suite (generators, comparison) adds its stage here.  The result is a report folder with
`report.md`, image grids and `results.json`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

HELP = "run the main job on the embedded data and write a report (report.md, grids, results.json)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokgen demo", description=HELP)
    p.add_argument("--out", default="tokgen-out/demo", help="report folder")
    p.add_argument("--judge-n", type=int, default=500, help="test images per judge measurement")
    p.add_argument("--tokenizer-minutes", type=float, default=5.0,
                   help="wall-time budget for training the shapes tokenizer (0 = skip that stage)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16"),
                   help="tokenizer training precision (bf16 is faster on CPU but hurt the codebook; README)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _stage(title: str, number: int, total: int) -> float:
    print(f"[demo {number}/{total}] {title}", flush=True)
    return time.perf_counter()


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from eval.judges import digits as digits_judge
    from eval.judges import shapes as shapes_judge
    from eval.visualize import save_captioned_grid
    from train.data import build_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    total = 3 if args.tokenizer_minutes > 0 else 2

    t = _stage("embedded data: writing captioned grids", 1, total)
    grids = {}
    for name in ("shapes", "digits", "photos"):
        ds = build_dataset(name, "train")
        items = [ds[i] for i in range(16)]
        images = torch.stack([it["image"] for it in items])
        titles = [it["caption"] or str(it["label"]) for it in items]
        grids[name] = save_captioned_grid(images, titles, out / f"data-{name}.png", ncol=8,
                                          suptitle=f"{name}: {len(ds)} training items")
    results["data_seconds"] = round(time.perf_counter() - t, 1)

    t = _stage(f"judges: shapes on {args.judge_n} test images (clean, degraded), digits", 2, total)
    results["shapes_judge"] = shapes_judge.measure(args.judge_n, 32, 1, args.seed)
    results["digits_judge"] = digits_judge.measure(args.seed)
    results["judge_seconds"] = round(time.perf_counter() - t, 1)

    if args.tokenizer_minutes > 0:
        _stage(f"tokenizer: training shapes-tiny for {args.tokenizer_minutes:g} min, then judging "
               "its reconstructions of 2,000 test images", 3, total)
        from . import train_tokenizer

        run = out / "tokenizer-run"
        shutil.rmtree(run, ignore_errors=True)  # a demo always starts from scratch
        train_tokenizer.main(["--preset", "shapes-tiny", "--max-minutes", str(args.tokenizer_minutes),
                              "--mixed-precision", args.mixed_precision, "--out-dir", str(run),
                              "--seed", str(args.seed), "--resume", "none"])
        results["tokenizer"] = json.loads((run / "eval.json").read_text())
        grids["tokenizer reconstructions (top: test images, bottom: reconstructions)"] = _last_png(run / "samples")

    (out / "results.json").write_text(json.dumps(results, indent=2))
    _write_report(out, results, grids)
    print(f"[demo] report: {out / 'report.md'}")
    return 0


def _last_png(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[-1]


def _write_report(out: Path, results: dict, grids: dict) -> None:
    s = results["shapes_judge"]
    attrs = ("shape", "color", "size", "position", "caption_match")
    lines = ["# tokgen demo", "", "## The judges", "",
             f"Shapes judge on {s['n']} real test images (32 px, one object); degraded = Gaussian blur "
             f"sigma {s['degradation']['blur_sigma']}, noise {s['degradation']['noise_sigma']}, "
             f"colour shift {s['degradation']['color_shift']}.", "",
             "| images | " + " | ".join(attrs) + " |", "|---" * (len(attrs) + 1) + "|"]
    for kind in ("clean", "degraded"):
        lines.append(f"| {kind} | " + " | ".join(f"{100 * s[kind][a]:.1f}%" for a in attrs) + " |")
    d = results["digits_judge"]["accuracy"]
    lines += ["", "Digits judge, test accuracy: "
              + ", ".join(f"{size} px {100 * acc['test']:.1f}%" for size, acc in d.items()), "",
              ""]
    if "tokenizer" in results:
        t = results["tokenizer"]
        test = t["test"]
        lines += ["## The tokenizer", "",
                  f"`shapes-tiny` (8x8 tokens, codebook {test['codebook_size']}) trained from scratch for "
                  f"{t['minutes']:.1f} min ({t['steps']} steps); {test['n']} test images reconstructed:", "",
                  "| PSNR | SSIM | codebook usage | perplexity | judge: caption match | shape | colour | size | position |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| {test['psnr']:.2f} dB | {test['ssim']:.3f} | {100 * test['all_scales']['usage']:.1f}% | "
                  f"{test['all_scales']['perplexity']:.1f} | "
                  + " | ".join(f"{100 * test['judge'][a]:.1f}%" for a in ("caption_match", "shape", "color", "size", "position"))
                  + " |", ""]
    lines += ["## Images", ""]
    lines += [f"**{name}**\n\n![{name}]({path.relative_to(out)})\n" for name, path in grids.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
