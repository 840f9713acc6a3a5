"""Count host-device synchronisation points on the CPU.

On a GPU each of these calls waits for the device: reading a value (``.item``, ``.tolist``,
``.cpu``, ``.numpy``, ``bool / int / float`` of a tensor), ops whose output size depends on the
data (``nonzero``, ``torch.where(cond)``, boolean-mask indexing, ``bincount``, ``unique``,
``masked_select``), and building a tensor from host data on a device (``torch.tensor`` /
``torch.as_tensor`` with a ``device=``). On the CPU nothing waits, so nothing would show a
regression; :class:`SyncCounter` patches those entry points and records every call made while
it is active, attributed to the innermost frame of the library (``ltcl_lightning/``) on the
call stack (``None`` when no library frame is on it: Lightning or torch internals).

    with SyncCounter() as c:
        ...
    c.library  # [(kind, "ltcl_lightning/losses/bessel.py:123"), ...]
    c.calls    # also the ones with no library frame (Lightning's, e.g. progress-bar metrics)
"""

from __future__ import annotations

import os
import sys
from collections import Counter

import torch

import ltcl_lightning

_LIB = os.path.dirname(os.path.abspath(ltcl_lightning.__file__)) + os.sep
_ROOT = os.path.dirname(_LIB.rstrip(os.sep)) + os.sep


_TORCH = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep


def _origin() -> tuple[str | None, str]:
    """(innermost library frame or None, innermost frame outside torch and this file)."""
    f = sys._getframe(3)
    outside = None
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if path.startswith(_LIB):
            return f"{path[len(_ROOT) :]}:{f.f_lineno}", outside or f"{path}:{f.f_lineno}"
        if outside is None and not path.startswith(_TORCH) and path != os.path.abspath(__file__):
            outside = f"{path.split('site-packages' + os.sep)[-1]}:{f.f_lineno}"
        f = f.f_back
    return None, outside or "?"


def _is_bool_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in items)


class SyncCounter:
    """Patches the sync points while active (re-entrant use is not supported)."""

    _TENSOR_METHODS = (
        "item",
        "tolist",
        "cpu",
        "numpy",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "nonzero",
        "bincount",
        "unique",
        "masked_select",
    )
    _TORCH_FUNCS = ("nonzero", "bincount", "unique", "masked_select")

    def __init__(self):
        #: (kind, innermost library frame or None, innermost caller outside torch)
        self.calls: list[tuple[str, str | None, str]] = []
        self.active = False
        self._saved: list[tuple[object, str, object]] = []

    # ----- results ------------------------------------------------------------------------------
    @property
    def library(self) -> list[tuple[str, str]]:
        """Calls with a library frame on the stack: (kind, file:line of the innermost one)."""
        return [(k, where) for k, where, _ in self.calls if where is not None]

    def summary(self) -> Counter:
        """Every call by (kind, library frame, caller): Lightning's own ones have no library frame."""
        return Counter(self.calls)

    # ----- patching -----------------------------------------------------------------------------
    def _record(self, kind: str) -> None:
        if self.active:
            self.active = False  # the bookkeeping itself must not count
            try:
                self.calls.append((kind, *_origin()))
            finally:
                self.active = True

    def _wrap(self, owner, name: str, kind: str, when=None) -> None:
        original = getattr(owner, name)
        counter = self

        def wrapper(*args, **kwargs):
            if counter.active and (when is None or when(*args, **kwargs)):
                counter._record(kind)
            return original(*args, **kwargs)

        self._saved.append((owner, name, original))
        setattr(owner, name, wrapper)

    def __enter__(self) -> SyncCounter:
        for name in self._TENSOR_METHODS:
            self._wrap(torch.Tensor, name, f"Tensor.{name}")
        for name in self._TORCH_FUNCS:
            self._wrap(torch, name, f"torch.{name}")
        self._wrap(torch, "where", "torch.where(cond)", when=lambda *a, **k: len(a) + len(k) == 1)
        self._wrap(torch.Tensor, "__getitem__", "boolean index", when=lambda self_, idx: _is_bool_index(idx))
        self._wrap(torch.Tensor, "__setitem__", "boolean index assignment", when=lambda self_, idx, v: _is_bool_index(idx))
        for name in ("tensor", "as_tensor"):
            self._wrap(
                torch,
                name,
                f"torch.{name}(host data, device=)",
                when=lambda *a, **k: k.get("device") is not None and not torch.is_tensor(a[0] if a else k.get("data")),
            )
        self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self.active = False
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()
