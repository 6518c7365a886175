"""SentencePiece tokenizers: train with the challenge's recipe, or load a given model and check its vocab.

The recipe (openai/parameter-golf data tooling, mirrored in the shared corpus's build/train_spm.py): BPE,
byte_fallback, split_digits, no dummy prefix, pad/bos/eos/unk = 0/1/2/3, character_coverage 0.999.

Normalization, and why the default is not the recipe's nmt_nfkc. BPB divides by the bytes that the byte
tables assign to the token stream, i.e. the bytes of the text *as the tokenizer normalized it*. nmt_nfkc
(with SentencePiece's default remove_extra_whitespaces=True) rewrites text before encoding: every newline
becomes a space, whitespace runs collapse, and NFKC folds characters ("…" -> "...", NBSP -> space,
"½" -> "1⁄2", "²" -> "2"). Measured on the shared corpus's val.jsonl.xz (2,063 docs, 6,135,673 UTF-8 bytes)
with the shared corpus_1024_bpe.model: 241 documents do not survive decode(encode(doc)), and the byte
tables count 6,134,700 bytes, 973 (0.016 %) fewer than the originals; turning remove_extra_whitespaces off
alone cannot fix this, NFKC and the newline rule still rewrite text. With `normalization="identity"` and
remove_extra_whitespaces=False every document round-trips and the count equals the UTF-8 length exactly
(tests/test_data.py checks it on a val set), at a cost of ~0.3 % more tokens per byte on that text.
So identity is our default; nmt_nfkc stays available for parity with the challenge, whose official FineWeb
shards were made with it (their BPB counts normalized bytes too).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from golf.errors import DataError

NORMALIZATIONS = ("identity", "nmt_nfkc")
# SentencePiece's trainer drops every sentence over max_sentence_length bytes; a sample made only of such
# documents (one long document at the front of the corpus) leaves it nothing, and it fails with an internal
# check ("!sentences_.empty()"). Longer documents are cut into pieces of at most this many bytes instead.
MAX_SENTENCE_BYTES = 100_000
log = logging.getLogger(__name__)


def split_long(text: str, limit: int = MAX_SENTENCE_BYTES) -> Iterator[str]:
    """`text` in pieces of at most `limit` UTF-8 bytes, cut at the last space or newline of each piece
    (or, with none in its last quarter, at a character boundary); the pieces concatenate to `text`."""
    data = text.encode("utf-8")
    start = 0
    while len(data) - start > limit:
        end = start + limit
        cut = max(data.rfind(b" ", end - limit // 4, end), data.rfind(b"\n", end - limit // 4, end))
        if cut > start:
            end = cut + 1
        else:
            while data[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: step back to the character's start
                end -= 1
        yield data[start:end].decode("utf-8")
        start = end
    yield data[start:].decode("utf-8")


def train_tokenizer(texts: Iterable[str], vocab_size: int, normalization: str = "identity",
                    num_threads: int = 2) -> bytes:
    """Train a BPE model with the challenge's recipe and return its serialized bytes.

    `normalization="identity"` keeps every byte of the text (decode(encode(doc)) == doc for any doc that
    does not start with a space or contain a literal "▁"); `"nmt_nfkc"` is the recipe as published.
    """
    import sentencepiece as spm

    if normalization not in NORMALIZATIONS:
        raise DataError(f"tokenizer normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    # identity without remove_extra_whitespaces=False would still collapse whitespace runs and strip ends
    extra = {"remove_extra_whitespaces": False} if normalization == "identity" else {}
    model = io.BytesIO()
    split_docs = 0

    def sentences() -> Iterator[str]:
        nonlocal split_docs
        for text in texts:
            if len(text) * 4 > MAX_SENTENCE_BYTES and len(text.encode("utf-8")) > MAX_SENTENCE_BYTES:
                split_docs += 1
                yield from split_long(text)
            else:
                yield text

    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            character_coverage=0.999, byte_fallback=True, split_digits=True,
            normalization_rule_name=normalization, add_dummy_prefix=False, pad_id=0, bos_id=1, eos_id=2,
            unk_id=3, hard_vocab_limit=False, input_sentence_size=2_000_000, shuffle_input_sentence=True,
            max_sentence_length=MAX_SENTENCE_BYTES, num_threads=num_threads, minloglevel=2, **extra)
    except RuntimeError as e:
        raise DataError(f"SentencePiece training failed (vocab_size {vocab_size}): {e}") from None
    if split_docs:
        log.warning("%d document(s) longer than %d bytes split for tokenizer training (SentencePiece's "
                    "max_sentence_length); the shards hold them whole", split_docs, MAX_SENTENCE_BYTES)
    return model.getvalue()


def load_tokenizer(path: str | Path, expected_vocab: int):
    """Load a SentencePiece model; its vocab must match the params' vocab_size exactly and BOS must be 1."""
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
