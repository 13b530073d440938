"""Token datasets: a dataset encoded once by a tokenizer, for generator training.

Layout of a token folder (written by `tokgen extract-tokens`, read by `TokenDataset`):

    meta.json                 the tokenizer spec, the source dataset and its options (e.g. num_objects),
                              the item counts per split, the precision each split was encoded in
    {split}.safetensors       scale_{k}: (N, s_k, s_k) token maps (int16 when the codebook fits,
                              else int32), label: (N,) int64
    {split}-captions.json     N captions (a list of strings)

Writes are atomic (temp file, then rename), so a cut-off extraction never looks finished.
Reading checks the split against meta.json (`TokenDataset`): every scale key, shape, dtype and
id range, and the label and caption counts; a damaged file is named with its key.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset


def write_token_split(folder: str | os.PathLike, split: str, tokens: list[torch.Tensor], labels: torch.Tensor,
                      captions: list[str], spec: dict, source: str, dataset_options: dict | None = None,
                      precision: dict | None = None) -> None:
    folder = Path(folder)
    options = dict(dataset_options or {})
    meta = check_token_folder(folder, spec, source, options)  # before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.int16 if spec["codebook_size"] <= 2**15 else torch.int32
    tensors = {f"scale_{k}": t.to(dtype).contiguous() for k, t in enumerate(tokens)}
    tensors["label"] = labels.long().contiguous()
    _atomic(folder / f"{split}.safetensors", lambda p: save_file(tensors, str(p)))
    _atomic(folder / f"{split}-captions.json", lambda p: p.write_text(json.dumps(captions)))
    meta.update({"spec": spec, "source": source, "dataset_options": options})
    meta.setdefault("splits", {})[split] = len(labels)
    if precision is not None:  # train/precision.py's record of the encoder's precision
        meta.setdefault("precision", {})[split] = precision
    _atomic(folder / "meta.json", lambda p: p.write_text(json.dumps(meta, indent=2)))


def check_token_folder(folder: str | os.PathLike, spec: dict, source: str, dataset_options: dict) -> dict:
    """The folder's meta.json ({} for a new folder) if new splits of this tokenizer and dataset may
    join it; a ValueError naming the difference if it holds tokens of another tokenizer or data."""
    meta_path = Path(folder) / "meta.json"
    meta = _read_meta(meta_path) if meta_path.exists() else {}
    if meta and meta.get("spec") != spec:
        raise ValueError(f"{folder} holds tokens of another tokenizer (spec {meta.get('spec')}); "
                         "write to a new folder")
    if meta and (meta.get("source"), meta.get("dataset_options", {})) != (source, dataset_options):
        raise ValueError(f"{folder} holds tokens of {meta.get('source')!r} with options "
                         f"{meta.get('dataset_options', {})}, not {source!r} with {dataset_options}; "
                         "write to a new folder")
    return meta


class TokenDataset(Dataset):
    """Items `{"tokens": [LongTensor (s_k, s_k) per scale], "label": int, "caption": str}`.

    Opening a split checks it against meta.json, each failure a ValueError (FileNotFoundError for
    a missing file) naming the folder, the file and the key: meta.json readable with a valid spec;
    the split's safetensors file readable (not truncated) with exactly the keys scale_0 ..
    scale_{K-1} and label; each scale_k an integer (N, s_k, s_k) map with ids in
    [0, codebook_size); label an integer (N,); the captions file a list of N strings; and N the
    count meta.json records for the split."""

    def __init__(self, folder: str | os.PathLike, split: str = "train"):
        folder = Path(folder)
        meta_path, data_path = folder / "meta.json", folder / f"{split}.safetensors"
        if not meta_path.is_file():
            what = "has no meta.json" if folder.is_dir() else "does not exist"
            raise FileNotFoundError(f"no token folder at {folder} (it {what}): run "
                                    f"`tokgen extract-tokens --out {folder}` first")
        self.meta = _read_meta(meta_path)
        splits = self.meta.get("splits", {})
        if not data_path.is_file():
            raise FileNotFoundError(f"{folder} has no {split!r} split: {data_path.name} is missing (meta.json lists "
                                    f"{sorted(splits)}); extract it with `tokgen extract-tokens --splits {split}`")
        self.spec = self.meta["spec"]
        self.source = self.meta.get("source", "")                    # the dataset the images came from
        self.dataset_options = self.meta.get("dataset_options", {})  # and its options, e.g. num_objects
        data = _read_tokens(data_path)
        self.scales, self.labels = _check_split_tensors(data, data_path, self.spec)
        n = len(self.labels)
        captions_path = folder / f"{split}-captions.json"
        if not captions_path.is_file():
            raise FileNotFoundError(f"{captions_path} is missing (the {split!r} split of {folder} is incomplete): "
                                    f"re-extract it with `tokgen extract-tokens --splits {split}`")
        self.captions = _read_json(captions_path, f"re-extract the {split!r} split")
        if not isinstance(self.captions, list) or not all(isinstance(c, str) for c in self.captions):
            raise ValueError(f"{captions_path} must hold a JSON list of caption strings, got "
                             f"{type(self.captions).__name__}: re-extract the {split!r} split")
        if len(self.captions) != n:
            raise ValueError(f"{folder}/{split}: {data_path.name} holds {n} token maps and labels but "
                             f"{captions_path.name} {len(self.captions)} captions; re-extract the split")
        if split in splits and splits[split] != n:
            raise ValueError(f"{folder}/{split}: meta.json records {splits[split]} items for {split!r} but "
                             f"{data_path.name} holds {n}; the folder is inconsistent (an interrupted or mixed "
                             f"extraction?): re-extract the split")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": [s[i] for s in self.scales], "label": int(self.labels[i]), "caption": self.captions[i]}


def _read_json(path: Path, fix: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the token folder is damaged; {fix}") from None


def _read_meta(path: Path) -> dict:
    """meta.json, checked: an object with a spec of codebook_size (int >= 2) and scales (ints >= 1)."""
    fix = "re-extract the tokens into a new folder"
    meta = _read_json(path, fix)
    if not isinstance(meta, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(meta).__name__}: {fix}")
    spec = meta.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{path} has no 'spec' object (the tokenizer spec): {fix}")
    v, scales = spec.get("codebook_size"), spec.get("scales")
    if not (type(v) is int and v >= 2):
        raise ValueError(f"{path}: spec 'codebook_size' must be an int >= 2, got {v!r}: {fix}")
    if not (isinstance(scales, list) and scales and all(type(s) is int and s >= 1 for s in scales)):
        raise ValueError(f"{path}: spec 'scales' must be a non-empty list of positive ints, got {scales!r}: {fix}")
    splits = meta.get("splits", {})
    if not (isinstance(splits, dict) and all(type(c) is int and c >= 0 for c in splits.values())):
        raise ValueError(f"{path}: 'splits' must map split names to item counts, got {splits!r}: {fix}")
    return meta


def _read_tokens(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} ({path.stat().st_size} bytes) is not a readable safetensors file ({err}): it is "
                         f"truncated or corrupt (an interrupted copy?); re-extract the split") from None


def _check_split_tensors(data: dict, path: Path, spec: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """[LongTensor (N, s_k, s_k) per scale], labels (N,): the split's tensors checked against the spec."""
    scales, v = spec["scales"], spec["codebook_size"]
    fix = "re-extract the split with the tokenizer that wrote meta.json"
    want = [f"scale_{k}" for k in range(len(scales))] + ["label"]
    missing, unknown = [k for k in want if k not in data], sorted(set(data) - set(want))
    if missing or unknown:
        raise ValueError(f"{path} does not match meta.json's spec (scales {scales}: keys {want}): "
                         + (f"missing {missing}" if missing else "") + ("; " if missing and unknown else "")
                         + (f"unexpected {unknown}" if unknown else "") + f"; {fix}")
    labels = data["label"]
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{path}: 'label' must be an integer (N,) tensor, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}; {fix}")
    n = labels.shape[0]
    out = []
    for k, s in enumerate(scales):
        t = data[f"scale_{k}"]
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{path}: 'scale_{k}' has dtype {t.dtype}, expected integer token ids "
                             f"(int16/int32); {fix}")
        if tuple(t.shape) != (n, s, s):
            raise ValueError(f"{path}: 'scale_{k}' has shape {tuple(t.shape)}, expected ({n}, {s}, {s}) "
                             f"(N = {n} labels, side {s} from meta.json's scales {scales}); {fix}")
        t = t.long()
        if t.numel():
            bad = (t < 0) | (t >= v)
            if bool(bad.any()):
                first = tuple(int(i) for i in bad.nonzero()[0])
                raise ValueError(f"{path}: 'scale_{k}' has {int(bad.sum())} id(s) outside [0, {v - 1}] "
                                 f"(meta.json's codebook_size {v}), the first {int(t[first])} at item {first[0]} "
                                 f"position {first[1:]}; {fix}")
        out.append(t)
    return out, labels


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
