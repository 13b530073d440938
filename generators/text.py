"""Captions -> token ids -> text states.

- `train_text_tokenizer(captions, vocab_size)`: a byte-level BPE tokenizer (the `tokenizers`
  library) trained on the dataset's captions, as DALL-E (Ramesh et al. 2021) trains BPE on its
  captions; lower-cased, exact round trip otherwise.  Saved with a model as `tokenizer.json`.
- `encode_captions(tokenizer, captions, length)`: ids (B, L) padded with the pad id, mask (B, L).
- `TextEncoder`: a small learned encoder (the shared transformer core, full attention) giving
  states for cross-attention and a pooled vector (a learned summary token in front, BERT's CLS).
- `FrozenHFTextEncoder`: a frozen Hugging Face encoder read from a LOCAL path only (Muse uses a
  frozen T5); never downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .core import LearnedPositions, Transformer, TransformerConfig, padding_mask

PAD_TOKEN = "[PAD]"


def train_text_tokenizer(captions: list[str], vocab_size: int, *, min_frequency: int = 1,
                         lowercase: bool = True):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `captions`; "[PAD]" is id 0.  Byte-level
    means any string encodes (no unknown tokens), so vocab_size must exceed the 256 byte symbols."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < 258:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level BPE (256 byte symbols + "
                         f"[PAD] + merges): use at least 258, e.g. 512 for a few thousand short captions")
    captions = list(captions)
    if not captions or not any(c.strip() for c in captions):
        raise ValueError("no caption text to train a tokenizer on: this dataset has no captions; "
                         "use class labels (condition='class') or no condition instead")
    tok = Tokenizer(models.BPE())
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(captions, trainer)
    return tok


def load_text_tokenizer(path: str | os.PathLike):
    from tokenizers import Tokenizer

    if not Path(path).is_file():
        raise FileNotFoundError(f"no text tokenizer at {path}: save one with tokenizer.save(path) or "
                                f"train one with train_text_tokenizer(captions, vocab_size)")
    return Tokenizer.from_file(str(path))


def pad_id_of(tokenizer) -> int:
    """The id of "[PAD]" (or the tokenizer's own padding token)."""
    pad = tokenizer.token_to_id(PAD_TOKEN)
    if pad is None and tokenizer.padding is not None:
        pad = tokenizer.padding["pad_id"]
    if pad is None:
        raise ValueError("the text tokenizer has no [PAD] token: train it with train_text_tokenizer")
    return pad


def encode_captions(tokenizer, captions: list[str], length: int, *, pad_id: int | None = None,
                    truncate: bool = False) -> tuple[Tensor, Tensor]:
    """Captions -> ids (B, length) long, padded with pad_id after the text, and mask (B, length)
    bool (True on real tokens).  A caption longer than `length` is an error unless truncate=True."""
    if isinstance(captions, str) or not all(isinstance(c, str) for c in captions):
        raise ValueError("captions must be a list of strings, e.g. ['a red circle', 'a blue square']")
    pad = pad_id_of(tokenizer) if pad_id is None else pad_id
    ids = torch.full((len(captions), length), pad, dtype=torch.long)
    mask = torch.zeros(len(captions), length, dtype=torch.bool)
    for i, enc in enumerate(tokenizer.encode_batch(list(captions))):
        row = enc.ids
        if len(row) > length and not truncate:
            raise ValueError(f"caption {i} ({captions[i][:40]!r}...) has {len(row)} tokens, more than "
                             f"text_length {length}: shorten it, pass truncate=True (`tokgen sample --truncate`), or "
                             f"build the model with a larger text_length")
        row = row[:length]
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = True
    return ids, mask


def max_caption_tokens(tokenizer, captions: list[str]) -> int:
    """The longest caption in tokens: a `text_length` that fits every caption of a dataset."""
    return max((len(e.ids) for e in tokenizer.encode_batch(list(captions))), default=0)


def decode_captions(tokenizer, ids: Tensor, mask: Tensor) -> list[str]:
    return [tokenizer.decode(row[m].tolist()) for row, m in zip(ids, mask)]


class TextEncoder(nn.Module):
    """Learned text encoder: token + position embeddings, a summary token in front, the shared
    core with full attention over real tokens.  forward -> (states (B, 1+L, D), mask (B, 1+L),
    pooled (B, D) = the summary token's state)."""

    extra_tokens = 1    # states per caption = text_length + 1 (the summary token)

    def __init__(self, vocab_size: int, length: int, width: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, width)
        self.summary = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.pos = LearnedPositions(length + 1, width)
        self.core = Transformer(TransformerConfig(width=width, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                                                  dropout=dropout))
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B = ids.shape[0]
        x = torch.cat([self.summary.expand(B, -1, -1), self.embed(ids)], dim=1)   # (B, 1+L, D)
        x = x + self.pos()[: x.shape[1]]
        mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)                      # (B, 1+L); summary always real
        states = self.core(x, mask=padding_mask(mask))                             # (B, 1+L, D)
        return states, mask, states[:, 0]


class FrozenHFTextEncoder(nn.Module):
    """A frozen `transformers` encoder from a local directory.  forward -> (states (B, L, D_hf),
    mask (B, L), pooled (B, D_hf) = mean over real tokens).  Encoder-decoder models (T5) use
    their encoder."""

    extra_tokens = 0

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.model = load_hf_encoder(path)
        self.model.requires_grad_(False)
        self.model.eval()
        self.width = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
                         else self.model.config.d_model)

    def train(self, mode: bool = True) -> "FrozenHFTextEncoder":
        super().train(mode)
        self.model.eval()          # frozen: no dropout, ever
        return self

    @torch.no_grad()
    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state    # (B, L, D_hf)
        w = mask.to(states.dtype).unsqueeze(-1)                                              # (B, L, 1)
        pooled = (states * w).sum(1) / w.sum(1).clamp_min(1.0)
        return states, mask, pooled


def _check_local(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        raise FileNotFoundError(f"no Hugging Face model at {p} (a local directory with config.json and the "
                                f"weights is needed; nothing is downloaded): save one there with "
                                f"model.save_pretrained({str(p)!r}) and tokenizer.save_pretrained(...) on a "
                                f"machine with network access, or drop text_encoder_path to use the learned encoder")
    return p


def load_hf_encoder(path: str | os.PathLike) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    p = _check_local(path)
    config = AutoConfig.from_pretrained(p, local_files_only=True)
    if getattr(config, "is_encoder_decoder", False):
        from transformers import T5EncoderModel
        return T5EncoderModel.from_pretrained(p, local_files_only=True)
    return AutoModel.from_pretrained(p, local_files_only=True)


def load_hf_tokenizer(path: str | os.PathLike):
    """The fast tokenizer saved beside a local HF model, as a `tokenizers.Tokenizer` and its pad id."""
    from transformers import AutoTokenizer

    p = _check_local(path)
    hf = AutoTokenizer.from_pretrained(p, local_files_only=True)
    if not getattr(hf, "is_fast", False) or hf.pad_token_id is None:
        raise ValueError(f"the tokenizer at {p} must be a fast tokenizer with a pad token "
                         f"(tokenizer.json with a pad token); save a fast tokenizer there")
    backend = hf.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    return backend, int(hf.pad_token_id)
