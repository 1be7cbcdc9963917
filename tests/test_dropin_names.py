"""Every vector-quantize-pytorch export is either provided by rvqfast or listed as not provided,
and importing a listed one raises an ImportError that names it."""
from __future__ import annotations

import importlib

import pytest

import rvqfast
from rvqfast.quantize.compat import NOT_PROVIDED, PROVIDED

vqp = pytest.importorskip("vector_quantize_pytorch")


def _vqp_exports() -> set[str]:
    return {n for n, v in vars(vqp).items() if isinstance(v, type)}


def test_every_vqp_export_is_provided_or_listed():
    exports = _vqp_exports()
    assert exports, "vector_quantize_pytorch exports no classes?"
    assert not set(PROVIDED) & set(NOT_PROVIDED)
    assert exports <= set(PROVIDED) | set(NOT_PROVIDED), sorted(exports - set(PROVIDED) - set(NOT_PROVIDED))
    for name in PROVIDED:
        assert name in exports
        ours = getattr(rvqfast, name)
        assert ours.__name__ == name and getattr(importlib.import_module("rvqfast.quantize"), name) is ours


@pytest.mark.parametrize("module", ["rvqfast", "rvqfast.quantize"])
def test_missing_names_raise_import_error_naming_them(module):
    for name in NOT_PROVIDED:
        with pytest.raises(ImportError, match=f"^{name} .*vector-quantize-pytorch class that rvqfast does not provide"):
            exec(f"from {module} import {name}", {})
    with pytest.raises(ImportError, match="cannot import name 'not_a_name'"):
        exec(f"from {module} import not_a_name", {})
    assert not hasattr(importlib.import_module(module), "not_a_name")
