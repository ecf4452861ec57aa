"""Several instances writing one store in turn, and forked children of a busy parent."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.features import FeatureStore, upsert


def _fresh_ids(store: Any) -> list[int]:
    return FeatureStore(store, mode="r").ids.tolist()


def test_instances_writing_in_turn_keep_each_others_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.zarr")
    FeatureStore(path, mode="w").write([0], {"x": torch.tensor([0.0])})
    first, second = FeatureStore(path), FeatureStore(path)
    assert len(first) == len(second) == 1  # both loaded before either writes
    first.write([1, 2], {"x": torch.tensor([1.0, 2.0])})
    second.write([3], {"x": torch.tensor([3.0])})  # appends after rows 1, 2
    assert _fresh_ids(path) == [0, 1, 2, 3]
    first.write([0], {"x": torch.tensor([-1.0])})  # an overwrite from a stale instance
    second.create_feature("y", torch.int8)
    reader = FeatureStore(path, mode="r")
    assert reader.ids.tolist() == [0, 1, 2, 3] and reader.features == ("x", "y")
    assert reader.read([0, 1, 2, 3])["x"].tolist() == [-1.0, 1.0, 2.0, 3.0]


def test_a_pickled_copy_writing_after_its_parent_keeps_the_parents_rows(tmp_path: Path) -> None:
    parent = FeatureStore(str(tmp_path / "fs.zarr"), mode="w")
    parent.write([0], {"x": torch.tensor([0])})
    copy = pickle.loads(pickle.dumps(parent))
    assert len(copy) == 1
    parent.write([1], {"x": torch.tensor([1])})
    copy.write([2], {"x": torch.tensor([2])})
    assert copy.ids.tolist() == [0, 1, 2]
    parent.refresh()
    assert parent.read([0, 1, 2])["x"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("first", [2, 3])
def test_a_pickled_copy_opens_a_store_rebuilt_in_the_other_format(
    tmp_path: Path, first: int
) -> None:
    path = str(tmp_path / "fs.zarr")
    parent = FeatureStore(path, mode="w", zarr_format=first)
    parent.write([1], {"x": torch.tensor([1.0])})
    early = pickle.dumps(parent)  # before the rebuild, as a DataLoader worker's copy
    FeatureStore(path, mode="w", zarr_format=5 - first).write([1], {"x": torch.tensor([2.0])})
    assert parent.refresh() and parent.group.zarr_format == 5 - first
    for copy in (pickle.loads(pickle.dumps(parent)), pickle.loads(early)):
        assert copy.read([1])["x"].tolist() == [2.0]
        assert copy.group.zarr_format == 5 - first


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_pickled_copy_of_a_store_not_opened_yet_creates_it_in_the_format_asked(
    tmp_path: Path, zarr_format: int
) -> None:
    path = str(tmp_path / "fs.zarr")
    copy = pickle.loads(pickle.dumps(FeatureStore(path, zarr_format=zarr_format)))
    copy.write([1], {"x": torch.tensor([1.0])})
    assert FeatureStore(path, mode="r").group.zarr_format == zarr_format


def test_a_write_another_process_published_under_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "f.zarr")
    FeatureStore(path, mode="w").write([0], {"x": torch.tensor([0])})
    late = FeatureStore(path)
    assert len(late) == 1
    store_rows = upsert.write_rows
    interleaved: list[bool] = []
    rival = (
        f"from torchzarr.features import FeatureStore; import torch; "
        f"FeatureStore({path!r}).write([1], {{'x': torch.tensor([1])}})"
    )

    def write_rows_with_a_rival(arr: Any, rows: np.ndarray, data: torch.Tensor) -> None:
        if not interleaved:  # another process publishes while `late` stores its rows
            interleaved.append(True)
            subprocess.run([sys.executable, "-c", rival], check=True, timeout=120)
        store_rows(arr, rows, data)

    monkeypatch.setattr(upsert, "write_rows", write_rows_with_a_rival)
    with pytest.raises(StoreError, match="another writer published version 2"):
        late.write([0], {"x": torch.tensor([5])})
    assert late.version == 1  # nothing swapped in
    reader = FeatureStore(path, mode="r")
    assert reader.ids.tolist() == [0, 1] and reader.version == 2
    late.write([2], {"x": torch.tensor([2])})  # starts from the rival's state now
    assert FeatureStore(path, mode="r").ids.tolist() == [0, 1, 2]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_appending_write_another_process_published_under_leaves_its_ids(
    tmp_path: Path, zarr_format: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids array is changed only after the check of the published version: the ids
    of rows the other process published are never cut nor overwritten."""
    path = str(tmp_path / "f.zarr")
    FeatureStore(path, mode="w", zarr_format=zarr_format).write([0], {"x": torch.tensor([0])})
    late = FeatureStore(path)
    assert len(late) == 1
    store_rows = upsert.write_rows
    rival = (
        f"from torchzarr.features import FeatureStore; import torch; "
        f"FeatureStore({path!r}).write([1], {{'x': torch.tensor([1])}})"
    )

    def write_rows_with_a_rival(arr: Any, rows: np.ndarray, data: torch.Tensor) -> None:
        subprocess.run([sys.executable, "-c", rival], check=True, timeout=120)
        store_rows(arr, rows, data)

    monkeypatch.setattr(upsert, "write_rows", write_rows_with_a_rival)
    with pytest.raises(StoreError, match="another writer published version 2"):
        late.write([5], {"x": torch.tensor([5])})  # appends: its id would go in row 1
    reader = FeatureStore(path, mode="r")
    assert reader.ids.tolist() == [0, 1] and reader.version == 2


@pytest.mark.parametrize("opened", ["one store object", "a store object each"])
def test_instances_writing_at_once_in_threads_keep_every_row(tmp_path: Path, opened: str) -> None:
    path = str(tmp_path / "f.zarr")
    FeatureStore(path, mode="w").write([0], {"x": torch.tensor([0.0])})
    shared = tz.storage.LocalStore(path)
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        fs = FeatureStore(shared if opened == "one store object" else path)
        try:
            for eid in range(first, first + 15):
                fs.write([eid], {"x": torch.tensor([float(eid)])})
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(first,)) for first in (1, 101, 201)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    reader = FeatureStore(path, mode="r")
    ids = sorted(reader.ids.tolist())
    assert ids == [0, *range(1, 16), *range(101, 116), *range(201, 216)]
    assert reader.read(ids)["x"].tolist() == [float(i) for i in ids]


def _first_writes_at_once(path: str, opened: str) -> list[BaseException]:
    """Four threads write one id each, at once, to the new store at ``path``; their errors."""
    shared = FeatureStore(path)  # default mode "a": the store is made at first use
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(eid: int) -> None:
        fs = shared if opened == "one instance" else FeatureStore(path)
        start.wait()
        try:
            fs.write([eid], {"x": torch.tensor([float(eid)])})
        except BaseException as err:  # reported by the caller
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(eid,)) for eid in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.parametrize("opened", ["one instance", "an instance each"])
def test_first_writes_in_threads_to_a_new_store_all_land(tmp_path: Path, opened: str) -> None:
    for trial in range(12):  # a race: enough rounds that the unlocked creation lost one
        path = str(tmp_path / f"new{trial}.zarr")
        assert _first_writes_at_once(path, opened) == []
        reader = FeatureStore(path, mode="r")
        assert sorted(reader.ids.tolist()) == [0, 1, 2, 3]
        assert reader.read([0, 1, 2, 3])["x"].tolist() == [0.0, 1.0, 2.0, 3.0]


def _in_child(check: Any) -> int:
    """Run ``check`` in a forked child; its exit status (1 on error, killed on a hang)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            faulthandler.dump_traceback_later(60, exit=True)  # a hang fails, never blocks
            check()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_child_forked_during_a_write_reads_and_prefetches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = FeatureStore(str(tmp_path / "fs.zarr"), mode="w")
    fs.write(np.arange(8), {"e": torch.arange(8.0)})
    store_rows = upsert.write_rows
    writing, resume = threading.Event(), threading.Event()

    def paused_write_rows(arr: Any, rows: np.ndarray, data: torch.Tensor) -> None:
        writing.set()
        resume.wait()
        store_rows(arr, rows, data)

    monkeypatch.setattr(upsert, "write_rows", paused_write_rows)
    writer = threading.Thread(target=fs.write, args=([8], {"e": torch.tensor([8.0])}))
    writer.start()
    writing.wait()  # the writer holds the store's locks now

    def read_in_child() -> None:
        assert fs.read([3, 1])["e"].tolist() == [3.0, 1.0]
        fs.prefetch([2])
        assert fs.read([2])["e"].tolist() == [2.0]

    try:
        status = _in_child(read_in_child)
    finally:
        resume.set()
        writer.join()
    assert status == 0
    assert fs.read([8])["e"].tolist() == [8.0]


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_child_forked_after_the_parent_prefetched_reads_and_prefetches(
    tmp_path: Path,
) -> None:
    fs = FeatureStore(str(tmp_path / "fs.zarr"), mode="w")
    fs.write(np.arange(8), {"e": torch.arange(8.0)})
    fs.prefetch([1])
    assert fs.read([1])["e"].tolist() == [1.0]  # the parent's read-ahead thread exists now
    fs.prefetch([5])  # and a batch is pending at the fork

    def prefetch_in_child() -> None:
        assert fs.read([5])["e"].tolist() == [5.0]
        fs.prefetch([4, 6])
        assert fs.read([4, 6])["e"].tolist() == [4.0, 6.0]

    assert _in_child(prefetch_in_child) == 0
    assert fs.read([5])["e"].tolist() == [5.0]
    fs.close()


_ZIP_WRITER = """
import sys, torch
from torchzarr.features import FeatureStore
fs = FeatureStore(sys.argv[1], mode="a")
ids = torch.tensor([1, 2, 3])
fs.write(ids, {"emb": ids[:, None] * float(sys.argv[2])})
fs.close()
"""


def test_a_reader_of_a_zip_sees_another_processs_writes_after_refresh(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.zip")
    subprocess.run([sys.executable, "-c", _ZIP_WRITER, path, "1"], check=True, timeout=120)
    reader = FeatureStore(path, mode="r")
    assert reader.read(torch.tensor([1]))["emb"].item() == 1.0
    subprocess.run([sys.executable, "-c", _ZIP_WRITER, path, "10"], check=True, timeout=120)
    assert reader.refresh()  # the zip the other process wrote, not the one first read
    assert reader.read(torch.tensor([1]))["emb"].item() == 10.0


def test_close_completes_a_zip_the_instance_opened_and_leaves_a_given_store_open(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "f.zip")
    with FeatureStore(path, mode="w") as fs:
        fs.write([1, 2], {"x": torch.tensor([1.0, 2.0])})
    code = f"from torchzarr.features import FeatureStore; print(FeatureStore({path!r}, mode='r').read([2])['x'].item())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "2.0", done.stderr  # another process reads the whole zip
    fs.write([3], {"x": torch.tensor([3.0])})  # still usable: the zip reopens
    fs.close()
    assert FeatureStore(path, mode="r").read([3, 1])["x"].tolist() == [3.0, 1.0]
    given = tz.storage.ZipStore(str(tmp_path / "g.zip"), mode="w")
    with FeatureStore(given, mode="w") as other:
        other.write([1], {"x": torch.tensor([1.0])})
    given.set("extra", b"still open")  # the caller's store: not closed by the feature store
    given.close()
    assert FeatureStore(str(tmp_path / "g.zip"), mode="r").read([1])["x"].tolist() == [1.0]


_OVERWRITE_SEEN = """
import sys, torch
from torchzarr.features import FeatureStore
FeatureStore(sys.argv[1], mode="r+").write([1], {"x": torch.tensor([10.0])})
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_forked_reader_keeps_rows_it_read_until_refresh_in_either_format(
    tmp_path: Path, zarr_format: int
) -> None:
    path = str(tmp_path / "fs.zarr")
    fs = FeatureStore(path, mode="w", zarr_format=zarr_format)
    fs.write([1, 2], {"x": torch.tensor([1.0, 2.0])})
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def in_child() -> None:  # a DataLoader worker, persistent across the parent's writes
        assert fs.read([1, 2])["x"].tolist() == [1.0, 2.0]
        os.write(ready_w, b"1")
        os.read(go_r, 1)  # another process has overwritten id 1 now
        assert fs.read([1, 2])["x"].tolist() == [1.0, 2.0]  # v2 and v3 alike: what it read
        assert fs.refresh() is True
        assert fs.read([1, 2])["x"].tolist() == [10.0, 2.0]

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            faulthandler.dump_traceback_later(60, exit=True)
            in_child()
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)  # the child's ends: a child that failed early reads as b"" here
    os.close(go_r)
    try:
        if os.read(ready_r, 1) == b"1":
            subprocess.run([sys.executable, "-c", _OVERWRITE_SEEN, path], check=True, timeout=120)
    finally:
        with contextlib.suppress(OSError):  # (a child that failed early is gone)
            os.write(go_w, b"1")
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(go_w)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
