"""The examples in the docstrings (``>>>``) run, and say what they show: every module of
`san` that loads without Ray (the Ray layer's are exercised by the integration tests)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import san

# modules that import Ray when loaded: unit tests never start it, nor load it
WITH_RAY = {"san.fabric", "san.actors", "san.remote"}


def modules() -> list[str]:
    found = [m.name for m in pkgutil.walk_packages(san.__path__, "san.")]
    return sorted(name for name in found
                  if name not in WITH_RAY and not name.startswith("san.bench")
                  and not name.endswith("__main__"))


@pytest.mark.parametrize("name", modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
