"""SentencePiece tokenizers: train with the challenge's recipe, or load a given model and check its vocab."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

from golf.errors import DataError


def train_tokenizer(texts: Iterable[str], vocab_size: int, normalization: str = "nmt_nfkc",
                    num_threads: int = 2) -> bytes:
    """Train a BPE model and return its serialized bytes.

    The challenge's recipe (openai/parameter-golf data tooling, mirrored in the shared corpus's
    build/train_spm.py): BPE, byte_fallback, split_digits, no dummy prefix, pad/bos/eos/unk = 0/1/2/3,
    character_coverage 0.999. `normalization="nmt_nfkc"` is that recipe (it also collapses whitespace and
    turns newlines into spaces, so BPB then counts the bytes of the normalized text, as the challenge does);
    `"identity"` keeps every byte of the original text (decode(encode(doc)) == doc).
    """
    import sentencepiece as spm

    if normalization not in ("nmt_nfkc", "identity"):
        raise DataError(f"tokenizer normalization must be 'nmt_nfkc' or 'identity', got {normalization!r}")
    model = io.BytesIO()
    extra = {} if normalization == "nmt_nfkc" else {"remove_extra_whitespaces": False}
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            character_coverage=0.999, byte_fallback=True, split_digits=True,
            normalization_rule_name=normalization, add_dummy_prefix=False, pad_id=0, bos_id=1, eos_id=2,
            unk_id=3, hard_vocab_limit=False, input_sentence_size=2_000_000, shuffle_input_sentence=True,
            max_sentence_length=100_000, num_threads=num_threads, minloglevel=2, **extra)
    except RuntimeError as e:
        raise DataError(f"SentencePiece training failed (vocab_size {vocab_size}): {e}") from None
    return model.getvalue()


def load_tokenizer(path: str | Path, expected_vocab: int):
    """Load a SentencePiece model; its vocab must match the model config's vocab_size exactly."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer model {str(path)!r} not found")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as e:
        raise DataError(f"tokenizer model {str(path)!r} could not be loaded: {e}") from None
    if sp.vocab_size() != expected_vocab:
        raise DataError(f"tokenizer {str(path)!r} has vocab size {sp.vocab_size()}, but params expect "
                        f"{expected_vocab} (data.vocab_size / model.vocab_size)")
    if sp.bos_id() != 1:
        raise DataError(f"tokenizer {str(path)!r} has BOS id {sp.bos_id()}, expected 1 (the challenge's ids)")
    return sp
