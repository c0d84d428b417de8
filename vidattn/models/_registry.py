"""Model registry: ``@register_model`` builders, created by name through ``create_model``.

Follows timm's ``_registry.py`` / ``_factory.py`` and torchvision's ``_api.register_model``
(which raises on a duplicate name).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import nn

from vidattn.errors import VidattnError

__all__ = ["create_model", "get_model_builder", "is_model", "keyword_names", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Decorator: register a model builder under its function name.

    Raises:
        ValueError: a builder with that name is already registered.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"a model named {name!r} is already registered ({_MODELS[name].__module__})")
    _MODELS[name] = fn
    return fn


def keyword_names(*fns: Callable[..., Any], exclude: Sequence[str] = ()) -> tuple[str, ...]:
    """The names a caller may pass by keyword to any of `fns`, read from their signatures.

    A builder that forwards ``**kwargs`` declares what it accepts as
    ``builder.accepted_kwargs = keyword_names(ModelClass, helper, exclude=<what the builder fixes>)``,
    so the list (used to suggest a misspelt argument) follows the model's signature instead of a
    hand-kept copy. ``*args`` / ``**kwargs`` and positional-only parameters are not names.
    """
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for fn in fns for p in inspect.signature(fn).parameters.values() if p.kind in named]
    return tuple(n for n in dict.fromkeys(names) if n not in exclude)


def _accepted_kwargs(builder: Callable[..., nn.Module]) -> Sequence[str]:
    accepted = getattr(builder, "accepted_kwargs", None)
    return accepted if accepted is not None else keyword_names(builder)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is an optional shell-style filter (``"*tiny"``)."""
    names = sorted(_MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _MODELS


def _unknown(name: str) -> VidattnError:
    close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return VidattnError(f"unknown model {name!r}{hint} (known: {', '.join(list_models())})")


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``.

    Raises:
        VidattnError: unknown name; the message lists close matches.
    """
    if name not in _MODELS:
        raise _unknown(name)
    return _MODELS[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Keyword arguments whose value is None are dropped, so a config or a CLI flag can
    leave a value unset and get the builder's default.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: builder arguments, e.g. ``num_classes``, ``attn``, ``pretrained``,
            ``head``, ``nonlocal_stages``, ``attn_kwargs``, ``drop_rate``.

    Returns:
        The model (in train mode, on the CPU).

    Raises:
        VidattnError: unknown model name, or an argument the builder does not take
            (the message lists close matches).
    """
    builder = get_model_builder(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return builder(**kwargs)
    except TypeError as e:
        # A misspelt argument in a config should read as a user error, not a traceback.
        match = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if match is None:
            raise
        close = difflib.get_close_matches(match.group(1), _accepted_kwargs(builder), n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise VidattnError(f"model {name!r} does not take argument {match.group(1)!r}{hint}") from e
