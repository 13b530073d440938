"""What a comparison is asked to do: `CompareConfig`, every setting of `tokgen compare` typed."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from tokgen.generators import FAMILIES
from tokgen.pipeline import SampleConfig

from ...engine import TrainConfig
from ...schedule import ScheduleConfig
from ...tasks.generator import OptimConfig
from ..generator import TRAIN_DEFAULTS

DEFAULT_FAMILIES = tuple(FAMILIES)      # every registered family, in registration order
# train-generator's defaults, with compare's budget; no sample grids inside the budget
TRAIN = {**TRAIN_DEFAULTS, "max_steps": 2_000, "sample_every": 0}
# TrainConfig fields compare sets for each family itself (the run folder, the judged points, afresh or not)
PER_FAMILY = ("out_dir", "eval_every", "sample_every", "resume")


@dataclass
class CompareConfig:
    tokens: str                      # a token folder with train, val and test splits (extract-tokens)
    tokenizer: str                   # the tokenizer folder the tokens were extracted with
    families: tuple[str, ...] = DEFAULT_FAMILIES   # generator families compared, in this order
    out: str = "tokgen-out/compare"  # report folder
    runs: str | None = None          # where each family's run folder goes (None: OUT/runs)
    retrain: bool = False            # train every family afresh, even where its run folder holds a finished generator
    size: str = "small"              # size preset of every generator
    condition: str = "text"          # what the generators are conditioned on: text | class | none
    overrides: dict[str, Any] = field(default_factory=dict)   # "FIELD" (every family) or "FAMILY:FIELD" -> value
    text_vocab_size: int = 512       # BPE vocabulary for condition text
    preview_n: int = 8               # val conditions in a sample grid (grids are off inside the budget)
    val_n: int = 256                 # val items in the validation loss (0 = none)
    # the loop's settings for every family: the seed (which seeds sampling too), the budget
    # (max_steps at a fixed batch: the same training images for every family), precision, batch,
    # lr...; the fields in PER_FAMILY are compare's own, set for each family
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN))
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    n: int = 500                     # samples per family and step count (and real images per reference set)
    sample_steps: dict[str, tuple[int, ...]] = field(default_factory=dict)  # step counts per family over the family's compare_steps
    sampling: SampleConfig = field(default_factory=SampleConfig)   # guidance, temperature, top-k/p (steps: sample_steps)
    sample_batch_size: int = 64      # images sampled (and decoded, and scored for NLL) at once
    precision: str = "auto"          # sampling and likelihood forwards: auto | fp32 | bf16
    nll_n: int = 256                 # held-out test items for NLL / ELBO (0 = skip)
    grid_n: int = 16                 # samples shown in each family's grid
    curve_points: int = 5            # judged points during training, evenly spaced over the budget (0 = none)
    curve_n: int = 100               # samples judged at each of those points
    device: str | None = None        # where to sample and evaluate (None: cuda when available; under several processes each its own GPU)
    fid_stats: str | None = None     # an .npz of the real set's Inception statistics (mu, sigma; pytorch-fid's or ADM's, e.g. VIRTUAL_imagenet256_labeled.npz): the FD is taken against them in Inception-v3 pool features, and the test split is not featurized

    @property
    def seed(self) -> int:
        return self.train.seed

    def to_dict(self) -> dict:
        """Plain JSON values: results.json records it."""
        return json.loads(json.dumps(dataclasses.asdict(self)))
