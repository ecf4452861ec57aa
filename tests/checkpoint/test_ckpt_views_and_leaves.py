"""Views, leaves and failures that must come back as saved (or be refused), not as neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from torchzarr.checkpoint import (
    AsyncCheckpointer,
    UnrepresentableError,
    load_checkpoint,
    save_checkpoint,
)
from torchzarr.errors import StoreError


def test_conjugate_and_negative_views_are_not_their_base(tmp_path: Path) -> None:
    z = torch.tensor([1 + 2j, 3 - 4j])
    x = torch.tensor([1.0, 2.0])
    state = {"z": z, "zc": z.conj(), "x": x, "xn": x._neg_view()}
    save_checkpoint(state, tmp_path / "sync")
    with AsyncCheckpointer() as saver:
        saver.save(state, tmp_path / "async")
    for where in ("sync", "async"):
        out = load_checkpoint(tmp_path / where)
        assert out["zc"].tolist() == [1 - 2j, 3 + 4j] and out["z"].tolist() == [1 + 2j, 3 - 4j]
        assert out["xn"].tolist() == [-1.0, -2.0] and out["x"].tolist() == [1.0, 2.0]


def test_a_parameter_and_a_plain_view_of_it_each_load_as_saved() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    for order in (("param", "plain"), ("plain", "param")):
        value = {"param": p, "plain": p.detach()}
        save_checkpoint({k: value[k] for k in order}, "memory://ckpt-param-view")
        out = load_checkpoint("memory://ckpt-param-view")
        assert type(out["param"]) is torch.nn.Parameter and out["param"].requires_grad
        assert type(out["plain"]) is torch.Tensor and not out["plain"].requires_grad
    tied = torch.ones(2)
    out = load_checkpoint(_saved({"a": tied, "b": tied}))
    assert out["a"] is out["b"]  # true aliases still load as one tensor


def _saved(state: dict) -> str:
    save_checkpoint(state, "memory://ckpt-views-tied")
    return "memory://ckpt-views-tied"


def test_complex_tensors_keep_requires_grad() -> None:
    z = torch.tensor([1 + 1j], requires_grad=True)
    assert load_checkpoint(_saved({"z": z}))["z"].requires_grad


def test_numpy_array_subclasses_are_refused_not_stripped() -> None:
    masked = np.ma.masked_array([1.0, 100.0, 3.0], mask=[False, True, False])
    with pytest.raises(UnrepresentableError, match="MaskedArray"):
        save_checkpoint({"m": masked}, "memory://ckpt-masked")
    save_checkpoint({"m": masked}, "memory://ckpt-masked", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-masked", allow_pickle=True)["m"]
    assert isinstance(out, np.ma.MaskedArray) and out.mean() == 2.0


@pytest.mark.parametrize(
    "value",
    [
        np.complex64(complex("nan+1j")),
        np.complex128(complex(1, float("inf"))),
        np.longdouble(1) / 3,
        np.clongdouble(complex(1, 2)) / 3,
        np.float32("-inf"),
    ],
    ids=str,
)
def test_numpy_scalars_with_nan_inf_or_extended_precision_round_trip(value) -> None:
    out = load_checkpoint(_saved({"v": value}))["v"]
    assert type(out) is type(value)
    assert np.array_equal(out, value, equal_nan=True)


def test_a_failed_async_save_does_not_drop_the_next_one(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with AsyncCheckpointer() as saver:
        saver.save({"w": torch.ones(1)}, tmp_path / "file" / "ckpt")  # fails in the background
        with pytest.raises(StoreError, match="Not a directory"):
            saver.save({"w": torch.full((1,), 2.0)}, tmp_path / "good")
        saver.wait()
    assert load_checkpoint(tmp_path / "good")["w"].item() == 2.0


def test_a_file_in_the_way_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(StoreError, match="a file is in the way"):
        save_checkpoint({"w": torch.ones(1)}, tmp_path / "file")


def test_meta_tensors_pickle_in_async_saves_as_in_direct_ones() -> None:
    state = {"m": torch.empty(2, device="meta")}
    with AsyncCheckpointer(allow_pickle=True) as saver:
        saver.save(state, "memory://ckpt-meta-async")
    out = load_checkpoint("memory://ckpt-meta-async", allow_pickle=True)["m"]
    assert out.is_meta and out.shape == (2,)


def test_map_location_to_an_integer_dtype_drops_requires_grad() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    out = load_checkpoint(_saved({"p": p}), map_location=lambda t, _: t.to(torch.int64))
    assert type(out["p"]) is torch.nn.Parameter and out["p"].dtype == torch.int64
    assert not out["p"].requires_grad


def test_a_dcp_checkpoint_loaded_as_a_plain_one_says_how_to_load_it() -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    from torchzarr.distributed import ZarrStorageWriter
    from torchzarr.errors import MetadataError

    dcp.save({"w": torch.ones(2)}, storage_writer=ZarrStorageWriter("memory://ckpt-dcp-plain"))
    with pytest.raises(MetadataError, match="ZarrStorageReader"):
        load_checkpoint("memory://ckpt-dcp-plain")
