"""save_checkpoint / load_checkpoint round-trips: dtypes, shapes, containers, keys, aliasing."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchzarr as tz
from torchzarr.checkpoint import UnrepresentableError, load_checkpoint, save_checkpoint
from torchzarr.checkpoint.commit import checkpoint_store
from torchzarr.checkpoint.format import node_name
from torchzarr.checkpoint.values import decode_value, encode_value

DTYPES = [
    torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16,
    torch.uint32, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
    torch.complex64, torch.complex128, torch.float8_e4m3fn, torch.float8_e5m2,
    torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.float8_e8m0fnu,
]  # fmt: skip


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.element_size() == 1 and a.is_floating_point():
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return torch.equal(a, b)


def _tensor(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    base = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape) % 7 + 1
    if dtype.is_complex:
        return torch.complex(base, -base).to(dtype)
    return base.to(dtype)


def _assert_tree(a: Any, b: Any) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert _same(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_tree(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_dtype_and_shape(dtype: torch.dtype) -> None:
    state = {f"s{i}": _tensor(dtype, shape) for i, shape in enumerate([(), (0,), (3, 0), (5, 4)])}
    state["strided"] = _tensor(dtype, (6, 4)).T[::2]  # non-contiguous view
    save_checkpoint(state, "memory://ckpt-dtypes", chunk_bytes=16)
    out = load_checkpoint("memory://ckpt-dtypes")
    _assert_tree(state, out)
    assert out["strided"].is_contiguous()


def test_state_dict_tree_round_trips_exactly(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "leaves": (1, -(2**70), 2.5, float("nan"), float("inf"), -float("inf"), None, True, "s"),
        "size": torch.Size([2, 3]),
        "dtypes": [torch.bfloat16, torch.float8_e4m3fn],
        "numpy": [np.float32(1.5), np.int64(-3), np.bool_(True)],
        "odd keys": {"a.b": 1, "x/y": 2, "{c}": 3, "'q' \"z\"": 4, " ": 5, "..": 6, "zarr.json": 7},
        1: "int key",
        "1": "str key",
        "cls": OrderedDict,
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    save_checkpoint(state, tmp_path)
    out = load_checkpoint(tmp_path)
    _assert_tree(state, out)
    assert out["model"]._metadata == state["model"]._metadata
    assert isinstance(out["param"], torch.nn.Parameter) and out["param"].requires_grad
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    fresh.load_state_dict(out["model"])
    torch.optim.AdamW(fresh.parameters()).load_state_dict(out["optimizer"])


def test_aliased_tensors_are_stored_once() -> None:
    w = torch.randn(4, 3)
    state = {"a": w, "b": w.detach(), "c": [w], "view": w[1:]}
    save_checkpoint(state, "memory://ckpt-alias")
    root = tz.open_group("memory://ckpt-alias", mode="r")
    version = root.attrs["torchzarr_checkpoint"]["version"]
    arrays = [n for n, node in root[version].members(max_depth=None) if isinstance(node, tz.Array)]
    assert sorted(arrays) == ["a", "view"]
    out = load_checkpoint("memory://ckpt-alias")
    assert out["a"] is out["b"] is out["c"][0]
    assert torch.equal(out["view"], w[1:])


def test_partial_load_with_keys() -> None:
    state = {"model": {"layer.weight": torch.ones(2), "b": torch.zeros(1)}, "opt": [1, {"lr": 0.1}]}
    save_checkpoint(state, "memory://ckpt-keys")
    out = load_checkpoint("memory://ckpt-keys", keys=["model.layer.weight", "opt.1.lr"])
    assert list(out) == ["model", "opt"] and list(out["model"]) == ["layer.weight"]
    assert out["opt"] == {1: {"lr": 0.1}}
    exact = load_checkpoint("memory://ckpt-keys", keys=[("model", "b")])
    assert list(exact["model"]) == ["b"]
    with pytest.raises(tz.errors.NodeNotFoundError, match=r"model\.nope"):
        load_checkpoint("memory://ckpt-keys", keys=["model.nope"])


def test_map_location() -> None:
    save_checkpoint({"w": torch.ones(2)}, "memory://ckpt-map")
    assert load_checkpoint("memory://ckpt-map", map_location="cpu")["w"].device.type == "cpu"
    assert load_checkpoint("memory://ckpt-map", map_location={"cpu": "meta"})["w"].is_meta
    out = load_checkpoint("memory://ckpt-map", map_location=lambda t, loc: t * 2)
    assert torch.equal(out["w"], torch.full((2,), 2.0))


@pytest.mark.parametrize("where", ["cuda:999", {"cpu": "cuda:999"}, "no-such-device"])
def test_a_device_this_machine_lacks_is_an_error_naming_it(where) -> None:
    save_checkpoint({"w": torch.ones(2)}, "memory://ckpt-nodevice")
    wanted = where if isinstance(where, str) else where["cpu"]
    with pytest.raises(tz.errors.InvalidArgumentError, match=f"saved on 'cpu' on '{wanted}'"):
        load_checkpoint("memory://ckpt-nodevice", map_location=where)


@pytest.mark.parametrize("where", [True, 1.5, (), torch.tensor(0), object()])
def test_a_map_location_of_no_device_type_is_refused_before_reading(where) -> None:
    save_checkpoint({"w": torch.ones(2), "step": 3}, "memory://ckpt-badmap")
    save_checkpoint({"step": 3}, "memory://ckpt-badmap-notensors")
    for path in ("memory://ckpt-badmap", "memory://ckpt-badmap-notensors"):
        with pytest.raises(
            tz.errors.ArgumentTypeError, match="map_location must be None, a device"
        ):
            load_checkpoint(path, map_location=where)


@pytest.mark.parametrize("where", [2**70, {"cpu": 1.5}, {"cpu": 2**70}, {"cpu": ()}])
def test_a_map_location_naming_no_device_is_an_error_naming_it(where) -> None:
    save_checkpoint({"w": torch.ones(2)}, "memory://ckpt-nodevice-value")
    with pytest.raises(
        tz.errors.InvalidArgumentError, match="cannot place a tensor saved on 'cpu'"
    ):
        load_checkpoint("memory://ckpt-nodevice-value", map_location=where)


class _Opaque:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Opaque)


def test_no_pickle_unless_opted_in() -> None:
    state = {"model": {"inner": [1, _Opaque()]}}
    with pytest.raises(UnrepresentableError, match=r"\['model'\]\['inner'\]\[1\]"):
        save_checkpoint(state, "memory://ckpt-pickle")
    save_checkpoint(state, "memory://ckpt-pickle", allow_pickle=True)
    with pytest.raises(UnrepresentableError, match="allow_pickle"):
        load_checkpoint("memory://ckpt-pickle")
    assert load_checkpoint("memory://ckpt-pickle", allow_pickle=True) == state
    with pytest.raises(UnrepresentableError, match=r"layout"):
        save_checkpoint({"s": torch.eye(2).to_sparse()}, "memory://ckpt-pickle2")


def test_compressors_and_interop_with_zarr_python(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    w = torch.zeros(64, 8)
    save_checkpoint({"w": w, "n": 1}, tmp_path, compressors="balanced")
    root = zarr.open_group(str(tmp_path), mode="r")
    version = root.attrs["torchzarr_checkpoint"]["version"]
    np.testing.assert_array_equal(root[version]["w"][...], w.numpy())
    assert load_checkpoint(tmp_path)["n"] == 1


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_codec_that_fails_on_a_tensor_names_it_and_the_previous_save_stays(
    tmp_path: Path, where: str
) -> None:
    numcodecs = pytest.importorskip("numcodecs")
    store = tmp_path / "ckpt" if where == "local" else f"memory://ckpt-codec-fails-{id(tmp_path)}"
    save_checkpoint({"model": {"w": torch.arange(4.0)}}, store)
    # Shuffle(elementsize=4) takes the float32 tensor, not the 3 bytes of the bool one
    compressors = [numcodecs.Shuffle(elementsize=4), numcodecs.Zstd()]
    state = {"model": {"w": torch.ones(8), "mask": torch.ones(3, dtype=torch.bool)}}
    with pytest.raises(tz.errors.CodecError) as caught:
        save_checkpoint(state, store, compressors=compressors)
    message = str(caught.value)
    assert "['model']['mask']" in message and "torch.bool" in message, message
    assert "(3,)" in message and "not an integer multiple of elementsize" in message, message
    assert torch.equal(load_checkpoint(store)["model"]["w"], torch.arange(4.0))
    keys = sorted(checkpoint_store(store, "r").list_prefix(""))
    assert keys and not [key for key in keys if key.startswith("v000002")], keys


def test_node_names_are_safe_and_unique() -> None:
    used: set[str] = set()
    names = [node_name(k, used) for k in ["a", "A", "", ".", "..", "__x", "é", "x" * 300, 1, "1"]]
    assert len({n.lower() for n in names}) == len(names)
    for name in names:
        assert name and not name.startswith(".") and not name.startswith("__")
        assert "/" not in name and len(name) <= 130


leaves = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(leaves)
def test_typed_json_round_trips(value: Any) -> None:
    import json

    payload = json.loads(json.dumps(encode_value(value), allow_nan=False))
    _assert_tree(value, decode_value(payload))


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=0, max_size=6) | st.integers(-3, 3),
        st.sampled_from([torch.float32, torch.int64, torch.bfloat16]).flatmap(
            lambda dt: st.lists(st.integers(0, 3), max_size=2).map(
                lambda shape: _tensor(dt, tuple(shape))
            )
        )
        | leaves,
        max_size=5,
    )
)
def test_tree_round_trips(state: dict[Any, Any]) -> None:
    save_checkpoint(state, "memory://ckpt-hyp")
    _assert_tree(state, load_checkpoint("memory://ckpt-hyp"))


def test_save_options_take_numpy_ints_and_version_names_are_checked() -> None:
    save_checkpoint({"w": torch.ones(2)}, "memory://ckpt-np-keep", keep=np.int64(2))
    save_checkpoint({"w": torch.zeros(2)}, "memory://ckpt-np-keep", keep=np.int64(2))
    older = load_checkpoint("memory://ckpt-np-keep", version="v000001")
    assert older["w"].tolist() == [1.0, 1.0]
    for falsy in (0, "", False, 1):  # never the committed version instead
        with pytest.raises(tz.errors.ArgumentTypeError, match="version must be a version's"):
            load_checkpoint("memory://ckpt-np-keep", version=falsy)


@pytest.mark.parametrize(("option", "value"), [("keep", 0), ("keep", -1), ("chunk_bytes", 0)])
def test_save_options_out_of_range_are_refused_before_writing(option, value) -> None:
    with pytest.raises(tz.errors.InvalidArgumentError, match=f"{option} must be >= 1"):
        save_checkpoint({"w": torch.ones(2)}, "memory://ckpt-bad-option", **{option: value})
    with pytest.raises(tz.errors.NodeNotFoundError):
        load_checkpoint("memory://ckpt-bad-option")  # nothing was written


def test_the_consolidated_metadata_a_save_writes_is_what_consolidating_gives(tmp_path):
    import json

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    version = save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path)
    written = json.loads((tmp_path / version / "zarr.json").read_text())
    tz.consolidate_metadata(tmp_path, path=version)  # lists and parses every node again
    again = json.loads((tmp_path / version / "zarr.json").read_text())
    assert written == again and len(written["consolidated_metadata"]["metadata"]) > 10


def test_loading_groups_small_tensors_into_tasks_and_keeps_large_ones_alone() -> None:
    from torchzarr.checkpoint.decode import _tasks

    state = {f"s{i}": torch.zeros(4) for i in range(20)}
    state["big"] = torch.zeros(2 << 20)  # 8 MiB: a task of its own
    save_checkpoint(state, "memory://ckpt-tasks")
    root = tz.open_group("memory://ckpt-tasks", mode="r")
    root = root[root.attrs["torchzarr_checkpoint"]["version"]]
    arrays = [root[p] for p in sorted(root.array_keys())]
    parts = _tasks(arrays)
    assert [a for part in parts for a in part] == arrays  # every tensor once, in order
    assert [a.basename for a in parts[0]] == ["big"] and max(len(p) for p in parts) == 8
    assert torch.equal(load_checkpoint("memory://ckpt-tasks")["s3"], torch.zeros(4))
