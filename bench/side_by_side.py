"""Ours, the peers' and the limit for one run: merging rounds, the ratios, the summary table.

Every ratio here is between figures measured in the same invocation on the same machine
(bench_generators.py alternates ours and the peers per family); none comes from a file.
"""
from __future__ import annotations

import statistics
import sys

from limits import limit_seconds
from peer_harness import PEERS


def median_merge(rounds: list[dict]) -> dict:
    """One dict from the rounds' dicts of the same shape: numbers -> their median, anything else
    (names, lists) -> the first round's."""
    first = rounds[0]
    out = {}
    for k, v in first.items():
        values = [r[k] for r in rounds if k in r]
        if isinstance(v, dict):
            out[k] = median_merge(values)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and all(isinstance(x, (int, float)) for x in values):
            out[k] = statistics.median(values)
        else:
            out[k] = v
    return out


def family_entry(ours: list[dict], theirs: dict[str, list[dict]]) -> dict:
    """Our figures (median over rounds) and each peer's, with peer / ours per figure."""
    entry = median_merge(ours)
    entry["rounds"] = len(ours)
    entry["peers"] = {}
    precisions = [k for k, v in entry.items() if isinstance(v, dict) and "precision" in v]
    for key, runs in theirs.items():
        peer = PEERS[key]
        ok = [r for r in runs if "error" not in r]
        info = {"harness": f"bench_{key}.py", "condition": peer.condition, "guidance": peer.guidance}
        if len(ok) < len(runs):
            info["errors"] = [r for r in runs if "error" in r]
        if ok:
            figures = median_merge(ok)
            info.update(figures)
            info["peer_over_ours"] = {p: _ratios(figures, entry[p]) for p in precisions}
        entry["peers"][peer.name] = info
    return entry


def _ratios(peer: dict, ours: dict) -> dict:
    """Peer seconds / our seconds (above 1: ours is faster) for generation at the first step count
    timed and for one training step of 16 images."""
    gen = next(iter(ours["generate"].values()))
    out = {}
    for k in ("unguided_s", "guided_s"):
        if peer.get(k) and k in gen:
            out[k.removesuffix("_s")] = peer[k] / gen[k]
    if peer.get("train_s"):
        out["train"] = peer["train_s"] / ours["train_s"]
    return out


def add_limits(entry: dict, rate_of: dict[str, float]) -> None:
    """Per precision, beside every figure: limit_s = FLOPs / the measured matmul rate, and ours /
    limit; where the kernel time was measured (kernels.py), kernel_s, ours / kernel_s and
    kernel_s / limit."""
    flops = entry["flops"]
    for p, rate in rate_of.items():
        figs = entry[p]
        in_kernels = figs.get("kernel_s", {})

        def one(seconds: float, n: float, kernel_s: float | None) -> dict:
            limit = limit_seconds(n, rate)
            fig = {"ours_s": seconds, "limit_s": limit, "ours_over_limit": seconds / limit}
            if kernel_s:
                fig.update(kernel_s=kernel_s, ours_over_kernels=seconds / kernel_s, kernels_over_limit=kernel_s / limit)
            return fig
        gen_kernels = lambda label, k: in_kernels.get("generate", {}).get(label, {}).get(k)  # noqa: E731
        entry[p]["limit"] = {"gflops_rate": rate,
                             "train_s": one(figs["train_s"], flops["train_s"], in_kernels.get("train_s")),
                             "generate": {label: {k: one(v, flops["generate"][label][k], gen_kernels(label, k))
                                                  for k, v in gen.items()}
                                          for label, gen in figs["generate"].items()}}
        if "seconds_per_step" in entry:
            entry["seconds_per_step"][p] = {k: one(v, flops["per_step"][k], in_kernels.get("per_step", {}).get(k))
                                            for k, v in entry["seconds_per_step"][p].items()}


def table(families: dict, precisions: list[str]) -> list[dict]:
    """One row per family, precision and workload: ours_s, limit_s, ours / limit, and each peer's
    seconds with peer / ours."""
    rows = []
    for family, entry in families.items():
        for p in precisions:
            lim = entry[p]["limit"]
            first = next(iter(lim["generate"]))
            work = [(f"generate {k.removesuffix('_s')}, {label}", v, label == first and k)
                    for label, gen in lim["generate"].items() for k, v in gen.items()]
            work += [(f"one step {k.removesuffix('_s')}", v, None)
                     for k, v in entry.get("seconds_per_step", {}).get(p, {}).items()]
            work.append(("train fwd+bwd, 16 images", lim["train_s"], "train_s"))
            for name, fig, peer_key in work:
                row = {"family": family, "workload": name, "precision": entry[p]["precision"], **fig, "peers": {}}
                for peer, info in entry["peers"].items():
                    if peer_key and info.get(peer_key):      # the ratio family_entry computed
                        row["peers"][peer] = {"peer_s": info[peer_key],
                                              "peer_over_ours": info["peer_over_ours"][p][peer_key.removesuffix("_s")]}
                    elif peer_key and "errors" in info and "guided_s" not in info:
                        row["peers"][peer] = {"error": info["errors"][0]["error"]}
                rows.append(row)
    return rows


def print_table(rows: list[dict], stream=sys.stderr) -> None:
    """The table for a reader, on stderr (stdout holds the JSON)."""
    fmt = "{:<8} {:<30} {:<5} {:>8} {:>8} {:>8} {:>9} {:>9}  {}"
    print(fmt.format("family", "workload", "prec", "ours_s", "limit_s", "ours/lim", "kernel_s", "ours/kern",
                     "peer: seconds (peer/ours)"), file=stream)
    for r in rows:
        peers = "; ".join(f"{n}: {v['peer_s']:.3f} s ({v['peer_over_ours']:.2f}x)" if "peer_s" in v else
                          f"{n}: {v['error']}" for n, v in r["peers"].items())
        kern = (f"{r['kernel_s']:.3f}", f"{r['ours_over_kernels']:.2f}x") if "kernel_s" in r else ("-", "-")
        print(fmt.format(r["family"], r["workload"], r["precision"], f"{r['ours_s']:.3f}", f"{r['limit_s']:.3f}",
                         f"{r['ours_over_limit']:.1f}x", *kern, peers or "-"), file=stream)


def print_step_pair(pair: dict, stream=sys.stderr) -> None:
    """D3PM's step against MaskGIT's, from bench_generators.step_pair."""
    for kind in ("unguided", "guided"):
        if kind in pair:
            f = pair[kind]
            print(f"d3pm step {kind}: {f['d3pm_step_s']:.4f} s, maskgit step {f['maskgit_step_s']:.4f} s: "
                  f"{f['d3pm_over_maskgit']:.2f}x (interleaved, median of {pair['repeats']})", file=stream)
