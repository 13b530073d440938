"""`tokgen compare`: the report writer on a synthetic results dict (best per column, files, JSON
round trip), one tiny end-to-end comparison (train, reload, sample, judge, measure, report) and
the errors bad inputs must give."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tokgen.eval.compare import (distribution_metrics, judge_and_features, load_results, markdown_table, table,
                          write_report)
from tokgen.tokenizers_vq import VQTokenizer, get_preset
from tokgen.train.cli import main as tokgen


# ---------------------------------------------------------------------------- the report writer

def row(label, steps, quality, fd, seconds, nfe, nll=None, kind="generator", nll_kind=None, **extra):
    return {"kind": kind, "label": label, "family": label if kind == "generator" else None, "steps": steps,
            "nfe_per_image": nfe, "seconds_per_image": seconds,
            "judge": {"caption_match": quality, "shape": min(1.0, quality + 0.05), "color": 0.9},
            "fd": fd, "kid": fd / 100, "kid_std": 0.001, "precision": 0.5, "recall": quality / 2,
            "nll_bits": nll, "nll_kind": nll_kind, "train_steps": 100 if kind == "generator" else None, **extra}


def synthetic_results() -> dict:
    return {
        "settings": {"families": ["maskgit", "d3pm", "ar"], "dataset": "shapes", "n": 200, "nll_n": 100,
                     "budget": {"max_steps": 500, "max_minutes": 2.0}, "seed": 0, "command": "tokgen compare ...",
                     "sampling": {"cfg_scale": 3.0, "temperature": 1.0, "top_k": None}},
        "quality_key": "caption_match",
        "rows": [
            row("maskgit", 4, 0.80, 9.0, 0.004, 8, grid="grid-maskgit-4.png"),
            row("maskgit", 8, 0.95, 2.0, 0.008, 16, grid="grid-maskgit-8.png"),
            row("d3pm", 16, 0.70, 1.5, 0.030, 32, nll=3.2, nll_kind="elbo"),
            row("ar", 130, 0.60, float("nan"), 0.020, 260, nll=3.5, nll_kind="exact"),
            row("real vs real (floor)", None, 1.0, 0.1, None, None, kind="floor"),
            row("tokenizer ceiling", None, 0.99, 0.5, None, None, kind="ceiling"),
        ],
        "training": {"maskgit": {"steps": 100, "minutes": 2.0, "stopped": "max_minutes", "logs": {"loss": 2.5}}},
        "notes": ["a note"],
    }


def cells_of(results: dict, header: str) -> list[str]:
    head, *body = table(results)
    return [r[head.index(header)] for r in body]


def test_best_value_per_column_is_bold_for_higher_and_lower_is_better():
    results = synthetic_results()
    col = lambda h: cells_of(results, h)   # noqa: E731
    # higher is better: maskgit 8 steps; the floor (1.0) and ceiling rows are never ranked
    assert col("caption match") == ["80.0%", "**95.0%**", "70.0%", "60.0%", "*100.0%*", "*99.0%*"]
    # lower is better: d3pm's FD; a NaN is "n/a" and never best
    assert col("FD") == ["9.00", "2.00", "**1.50**", "n/a", "*0.100*", "*0.500*"]
    assert col("s / image")[0] == "**0.004**" and col("NFE / image")[0] == "**8**"
    # NLL: lower is better; the D3PM bound is marked as a bound; MaskGIT has none
    assert col("NLL bits / token") == ["n/a", "n/a", "**≤ 3.200**", "3.500", "n/a", "n/a"]
    # a column where every generator ties (as shown) singles none out; nor do unranked columns
    assert col("precision")[:4] == ["50.0%"] * 4
    results["rows"][1]["precision"] = results["rows"][2]["precision"] = 0.6004
    assert col("precision")[:4] == ["50.0%", "**60.0%**", "**60.0%**", "50.0%"]
    assert not any("**" in c for c in col("sampling steps") + col("train steps") + col("family"))


def test_report_files_and_json_round_trip(tmp_path):
    results = synthetic_results()
    report = write_report(tmp_path, results, extra=["## Extra", "", "demo section"])
    text = report.read_text()
    assert report == tmp_path / "report.md"
    assert markdown_table(table(results)) in text and "demo section" in text and "a note" in text
    assert "![quality against sampling time](quality_vs_time.png)" in text and "grid-maskgit-8.png" in text
    assert (tmp_path / "quality_vs_time.png").stat().st_size > 1000
    loaded = load_results(tmp_path / "results.json")        # strict JSON: NaN is written as null
    assert loaded["rows"][3]["fd"] is None
    expected = json.loads(json.dumps(results).replace("NaN", "null"))
    assert {k: v for k, v in loaded.items() if k != "report"} == expected
    assert table(loaded) == table(results)                   # the table is rebuilt from the JSON as is


def test_the_notes_spell_each_family_from_its_declared_facts():
    """How the report names a family and counts its evaluations comes from the family's class
    (display_name, fixed_steps, likelihood, recorded in results.json), not from a table here."""
    from tokgen.eval.compare import _likelihood_text, _nfe_text
    from tokgen.train.jobs.comparison.report import family_facts

    facts = family_facts(["ar", "maskgit", "var", "d3pm"])
    assert _nfe_text(facts) == ("AR one step per token (KV cache); VAR one step per scale; "
                                "MaskGIT and D3PM one per sampling step")
    assert _likelihood_text(facts).startswith("exact for AR and VAR; for D3PM the variational bound")
    old = {f: {k: v for k, v in fact.items() if k != "name"} for f, fact in facts.items()}   # an older results.json
    assert _nfe_text(old).startswith("ar one step per token (KV cache)")


def test_metrics_of_an_image_set_stream_batches():
    class Judge:   # every image judged right when its mean brightness is above its target
        condition = "label"

        def score(self, images, targets):
            return {"accuracy": (images.mean(dim=(1, 2, 3)) > torch.as_tensor(targets)).float().mean().item()}

    class Features:
        name, dim = "mean", 3

        def __call__(self, images):
            return images.mean(dim=(2, 3))

    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 3, 4, 4, generator=g)
    targets = torch.full((10,), 0.5)
    batches = [(images[:4], targets[:4]), (images[4:], targets[4:])]
    scores, feats, first = judge_and_features(batches, Judge(), Features(), keep=5)
    assert scores["accuracy"] == pytest.approx(Judge().score(images, targets)["accuracy"])
    assert np.allclose(feats, images.mean(dim=(2, 3)).numpy()) and torch.equal(first, images[:5])
    same = distribution_metrics(feats, feats)
    assert same["fd"] == pytest.approx(0, abs=1e-6) and same["precision"] == same["recall"] == 1.0
    assert distribution_metrics(None, feats)["fd"] is None
    # one subset holding both whole sets: a single MMD, and no std to report (it would be 0)
    assert same["kid_std"] is None
    sub = distribution_metrics(feats, feats, kid_subset=5, kid_subsets=20)
    assert sub["kid_std"] > 0  # subsets of 5 out of 10 differ from draw to draw


# ---------------------------------------------------------------------------- end to end

TINY = ["--size", "tiny", "--set", "width=32", "--set", "heads=4", "--set", "depth=1", "--set", "text_depth=1",
        "--set", "d3pm:timesteps=8", "--max-steps", "2", "--max-minutes", "0",
        "--train-flags", "--batch-size 8 --tensorboard false --log-every 1 --warmup-steps 1 --val-n 8"]
EVAL = ["--n", "8", "--nll-n", "8", "--grid-n", "4", "--sample-batch-size", "4"]


def tiny_tokenizer(**overrides) -> VQTokenizer:
    """A random multi-scale tokenizer, 32 px -> scales 1, 2, 4, codebook 32 (as test_train_generator)."""
    torch.manual_seed(0)
    settings = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), scales=(1, 2, 4), codebook_size=32,
                    kmeans_init=False)
    return VQTokenizer(get_preset("shapes-tiny-msvq", **{**settings, **overrides})).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny tokenizer and the tokens of the first 16 shapes items of every split."""
    root = tmp_path_factory.mktemp("compare")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    assert tokgen(["extract-tokens", "--tokenizer", str(root / "tokenizer"), "--out", str(root / "tokens"),
                   "--limit", "16", "--device", "cpu"]) == 0
    return root


def compare_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["compare", "--tokens", str(data / "tokens"), "--tokenizer", str(data / "tokenizer"),
            "--out", str(out), *TINY, *EVAL, *extra]


def test_compare_end_to_end_then_loads_the_finished_runs(data, tmp_path, capsys):
    out = tmp_path / "report"
    args = compare_args(data, out, "--families", "maskgit", "d3pm", "--sample-steps", "maskgit=2", "d3pm=2,4",
                        "--curve-points", "2", "--curve-n", "4")
    assert tokgen(args) == 0
    printed = capsys.readouterr().out
    assert "[compare 1/7] inputs" in printed and f"[compare] report: {out / 'report.md'}" in printed
    for name in ("report.md", "results.json", "quality_vs_time.png", "grid-maskgit-2.png", "grid-d3pm-2.png",
                 "grid-d3pm-4.png", "grid-real.png", "grid-tokenizer.png"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    rows = {(r["label"], r.get("steps")): r for r in results["rows"]}
    assert set(rows) == {("maskgit", 2), ("d3pm", 2), ("d3pm", 4), ("real vs real (floor)", None),
                         ("tokenizer ceiling", None)}
    for (label, steps), r in rows.items():
        numbers = [r["fd"], r["kid"], r["precision"], r["recall"], *r["judge"].values()]
        if r["kind"] == "generator":
            numbers += [r["seconds_per_image"], r["nfe_per_image"], r["train_steps"]]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers), (label, steps, r)
    # NFE: one core pass per step, two with guidance (cfg 3 by default)
    assert rows[("maskgit", 2)]["nfe_per_image"] == 4 and rows[("d3pm", 4)]["nfe_per_image"] == 8
    assert rows[("maskgit", 2)]["nll_bits"] is None and rows[("d3pm", 2)]["nll_kind"] == "elbo"
    assert math.isfinite(rows[("d3pm", 2)]["nll_bits"]) and rows[("d3pm", 2)]["nll_bits"] > 0
    assert set(rows[("maskgit", 2)]["judge"]) >= {"caption_match", "shape", "color", "size", "position"}
    assert results["training"]["maskgit"]["steps"] == 2 and not results["training"]["maskgit"]["loaded"]
    # quality against training: a judged point at steps 1 and 2 (batch 8: 8 and 16 images), per family
    for family in ("maskgit", "d3pm"):
        t = results["training"][family]
        curve = t["curve"]
        assert [(p["step"], p["images_seen"]) for p in curve] == [(1, 8), (2, 16)], curve
        assert all(0 <= p["judge"]["caption_match"] <= 1 for p in curve)
        assert t["images_seen"] == 16 and t["eval_seconds"] > 0 and 0 < t["curve_minutes"] < t["minutes"]
    assert (out / "quality_vs_training.png").is_file()
    assert "## Quality against training" in (out / "report.md").read_text()
    s = results["settings"]
    assert s["n"] == 8 and s["seed"] == 0 and s["budget"] == {"max_steps": 2, "max_minutes": 0.0}
    # the flags as given: guidance and top-p left open, resolved per family in each row
    assert s["sampling"] == {"cfg_scale": None, "temperature": 1.0, "top_k": None, "top_p": None}
    assert rows[("maskgit", 2)]["sampling"]["cfg_scale"] == 3.0
    assert s["tokenizer"] == str((data / "tokenizer").resolve()) and s["dataset"] == "shapes"
    assert "caption match" in (out / "report.md").read_text()

    # the same command again: the finished generators are loaded, not trained again
    assert tokgen(args) == 0
    assert "loading the generator finished" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["training"]["d3pm"]["loaded"]


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_nfe_counts_core_passes_per_image_and_guidance_twice(cfg_scale):
    """AR: one pass per token (KV cache), VAR: one per scale, MaskGIT / D3PM: one per step; x2 with CFG."""
    from tokgen.generators import build_generator
    from tokgen.pipeline import SampleConfig, condition_rows
    from tokgen.train.evaluation import EvalConfig, count_nfe

    tokenizer = tiny_tokenizer()
    spec, per_pass = tokenizer.spec, 2 if cfg_scale != 1 else 1
    want = {("ar", None): 1 + 4 + 16, ("var", None): 3, ("maskgit", 5): 5, ("d3pm", 7): 7}
    for (family, steps), passes in want.items():
        torch.manual_seed(0)
        generator = build_generator(family, spec, dict(width=32, depth=1, heads=4, num_classes=4)).eval()
        generator.attach_tokenizer(tokenizer)         # VAR's scale inputs; a spec check for the others
        rows = condition_rows(generator, torch.arange(8) % 4)
        config = EvalConfig(n=8, seed=0, sampling=SampleConfig(steps=steps, cfg_scale=cfg_scale), precision="fp32")
        assert count_nfe(generator, rows, config) == passes * per_pass, family


# ---------------------------------------------------------------------------- bad input

def test_bad_inputs_give_clear_errors(data, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="unknown generator family 'gan'"):
        tokgen(compare_args(data, out, "--families", "maskgit", "gan"))
    other = tmp_path / "other-tokenizer"
    tiny_tokenizer(codebook_size=64).save_pretrained(other)
    wrong = compare_args(data, out, "--families", "maskgit")
    wrong[wrong.index("--tokenizer") + 1] = str(other)
    with pytest.raises(SystemExit, match="holds tokens of spec .* but the tokenizer has spec"):
        tokgen(wrong)
    with pytest.raises(SystemExit, match="fixed step count"):
        tokgen(compare_args(data, out, "--families", "ar", "--sample-steps", "ar=16"))
    with pytest.raises(SystemExit, match="not among --families"):
        tokgen(compare_args(data, out, "--families", "maskgit", "--sample-steps", "d3pm=16"))
    with pytest.raises(SystemExit, match="unknown generator family 'd3mp'"):
        tokgen(compare_args(data, out, "--families", "maskgit", "--set", "d3mp:timesteps=8"))
    # the demo's tokenizer scales are checked by the tokenizer config before any stage runs
    with pytest.raises(SystemExit, match="last scale must be the full token map 8"):
        tokgen(["demo", "--tokenizer-scales", "1,2,4", "--out", str(tmp_path / "demo")])
    assert not (tmp_path / "demo").exists()
    with pytest.raises(SystemExit, match="ARConfig has no field 'steps'"):
        tokgen(compare_args(data, out, "--families", "ar", "maskgit", "--set", "steps=12"))
    with pytest.raises(SystemExit, match="needs 32 val items"):
        tokgen(compare_args(data, out, "--families", "maskgit", "--n", "32"))
    with pytest.raises(SystemExit, match="no token folder"):
        tokgen(["compare", "--tokens", str(tmp_path / "missing"), "--tokenizer", str(other)])
    # the library function behind the command raises, for callers of their own
    from tokgen.train.jobs import CompareConfig, compare

    with pytest.raises(FileNotFoundError, match="no token folder"):
        compare(CompareConfig(tokens=str(tmp_path / "missing"), tokenizer=str(other)))
    with pytest.raises(ValueError, match="not among --families"):
        compare(CompareConfig(tokens=str(data / "tokens"), tokenizer=str(data / "tokenizer"), families=("maskgit",),
                              n=8, nll_n=8, sample_steps={"d3pm": (16,)}, out=str(out)))
    assert not out.exists()     # nothing was trained or written


# ---------------------------------------------------------------------------- the demo, with tiny budgets

def test_demo_runs_every_stage_and_writes_one_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert tokgen(["demo", "--out", str(out), "--judge-n", "20", "--tokenizer-steps", "3",
                   "--tokenizer-eval-n", "20", "--token-limit", "64", "--eval-items", "16", "--families", "maskgit",
                   "var", "--minutes-per-family", "1", "--steps-per-family", "2", "--size", "tiny", "--n", "8",
                   "--nll-n", "8", "--sample-steps", "maskgit=2", "--curve-points", "1", "--curve-n", "4",
                   "--compare-flags", "--grid-n 4 --train-flags '--batch-size 8 --tensorboard false --val-n 8'"]) == 0
    printed = capsys.readouterr().out
    assert "[demo 5/5] compare" in printed and printed.rstrip().endswith(f"report: {out / 'report.md'}")
    report = (out / "report.md").read_text()
    assert report.startswith("# tokgen demo: maskgit, var on shapes")
    for section in ("## Results", "## The judges", "## The tokenizer", "data-shapes.png", "grid-var.png",
                    "## Quality against training", "## Wall time per stage", "| **total** |"):
        assert section in report, section
    assert "trained from scratch for 3 steps of 32 (96 images)" in report
    results = json.loads((out / "results.json").read_text())
    assert {r["label"] for r in results["rows"]} >= {"maskgit", "var"} and "shapes_judge" in results["demo"]
    assert results["demo"]["tokenizer"]["steps"] == 3 and results["demo"]["tokenizer"]["stopped"] == "max_steps"
    seconds = results["demo"]["seconds"]
    assert set(seconds) >= {"data", "judges", "tokenizer", "tokens", "compare", "total"}
    assert seconds["total"] >= seconds["compare"] > 0
    machine = results["demo"]["machine"]   # the wall times' context: another machine compares through the rates
    assert machine["fp32_matmul_gflops"] > 0 and machine["fp32_matmul_gflops_end"] > 0
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"{machine['fp32_matmul_gflops']:g} GFLOP/s at the start" in report
    assert [len(results["training"][f]["curve"]) for f in ("maskgit", "var")] == [1, 1]
    # auto, resolved by the Trainer (training) and by compare (sampling); conftest makes it fp32 on any CPU
    for key in ("mixed_precision", "precision"):
        assert results["settings"][key]["requested"] == "auto" and results["settings"][key]["chosen"] == "fp32"
    assert "training precision fp32 (auto: TOKGEN_CPU_BF16=0)" in report
