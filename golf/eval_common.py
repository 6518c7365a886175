"""What both eval stages load: the model from the packaged artifact only, val tokens, byte tables."""

from __future__ import annotations

from golf.config import Params
from golf.data import build_byte_tables, list_shards, load_tokens, tokenizer_path
from golf.errors import GolfError
from golf.package import load_model_from_artifact
from golf.train import resolve_device


def load_for_eval(params: Params, seed: int, device_spec: str, max_tokens: int, seq_len: int):
    device = resolve_device(device_spec)
    model = load_model_from_artifact(params.run_dir(seed) / "artifact", device)
    val = load_tokens(list_shards(params.data_dir(), "val"), max_tokens)
    if val.numel() - 1 < seq_len:
        raise GolfError(f"eval seq_len {seq_len} is longer than the validation set ({val.numel()} tokens)")
    tables = build_byte_tables(tokenizer_path(params.data_dir()), model.cfg.vocab_size)
    return model, val, tables, device
