"""One tokenizer preset is one object (model, loss, training), and the token spec comes from the
built quantizer: the same specs as before the quantizers reported them, for every preset and kind."""

from __future__ import annotations

import dataclasses
import warnings

import pytest

from tokgen.tokenizers_vq import (LOSS_PRESETS, PRESETS, QUANTIZER_KINDS, TOKENIZER_PRESETS, LossConfig,
                                  TokenizerConfig, TokenizerPreset, TokenizerSpec, VQTokenizer, build_quantizer,
                                  get_preset, get_tokenizer_preset, preset_name, register_preset)

# The specs as TokenizerConfig.spec computed them (per-kind branches in config.py) before the
# quantizers reported their own; captured from that code, not recomputed here.
SPECS_BEFORE = {
    "shapes-tiny": TokenizerSpec(1024, (8,), 32, 3, 4),
    "shapes-tiny-msvq": TokenizerSpec(1024, (1, 2, 3, 4, 6, 8), 32, 3, 4),
    "shapes-tiny-fsq": TokenizerSpec(1000, (8,), 32, 3, 4),
    "shapes-tiny-lfq": TokenizerSpec(256, (8,), 32, 3, 4),
    "imagenet-256": TokenizerSpec(16384, (16,), 256, 3, 16),
    "imagenet-256-var": TokenizerSpec(4096, (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 256, 3, 16),
}
# every kind on a small config: (overrides, spec before)
KINDS_BEFORE = {
    "vq": (dict(codebook_size=64), TokenizerSpec(64, (8,), 16, 3, 2)),
    "msvq": (dict(codebook_size=64, scales=(1, 2, 4, 8)), TokenizerSpec(64, (1, 2, 4, 8), 16, 3, 2)),
    "fsq": (dict(codebook_size=64, fsq_levels=(5, 5, 5)), TokenizerSpec(125, (8,), 16, 3, 2)),
    "lfq": (dict(codebook_size=64, lfq_bits=6), TokenizerSpec(64, (8,), 16, 3, 2)),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_every_kind_is_covered():
    assert set(KINDS_BEFORE) <= set(QUANTIZER_KINDS)   # the shipped kinds keep their specs; a new kind adds none here
    assert set(SPECS_BEFORE) == set(PRESETS)


@pytest.mark.parametrize("name", sorted(SPECS_BEFORE))
def test_preset_spec_is_unchanged_and_comes_from_the_quantizer(name):
    cfg = PRESETS[name]
    assert cfg.spec == SPECS_BEFORE[name]
    q = build_quantizer(cfg)                     # the quantizer the tokenizer builds, on the CPU
    assert (q.codebook_size, tuple(q.scales)) == (cfg.spec.codebook_size, cfg.spec.scales)
    if name.startswith("shapes"):                # the imagenet autoencoders are too big to build here
        assert VQTokenizer(cfg).spec == SPECS_BEFORE[name]


@pytest.mark.parametrize("kind", sorted(KINDS_BEFORE))
def test_kind_spec_is_unchanged_and_read_off_the_built_model(kind):
    overrides, before = KINDS_BEFORE[kind]
    cfg = TokenizerConfig(image_size=16, base_width=8, channel_mults=(1, 2), z_channels=8, quantizer=kind, **overrides)
    model = VQTokenizer(cfg)
    assert model.spec == before == cfg.spec
    # the spec is the built quantizer's: a changed quantizer changes it (nothing recomputes it from the config)
    model.quantizer.codebook_size = 7
    assert model.spec.codebook_size == 7 and cfg.spec.codebook_size == before.codebook_size


# ----------------------------------------------------------------------------- presets as one object

def test_a_preset_is_model_loss_and_training_in_one_object():
    for name, preset in TOKENIZER_PRESETS.items():
        assert preset.name == name
        assert PRESETS[name] is preset.model and LOSS_PRESETS[name] is preset.loss
        assert get_tokenizer_preset(name) is preset and get_preset(name) == preset.model
        assert preset_name(preset.model) == name
    shapes, imagenet = get_tokenizer_preset("shapes-tiny-msvq"), get_tokenizer_preset("imagenet-256-var")
    assert shapes.loss.reconstruction == "l2" and shapes.loss.disc_weight == 0.0
    assert dict(shapes.training) == {"batch_size": 32, "lr": 2e-3, "warmup_steps": 300, "ema_decay": 0.995,
                                     "mixed_precision": "fp32"}
    assert imagenet.training["batch_size"] == 16 and imagenet.training["mixed_precision"] == "auto"


def test_preset_training_names_only_trainer_fields():
    from tokgen.train.engine import TrainConfig
    from tokgen.train.schedule import ScheduleConfig

    from tokgen.train.tasks.tokenizer import TokenizerOptimConfig

    known = {f.name for cls in (TrainConfig, ScheduleConfig, TokenizerOptimConfig) for f in dataclasses.fields(cls)}
    known.add("augment")  # the image datasets' option (tokgen.data.folder), for the training split
    for preset in TOKENIZER_PRESETS.values():
        assert set(preset.training) <= known, (preset.name, set(preset.training) - known)


def test_presets_cannot_be_changed_through_what_callers_get():
    preset = get_tokenizer_preset("shapes-tiny")
    with pytest.raises(TypeError):
        preset.training["lr"] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.model = get_preset("imagenet-256")
    assert get_preset("shapes-tiny", codebook_size=512).codebook_size == 512
    assert PRESETS["shapes-tiny"].codebook_size == 1024


def test_preset_name_ignores_how_the_codebook_syncs():
    cfg = get_preset("shapes-tiny-lfq")
    assert preset_name(dataclasses.replace(cfg, sync_codebook=True)) == "shapes-tiny-lfq"
    assert preset_name(dataclasses.replace(cfg, lfq_bits=9)) is None


def test_registering_a_preset_reaches_every_view_and_the_trainer():
    from tokgen.train.commands.train_tokenizer import build_parser

    preset = TokenizerPreset("test-preset", get_preset("shapes-tiny", codebook_size=64), LossConfig(),
                             {"batch_size": 7, "lr": 3e-4})
    register_preset(preset)
    try:
        assert PRESETS["test-preset"] is preset.model and LOSS_PRESETS["test-preset"] is preset.loss
        assert "test-preset" in PRESETS and len(PRESETS) == len(TOKENIZER_PRESETS)
        args = build_parser("test-preset").parse_args(["--preset", "test-preset"])
        assert (args.batch_size, args.lr) == (7, 3e-4)                  # the preset's own training defaults
        assert build_parser("test-preset").parse_args(["--batch-size", "9"]).batch_size == 9   # flags win
        with pytest.raises(ValueError, match="already registered"):
            register_preset(preset)
    finally:
        del TOKENIZER_PRESETS["test-preset"]
    assert "test-preset" not in PRESETS


def test_preset_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"unknown tokenizer preset 'nope'; choose one of \['imagenet-256'"):
        get_tokenizer_preset("nope")
    with pytest.raises(TypeError, match="model must be a TokenizerConfig"):
        TokenizerPreset("bad", {"image_size": 32}, LossConfig())


def test_old_import_paths_still_work():
    from tokgen.tokenizers_vq.config import PRESETS as config_presets
    from tokgen.tokenizers_vq.config import QUANTIZER_KINDS as config_kinds
    from tokgen.tokenizers_vq.config import get_preset as config_get_preset
    from tokgen.tokenizers_vq.losses import LOSS_PRESETS as loss_presets

    assert config_presets is PRESETS and loss_presets is LOSS_PRESETS and config_kinds == QUANTIZER_KINDS
    assert config_get_preset("shapes-tiny") == PRESETS["shapes-tiny"]


def test_train_tokenizer_defaults_follow_the_preset():
    from tokgen.train.commands.train_tokenizer import build_parser

    from tokgen.train.engine import TrainConfig
    from tokgen.train.schedule import ScheduleConfig

    flags = {f.name for cls in (TrainConfig, ScheduleConfig) for f in dataclasses.fields(cls)}
    for name, preset in TOKENIZER_PRESETS.items():
        args = build_parser(name).parse_args(["--preset", name])
        for key, value in preset.training.items():
            if key in flags:  # the optimizer and augmentation settings reach the job (preset_optim, ...)
                assert getattr(args, key) == value, (name, key)
