"""Collect the attention weights a model computed in its last forward pass.

Every attention layer in vidattn (and the attention-pooling head) derives from
:class:`RecordsAttention`. Outside :func:`collect_attention` a layer keeps nothing, so
there is no memory leak and no autograd graph kept alive; inside, it writes a detached
copy of the weights it computes into the collector, keyed by its module name.

Example:
    >>> with collect_attention(model) as weights:
    ...     logits = model(clip)
    >>> weights["layer3.0.attn.temporal"].shape  # (B, T)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

__all__ = ["RecordsAttention", "collect_attention"]


class RecordsAttention:
    """Mixin for modules that can hand back the attention weights they compute.

    A subclass calls ``self._record(weights)`` after computing them; the call is free
    (one attribute check) when no :func:`collect_attention` block is active.
    """

    # (store, name) of every active collect_attention block covering this module (they can nest).
    _attn_sink: tuple[tuple[dict[str, Tensor], str], ...] | None = None

    @property
    def is_recording(self) -> bool:
        """True inside a :func:`collect_attention` block that covers this module."""
        return self._attn_sink is not None

    def _record(self, weights: Tensor, suffix: str = "") -> None:
        sinks = self._attn_sink
        if sinks is not None:
            weights = weights.detach()
            for store, name in sinks:
                store[name + suffix] = weights


@contextmanager
def collect_attention(model: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record the attention weights every attention layer of ``model`` computes.

    Yields a dict that fills in while the model runs inside the ``with`` block: one
    entry per attention module, keyed by its name in ``model.named_modules()`` (the
    root module itself is keyed ``""``). A module called twice keeps its last weights.
    A layer with more than one kind of weight adds a suffix, e.g. hard attention's
    selection mask is ``"<name>:mask"``. Tensors are detached; the per-layer shapes
    are documented on each layer (``weights`` section of its docstring).

    Args:
        model: any module; the attention layers inside it are found by type.

    Yields:
        The dict of recorded weights (it stays valid after the block ends).
    """
    store: dict[str, Tensor] = {}
    hooked: list[tuple[RecordsAttention, Any]] = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, RecordsAttention):
                outer = module.__dict__.get("_attn_sink")
                hooked.append((module, outer))
                module._attn_sink = (outer or ()) + ((store, name),)
        yield store
    finally:
        for module, outer in hooked:  # an enclosing block keeps recording
            module._attn_sink = outer
