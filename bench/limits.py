"""The arithmetic limit of a timed workload: its matmul FLOPs at this machine's measured matmul rate.

Wall times differ several-fold between machines of the same kind, so a figure means something
only beside what the machine could do at best.  That best is taken here as

    limit_s = FLOPs the call performs / the machine's dense matmul rate (FLOP/s),

with both measured in the same run as the timing: the FLOPs by running the real call once under
`torch.utils.flop_counter.FlopCounterMode` (it counts what actually runs, so the count cannot
drift from the code), the rate by timing a large square GEMM on the bench's thread count.
Element-wise work (norms, softmax, sampling) and Python overhead count as zero, so the limit is
a lower bound that no implementation reaches; ours / limit says how far from it a figure is.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils import flop_counter as fc

# the machine's matmul rate: one measurement for the demo, compare and the bench
from tokgen.train.machine import matmul_rate  # noqa: E402,F401


# --------------------------------------------------------------------------- counting FLOPs
# FlopCounterMode knows SDPA's CUDA kernels (flash, efficient, cudnn) but not the CPU flash kernel
# that F.scaled_dot_product_attention dispatches to on CPU, which it would count as zero.  The
# same formulas apply; a causal call (training, AR prefill) computes only the lower triangle's
# blocks, so it is counted at (S+1)/2S of the full product when queries and keys align.

def _causal_share(q_len: int, k_len: int, is_causal: bool) -> float:
    return (k_len + 1) / (2 * k_len) if is_causal and q_len == k_len and k_len > 1 else 1.0


def _cpu_flash_fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # (query, key, value, dropout_p, is_causal, ...)
    is_causal = kwargs.get("is_causal", args[1] if len(args) > 1 else False)
    flops = fc.sdpa_flop_count(query_shape, key_shape, value_shape)
    return int(flops * _causal_share(query_shape[2], key_shape[2], bool(is_causal)))


def _cpu_flash_bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # (grad_out, query, key, value, out, logsumexp, dropout_p, is_causal, ...)
    is_causal = kwargs.get("is_causal", args[3] if len(args) > 3 else False)
    flops = fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    return int(flops * _causal_share(query_shape[2], key_shape[2], bool(is_causal)))


def _custom_mapping() -> dict:
    """Formulas keyed by op packet; FlopCounterMode passes them tensor shapes (it wraps them)."""
    ops = torch.ops.aten
    mapping = {}
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_fwd
    if hasattr(ops, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[ops._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_flash_bwd
    return mapping


def count_flops(fn: Callable[[], object]) -> dict:
    """Run fn() once under FlopCounterMode: {"total": FLOPs, "by_op": {op name: FLOPs}}.  Matmuls,
    convolutions and attention count (a multiply-add = 2 FLOPs); element-wise work does not."""
    with fc.FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter:
        fn()
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def limit_seconds(flops: float, gflops: float) -> float:
    """Seconds `flops` take at `gflops` GFLOP/s: the arithmetic limit."""
    return flops / (gflops * 1e9)
