"""The contract every family and every quantizer keeps on every device: the same tests on the CPU
(CI) and on CUDA (scripts/gpu_check.py runs them there with TOKGEN_TEST_DEVICES=cpu,cuda).

On each device: a training step gives finite gradients (float32, and bfloat16 autocast where the
device has it natively); sampling stays on the device, with a torch.Generator of that device,
and the same seed gives the same tokens; AR's cached decoding agrees with its own teacher-forced
logits; every quantizer encodes to ids in range and decodes to finite images of the right shape."""
from __future__ import annotations

import copy
import os

import pytest
import torch

from tokgen.generators import FAMILIES, build_generator, train_text_tokenizer
from tokgen.tokenizers_vq import QUANTIZER_KINDS, VQTokenizer, get_preset
from tokgen.train.precision import resolve_precision

CAPTIONS = ["a large red circle at the top left", "a small blue square in the center"]


def _devices() -> list[str]:
    wanted = os.environ.get("TOKGEN_TEST_DEVICES")
    devices = wanted.split(",") if wanted else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [d for d in devices if d == "cpu" or torch.cuda.is_available()]


DEVICES = _devices()
PRESET = {"vq": "shapes-tiny", "msvq": "shapes-tiny-msvq", "fsq": "shapes-tiny-fsq", "lfq": "shapes-tiny-lfq"}
SMALL_TOKENIZER = dict(base_width=8, z_channels=8, channel_mults=(1, 2, 2, 2), kmeans_init=False)


@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return VQTokenizer(get_preset("shapes-tiny-msvq", **SMALL_TOKENIZER, scales=(1, 2, 4), codebook_size=32)).eval()


@pytest.fixture(scope="module")
def spec(tokenizer):
    return tokenizer.spec


@pytest.fixture(scope="module")
def text_tokenizer():
    return train_text_tokenizer(CAPTIONS * 4, vocab_size=300)


def _generator(family: str, tokenizer, text_tokenizer, device: str):
    """A tiny caption model on `device`, attached to the tokenizer there (VAR reads its codebook)."""
    torch.manual_seed(0)
    config = dict(width=32, depth=1, heads=4, condition="text", **({"timesteps": 8} if family == "d3pm" else {}))
    gen = build_generator(family, tokenizer.spec, config, text_tokenizer=text_tokenizer).to(device)
    return gen.attach_tokenizer(copy.deepcopy(tokenizer).to(device))


def _tokens(spec, batch: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, spec.codebook_size, (batch, s, s), generator=g).to(device) for s in spec.scales]


def _bf16_native(device: str) -> bool:
    return resolve_precision("auto", torch.device(device)).dtype == torch.bfloat16


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_training_step_is_finite_on_the_device(family, device, tokenizer, spec, text_tokenizer):
    gen = _generator(family, tokenizer, text_tokenizer, device).train()
    cond = gen.make_condition(captions=CAPTIONS)
    precisions = [None] + ([torch.bfloat16] if _bf16_native(device) else [])
    for dtype in precisions:
        gen.zero_grad()
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            loss, _ = gen.loss(_tokens(spec, 2, device), cond)
        loss.backward()
        assert torch.isfinite(loss), (family, dtype)
        grads = [p.grad for p in gen.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), (family, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sampling_stays_on_the_device_and_is_seeded(family, device, tokenizer, spec, text_tokenizer):
    gen = _generator(family, tokenizer, text_tokenizer, device).eval()
    cond = gen.make_condition(captions=CAPTIONS)
    steps = None if gen.fixed_steps else 3

    def draw(seed):
        return gen.generate(cond, steps=steps, cfg_scale=2.0, top_k=8,
                            generator=torch.Generator(device=device).manual_seed(seed))

    a, b, c = draw(0), draw(0), draw(1)
    for t, s in zip(a, spec.scales):
        assert t.device.type == torch.device(device).type and t.shape == (2, s, s)
        assert 0 <= int(t.min()) and int(t.max()) < spec.codebook_size
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("device", DEVICES)
def test_ar_cached_greedy_decoding_matches_its_teacher_forced_logits(device, tokenizer, text_tokenizer):
    """Greedy (top-1) sampling with the KV cache must pick, at every position, the argmax of the
    logits the model gives the finished sequence in one teacher-forced pass."""
    gen = _generator("ar", tokenizer, text_tokenizer, device).eval()
    cond = gen.make_condition(captions=CAPTIONS)
    tokens = gen.generate(cond, top_k=1, generator=torch.Generator(device=device).manual_seed(0))
    logits = gen.logits(tokens, cond)                                       # (B, N, V)
    flat = torch.cat([t.flatten(1) for t in tokens], dim=1)
    assert torch.equal(logits.argmax(-1), flat)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", QUANTIZER_KINDS)
def test_every_quantizer_round_trips_on_the_device(kind, device):
    torch.manual_seed(0)
    scales = {"scales": (1, 2, 4)} if kind == "msvq" else {}
    tok = VQTokenizer(get_preset(PRESET[kind], **SMALL_TOKENIZER, **scales)).to(device)
    images = torch.rand(2, 3, tok.spec.image_size, tok.spec.image_size, generator=torch.Generator().manual_seed(2))
    images = images.to(device)
    out, _ = tok(images)                                   # the training forward: finite, and it backpropagates
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in tok.parameters() if p.grad is not None)
    tok.eval()
    tokens = tok.encode(images)
    assert [t.shape[-1] for t in tokens] == list(tok.spec.scales)
    assert all(0 <= int(t.min()) and int(t.max()) < tok.spec.codebook_size for t in tokens)
    decoded = tok.decode(tokens)
    assert decoded.shape == images.shape and decoded.device == images.device and torch.isfinite(decoded).all()
    assert all(torch.equal(a, b) for a, b in zip(tokens, tok.encode(images)))     # encoding is deterministic
