"""Token datasets: a dataset encoded once by a tokenizer, for generator training.

Layout of a token folder (written by `tokgen extract-tokens`, read by `TokenDataset`):

    meta.json                 the tokenizer spec, the source dataset and its options (e.g. num_objects),
                              the item counts per split, the precision each split was encoded in
    {split}.safetensors       scale_{k}: (N, s_k, s_k) token maps (int16 when the codebook fits,
                              else int32), label: (N,) int64
    {split}-captions.json     N captions (a list of strings)

Writes are atomic (temp file, then rename), so a cut-off extraction never looks finished.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
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
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta and meta.get("spec") != spec:
        raise ValueError(f"{folder} holds tokens of another tokenizer (spec {meta.get('spec')}); "
                         "write to a new folder")
    if meta and (meta.get("source"), meta.get("dataset_options", {})) != (source, dataset_options):
        raise ValueError(f"{folder} holds tokens of {meta.get('source')!r} with options "
                         f"{meta.get('dataset_options', {})}, not {source!r} with {dataset_options}; "
                         "write to a new folder")
    return meta


class TokenDataset(Dataset):
    """Items `{"tokens": [LongTensor (s_k, s_k) per scale], "label": int, "caption": str}`."""

    def __init__(self, folder: str | os.PathLike, split: str = "train"):
        folder = Path(folder)
        meta_path, data_path = folder / "meta.json", folder / f"{split}.safetensors"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no token folder at {folder}: run `tokgen extract-tokens --out {folder}` first")
        self.meta = json.loads(meta_path.read_text())
        if not data_path.is_file():
            raise FileNotFoundError(f"{folder} has no {split!r} split (it has {sorted(self.meta['splits'])}); "
                                    f"extract it with `tokgen extract-tokens --splits {split}`")
        data = load_file(str(data_path))
        self.spec = self.meta["spec"]
        self.source = self.meta.get("source", "")                    # the dataset the images came from
        self.dataset_options = self.meta.get("dataset_options", {})  # and its options, e.g. num_objects
        self.scales = [data[f"scale_{k}"].long() for k in range(len(self.spec["scales"]))]
        self.labels = data["label"]
        self.captions = json.loads((folder / f"{split}-captions.json").read_text())
        if not len(self.labels) == len(self.captions) == len(self.scales[0]):
            raise ValueError(f"{folder}/{split}: token, label and caption counts differ; re-extract it")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": [s[i] for s in self.scales], "label": int(self.labels[i]), "caption": self.captions[i]}


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
