"""A catalogue of bad inputs through every `tokgen` command: each one must end in a single
`error: ...` line on stderr that names the bad flag, value or file, exit status 2, and no
traceback; and it must fail fast, before data or models are built.  Also the boundary itself:
--debug / TOKGEN_DEBUG=1 show the traceback, Ctrl-C exits 130, an internal error keeps its traceback.

The cases are written from the classes of mistakes (a number out of range, a wrong type, a
missing / wrong-kind / damaged path, an option of another mode, a model that cannot use the data),
not from one list of reported inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tokgen.data.tokens import write_token_split
from tokgen.generators import build_generator
from tokgen.pipeline import record_tokenizer
from tokgen.tokenizers_vq import VQTokenizer, get_preset
from tokgen.train import cli
from tokgen.errors import EXIT_INTERRUPTED, EXIT_USAGE

TINY = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), codebook_size=32, kmeans_init=False)


def _tokens(folder: Path, spec: dict, n: int = 8) -> None:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val", "test"):
        maps = [torch.randint(0, spec["codebook_size"], (n, s, s), generator=g) for s in spec["scales"]]
        write_token_split(folder, split, maps, torch.arange(n) % 4, ["a small red circle at the center"] * n, spec,
                          "shapes")


def _generator(folder: Path, tokenizer_dir: Path, spec) -> None:
    torch.manual_seed(0)
    gen = build_generator("maskgit", spec, dict(width=32, depth=1, heads=4, condition="class", num_classes=4))
    gen.save_pretrained(folder)
    record_tokenizer(folder, tokenizer_dir)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Tiny inputs, good and damaged, built once: tokenizers (multi- and single-scale), token folders,
    a generator folder and its damaged copies, and a few bad files."""
    import shutil

    root = tmp_path_factory.mktemp("errors")
    torch.manual_seed(0)
    multi = VQTokenizer(get_preset("shapes-tiny-msvq", scales=(1, 2, 4), **TINY)).eval()
    single = VQTokenizer(get_preset("shapes-tiny", **TINY)).eval()
    multi.save_pretrained(root / "tok")
    single.save_pretrained(root / "tok1")
    _tokens(root / "tokens", multi.spec.to_dict())
    _tokens(root / "tokens1", single.spec.to_dict())
    _generator(root / "gen", root / "tok", multi.spec)
    for name in ("gencut", "genbadtype", "gentrunc", "genlist"):
        shutil.copytree(root / "gen", root / name)
    text = (root / "gen" / "config.json").read_text()
    (root / "gencut" / "config.json").write_text(text[: len(text) // 2])
    meta = json.loads(text)
    meta["config"]["width"] = "wide"
    (root / "genbadtype" / "config.json").write_text(json.dumps(meta))
    (root / "genlist" / "config.json").write_text("[1, 2]")
    weights = (root / "gen" / "model.safetensors").read_bytes()
    (root / "gentrunc" / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "empty.txt").write_text("\n  \n")
    (root / "cut.json").write_text('{"lr": 1e-3, "max_steps": ')
    (root / "list.json").write_text("[1, 2]")
    (root / "wrongtype.json").write_text('{"max_steps": "many"}')
    return root


# (command line with {r} for the fixture folder, texts the error line must contain)
CASES = [
    # ---- data
    ("data --image-size 0", ["--image-size 0"]),
    ("data --image-size -32", ["--image-size -32"]),
    ("data --n 0", ["--n 0"]),
    ("data --n x", ["--n", "invalid int value: 'x'"]),
    ("data --dataset nosuch", ["nosuch"]),
    ("data --dataset digits --num-objects 2", ["--num-objects 2", "shapes"]),
    ("data --num-objects 3", ["--num-objects 3"]),
    ("data --num-objects 0", ["--num-objects 0"]),
    ("data --out {r}", ["--out", "is a folder"]),
    ("data --split dev", ["--split", "invalid choice"]),
    # ---- judge
    ("judge --n 0", ["--n 0"]),
    ("judge --n -5", ["--n -5"]),
    ("judge --image-size 48", ["--image-size 48"]),
    ("judge --num-objects 3", ["--num-objects 3"]),
    ("judge --seed -1", ["--seed -1"]),
    ("judge --judge nope", ["--judge", "invalid choice"]),
    # ---- train-tokenizer: the loop, the schedule, the run, the files
    ("train-tokenizer --lr 0", ["--lr 0"]),
    ("train-tokenizer --lr=-1e-3", ["--lr -0.001"]),
    ("train-tokenizer --lr nan", ["--lr nan"]),
    ("train-tokenizer --max-steps 0", ["--max-steps 0"]),
    ("train-tokenizer --batch-size 0", ["--batch-size 0"]),
    ("train-tokenizer --grad-accum 0", ["--grad-accum 0"]),
    ("train-tokenizer --ema-decay 1.5", ["--ema-decay 1.5"]),
    ("train-tokenizer --max-minutes -1", ["--max-minutes -1"]),
    ("train-tokenizer --warmup-steps -1", ["--warmup-steps -1"]),
    ("train-tokenizer --min-lr-ratio 2", ["--min-lr-ratio 2"]),
    ("train-tokenizer --lr-schedule wavy", ["--lr-schedule wavy"]),
    ("train-tokenizer --eval-n -1", ["--eval-n -1"]),
    ("train-tokenizer --seed -5", ["--seed -5"]),
    ("train-tokenizer --loss-set nonsense=1", ["nonsense", "--loss-set"]),
    ("train-tokenizer --set oops", ["--set", "oops"]),
    ("train-tokenizer --dataset digits --num-objects 2", ["--num-objects 2"]),
    ("train-tokenizer --out-dir {r}/binary.txt", ["--out-dir", "binary.txt"]),
    ("train-tokenizer --config {r}/missing.json", ["--config", "missing.json"]),
    ("train-tokenizer --config {r}/cut.json", ["--config", "cut.json", "not valid JSON"]),
    ("train-tokenizer --preset nope", ["--preset", "invalid choice"]),
    ("train-tokenizer --mixed-precision half", ["--mixed-precision", "invalid choice"]),
    # ---- extract-tokens
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --limit -1", ["--limit -1"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --batch-size 0", ["--batch-size 0"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --device cuda:7", ["--device cuda:7"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --device banana", ["--device banana"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --splits train,dev", ["--splits train,dev"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --splits ,", ["--splits"]),
    ("extract-tokens --tokenizer {r}/missing --out {r}/x", ["--tokenizer", "missing"]),
    ("extract-tokens --tokenizer {r}/binary.txt --out {r}/x", ["--tokenizer", "binary.txt"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/binary.txt", ["--out", "binary.txt"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --dataset digits --num-objects 1", ["--num-objects 1"]),
    ("extract-tokens --tokenizer {r}/tok --out {r}/x --precision fp16", ["--precision", "invalid choice"]),
    ("extract-tokens --out {r}/x", ["--tokenizer", "required"]),
    # ---- train-generator
    ("train-generator --tokens {r}/tokens --lr 0", ["--lr 0"]),
    ("train-generator --tokens {r}/tokens --batch-size 0", ["--batch-size 0"]),
    ("train-generator --tokens {r}/tokens --top-p 1.5", ["--top-p 1.5"]),
    ("train-generator --tokens {r}/tokens --top-p 0", ["--top-p 0"]),
    ("train-generator --tokens {r}/tokens --cfg-scale -3", ["--cfg-scale -3"]),
    ("train-generator --tokens {r}/tokens --temperature -1", ["--temperature -1"]),
    ("train-generator --tokens {r}/tokens --top-k 0", ["--top-k 0"]),
    ("train-generator --tokens {r}/tokens --steps 0", ["--steps 0"]),
    ("train-generator --tokens {r}/tokens --weight-decay -1", ["--weight-decay -1"]),
    ("train-generator --tokens {r}/tokens --beta2 1", ["--beta2 1"]),
    ("train-generator --tokens {r}/tokens --text-vocab-size 10", ["--text-vocab-size 10"]),
    ("train-generator --tokens {r}/tokens --val-n -1", ["--val-n -1"]),
    ("train-generator --tokens {r}/tokens --eval-n -1", ["--eval-n -1"]),
    ("train-generator --tokens {r}/tokens --max-minutes inf", ["--max-minutes inf"]),
    ("train-generator --tokens {r}/tokens --save-every -1", ["--save-every -1"]),
    ("train-generator --tokens {r}/tokens1 --family var --out-dir {r}/run-var", ["--family var", "tokens1",
                                                                                  "single scale"]),
    ("train-generator --tokens {r}/missing", ["--tokens", "missing"]),
    ("train-generator --tokens {r}/binary.txt", ["--tokens", "binary.txt"]),
    ("train-generator --tokens {r}/tokens --tokenizer {r}/missing", ["--tokenizer", "missing"]),
    ("train-generator --tokens {r}/tokens --set width=abc --out-dir {r}/run-w", ["width", "abc"]),
    ("train-generator --tokens {r}/tokens --set width=0 --out-dir {r}/run-w0", ["width"]),
    ("train-generator --tokens {r}/tokens --set heads=3 --out-dir {r}/run-h", ["heads"]),
    ("train-generator --tokens {r}/tokens --set nosuch=1 --out-dir {r}/run-n", ["nosuch"]),
    ("train-generator --tokens {r}/tokens --family gan", ["--family", "invalid choice"]),
    ("train-generator --config {r}/cut.json", ["--config", "cut.json"]),
    ("train-generator --config {r}/list.json", ["--config", "list.json", "mapping"]),
    ("train-generator --config {r}/wrongtype.json --tokens {r}/tokens", ["--config", "max_steps"]),
    # ---- sample
    ("sample --generator {r}/gen --classes 1 --top-p 1.5", ["--top-p 1.5"]),
    ("sample --generator {r}/gen --classes 1 --cfg-scale -3", ["--cfg-scale -3"]),
    ("sample --generator {r}/gen --classes 1 --temperature nan", ["--temperature nan"]),
    ("sample --generator {r}/gen --classes 1 --batch-size 0", ["--batch-size 0"]),
    ("sample --generator {r}/gen --classes 1 --num-per-prompt 0", ["--num-per-prompt 0"]),
    ("sample --generator {r}/gen --classes 1 --out {r}", ["--out", "is a folder"]),
    ("sample --generator {r}/gen --classes 1 --device cuda", ["--device cuda"]),
    ("sample --generator {r}/gen --prompts-file {r}/binary.txt", ["--prompts-file", "binary.txt"]),
    ("sample --generator {r}/gen --prompts-file {r}/empty.txt", ["--prompts-file", "empty.txt"]),
    ("sample --generator {r}/gen --prompts-file {r}/missing.txt", ["--prompts-file", "missing.txt"]),
    ("sample --generator {r}/missing --classes 1", ["--generator", "missing"]),
    ("sample --generator {r}/binary.txt --classes 1", ["--generator", "binary.txt"]),
    ("sample --generator {r}/gen --tokenizer {r}/missing --classes 1", ["--tokenizer", "missing"]),
    ("sample --generator {r}/gen --captions hello", ["class-conditional", "--classes"]),
    ("sample --generator {r}/gen --classes 1 --image {r}/missing.png --mask {r}/m.png", ["--image", "missing.png"]),
    ("sample --generator {r}/gen --classes 1 --image {r}/binary.txt --mask {r}/binary.txt", ["--image", "binary.txt"]),
    ("sample --generator {r}/gen --classes 1 --mask {r}/m.png", ["--mask", "--image"]),
    ("sample --generator {r}/gen --classes 1 --image {r}/x.png --outpaint right:2", ["--outpaint right:2"]),
    ("sample --generator {r}/gen --classes 1 --image {r}/x.png --outpaint up", ["--outpaint up"]),
    ("sample --generator {r}/gencut --classes 1", ["gencut", "config.json"]),
    ("sample --generator {r}/genbadtype --classes 1", ["genbadtype", "config.json", "width"]),
    ("sample --generator {r}/genlist --classes 1", ["genlist", "config.json"]),
    ("sample --generator {r}/gentrunc --classes 1", ["gentrunc", "model.safetensors"]),
    ("sample --generator {r}/gen --classes 1 --steps x", ["--steps", "invalid int value"]),
    # ---- compare
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --n 2", ["--n 2"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --families gan", ["gan"]),
    ("compare --tokens {r}/tokens1 --tokenizer {r}/tok1 --families var --n 4", ["var", "tokens1", "single scale"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --device cuda", ["--device cuda"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --sample-batch-size 0", ["--sample-batch-size 0"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --nll-n -1", ["--nll-n -1"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --curve-n 0", ["--curve-n 0"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --sample-steps maskgit=x", ["--sample-steps", "maskgit=x"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --train-flags '--bogus 1'", ["--train-flags", "--bogus"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --lr 0", ["--lr 0"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/tok --top-p 2", ["--top-p 2"]),
    ("compare --tokens {r}/missing --tokenizer {r}/tok", ["--tokens", "missing"]),
    ("compare --tokens {r}/tokens --tokenizer {r}/missing", ["--tokenizer", "missing"]),
    # ---- demo
    ("demo --n 2 --out {r}/demo", ["--n 2"]),
    ("demo --steps-per-family 0 --out {r}/demo", ["--steps-per-family 0"]),
    ("demo --judge-n 0 --out {r}/demo", ["--judge-n 0"]),
    ("demo --lr 0 --out {r}/demo", ["--lr 0"]),
    ("demo --size huge --out {r}/demo", ["--size huge"]),
    ("demo --tokenizer {r}/missing --out {r}/demo", ["--tokenizer", "missing"]),
    ("demo --compare-flags='--bogus 1' --out {r}/demo", ["--compare-flags", "--bogus"]),
    ("demo --tokenizer-scales 1,x --out {r}/demo", ["--tokenizer-scales", "1,x"]),
    ("demo --families gan --out {r}/demo", ["gan"]),
    ("demo --out {r}/binary.txt", ["--out", "binary.txt"]),
    # ---- convert-tokenizer: a wrong format name, a missing or foreign file, an option of another format
    ("convert-tokenizer --from vqgan {r}/missing.pth --out {r}/x", ["--from", "invalid choice: 'vqgan'"]),
    ("convert-tokenizer --from var-vqvae {r}/missing.pth --out {r}/x", ["missing.pth", "not found"]),
    ("convert-tokenizer --from var-vqvae {r}/gen/config.json --out {r}/x", ["config.json",
                                                                            "not a readable PyTorch checkpoint"]),
    ("convert-tokenizer --from llamagen-vq16 {r}/gen/model.safetensors --out {r}/x --scales 1,2",
     ["--scales applies to --from var-vqvae"]),
    ("convert-tokenizer --from var-vqvae {r}/missing.pth --out {r}/x --scales 1,x", ["--scales", "1,x"]),
    # ---- the command itself
    ("frobnicate", ["frobnicate", "invalid choice"]),
]


def _argv(line: str, root: Path) -> list[str]:
    import shlex

    return shlex.split(line.replace("{r}", str(root)))


@pytest.mark.parametrize("line,needles", CASES, ids=[c[0].replace("{r}/", "") for c in CASES])
def test_a_bad_input_is_one_error_line_naming_it(root, line, needles, capsys, monkeypatch):
    monkeypatch.delenv("TOKGEN_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_argv(line, root))
    err = capsys.readouterr().err
    assert exit_info.value.code == EXIT_USAGE, err
    assert "Traceback" not in err
    assert "error:" in err
    for needle in needles:
        assert needle.replace("{r}", str(root)) in err, (needle, err)
    assert not (root / "x").exists() and not (root / "run-var").exists()       # nothing written or trained


def test_the_catalogue_covers_every_command():
    commands = {c[0].split()[0] for c in CASES}
    assert set(cli.COMMANDS) <= commands and len(CASES) >= 60


# ---------------------------------------------------------------------------- the boundary itself

@pytest.mark.parametrize("argv", [["--debug", "judge", "--n", "0"], ["judge", "--n", "0", "--debug"]])
def test_debug_shows_the_traceback(argv, monkeypatch):
    monkeypatch.delenv("TOKGEN_DEBUG", raising=False)
    with pytest.raises(ValueError, match="--n 0"):
        cli.main(argv)


def test_the_environment_variable_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("TOKGEN_DEBUG", "1")
    with pytest.raises(ValueError, match="--n 0"):
        cli.main(["judge", "--n", "0"])


def _command_raising(monkeypatch, error: BaseException):
    from tokgen.train.commands import judge

    def boom(argv):
        raise error
    monkeypatch.setattr(judge, "main", boom)


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    _command_raising(monkeypatch, KeyboardInterrupt())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["judge"])
    assert exit_info.value.code == EXIT_INTERRUPTED
    assert "interrupted" in capsys.readouterr().err


@pytest.mark.parametrize("error", [KeyError("scale_1"), TypeError("bad operand"), RuntimeError("CUDA kernel"),
                                   AssertionError("invariant")])
def test_an_internal_error_keeps_its_traceback(monkeypatch, error):
    _command_raising(monkeypatch, error)
    with pytest.raises(type(error)):
        cli.main(["judge"])


def test_help_names_the_debug_switch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0 and "--debug" in capsys.readouterr().out
