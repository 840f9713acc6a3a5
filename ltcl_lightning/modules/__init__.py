"""Building blocks with parameters or buffers, and how a callback finds the state module it drives."""

from __future__ import annotations

import torch.nn as nn


def state_modules(root: nn.Module, cls: type, driver: str, methods: str, one: bool = True, keep=bool) -> list:
    """``root``'s submodules of type ``cls`` that ``keep`` accepts (found by type, never by attribute
    name); refuses none, or several when ``one``."""
    found = [m for m in root.modules() if isinstance(m, cls) and keep(m)]
    if not found or (one and len(found) > 1):
        raise TypeError(f"{driver} needs a method with a {cls.__name__} ({methods}); {type(root).__name__} has {len(found)}")
    return found
