"""Hugging Face Hub conventions for tokgen's model folders: a model card (README.md) written with
every folder, `push_to_hub(repo_id)`, and hub ids ("owner/name") in `from_pretrained`.

    tok.save_pretrained("runs/tok", training={"steps": 5000, "images_seen": 160000})  # + README.md
    tok.push_to_hub("me/shapes-tok", private=True)            # only when asked; never by default
    tok = VQTokenizer.from_pretrained("me/shapes-tok")        # a hub id, when no such local folder

Own code that follows huggingface_hub's `ModelHubMixin` (the signatures of `push_to_hub` and
`from_pretrained`, card settings as class keyword arguments, `library_name` in the card) rather than
inheriting it: its `PyTorchModelHubMixin` writes its own config.json (the __init__ arguments),
loads weights non-strictly and knows no folder swap, where tokgen's folders carry a "format" key,
strict key checks, a generator's tokenizer.json / text_encoder/ and an atomic write
(tokgen/io.py).  So the files stay the ones every existing checkpoint has; README.md is added.

huggingface_hub is imported only by `push_to_hub` and when a hub id is resolved: importing tokgen,
saving and loading local folders never touch it or the network.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

CARD_NAME = "README.md"
LIBRARY_NAME = "tokgen"

# owner/name as the hub spells repo ids: one slash, letters, digits, '-', '_', '.' (no '..', no
# leading or trailing '.' / '-'); anything else is a local path only.
_HUB_ID = re.compile(r"^[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?/[A-Za-z0-9_](?:[\w.-]{0,94}[A-Za-z0-9_])?$")


def is_hub_id(name: str | os.PathLike) -> bool:
    """Whether `name` can be a hub id "owner/name" (only a str can: a Path is always local)."""
    return isinstance(name, str) and bool(_HUB_ID.match(name)) and ".." not in name


def resolve_folder(name_or_path: str | os.PathLike, *, revision: str | None = None,
                   cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                   local_files_only: bool = False, force_download: bool = False) -> Path:
    """The local folder of a model: `name_or_path` itself when that path exists (or cannot be a hub
    id), else the hub model "owner/name" downloaded (or found in the cache) by snapshot_download."""
    if not is_hub_id(name_or_path) or os.path.exists(name_or_path):
        return Path(name_or_path)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError as err:
        raise FileNotFoundError(f"no local folder {name_or_path!r}, and huggingface_hub is not installed to "
                                f"download the hub model of that id: pass a local folder written by "
                                f"save_pretrained, or pip install huggingface_hub") from err
    where = f"no local folder {name_or_path!r}, and the Hugging Face Hub model {name_or_path!r}"
    try:
        return Path(snapshot_download(name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=local_files_only, force_download=force_download,
                                      library_name=LIBRARY_NAME))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        # snapshot_download falls back to the cache when the hub is unreachable; this is neither
        raise FileNotFoundError(
            f"{where} could not be downloaded: no network (or HF_HUB_OFFLINE / local_files_only=True) and no "
            f"copy in the hub cache. Pass a local folder written by save_pretrained, or connect once so the "
            f"model is cached"
        ) from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"{where} does not exist (or is private or gated: pass token=...). Pass a local "
                                f"folder written by save_pretrained, or check the id") from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"the Hugging Face Hub model {name_or_path!r} has no revision {revision!r}: pass "
                                f"an existing branch, tag or commit (or revision=None for main)") from err
    except HfHubHTTPError as err:
        raise FileNotFoundError(f"{where} could not be downloaded ({err}): pass a local folder written by "
                                f"save_pretrained, or retry") from err


# ---------------------------------------------------------------------------- model cards

# what the files of a tokgen folder hold, for the card's file list
FILE_NOTES = {
    "config.json": "the configuration, the token spec and the folder's format",
    "model.safetensors": "the weights (safetensors: nothing is pickled)",
    "tokenizer.json": "the caption tokenizer (Hugging Face tokenizers)",
    "text_encoder": "the frozen Hugging Face text encoder",
}


def render_model_card(*, title: str, summary: str, facts: Mapping[str, Any], load_code: str,
                      training: Mapping[str, Any] | None = None, tags: Sequence[str] = (),
                      license: str | None = None, files: Sequence[str] = ()) -> str:
    """The README.md of a model folder: YAML front matter (library_name, license, tags), what the
    model is (`facts`), how to load it, how it was trained when the caller knows, and what its
    `files` hold."""
    front = [f"library_name: {LIBRARY_NAME}"]
    if license:
        front.append(f"license: {_yaml_str(license)}")
    tags = list(dict.fromkeys(t for t in (LIBRARY_NAME, *tags) if t))   # ordered, no repeats
    front += ["tags:"] + [f"- {_yaml_str(t)}" for t in tags]
    lines = ["---", *front, "---", "", f"# {title}", ""]
    if summary:
        lines += [summary, ""]
    lines += _table(facts)
    lines += ["", "## Load", "", "```python", load_code.rstrip(), "```", "", "## Training", ""]
    if training:
        lines += _table(training)
    else:
        lines.append("Not recorded: the folder was saved without training facts.")
    if files:
        lines += ["", "## Files", ""]
        lines += [f"- `{name}`" + (f": {FILE_NOTES[name.rstrip('/')]}" if name.rstrip("/") in FILE_NOTES else "")
                  for name in files]
    lines.append("")
    return "\n".join(lines)


def _yaml_str(value: str) -> str:
    value = str(value)
    if re.fullmatch(r"[A-Za-z][\w.-]*", value) and value.lower() not in ("true", "false", "yes", "no", "null", "on", "off"):
        return value
    return json.dumps(value)   # a JSON string is a YAML string, quoting and escapes included


def _table(facts: Mapping[str, Any]) -> list[str]:
    rows = [f"| {_cell(str(k).replace('_', ' '))} | {_cell(_fmt(v))} |" for k, v in facts.items() if v is not None]
    return ["| | |", "|---|---|", *rows]


def _fmt(value: Any, plain: bool = False) -> str:
    """A fact as text: thousands separated in tables, `plain` inside sentences ("ids in [0, 1000)")."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value) if plain else f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, plain) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, default=str)
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _parameters(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n:,} ({n / size:.1f}{unit})"
    return f"{n:,}"


# ---------------------------------------------------------------------------- the mixin

class HubMixin:
    """`push_to_hub`, hub ids in `from_pretrained` and the model card, for a torch module whose
    class implements `save_pretrained(folder, *, training=None, license=None)` (writing the card
    with `write_model_card` inside its atomic write) and `_from_folder(folder, **kwargs)`.

    Card settings are class keyword arguments, as huggingface_hub's mixin takes them:
        class VQTokenizer(nn.Module, HubMixin, loader="tokgen.tokenizers_vq:VQTokenizer.from_pretrained",
                          tags=("image-tokenizer",), card_fields=("preset", "quantizer"), tag_fields=("quantizer",),
                          card_title="...", card_summary="..."):
    loader       "module:callable" that loads a folder or hub id (the card's load snippet)
    card_fields  facts the card shows, looked up on the model, then its spec, then its config
    tag_fields   those of the facts whose values are also tags
    card_title / card_summary   str.format templates over the facts (and `class`)
    Subclasses inherit the settings of the class that declared them.
    """

    _hub_loader: ClassVar[str] = ""
    _hub_tags: ClassVar[tuple[str, ...]] = ()
    _card_fields: ClassVar[tuple[str, ...]] = ()
    _tag_fields: ClassVar[tuple[str, ...]] = ()
    _card_title: ClassVar[str] = "{class}"
    _card_summary: ClassVar[str] = ""

    def __init_subclass__(cls, *, loader: str | None = None, tags: Sequence[str] | None = None,
                          card_fields: Sequence[str] | None = None, tag_fields: Sequence[str] | None = None,
                          card_title: str | None = None, card_summary: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr, value in (("_hub_loader", loader), ("_hub_tags", tags), ("_card_fields", card_fields),
                            ("_tag_fields", tag_fields), ("_card_title", card_title),
                            ("_card_summary", card_summary)):
            if value is not None:
                setattr(cls, attr, value if isinstance(value, str) else tuple(value))

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False, force_download: bool = False, **kwargs: Any):
        """Load a folder written by `save_pretrained`, or a Hugging Face Hub model "owner/name" when
        no local path of that name exists (downloaded into the hub cache; `revision`, `cache_dir`,
        `token`, `local_files_only`, `force_download` as in huggingface_hub).  Other keyword
        arguments go to the class's loader (e.g. `device=`)."""
        folder = resolve_folder(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only, force_download=force_download)
        return cls._from_folder(folder, **kwargs)

    @classmethod
    def _from_folder(cls, directory: Path, **kwargs: Any):  # pragma: no cover - interface
        raise NotImplementedError(f"{cls.__name__} must implement _from_folder(directory, **kwargs)")

    # ------------------------------------------------------------------ publishing

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str | None = None, revision: str | None = None, create_pr: bool = False,
                    training: Mapping[str, Any] | None = None, license: str | None = None):
        """Save the model (with its card) to a temporary folder and upload that folder to the hub
        model repo `repo_id` ("owner/name"; created if missing, `private` as in huggingface_hub),
        in one commit on branch `revision` (created if missing; None = main).  Returns the hub's
        CommitInfo (`.commit_url`).  Only ever called by the user: nothing in tokgen pushes."""
        from huggingface_hub import HfApi

        api = HfApi(token=token, library_name=LIBRARY_NAME)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="tokgen-push-") as tmp:
            folder = Path(tmp) / "model"
            self.save_pretrained(folder, training=training, license=license)
            # the same card, with the repo id in its load snippet instead of the temporary path
            self.write_model_card(folder, load_from=repo_id, training=training, license=license)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                                     commit_message=commit_message or f"Upload {type(self).__name__} with tokgen",
                                     revision=revision, create_pr=create_pr)

    # ------------------------------------------------------------------ the card

    def card_facts(self) -> dict[str, Any]:
        """What the card says the model is: the class's `card_fields`, the token spec and the
        parameter count.  A field is read from the spec first (a tokenizer's config also has a
        `codebook_size`, which FSQ / LFQ ignore), then the config, then the model itself (whose
        `quantizer` is a module, not the kind)."""
        facts: dict[str, Any] = {}
        spec, config = getattr(self, "spec", None), getattr(self, "config", None)
        for name in self._card_fields:
            for source in (spec, config, self):
                if source is not None and hasattr(source, name):
                    facts[name] = getattr(source, name)
                    break
            else:
                raise AttributeError(f"{type(self).__name__}'s card field {name!r} is neither an attribute of its "
                                     f"spec, its config nor the model: fix card_fields in the class statement")
        if spec is not None:
            for name, value in spec.to_dict().items():
                facts.setdefault(name, value)
            if hasattr(spec, "tokens_per_image"):
                facts["tokens_per_image"] = spec.tokens_per_image
        parameters = getattr(self, "parameters", None)
        if callable(parameters):
            facts["parameters"] = _parameters(sum(p.numel() for p in parameters()))
        return facts

    def model_card(self, *, load_from: str | os.PathLike, training: Mapping[str, Any] | None = None,
                   license: str | None = None, files: Sequence[str] = ()) -> str:
        """The README.md text of this model's folder; `load_from` is what the load snippet loads,
        `files` the folder's other files."""
        facts = self.card_facts()
        fill = {"class": type(self).__name__, **{k: _fmt(v, plain=True) for k, v in facts.items()}}
        module, _, call = (self._hub_loader or f"{type(self).__module__}:{type(self).__name__}.from_pretrained"
                           ).partition(":")
        load_code = f"from {module} import {call.split('.')[0]}\n\nmodel = {call}({str(load_from)!r})\n"
        tags = [*self._hub_tags, *(str(facts[f]) for f in self._tag_fields if facts.get(f))]
        return render_model_card(title=self._card_title.format(**fill), summary=self._card_summary.format(**fill),
                                 facts=facts, load_code=load_code, training=training, tags=tags, license=license,
                                 files=files)

    def write_model_card(self, folder: str | os.PathLike, *, load_from: str | os.PathLike,
                         training: Mapping[str, Any] | None = None, license: str | None = None) -> Path:
        """Write README.md into `folder` (call it last, inside the atomic write: it lists the files)."""
        folder = Path(folder)
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name != CARD_NAME)
        path = folder / CARD_NAME
        path.write_text(self.model_card(load_from=load_from, training=training, license=license, files=files))
        return path

