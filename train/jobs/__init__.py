"""The library behind the `tokgen` commands: typed configs in, results out, exceptions
(ValueError / FileNotFoundError, naming the fix) for bad inputs.  Each command parses its flags
into one of these configs and calls one function; functions call functions, never commands.

    from tokgen.train.jobs import (CompareConfig, ExtractConfig, GeneratorRunConfig, TokenizerRunConfig,
                                   compare, extract_tokens, train_generator, train_tokenizer)
    tok = train_tokenizer(TokenizerRunConfig(preset="shapes-tiny-msvq"))                 # -> TokenizerResult
    extract_tokens(ExtractConfig(tokenizer=tok.folder, out="runs/tokens"))                # -> ExtractResult
    run = train_generator(GeneratorRunConfig(tokens="runs/tokens", tokenizer=tok.folder))  # -> TrainResult
    compare(CompareConfig(tokens="runs/tokens", tokenizer=tok.folder))                    # -> report.md's path

Evaluating a trained generator is `tokgen.train.evaluation.evaluate_generator` (re-exported here),
the one path that train_generator, compare and the demo all measure with.
"""
from __future__ import annotations

from ..evaluation import EvalConfig, Evaluation, evaluate_generator, likelihood
from .comparison import CompareConfig, compare
from .generator import GeneratorRunConfig, TrainResult, train_generator
from .tokenizer import TokenizerResult, TokenizerRunConfig, train_tokenizer
from .tokens import ExtractConfig, ExtractResult, extract_tokens

__all__ = ["CompareConfig", "EvalConfig", "Evaluation", "ExtractConfig", "ExtractResult", "GeneratorRunConfig",
           "TokenizerResult", "TokenizerRunConfig", "TrainResult", "compare", "evaluate_generator",
           "extract_tokens", "likelihood", "train_generator", "train_tokenizer"]
