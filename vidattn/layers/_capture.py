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

from torch import Tensor, nn

__all__ = ["RecordsAttention", "collect_attention"]


class RecordsAttention:
    """Mixin for modules that can hand back the attention weights they compute.

    A subclass calls ``self._record(weights)`` after computing them; the call is free
    (one attribute check) when no :func:`collect_attention` block is active.
    """

    _attn_sink: tuple[dict[str, Tensor], str] | None = None

    @property
    def is_recording(self) -> bool:
        """True inside a :func:`collect_attention` block that covers this module."""
        return self._attn_sink is not None

    def _record(self, weights: Tensor, suffix: str = "") -> None:
        sink = self._attn_sink
        if sink is not None:
            store, name = sink
            store[name + suffix] = weights.detach()


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
    hooked: list[RecordsAttention] = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, RecordsAttention):
                module._attn_sink = (store, name)
                hooked.append(module)
        yield store
    finally:
        for module in hooked:
            module._attn_sink = None
