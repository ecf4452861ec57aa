"""numpy arrays in checkpoints, the newer typed JSON leaves, reference cycles, bad typed JSON."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.checkpoint import UnrepresentableError, load_checkpoint, save_checkpoint
from torchzarr.checkpoint.values import decode_value, encode_value
from torchzarr.errors import MetadataError

NUMPY_DTYPES = [
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "complex64", "complex128",
]  # fmt: skip


def _assert_numpy_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert type(b) is np.ndarray, type(b)
    assert b.dtype == a.dtype and b.shape == a.shape  # byte order included
    np.testing.assert_array_equal(a, b)
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_arrays_load_as_numpy_arrays(tmp_path: Path, dtype: str) -> None:
    base = (np.arange(24) % 5).astype(dtype).reshape(4, 6)
    state = {
        "plain": base,
        "scalar": base[1, 1].reshape(()),
        "empty": base[:0],
        "strided": base.T[::-2],  # negative strides: copied, not shared
        "readonly": np.frombuffer(base.tobytes(), dtype=dtype),
        "swapped": base.astype(base.dtype.newbyteorder(">")),
        "beside": torch.ones(2),
    }
    save_checkpoint(state, tmp_path, chunk_bytes=16)
    for lazy in (False, True):
        out = load_checkpoint(tmp_path, lazy=lazy)
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                _assert_numpy_equal(value, out[key])
        assert torch.equal(out["beside"], torch.ones(2))


@pytest.mark.parametrize("order", [">", "<"])
def test_numpy_arrays_load_in_the_byte_order_they_were_saved_in(tmp_path: Path, order) -> None:
    state = {
        "f4": np.arange(6, dtype=f"{order}f4").reshape(2, 3),
        "c16": np.array([1 + 2j, -1j], dtype=f"{order}c16"),
        "i8": np.array(7, dtype=f"{order}i8"),
        "u1": np.arange(3, dtype="u1"),  # one byte: no order
    }
    for store in (tmp_path, "memory://ckpt-numpy-order"):
        save_checkpoint(state, store)
        for lazy in (False, True):
            out = load_checkpoint(store, lazy=lazy)
            for key, saved in state.items():
                assert out[key].dtype == saved.dtype, key
                assert out[key].tobytes() == saved.tobytes(), key


def test_numpy_arrays_saved_without_their_byte_order_load_in_native_order(
    tmp_path: Path,
) -> None:
    # Checkpoints of earlier versions stored big-endian arrays without a byte order.
    save_checkpoint({"a": np.arange(3, dtype=">i4")}, tmp_path)
    version = tmp_path / "v000001" / "zarr.json"
    document = json.loads(version.read_text())
    del document["consolidated_metadata"]["metadata"]["a"]["attributes"]["torchzarr_tensor"][
        "byteorder"
    ]
    version.write_text(json.dumps(document))
    out = load_checkpoint(tmp_path)["a"]
    assert out.dtype == np.dtype("=i4") and out.tolist() == [0, 1, 2]


def test_numpy_arrays_alias_like_tensors_and_keep_their_kind() -> None:
    t = torch.arange(6.0)
    a = np.arange(4)
    state = {"a": a, "again": a, "tensor": t, "view of tensor": t.numpy()}
    save_checkpoint(state, "memory://ckpt-numpy-alias")
    out = load_checkpoint("memory://ckpt-numpy-alias", map_location="cpu")
    assert out["a"] is out["again"]
    assert isinstance(out["tensor"], torch.Tensor) and isinstance(out["view of tensor"], np.ndarray)
    np.testing.assert_array_equal(out["view of tensor"], t.numpy())


def test_numpy_arrays_typed_json_cannot_hold_are_refused_by_key() -> None:
    for bad in (np.array(["a", "b"]), np.array([1, None], dtype=object)):
        with pytest.raises(UnrepresentableError, match=r"\['x'\]\[1\].*ndarray"):
            save_checkpoint({"x": [0, bad]}, "memory://ckpt-numpy-bad")
    save_checkpoint({"x": np.array(["a"])}, "memory://ckpt-numpy-bad", allow_pickle=True)
    assert load_checkpoint("memory://ckpt-numpy-bad", allow_pickle=True)["x"].tolist() == ["a"]


@settings(max_examples=40, deadline=None)
@given(
    st.complex_numbers(allow_nan=True, allow_infinity=True)
    | st.binary(max_size=20)
    | st.sampled_from([torch.device("cpu"), torch.device("cuda", 1), torch.device("meta")])
)
def test_complex_bytes_and_devices_round_trip_as_typed_json(value) -> None:
    import json

    back = decode_value(json.loads(json.dumps(encode_value([value]), allow_nan=False)))[0]
    assert type(back) is type(value)
    if isinstance(value, complex):
        assert np.array_equal(np.array(back), np.array(value), equal_nan=True)
    else:
        assert back == value


def test_a_reference_cycle_is_refused_naming_where() -> None:
    state: dict = {"w": torch.ones(1), "inner": {"list": []}}
    state["inner"]["list"].append(state["inner"])
    with pytest.raises(UnrepresentableError, match=r"\['inner'\]\['list'\]\[0\].*cycle"):
        save_checkpoint(state, "memory://ckpt-cycle")
    shared = [1, 2]
    out = save_checkpoint({"a": shared, "b": shared, "w": torch.ones(1)}, "memory://ckpt-cycle")
    assert out == "v000001"  # the same list twice is not a cycle


def test_containers_nested_past_the_recursion_limit_are_refused(tmp_path: Path) -> None:
    nested: dict = {"w": torch.ones(1)}
    for _ in range(sys.getrecursionlimit()):
        nested = {"a": nested}
    with pytest.raises(UnrepresentableError, match="nests containers deeper than Python's"):
        save_checkpoint(nested, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    "payload",
    [
        {"complex": 3},
        {"complex": ["x", 1]},
        {"bytes": "not base64!"},
        {"device": "toaster:0"},
        {"float": {"a": 1}},
        {"size": ["a"]},
        {"numpy": ["<f4"]},
        {"dtype": ["float32"]},
        {"float": "nan:7ff0000000000000"},  # the bits of inf
        {"float": "nan:fff8"},
        {"float": "nan:zzzzzzzzzzzzzzzz"},
        {"numpy": ["float32", "nan:7ff8000000000000"]},
    ],
)
def test_malformed_typed_json_is_a_metadata_error(payload) -> None:
    with pytest.raises(MetadataError, match=r"\['k'\]"):
        decode_value(payload, ("k",))


def _bits(value) -> int:
    held = np.asarray(value)
    return int(held.view(f"u{held.dtype.itemsize}"))


def test_nans_keep_their_payload_and_type() -> None:
    payload = np.array([0x7FF8000000000123], dtype=np.uint64).view(np.float64)[0].item()
    float32 = np.array([0x7FC12345], dtype=np.uint32).view(np.float32)[0]
    half = np.array([0xFE01], dtype=np.uint16).view(np.float16)[0]
    pair = np.zeros((), np.complex64)
    pair.imag = float32
    values = [payload, float32, half, complex(1.0, payload), pair[()], np.float64("nan")]
    back = decode_value(json.loads(json.dumps(encode_value(values), allow_nan=False)))
    assert [_bits(v) for v in back[:3]] == [_bits(v) for v in values[:3]]
    assert type(back[0]) is float and back[1].dtype == np.float32 and back[2].dtype == np.float16
    assert _bits(back[3].imag) == _bits(payload) and _bits(back[4].imag) == _bits(float32)
    assert type(back[5]) is np.float64
    # the NaNs arithmetic makes (the sign bit set, on x86) are written as any reader takes
    computed = (torch.tensor(0.0) / 0).item()
    assert encode_value(computed) == encode_value(float("nan")) == {"float": "nan"}


class _Mode(enum.StrEnum):
    TRAIN = "train"


def test_str_subclasses_are_not_stored_as_plain_str() -> None:
    # A StrEnum member would come back as a plain str: refused like IntEnum members are.
    for state in ({"mode": _Mode.TRAIN}, {_Mode.TRAIN: 1}):
        with pytest.raises(UnrepresentableError, match="_Mode"):
            save_checkpoint(state, "memory://ckpt-strenum")
    save_checkpoint({"mode": _Mode.TRAIN}, "memory://ckpt-strenum", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-strenum", allow_pickle=True)
    assert out["mode"] is _Mode.TRAIN
    assert encode_value("plain") == "plain"
