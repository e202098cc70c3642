"""Registry entries that name their implementation instead of importing it.

The registries (ops, strategies) are read by listings, help texts and record checks that must start in a
fraction of a second; only building something needs torch. A :class:`LazyFactory` names the function as
``"package.module:function"`` and imports it on the first call.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LazyFactory:
    """A factory named ``"package.module:function"``, imported when first called."""

    target: str

    def resolve(self) -> Any:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)
