"""Regressions: odd-stride one-element views, async errors, zip crash safety, typed JSON
(pickled keys, OrderedDict _metadata, Counter, defaultdict) and ``keys=`` as one string."""

from __future__ import annotations

import collections
import enum
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from torchzarr.checkpoint import (
    AsyncCheckpointer,
    UnrepresentableError,
    load_checkpoint,
    save_checkpoint,
)
from torchzarr.checkpoint.rawio import flat_bytes
from torchzarr.checkpoint.values import decode_value, encode_value
from torchzarr.errors import InvalidArgumentError, MetadataError, StoreError
from torchzarr.storage import ZipStore


def _odd_stride_column() -> torch.Tensor:
    column = torch.arange(5.0).reshape(1, 5)[:, 2]
    assert column.stride() == (5,) and column.is_contiguous()  # torch calls it contiguous
    return column


def test_one_element_view_with_odd_stride_saves_to_a_local_directory(tmp_path: Path) -> None:
    column = _odd_stride_column()
    empty = torch.ones(0, 4)[:, :1]  # 0 elements, odd strides
    tall = torch.arange(3.0).as_strided((3, 1), (1, 9))  # contiguous, size-1 axis stride 9
    save_checkpoint({"col": column, "empty": empty, "tall": tall}, tmp_path / "ck")
    out = load_checkpoint(tmp_path / "ck")
    assert torch.equal(out["col"], column) and out["empty"].shape == (0, 1)
    assert torch.equal(out["tall"], tall)


def test_flat_bytes_views_odd_strided_tensors_without_a_copy() -> None:
    column = _odd_stride_column()
    raw = flat_bytes(column)
    assert raw.untyped_storage().data_ptr() == column.untyped_storage().data_ptr()
    assert torch.equal(raw.view(torch.float32), torch.tensor([2.0]))
    assert flat_bytes(torch.ones(0, 3)[:, :1]).numel() == 0
    with pytest.raises(InvalidArgumentError, match="contiguous"):
        flat_bytes(torch.ones(2, 3).T)


def test_one_element_view_with_odd_stride_saves_through_dcp(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter

    column = _odd_stride_column()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"col": column}, storage_writer=ZarrStorageWriter(tmp_path), no_dist=True)
        state = {"col": torch.zeros(1)}
        dcp.load(state, storage_reader=ZarrStorageReader(tmp_path), no_dist=True)
    assert torch.equal(state["col"], column)


def test_async_save_refused_up_front_still_reports_the_earlier_failed_save(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # saving "into" a regular file fails in the background
    saver = AsyncCheckpointer()
    saver.save({"w": torch.ones(3)}, blocker / "ck")
    with pytest.raises(UnrepresentableError) as caught:
        saver.save({"w": torch.ones(3), "bad": {1, 2}}, tmp_path / "ck2")
    err = caught.value
    assert isinstance(err.__context__, StoreError) and not err.__suppress_context__
    assert any("previous background save" in note for note in err.__notes__)
    assert any(str(blocker / "ck") in note for note in err.__notes__)
    assert saver.wait() is None  # reported once, not again
    saver.close()


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_zip_checkpoint_survives_a_kill_after_save_returns(tmp_path: Path) -> None:
    path = str(tmp_path / "ck.zip")
    save = "import os, torch; from torchzarr.checkpoint import save_checkpoint; "
    first = _run(save + f"save_checkpoint({{'step': 1, 'w': torch.ones(2)}}, {path!r})")
    assert first.returncode == 0, first.stderr
    killed = _run(
        save + f"save_checkpoint({{'step': 2, 'w': torch.ones(2)}}, {path!r}); "
        "os.kill(os.getpid(), 9)"
    )
    assert killed.returncode == -9
    assert load_checkpoint(path)["step"] == 2


def test_zip_store_passed_in_is_closed_by_a_save_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "ck.zip"
    store = ZipStore(path, mode="w")
    save_checkpoint({"step": 1, "w": torch.ones(2)}, store)
    saver = AsyncCheckpointer()
    saver.save({"step": 2, "w": torch.zeros(2)}, store)
    saver.close()
    # the directory is on disk now: a plain zipfile (another process) reads it
    names = zipfile.ZipFile(path).namelist()
    assert len(names) == len(set(names)) and not any(n.startswith("v000001/") for n in names)
    assert load_checkpoint(store)["step"] == 2  # the same store object reopens


class _Phase(enum.Enum):
    TRAIN = "train"


def test_pickled_key_above_a_tensor_round_trips() -> None:
    state = {"buffers": {_Phase.TRAIN: torch.ones(2)}}
    save_checkpoint(state, "memory://ckpt-typed-pickled-key", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-typed-pickled-key", allow_pickle=True)
    assert torch.equal(out["buffers"][_Phase.TRAIN], torch.ones(2))


def test_unstorable_key_is_named_as_a_key_by_its_path() -> None:
    for leaf in (torch.ones(2), 1):
        with pytest.raises(UnrepresentableError) as caught:
            save_checkpoint({"buffers": {_Phase.TRAIN: leaf}}, "memory://ckpt-typed-bad-key")
        message = str(caught.value)
        assert message.startswith("checkpoint key at ['buffers'][<_Phase.TRAIN: 'train'>] ")
        assert "of type _Phase" in message


def test_tensorless_ordered_dict_keeps_its_state_dict_metadata() -> None:
    activation = torch.nn.ReLU().state_dict()  # OrderedDict() with _metadata
    state = {"act": activation, "w": torch.ones(1), "deep": {"x": [activation]}}
    save_checkpoint(state, "memory://ckpt-typed-odict-meta")
    out = load_checkpoint("memory://ckpt-typed-odict-meta")
    for got in (out["act"], out["deep"]["x"][0]):
        assert type(got) is collections.OrderedDict
        assert got._metadata == activation._metadata  # type: ignore[attr-defined]
    # Without _metadata the typed JSON is as before, and the old form still loads.
    plain = collections.OrderedDict(a=1)
    assert encode_value(plain) == {"odict": [["a", 1]]}
    assert decode_value({"odict": [["a", 1]]}) == plain


def test_counter_and_defaultdict_round_trip_with_their_types() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 5, 5])
    state = {
        "scheduler": scheduler.state_dict(),  # milestones: a Counter
        "lists": collections.defaultdict(list, {1: [2], "a": []}),
        "no_factory": collections.defaultdict(None, {1: 1.5}),
        "counts": collections.Counter("abca"),
        "w": torch.ones(1),
    }
    save_checkpoint(state, "memory://ckpt-typed-counter")
    out = load_checkpoint("memory://ckpt-typed-counter")
    assert out == state
    assert type(out["scheduler"]["milestones"]) is collections.Counter
    assert list(out["counts"]) == list(state["counts"])
    assert type(out["lists"]) is collections.defaultdict
    assert out["lists"].default_factory is list and out["no_factory"].default_factory is None
    scheduler.load_state_dict(out["scheduler"])


def _zero() -> int:
    return 0


def test_defaultdict_with_another_factory_is_refused_or_pickled() -> None:
    odd = collections.defaultdict(_zero, {1: 2})
    with pytest.raises(UnrepresentableError, match=r"\['x'\].*default_factory"):
        save_checkpoint({"x": odd}, "memory://ckpt-typed-dd-refused")
    save_checkpoint({"x": odd}, "memory://ckpt-typed-dd-pickled", allow_pickle=True)
    out = load_checkpoint("memory://ckpt-typed-dd-pickled", allow_pickle=True)
    assert out["x"].default_factory is _zero and out["x"] == odd
    with pytest.raises(MetadataError, match=r"defaultdict factory 'os\.system'"):
        decode_value({"defaultdict": ["os.system", []]})


def test_a_defaultdict_holding_itself_is_refused_as_a_cycle() -> None:
    looped: collections.defaultdict[int, object] = collections.defaultdict(list)
    looped[1] = looped
    with pytest.raises(UnrepresentableError, match="reference cycle"):
        save_checkpoint({"x": looped}, "memory://ckpt-typed-dd-cycle")


def test_keys_given_as_one_string_is_one_key() -> None:
    save_checkpoint({"lst": [1, 2], "w": torch.ones(1)}, "memory://ckpt-typed-keys-str")
    assert load_checkpoint("memory://ckpt-typed-keys-str", keys="lst") == {"lst": [1, 2]}


def test_a_value_that_cannot_be_pickled_is_named_by_its_key():
    with pytest.raises(UnrepresentableError, match=r"\['hooks'\]\['fn'\].*cannot be pickled"):
        save_checkpoint({"hooks": {"fn": lambda x: x}}, "memory://ckpt-lambda", allow_pickle=True)


def test_keys_select_inside_counters_defaultdicts_and_ordered_dicts_keeping_their_type():
    meta = collections.OrderedDict(a=1, b=2)
    meta._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    state = {
        "c": collections.Counter(a=2, b=3),
        "dd": collections.defaultdict(list, a=[1], b=[2]),
        "od": meta,
    }
    save_checkpoint(state, "memory://ckpt-typed-keys-inside")
    out = load_checkpoint("memory://ckpt-typed-keys-inside", keys=["c.a", "dd.a", "od.a"])
    assert out["c"] == collections.Counter(a=2) and type(out["c"]) is collections.Counter
    assert out["dd"] == {"a": [1]} and out["dd"].default_factory is list
    assert out["od"] == collections.OrderedDict(a=1) and out["od"]._metadata == {"": {"version": 1}}
