"""train.inductor_options: torch._inductor.config settings for training's torch.compile, so that a sweep can
time them as variants (`--set 'train.inductor_options=[triton.mix_order_reduction=false]'`).

Why: in profiles of the one-graph compiled training step on an H200, some of the costliest kernels are single
inductor kernels named triton_per_fused__fused_rms_norm__fused_rms_norm_backward_..._sum, 5.8-7.9 ms each per
step. Each fuses an RMSNorm backward (a reduction along the channels of every token) with a per-channel
gradient sum over all the tokens (a reduction along the other axis); that pairing looks like inductor's
mix-order reduction. Turning it off (triton.mix_order_reduction=false) or letting inductor autotune its split
(triton.mix_order_reduction_autotune_split_size=true, or a fixed triton.mix_order_reduction_split_size) are
settings of torch._inductor.config, which this knob reaches without code changes.

How: each entry is 'dotted.key=value'; golf.config checks the form when params load, `resolve_inductor_options`
checks the key and value against torch._inductor.config. golf.train resolves them on every run, so a misspelt
option fails at once on CPU as well, and sets them only when training compiles. torch.compile's own `options=`
cannot be combined with its `mode=` (train.compile_mode), so the options are set on torch._inductor.config
itself before torch.compile, process-wide, and stay set while training runs: compilation is lazy (the first
step's forward, its backward, any recompile later in the run), and each compile reads the config when it
happens. torch keeps config overrides per thread: they are set in the thread that trains, and torch carries
them into the autograd threads that compile the backward. train() puts the previous values back when it
returns (`kept_inductor_options`), as it does for its other global torch settings.

Values: the value is read as YAML, with YAML 1.2's booleans (true/false; yes/no/on/off stay strings), and must
fit the type torch declares for the option (the type of its default where it has no annotation): true or false
for a bool (never 1 or "yes"), an integer for an int, an integer or a decimal for a float (stored as a float), a
string for a str, null only where the declared type allows None, one of the listed values for a Literal. An
option declared as anything else (lists, tuples, callables, classes, or no type at all, as for some options whose
default is None) is refused: a scalar guessed into it could fail deep inside a compile or be ignored unseen.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from collections.abc import Iterator
from typing import Any

from golf.config import ConfigError, _short, split_inductor_option

_SCALARS = (bool, int, float, str, type(None))
_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _inductor_config():
    import torch._inductor.config  # ~1 s on first import: only when there are options to resolve

    return torch._inductor.config


def _members(declared: Any) -> list | None:
    """The parts of an option's declared type that a YAML scalar can be (scalar types or Literals), or None
    when any part is something else."""
    if isinstance(declared, types.UnionType) or typing.get_origin(declared) is typing.Union:
        parts = typing.get_args(declared)
    else:
        parts = (declared,)
    out = []
    for part in parts:
        if part in _SCALARS or (typing.get_origin(part) is typing.Literal
                                and all(isinstance(a, _SCALARS) for a in typing.get_args(part))):
            out.append(part)
        else:
            return None
    return out


def _describe(members: list) -> str:
    words = [_KIND[m] if m in _KIND else "one of " + ", ".join(repr(a) for a in typing.get_args(m))
             for m in members]
    return " or ".join(words)


def _fit(value: Any, members: list) -> tuple[bool, Any]:
    """(True, value as the option takes it) when `value` fits one of `members`, else (False, None). A bool
    never passes for a number, nor a number for a bool; an integer passes for a float (as a float)."""
    for m in members:
        if typing.get_origin(m) is typing.Literal:
            if any(type(value) is type(a) and value == a for a in typing.get_args(m)):
                return True, value
        elif type(value) is m:
            return True, value
    if float in members and type(value) is int:
        return True, float(value)
    return False, None


def resolve_inductor_options(entries: list, source: str = "the train settings") -> dict[str, Any]:
    """train.inductor_options as {dotted option name: value}, each checked against torch._inductor.config: the
    option must exist and the value fit its type (module docstring). An empty list imports nothing."""
    if not entries:
        return {}
    cfg = _inductor_config()
    import torch

    resolved: dict[str, Any] = {}
    for entry in entries:
        key, value = split_inductor_option(entry, source)
        where = f"'train.inductor_options' in {source}: entry {_short(entry)}"
        try:
            declared = cfg.get_type(key)
        except KeyError:  # a subconfig's name (e.g. 'triton') is an attribute but no option
            declared = None
        if declared is None or not hasattr(cfg, key):  # hasattr: an option torch has hidden
            near = difflib.get_close_matches(key, list(cfg.get_config_copy()), n=3)
            hint = f"; close: {', '.join(near)}" if near else ""
            raise ConfigError(f"{where}: torch._inductor.config (torch {torch.__version__}) has no option "
                              f"{key!r}; expected an existing dotted option name{hint}")
        members = _members(declared)
        if not members or members == [type(None)]:
            what = "has no declared type (its default is None)" if members else f"is declared as {declared}"
            raise ConfigError(f"{where}: torch._inductor.config.{key} {what}, which train.inductor_options does "
                              "not set; expected an option of type bool, int, float or str (or one of these or None)")
        ok, fitted = _fit(value, members)
        if not ok:
            raise ConfigError(f"{where}: torch._inductor.config.{key} takes {_describe(members)}, got "
                              f"{_short(value)} ({type(value).__name__})")
        resolved[key] = fitted
    return resolved


def apply_inductor_options(resolved: dict[str, Any]) -> None:
    """Set resolved options on torch._inductor.config for the rest of the process, or until put back
    (`kept_inductor_options`). torch keeps such settings per thread: call this from the thread that trains (torch
    carries them into the autograd threads that compile the backward). Nothing to set imports nothing."""
    if not resolved:
        return
    cfg = _inductor_config()
    for key, value in resolved.items():
        setattr(cfg, key, value)
        if getattr(cfg, key) != value:  # e.g. an environment variable that forces it: the variant would not be one
            raise ConfigError(f"'train.inductor_options': torch._inductor.config.{key} stays "
                              f"{getattr(cfg, key)!r} after setting it to {value!r} (forced from outside, e.g. by "
                              "an environment variable); expected the option to take the value")


@contextlib.contextmanager
def kept_inductor_options(entries: list) -> Iterator[None]:
    """Put back, on exit, the values the options named in `entries` had on entry (train() runs inside this, so
    that what compile_for_training sets does not outlive training). Resolves the entries first, so a bad entry
    fails here, before any work."""
    resolved = resolve_inductor_options(entries)
    if not resolved:
        yield
        return
    cfg = _inductor_config()
    saved = {key: getattr(cfg, key) for key in resolved}
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(cfg, key, value)
