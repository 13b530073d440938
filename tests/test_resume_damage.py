"""Resume from a damaged checkpoint (train/checkpoint.py, Trainer._resume): every kind of damage to
the newest checkpoint falls back to the previous complete one with a warning naming the file (and
the result is still bit-identical to a straight run), or, with none left, refuses with a
CheckpointError naming it. Never a crash, never a silently inexact resume."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tokgen.train.checkpoint import COMPLETE_MARKER, CheckpointError, is_complete, list_checkpoints

sys.path.insert(0, str(Path(__file__).parent))
from test_checkpoint import assert_identical, run, snapshot  # noqa: E402  (helpers beside this file)

FILES = ["model.safetensors", "model_1.safetensors", "ema.safetensors", "optimizer.bin", "optimizer_1.bin",
         "scheduler.bin", "random_states_0.pkl", "trainer_state.json"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run of 4 steps with checkpoint-2 and checkpoint-4, and a straight run's final state."""
    root = tmp_path_factory.mktemp("damage")
    torch.set_num_threads(1)
    run(root / "run", 4, save_every=2, keep_last=0)
    straight, _, _ = run(root / "straight", 4)
    assert sorted(p.name for p in (root / "run" / "checkpoint-4").iterdir()) == sorted(FILES + [COMPLETE_MARKER])
    return root / "run", snapshot(straight)


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def empty(file: Path) -> None:
    file.write_bytes(b"")


def delete(file: Path) -> None:
    file.unlink()


def flip_a_byte(file: Path) -> None:  # same size, other contents: only the hash tells
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def swap_with_sibling(file: Path) -> None:  # a valid file of the wrong contents / shapes
    siblings = {"model.safetensors": "model_1.safetensors", "model_1.safetensors": "model.safetensors",
                "optimizer.bin": "optimizer_1.bin", "optimizer_1.bin": "optimizer.bin",
                "ema.safetensors": "model_1.safetensors", "scheduler.bin": "optimizer_1.bin",
                "random_states_0.pkl": "scheduler.bin", "trainer_state.json": COMPLETE_MARKER}
    shutil.copyfile(file.with_name(siblings[file.name]), file)


KINDS = {"truncated": truncate, "empty": empty, "missing": delete, "changed": flip_a_byte,
         "wrong_file": swap_with_sibling}


def damaged_copy(base_run: Path, dest: Path, file: str, kind: str, *, legacy=False, alone=False) -> Path:
    shutil.copytree(base_run, dest)
    if alone:
        shutil.rmtree(dest / "checkpoint-2")
    newest = dest / "checkpoint-4"
    if legacy:  # a marker from before markers listed the files: damage shows only when loading
        (newest / COMPLETE_MARKER).write_text(json.dumps({"step": 4}))
    KINDS[kind](newest / file)
    return newest


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("file", FILES)
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(base, tmp_path, capsys, file, kind):
    base_run, straight = base
    out = tmp_path / "run"
    newest = damaged_copy(base_run, out, file, kind)
    resumed, _, logs = run(out, 4, resume="auto", init_seed=123)
    err = capsys.readouterr().err
    assert f"not resuming from {newest}: {newest / file}:" in err, err
    assert_identical(straight, snapshot(resumed))  # steps 3-4 again, exactly as the straight run did
    assert is_complete(out / "checkpoint-4")  # written afresh; the damaged one is kept aside
    assert (out / "checkpoint-4.damaged").is_dir() and [s for s, _ in list_checkpoints(out)] == [2, 4]


@pytest.mark.parametrize("kind", ["truncated", "empty", "missing", "wrong_file"])
@pytest.mark.parametrize("file", FILES)
def test_damage_is_found_when_loading_without_a_file_listing(base, tmp_path, capsys, file, kind):
    """Checkpoints whose COMPLETE predates the file listing: the loads themselves find the damage."""
    base_run, straight = base
    out = tmp_path / "run"
    newest = damaged_copy(base_run, out, file, kind, legacy=True)
    resumed, _, _ = run(out, 4, resume="auto", init_seed=123)
    assert f"not resuming from {newest}: {newest / file}:" in capsys.readouterr().err
    assert_identical(straight, snapshot(resumed))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("file", FILES)
def test_a_damaged_only_checkpoint_is_refused_naming_the_file(base, tmp_path, file, kind, legacy):
    if legacy and kind == "changed":
        pytest.skip("a same-size change is found by the hash in COMPLETE only")
    out = tmp_path / "run"
    newest = damaged_copy(base_run := base[0], out, file, kind, legacy=legacy, alone=True)
    with pytest.raises(CheckpointError, match="cannot resume") as caught:
        run(out, 4, resume="auto", init_seed=123)
    message = str(caught.value)
    assert str(newest / file) in message, message
    assert ("allow_inexact_resume" in message) == (file == "random_states_0.pkl")
    assert newest.is_dir() and not (out / "checkpoint-4.damaged").exists()  # nothing moved on a refusal
    assert base_run.is_dir()


def test_an_explicit_resume_path_is_never_swapped_for_another(base, tmp_path):
    out = tmp_path / "run"
    newest = damaged_copy(base[0], out, "optimizer.bin", "truncated")
    with pytest.raises(CheckpointError, match=f"resume='{newest}'.*optimizer.bin: truncated"):
        run(out, 4, resume=str(newest), init_seed=123)


def test_every_checkpoint_damaged_is_refused_naming_each(base, tmp_path):
    out = tmp_path / "run"
    damaged_copy(base[0], out, "model_1.safetensors", "truncated")
    delete(out / "checkpoint-2" / "optimizer.bin")
    with pytest.raises(CheckpointError) as caught:
        run(out, 4, resume="auto", init_seed=123)
    message = str(caught.value)
    assert "checkpoint-4/model_1.safetensors: truncated" in message
    assert "checkpoint-2/optimizer.bin: missing" in message


def test_a_garbled_complete_marker_falls_back(base, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(base[0], out)
    (out / "checkpoint-4" / COMPLETE_MARKER).write_text('{"step": 4, "fil')
    resumed, _, _ = run(out, 4, resume="auto", init_seed=123)
    assert f"{out / 'checkpoint-4' / COMPLETE_MARKER}: unreadable" in capsys.readouterr().err
    assert_identical(base[1], snapshot(resumed))


def test_missing_rng_state_is_accepted_only_when_asked(base, tmp_path, capsys):
    out = tmp_path / "run"
    newest = damaged_copy(base[0], out, "random_states_0.pkl", "missing", alone=True)
    with pytest.raises(CheckpointError, match="random_states_0.pkl: missing.*allow_inexact_resume"):
        run(out, 6, resume="auto", init_seed=123)
    capsys.readouterr()
    trainer, _, logs = run(out, 6, resume="auto", init_seed=123, allow_inexact_resume=True)
    err = capsys.readouterr().err
    assert f"resuming from {newest} without its RNG state" in err and "no longer matches" in err
    assert logs["step"] == 6 and is_complete(out / "checkpoint-6")
    assert not (out / "checkpoint-4.damaged").exists()  # it was used, not set aside


def test_with_allow_inexact_resume_other_damage_still_falls_back(base, tmp_path, capsys):
    out = tmp_path / "run"
    newest = damaged_copy(base[0], out, "optimizer.bin", "truncated")
    resumed, _, _ = run(out, 4, resume="auto", init_seed=123, allow_inexact_resume=True)
    assert f"not resuming from {newest}" in capsys.readouterr().err
    assert_identical(base[1], snapshot(resumed))


def test_a_torn_last_log_line_is_skipped_with_a_warning(base, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(base[0], out)
    shutil.rmtree(out / "checkpoint-4")
    log = out / "log.jsonl"
    with open(log, "a") as f:
        f.write('{"step": 5, "loss/net": 0.12')  # killed mid-line
    resumed, _, _ = run(out, 4, resume="auto", init_seed=123)
    assert f"{log}: skipped 1 torn line(s)" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]  # every line parses
    assert steps == [1, 2, 3, 4]
    assert_identical(base[1], snapshot(resumed))
