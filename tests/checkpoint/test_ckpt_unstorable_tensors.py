"""Tensors no Zarr array holds (nested, exotic dtypes, sparse): refused by key, or pickled."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from torchzarr.checkpoint import (
    AsyncCheckpointer,
    UnrepresentableError,
    load_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")


def _nested() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # nested tensors are a prototype API
        return torch.nested.nested_tensor([torch.arange(2.0), torch.arange(3.0)])


def _assert_nested_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert b.is_nested
    assert all(torch.equal(x, y) for x, y in zip(a.unbind(), b.unbind(), strict=True))


def test_a_nested_tensor_is_refused_by_key_or_pickled() -> None:
    state = {"model": {"ragged": _nested(), "w": torch.ones(2)}}
    with pytest.raises(UnrepresentableError, match=r"\['model'\]\['ragged'\] is a nested"):
        save_checkpoint(state, "memory://ckpt-nested")
    save_checkpoint(state, "memory://ckpt-nested", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-nested", allow_pickle=True)
    _assert_nested_equal(state["model"]["ragged"], out["model"]["ragged"])
    assert torch.equal(out["model"]["w"], torch.ones(2))


def _exotic(dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.complex32:
        return torch.tensor([1 + 2j, -3j], dtype=torch.complex64).to(dtype)
    raw = torch.tensor([1, 2, 3, 250], dtype=torch.uint8)  # 1-byte dtypes view it
    return raw.view(dtype) if dtype != torch.bits16 else raw.view(torch.int16).view(dtype)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    size = a.element_size()
    carrier = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[size]
    return a.dtype == b.dtype and torch.equal(a.view(carrier), b.view(carrier))


EXOTIC = [torch.complex32, torch.float4_e2m1fn_x2, torch.bits8, torch.bits16]


@pytest.mark.parametrize("dtype", EXOTIC, ids=str)
def test_tensors_of_dtypes_zarr_lacks_are_refused_or_pickled(dtype: torch.dtype) -> None:
    t = _exotic(dtype)
    with pytest.raises(UnrepresentableError, match=r"\['t'\].*allow_pickle=True"):
        save_checkpoint({"t": t}, "memory://ckpt-exotic")
    state = {"t": t, "deep": {"list": [t, torch.ones(1)]}}
    save_checkpoint(state, "memory://ckpt-exotic", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-exotic", allow_pickle=True)
    assert _same_bits(t, out["t"]) and _same_bits(t, out["deep"]["list"][0])


def test_pickled_complex32_keeps_parameter_and_requires_grad() -> None:
    values = torch.tensor([1 + 1j, 2 - 1j]).to(torch.complex32)
    state = {
        "param": torch.nn.Parameter(values.clone()),
        "frozen": torch.nn.Parameter(values.clone(), requires_grad=False),
        "grad": values.clone().requires_grad_(True),
        "plain": values.clone(),
    }
    save_checkpoint(state, "memory://ckpt-complex32-grad", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-complex32-grad", allow_pickle=True)
    for key, saved in state.items():
        assert type(out[key]) is type(saved), key
        assert out[key].requires_grad == saved.requires_grad, key
        assert _same_bits(saved.detach(), out[key].detach()), key


def test_sub_byte_integer_tensors_are_refused_even_with_allow_pickle() -> None:
    t = torch.zeros(3, dtype=torch.int4)  # torch serialises these neither way
    with pytest.raises(UnrepresentableError, match=r"\['t'\]"):
        save_checkpoint({"t": t}, "memory://ckpt-int4", allow_pickle=True)


def test_async_checkpointer_pickles_sparse_and_nested_tensors(tmp_path: Path) -> None:
    sparse = torch.eye(3).to_sparse()
    nested = _nested()
    with AsyncCheckpointer(allow_pickle=True) as saver:
        saver.save({"sparse": sparse, "nested": nested, "w": torch.ones(2)}, tmp_path)
        saver.wait()
    out = load_checkpoint(tmp_path, allow_pickle=True)
    assert torch.equal(out["sparse"].to_dense(), torch.eye(3))
    _assert_nested_equal(nested, out["nested"])
