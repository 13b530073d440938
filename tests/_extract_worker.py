"""The script the extraction tests launch (one process, or several under `accelerate launch`).

    accelerate launch --multi_gpu --num_processes 2 tests/_extract_worker.py CONFIG_JSON

CONFIG_JSON: ExtractConfig's fields as JSON, plus "pause_after_shard" (seconds each process sleeps
after writing a shard: a test kills it there) and "rss_out" (a file for this process's peak RSS).
Prints the ExtractResult as JSON on the last line of each process's stdout.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(config: dict) -> None:
    import torch

    torch.set_num_threads(1)   # the same kernels as the one-thread test process: bitwise the same tokens
    import tokgen.data.tokens as tokens_module
    from tokgen.train.jobs import ExtractConfig, extract_tokens

    pause = float(config.pop("pause_after_shard", 0))
    rss_out = config.pop("rss_out", None)
    if pause:
        write = tokens_module.write_token_shard

        def slow_write(*args, **kwargs):
            record = write(*args, **kwargs)
            time.sleep(pause)
            return record

        tokens_module.write_token_shard = slow_write
    for key in ("splits", "views"):
        if key in config:
            config[key] = tuple(config[key])
    result = extract_tokens(ExtractConfig(**config))
    if rss_out:
        with open(f"{rss_out}.{os.environ.get('RANK', '0')}", "w") as f:
            f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
