"""ZipStore: the store contract, zarr-python interop both ways, URLs, modes, fork and close."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from store_values import StoreValueChecks

import torchzarr as tz
from torchzarr.errors import ReadOnlyError, StoreError, UnknownStoreError
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.local import LocalStore
from torchzarr.storage.registry import resolve_store
from torchzarr.storage.zip import ZipStore
from torchzarr.testing.store_contract import StoreContract


class TestZipStore(StoreContract, StoreValueChecks):
    def make_store(self, tmp_path: Path) -> Store:
        return ZipStore(tmp_path / "data.zip", mode="w")


class TestDeflatedZipStore(StoreContract, StoreValueChecks):
    def make_store(self, tmp_path: Path) -> Store:
        return ZipStore(tmp_path / "data.zip", mode="a", compression=zipfile.ZIP_DEFLATED)


@pytest.mark.interop
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_reads_ours(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "ours.zip"
    data = torch.arange(7 * 5, dtype=torch.int16).reshape(7, 5)
    with ZipStore(path, mode="w") as store:
        arr = tz.create_array(
            store, shape=(7, 5), dtype=torch.int16, chunks=(3, 2), zarr_format=zarr_format
        )
        arr[:] = data
        arr[0:2, 0:2] = torch.full((2, 2), -7, dtype=torch.int16)  # overwrites chunk (0, 0)
    data[0:2, 0:2] = -7
    names = zipfile.ZipFile(path).namelist()
    assert len(names) == len(set(names))  # close() left no duplicate entries
    theirs = zarr.storage.ZipStore(path, mode="r")
    got = zarr.open_array(theirs, mode="r", zarr_format=zarr_format)
    np.testing.assert_array_equal(got[:], data.numpy())
    theirs.close()


@pytest.mark.interop
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_we_read_zarr_python(tmp_path: Path, zarr_format: int) -> None:
    path = tmp_path / "theirs.zip"
    expected = np.random.default_rng(1).normal(size=(9, 4)).astype("float32")
    theirs = zarr.storage.ZipStore(path, mode="w")
    arr = zarr.create_array(
        theirs, shape=(9, 4), chunks=(4, 4), dtype="float32", zarr_format=zarr_format
    )
    arr[:] = expected
    theirs.close()
    node = tz.open(str(path))  # a plain path ending in .zip opens a ZipStore
    assert isinstance(node, tz.Array)
    np.testing.assert_array_equal(node[:].numpy(), expected)
    np.testing.assert_array_equal(node[5:9, 1:3].numpy(), expected[5:9, 1:3])


def test_duplicates_written_by_others_read_last(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(path, "w") as zf,
    ):
        zf.writestr("k", b"old")
        zf.writestr("k", b"new")
    store = ZipStore(path)
    assert store.get("k") == b"new" and list(store.list_prefix("")) == ["k"]
    assert store.get_range("k", ByteRange(1)) == b"ew"
    store.close()
    with ZipStore(path, mode="a") as store:  # an append session compacts on close
        store.set("other", b"x")
    assert sorted(zipfile.ZipFile(path).namelist()) == ["k", "other"]
    assert zipfile.ZipFile(path).read("k") == b"new"


def test_url_resolution(tmp_path: Path) -> None:
    path = tmp_path / "u.zip"
    arr = tz.create_array(str(path), shape=(4,), dtype=torch.float32, chunks=(2,))
    arr[:] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # the same process reads what it wrote before the zip is closed: one shared archive
    assert torch.equal(tz.open_array(f"zip://{path}")[:], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    store = resolve_store(f"zip://{path}", mode="r")
    assert isinstance(store, ZipStore) and store.read_only
    with pytest.raises(ReadOnlyError, match=r"u\.zip"):
        store.set("x", b"1")
    store.close()
    assert zipfile.ZipFile(path).testzip() is None
    (tmp_path / "dir.zip").mkdir()
    assert isinstance(resolve_store(str(tmp_path / "dir.zip"), mode="a"), LocalStore)
    assert isinstance(resolve_store(str(tmp_path / "x.ZIP"), mode="a"), ZipStore)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(UnknownStoreError, match="zip://"):
        resolve_store("zip://", mode="r")
    with pytest.raises(UnknownStoreError, match="bogus"):
        resolve_store(f"zip://{tmp_path}/a.zip", mode="a", storage_options={"bogus": 1})
    with pytest.raises(UnknownStoreError, match="mode"):
        ZipStore(tmp_path / "a.zip", mode="rw")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all" * 10)
    with pytest.raises(StoreError, match=r"junk\.zip"):
        ZipStore(junk, mode="a").set("k", b"v")
    with pytest.raises(StoreError, match=r"junk\.zip"):
        ZipStore(junk).get("k")
    with pytest.raises(StoreError, match="exists"):
        ZipStore(junk, mode="x").set("k", b"v")


@pytest.mark.parametrize("kind", ["sqlite", "text"])
def test_a_file_of_another_kind_read_as_a_zip_is_named_not_a_zip(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "data.zip"
    if kind == "sqlite":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE zarr (key TEXT PRIMARY KEY, value BLOB)")
        conn.commit()
        conn.close()
    else:
        path.write_text("key,value\n" * 10)
    with pytest.raises(StoreError, match=r"'.*data\.zip'.* it is not a zip file") as info:
        ZipStore(path).get("zarr.json")
    assert "another writer may be appending" not in str(info.value)


def test_modes(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    assert ZipStore(path).get("k") is None and not path.exists()  # missing file: empty
    with ZipStore(path, mode="x") as store:
        store.set("k", b"1")
    with ZipStore(path, mode="a") as store:
        store.set("j", b"2")
    assert ZipStore(path).get_many(["k", "j"]) == {"k": b"1", "j": b"2"}
    store = ZipStore(path, mode="w")
    store.set("n", b"3")  # truncated on first use only
    store.close()
    store.set("o", b"4")  # a reopened "w" store appends
    store.close()
    assert sorted(zipfile.ZipFile(path).namelist()) == ["n", "o"]


def test_pickle_is_a_spec_that_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    store = ZipStore(path, mode="w", compression=zipfile.ZIP_DEFLATED)
    store.set("k", b"v")
    store.close()
    state = store.__getstate__()
    assert state == {
        "path": str(path),
        "mode": "a",
        "compression": zipfile.ZIP_DEFLATED,
        "allowZip64": True,
    }
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("k") == b"v"
    clone.close()


def test_ranged_reads_fetch_only_the_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.zip"
    payload = bytes(range(256)) * 4096  # 1 MiB
    with ZipStore(path, mode="w") as store:
        store.set("big", payload)
    reads: list[int] = []
    real_pread = os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", counting_pread)
    store = ZipStore(path)
    assert store.get_range("big", ByteRange(1000, 10)) == payload[1000:1010]
    assert store.get_range("big", ByteRange(-5)) == payload[-5:]
    assert max(reads) <= 64  # local headers and the ranges, never the whole entry
    store.close()


def test_fork_child_reads_while_parent_writes(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork")
    path = tmp_path / "f.zip"
    with ZipStore(path, mode="w") as store:
        store.set("a", b"closed before fork")
    writer = ZipStore(path, mode="a")
    writer.set("b", b"parent only")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        # the parent's archive is abandoned: the child reopens the file as it is on disk
        ok = ZipStore(path).get("a") == b"closed before fork"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    writer.set("c", b"after fork")
    writer.close()
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == {
            "a": b"closed before fork",
            "b": b"parent only",
            "c": b"after fork",
        }


def test_zips_left_open_are_closed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "exit.zip"
    script = (
        "import torch, torchzarr as tz\n"
        f"arr = tz.create_array({str(path)!r}, shape=(4,), dtype=torch.int64, chunks=(2,))\n"
        "arr[:] = torch.arange(4)\n"
        "arr[0:1] = torch.tensor([9])\n"  # an overwrite: the exit close compacts
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert len(names) == len(set(names)) and "zarr.json" in names
    got = zarr.open_array(zarr.storage.ZipStore(path, mode="r"), mode="r")
    np.testing.assert_array_equal(got[:], [9, 1, 2, 3])


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_zips_left_open_in_a_multiprocessing_child_are_closed_at_its_exit(
    tmp_path: Path, method: str
) -> None:
    # such a child leaves through os._exit: no atexit function runs, only its finalizers
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method")
    path = tmp_path / f"{method}.zip"
    code = (
        "import torch, torchzarr as tz\n"
        f"arr = tz.create_array({str(path)!r}, shape=(4,), dtype=torch.int32, chunks=(2,))\n"
        "arr[:] = torch.arange(4, dtype=torch.int32)\n"  # never closed
    )
    child = multiprocessing.get_context(method).Process(target=exec, args=(code, {}))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["c/0", "c/1", "zarr.json"]
    got = zarr.open_array(zarr.storage.ZipStore(path, mode="r"), mode="r")
    np.testing.assert_array_equal(got[:], [0, 1, 2, 3])


def test_closes_list_live_entries_and_rewrite_only_when_dead_bytes_outweigh_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchzarr.storage import zip_archive

    rewrites: list[str] = []
    rewrite_live = zip_archive.rewrite_live
    monkeypatch.setattr(
        zip_archive,
        "rewrite_live",
        lambda path, live: rewrites.append(path) or rewrite_live(path, live),
    )
    path = tmp_path / "grow.zip"
    with ZipStore(path, mode="w") as store:
        store.set("keep", b"k" * 1000)
        store.set("big", b"0" * 10_000)
    sizes = []
    for round_ in range(1, 9):  # a checkpoint-like pattern: replace and delete, then close
        with ZipStore(path, mode="a") as store:
            store.set("big", bytes([round_]) * 10_000)
            store.set(f"new{round_}", b"n")
            store.delete(f"new{round_ - 1}")
        names = zipfile.ZipFile(path).namelist()
        assert sorted(names) == sorted(["keep", "big", f"new{round_}"])  # live entries only
        assert zipfile.ZipFile(path).read("big") == bytes([round_]) * 10_000
        sizes.append(path.stat().st_size)
    assert 2 <= len(rewrites) <= 5  # every other close or so, not every one
    assert max(sizes) < 2.5 * 11_200  # bounded by about twice the live bytes
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every listed entry reads, the dead bytes between too


def test_a_forked_child_cannot_write_the_zip_its_parent_writes(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork")
    path = tmp_path / "parent.zip"
    writer = ZipStore(path, mode="w")
    writer.set("a", b"parent")  # open, no directory yet
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        answers = [repr(ZipStore(path).get("a"))]
        for write in (
            lambda: ZipStore(path, mode="a").set("b", b"child"),
            lambda: ZipStore(path, mode="w").get("a"),  # would truncate the parent's file
            lambda: (ZipStore(path, mode="a").close(), ZipStore(path, mode="a").delete("a")),
        ):
            try:
                write()
                answers.append("accepted")
            except Exception as err:
                answers.append(f"{type(err).__name__}: {err}")
        os.write(write_fd, "\n".join(answers).encode())
        os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as answer:
        got, *refusals = answer.read().decode().split("\n")
    assert got == repr(b"parent")
    assert len(refusals) == 3
    for refusal, key in zip(refusals, ["'b'", "(mode 'w')", "'a'"], strict=True):
        assert refusal.startswith("ReadOnlyError: ") and "forked child" in refusal
        assert repr(str(path)) in refusal and key in refusal
    writer.set("c", b"parent writes on")
    writer.close()
    with zipfile.ZipFile(path) as zf:
        assert {name: zf.read(name) for name in zf.namelist()} == {
            "a": b"parent",
            "c": b"parent writes on",
        }


def test_a_write_after_the_exit_closed_the_zip_is_refused(tmp_path: Path) -> None:
    # a daemon thread still writing at exit: the exit's close writes the directory, and a
    # write after it would land over that directory with nothing left to write it again
    path = tmp_path / "late.zip"
    script = (
        "import atexit, threading\n"
        "go, done = threading.Event(), threading.Event()\n"
        "def release_writer():\n"  # registered before torchzarr's: runs after its close
        "    go.set()\n"
        "    done.wait(60)\n"
        "atexit.register(release_writer)\n"
        "import torch, torchzarr as tz\n"
        f"arr = tz.create_array({str(path)!r}, shape=(8,), dtype=torch.float32, chunks=(4,))\n"
        "arr[0:4] = torch.arange(4.0)\n"
        "def writer():\n"
        "    go.wait()\n"
        "    try:\n"
        "        print('read', arr[0:4].tolist())\n"
        "        arr[4:8] = torch.ones(4)\n"
        "        print('write accepted')\n"
        "    except Exception as err:\n"
        "        print(f'{type(err).__name__}: {err}')\n"
        "    finally:\n"
        "        done.set()\n"
        "threading.Thread(target=writer, daemon=True).start()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    read, refusal = run.stdout.splitlines()
    assert read == "read [0.0, 1.0, 2.0, 3.0]"
    assert refusal.startswith("StoreError: cannot write 'c/1' to zip ")
    assert repr(str(path)) in refusal and "exiting" in refusal
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None and sorted(zf.namelist()) == ["c/0", "zarr.json"]
    np.testing.assert_array_equal(tz.open_array(path, mode="r")[:], [0, 1, 2, 3, 0, 0, 0, 0])


@pytest.mark.parametrize("when", ["atexit-registered-first", "weakref-finalize"])
def test_a_checkpoint_saved_to_a_new_zip_at_exit_is_written_whole(
    tmp_path: Path, when: str
) -> None:
    # both run after torchzarr's own close at exit; the save closes the zip it opened
    path = tmp_path / "last.zip"
    save = (
        "def save_last(path):\n"
        "    import torch, torchzarr as tz\n"
        "    try:\n"
        "        tz.save_checkpoint({'w': torch.arange(4.0)}, path)\n"
        "        print('saved')\n"
        "    except Exception as err:\n"
        "        print(f'{type(err).__name__}: {err}')\n"
    )
    if when == "atexit-registered-first":
        hook = f"import atexit\natexit.register(save_last, {str(path)!r})\nimport torchzarr\n"
    else:
        hook = (
            "import weakref, torchzarr\n"
            "class Trainer: pass\n"
            "trainer = Trainer()\n"
            f"weakref.finalize(trainer, save_last, {str(path)!r})\n"
        )
    run = subprocess.run(
        [sys.executable, "-c", save + hook],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert run.stdout.splitlines() == ["saved"], run.stdout + run.stderr[-2000:]
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
    loaded = tz.load_checkpoint(path)
    assert torch.equal(loaded["w"], torch.arange(4.0))


def test_a_zip_through_a_symlink_has_the_identity_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    direct = ZipStore(tmp_path / "real" / "d.zip", mode="a")
    linked = ZipStore(tmp_path / "link" / "d.zip", mode="a")
    assert direct.identity == linked.identity
    assert linked.path == str(tmp_path / "link" / "d.zip")  # errors name the path given
    assert ZipStore(tmp_path / "real" / "e.zip").identity != direct.identity


def test_writers_of_one_zip_through_a_link_and_its_path_share_its_archive(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    direct = ZipStore(tmp_path / "real" / "d.zip", mode="a")
    linked = ZipStore(tmp_path / "link" / "d.zip", mode="a")
    direct.set("a", b"1")
    linked.set("b", b"2")  # one archive: not a second writer over the first one's entries
    assert direct.get("b") == b"2" and linked.get("a") == b"1"
    direct.close()
    linked.close()
    assert sorted(ZipStore(tmp_path / "real" / "d.zip", mode="r").list_prefix("")) == ["a", "b"]


@pytest.mark.parametrize("mode", ["a", "w", "x"])
def test_a_zip_written_in_missing_folders_gets_them_made_as_directories_do(tmp_path, mode):
    path = tmp_path / "a" / "b" / "data.zip"
    with ZipStore(path, mode=mode) as store:
        store.set("k", b"1")
    assert ZipStore(path).get("k") == b"1"
    ZipStore(tmp_path / "c" / "read.zip").get("k")  # reading makes nothing
    assert not (tmp_path / "c").exists()


def test_a_zip_truncated_by_mode_w_leaves_no_chunks_of_the_old_one_in_caches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.zip"
    with ZipStore(path, mode="w") as store:
        old = tz.create_array(store, shape=(40,), dtype=torch.float32, chunks=(10,))
        old[:] = torch.arange(1.0, 41.0)
    tz.open_array(ZipStore(path), mode="r").with_cache()[...]  # the shared cache holds it
    with ZipStore(path, mode="w") as store:  # a new archive; an array of the same layout
        tz.create_array(store, shape=(40,), dtype=torch.float32, chunks=(10,))[0:10] = 7.0
    cached = tz.open_array(ZipStore(path), mode="r").with_cache()
    assert cached[8:13].tolist() == [7.0, 7.0, 0.0, 0.0, 0.0]


def test_a_compacted_zip_keeps_its_permissions_and_is_synced_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchzarr.storage import zip_rewrite

    path = tmp_path / "private.zip"
    with ZipStore(path, mode="w") as store:
        store.set("k", b"0" * 1000)
    path.chmod(0o600)
    events: list[str] = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(zip_rewrite.os, "fsync", lambda fd: events.append("fsync") or fsync(fd))
    monkeypatch.setattr(
        zip_rewrite.os, "replace", lambda a, b: events.append("replace") or replace(a, b)
    )
    modes_while_written: list[int] = []  # the temp file's bits as each entry is written
    writestr = zipfile.ZipFile.writestr

    def recording_writestr(self: zipfile.ZipFile, *args: object, **kwargs: object) -> None:
        modes_while_written.append(os.fstat(self.fp.fileno()).st_mode & 0o777)  # type: ignore[union-attr]
        writestr(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "writestr", recording_writestr)
    with ZipStore(path, mode="a") as store:
        for i in range(3):  # dead bytes outweigh the live ones: close compacts
            store.set("k", bytes([i]) * 1000)
    assert events[:2] == ["fsync", "replace"]  # the new file on disk before it replaces the old
    assert modes_while_written[-1:] == [0o600]  # private while the entries are written
    assert (path.stat().st_mode & 0o777) == 0o600
    assert zipfile.ZipFile(path).namelist() == ["k"] and ZipStore(path).get("k") == b"\2" * 1000
