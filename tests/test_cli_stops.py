"""How the ``torchzarr`` command stops: Ctrl-C, a copy that fails midway, the reader of its
progress going away, and what a failure leaves at a destination it created."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

import torchzarr as tz
import torchzarr.core.from_array as from_array_module
import torchzarr.storage.zip_archive as zip_archive
from torchzarr.cli import main
from torchzarr.cli_signals import Stopped
from torchzarr.storage.registry import resolve_store


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def source(tmp_path):
    """An array of 40 chunks: a copy of it with ``--jobs 1`` takes 3 batches of keys."""
    src = tz.create_array(tmp_path / "src.zarr", shape=(40,), dtype=torch.int64, chunks=(1,))
    src[:] = torch.arange(1, 41)
    return tmp_path / "src.zarr"


def _stop_reading_at_the_second_batch(monkeypatch, error):
    real = tz.LocalStore.get_many
    calls = []

    def get_many(self, keys):
        calls.append(keys)
        if len(calls) == 2:
            raise error()  # a new one each time: the command adds notes to it
        return real(self, keys)

    monkeypatch.setattr(tz.LocalStore, "get_many", get_many)


@pytest.mark.parametrize(
    ("error", "status", "said"),
    [
        (lambda: tz.errors.StoreError("connection lost"), 1, "connection lost"),
        (KeyboardInterrupt, 130, "interrupted"),
    ],
)
@pytest.mark.parametrize("dest_name", ["dst.zarr", "dst.zip"])
def test_a_copy_stopped_midway_says_what_it_left(
    tmp_path, capsys, monkeypatch, source, error, status, said, dest_name
):
    dest = tmp_path / dest_name
    with monkeypatch.context() as patch:
        _stop_reading_at_the_second_batch(patch, error)
        done, _, err = _run(capsys, "copy", source, dest, "--jobs", 1)
    assert done == status and err.count("\n") == 1 and "Traceback" not in err
    assert err == (
        f"torchzarr copy: {said} (the destination {dest} path / holds the keys copied before "
        "the copy stopped but no metadata: no node opens there; run the copy again, with "
        "--overwrite)\n"
    )
    with resolve_store(dest, mode="r") as store:  # a zip was closed: its directory written
        keys = sorted(store.list_prefix(""))
    assert keys and "zarr.json" not in keys
    status, _, err = _run(capsys, "copy", source, dest)
    assert status == 1 and "--overwrite" in err and "holds the keys" not in err  # refused
    with monkeypatch.context() as patch:
        _stop_reading_at_the_second_batch(patch, error)
        _, _, err = _run(capsys, "copy", source, dest, "--jobs", 1, "--overwrite", "--progress")
    progress, message, _ = err.split("\n")  # the message on a line of its own
    assert progress == "\rcopy: 16/41 keys" and message.startswith(f"torchzarr copy: {said} (")
    assert "and those it held before not yet replaced or deleted, but no metadata" in message
    assert _run(capsys, "copy", source, dest, "--overwrite")[0] == 0
    assert tz.open_array(dest, mode="r")[:].tolist() == list(range(1, 41))


def test_ctrl_c_during_a_rechunk_removes_what_it_began_and_says_one_line(
    tmp_path, capsys, monkeypatch, source
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(from_array_module, "_copy_values", interrupted)  # metadata written
    dest = tmp_path / "new" / "dst.zarr"
    status, _, err = _run(capsys, "rechunk", source, dest, "--chunks", 8)
    assert status == 130
    assert err == f"torchzarr rechunk: interrupted (nothing was left at / of {dest})\n"
    assert not (tmp_path / "new").exists()  # the directories it made go too


class _NoHandlerInstalled(Exception):
    """Raised by the test's own SIGTERM handler: the command installed none of its own."""


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_during_a_rechunk_cleans_up_as_ctrl_c(
    tmp_path, capsys, monkeypatch, source, signum, status
):
    """``kill``, ``timeout`` or a batch scheduler's cancel: the begun array is removed rather
    than left reading the values not copied as fill values."""
    copy_values = from_array_module._copy_values

    def copy_then_stopped(source_array, dest, raw=False):
        dest[:8] = source_array[:8]
        os.kill(os.getpid(), signum)
        time.sleep(10)  # the handler raises in here
        copy_values(source_array, dest, raw)

    def no_handler(*_):
        raise _NoHandlerInstalled

    monkeypatch.setattr(from_array_module, "_copy_values", copy_then_stopped)
    before = signal.signal(signum, no_handler)  # what a regression would meet, not a kill
    try:
        dest = tmp_path / "new" / "dst.zarr"
        got, _, err = _run(capsys, "rechunk", source, dest, "--chunks", 8)
        assert signal.getsignal(signum) is no_handler  # put back
    finally:
        signal.signal(signum, before)
    name = signal.Signals(signum).name
    assert (got, err) == (
        status,
        f"torchzarr rechunk: terminated ({name}) (nothing was left at / of {dest})\n",
    )
    assert not (tmp_path / "new").exists()


def test_a_stop_signal_ignored_before_stays_ignored(tmp_path, capsys, monkeypatch, source):
    """``nohup`` ignores SIGHUP: the command must not start taking it as a stop."""
    copy_values = from_array_module._copy_values

    def copy_with_a_hangup(source_array, dest, raw=False):
        os.kill(os.getpid(), signal.SIGHUP)
        copy_values(source_array, dest, raw)

    monkeypatch.setattr(from_array_module, "_copy_values", copy_with_a_hangup)
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        dest = tmp_path / "dst.zarr"
        assert _run(capsys, "rechunk", source, dest, "--chunks", 8)[0] == 0
    finally:
        signal.signal(signal.SIGHUP, before)
    assert tz.open_array(dest, mode="r")[:].tolist() == list(range(1, 41))


def test_after_one_stop_signal_more_are_ignored_until_the_command_returns():
    from torchzarr.cli_signals import Stopped, stop_signals_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped), stop_signals_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        finally:  # the command's cleanup: a second signal is ignored here
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_the_reader_of_the_progress_going_away_stops_the_copy_quietly(
    tmp_path, capsys, monkeypatch, source
):
    dest = tmp_path / "dst.zip"
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", _ClosedPipe())
        status = main(["copy", str(source), str(dest), "--progress", "--jobs", "1"])
    assert status == 141 and capsys.readouterr().out == ""
    with zipfile.ZipFile(dest) as archive:  # stopped after its first batch, and closed
        assert archive.testzip() is None and "zarr.json" not in archive.namelist()
    assert _run(capsys, "copy", source, dest, "--overwrite", "--progress")[0] == 0


def test_a_failed_or_refused_rechunk_leaves_no_new_file_or_directory(tmp_path, capsys, source):
    (source / "c" / "30").write_bytes(b"damaged")  # a late chunk: the copy fails part way
    for name in ["new.zip", "a/b/new.zarr", "c/new.zip"]:
        dest = tmp_path / name
        status, _, err = _run(capsys, "rechunk", source, dest, "--chunks", 8)
        assert status == 1 and f"(nothing was left at / of {dest})" in err
        assert not (tmp_path / name.partition("/")[0]).exists()
    sharded = tz.create_array(tmp_path / "s.zarr", data=torch.arange(8), chunks=(2,), shards=(4,))
    status, _, err = _run(capsys, "rechunk", tmp_path / "s.zarr", tmp_path / "r.zip", "--chunks", 3)
    assert status == 1 and "pass --shards too" in err and not (tmp_path / "r.zip").exists()
    assert sharded.shards == (4,)
    (tmp_path / "kept.zarr").mkdir()  # there before: stays
    assert _run(capsys, "rechunk", source, tmp_path / "kept.zarr", "--chunks", 8)[0] == 1
    assert (tmp_path / "kept.zarr").is_dir() and not any((tmp_path / "kept.zarr").iterdir())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_failed_overwrite_leaves_no_node_in_a_consolidated_group_above_it(
    tmp_path, capsys, monkeypatch, zarr_format
):
    source = tmp_path / "src.zarr"
    tz.create_array(source, shape=(40,), dtype=torch.int64, chunks=(1,), zarr_format=zarr_format)[
        :
    ] = -torch.arange(1, 41)
    dest = tmp_path / "dst.zarr"
    group = tz.open_group(dest, mode="w", zarr_format=zarr_format)
    group.create_array("a", shape=(40,), dtype=torch.int64, chunks=(1,))[:] = torch.arange(1, 41)
    tz.consolidate_metadata(dest)
    real, calls = tz.LocalStore.get_many, []

    def get_many(self, keys):
        if str(self.root) == str(source):
            calls.append(keys)
            if len(calls) == 2:
                raise tz.errors.StoreError("connection lost")
        return real(self, keys)

    monkeypatch.setattr(tz.LocalStore, "get_many", get_many)
    status, _, err = _run(
        capsys, "copy", source, dest, "--dest-path", "a", "--overwrite", "--jobs", 1
    )
    assert status == 1 and "no node opens there" in err
    assert "a" not in tz.open_group(dest, mode="r")  # not listed over a mix of chunks
    zarr = pytest.importorskip("zarr")
    assert "a" not in zarr.open_consolidated(str(dest), mode="r", zarr_format=zarr_format)


def test_the_cleanup_leaves_a_file_at_the_path_that_is_no_zip(tmp_path):
    from torchzarr.cli_leftovers import destination

    path = tmp_path / "new.zip"
    with pytest.raises(RuntimeError, match="failed"), destination(str(path)):
        path.write_bytes(b"another writer's zip, its directory not written yet")
        raise RuntimeError("failed")
    assert path.read_bytes().startswith(b"another writer")


@pytest.mark.parametrize("dest_path", [None, "m"])
@pytest.mark.parametrize(
    "old",
    [
        {"data": torch.arange(10), "chunks": (3,)},
        {"data": torch.ones(4, 4, 4), "chunks": (2, 2, 2)},
    ],
)
def test_a_copy_overwrites_an_array_whose_chunk_keys_nest_otherwise(
    tmp_path, capsys, dest_path, old
):
    source = tmp_path / "src.zarr"
    tz.create_array(source, data=torch.arange(16).reshape(4, 4), chunks=(2, 2))  # c/0/0 ...
    dest = tmp_path / "dst.zarr"
    tz.create_array(dest, path=dest_path or "", **old)  # c/0 files, or c/0/0 directories
    where = ["--dest-path", dest_path] if dest_path else []
    for _ in range(2):
        status, out, err = _run(capsys, "copy", source, dest, "--overwrite", *where)
        assert (status, err) == (0, "") and out.startswith("copied 5 keys")
        copied = tz.open_array(dest, path=dest_path or "", mode="r")
        assert copied[:].tolist() == torch.arange(16).reshape(4, 4).tolist()
    assert _run(capsys, "info", dest, "--path", dest_path or "")[0] == 0


def test_a_copy_that_wrote_nothing_says_nothing_of_leftovers(tmp_path, capsys, monkeypatch, source):
    (tmp_path / "afile").write_bytes(b"")  # no directory: every write fails
    (tmp_path / "file").write_bytes(b"")
    for dest in (tmp_path / "afile", tmp_path / "file" / "new.zip"):
        status, _, err = _run(capsys, "copy", source, dest)
        assert status == 1 and err.count("\n") == 1 and "not a directory" in err.lower()
        assert "(the destination" not in err and "--overwrite" not in err
    assert (tmp_path / "afile").read_bytes() == b""

    def refused(self, items):  # a read-only directory (as root, chmod does not refuse)
        raise tz.errors.StoreError(f"cannot write {next(iter(items))!r}: Permission denied")

    monkeypatch.setattr(tz.LocalStore, "set_many", refused)
    status, _, err = _run(capsys, "copy", source, tmp_path / "ro.zarr")
    assert status == 1 and "Permission denied" in err and "--overwrite" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["copy", "{src}", "{tmp}/a/b/data.zip"],
        ["rechunk", "{src}", "{tmp}/a/b/data.zip", "--chunks", "8"],
        ["demo", "{tmp}/a/b/data.zip", "--rows", "3"],
    ],
)
def test_a_zip_destination_in_missing_folders_gets_them_made(tmp_path, capsys, source, argv):
    argv = [a.format(src=source, tmp=tmp_path) for a in argv]
    status, _, err = _run(capsys, *argv)
    assert (status, err) == (0, "")
    assert tz.ZipStore(tmp_path / "a" / "b" / "data.zip").exists("zarr.json")


@pytest.mark.parametrize("fails", ["open_zip", "write"])
def test_a_failed_copy_to_a_zip_in_missing_folders_removes_them(
    tmp_path, capsys, monkeypatch, source, fails
):
    def refused(*args):  # once its folders were made: opening it, or writing to it
        raise tz.errors.StoreError("cannot write: No space left on device")

    if fails == "open_zip":
        monkeypatch.setattr(zip_archive, "open_zip", refused)
    else:
        monkeypatch.setattr(zip_archive.Archive, "write", refused)
    status, _, err = _run(capsys, "copy", source, tmp_path / "a" / "b" / "data.zip")
    assert status == 1 and "No space left" in err and "(the destination" not in err
    assert not (tmp_path / "a").exists()


def test_after_a_ctrl_c_more_wait_until_the_command_returns():
    from torchzarr.cli_signals import stop_signals_interrupt

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt), stop_signals_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(10)
        finally:  # the command's cleanup: a held Ctrl-C key must not cut it short
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                assert signal.getsignal(signum) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_process_exiting_after_a_stop_keeps_ignoring_signals_till_the_end():
    from torchzarr.cli_signals import stop_signals_interrupt

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with stop_signals_interrupt(keep_ignored=True):  # not stopped: all put back
            pass
        assert {s: signal.getsignal(s) for s in before} == before
        with pytest.raises(Stopped), stop_signals_interrupt(keep_ignored=True):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in before)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_a_sigint_handler_of_the_callers_own_is_left_alone():
    from torchzarr.cli_signals import stop_signals_interrupt

    def own(*_):
        raise _NoHandlerInstalled

    before = signal.signal(signal.SIGINT, own)
    try:
        with stop_signals_interrupt():
            assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, before)


_HELD_CTRL_C = """
import sys, time
import torchzarr.cli as cli
import torchzarr.core.from_array as from_array_module

def ready_then_wait():
    print("ready", flush=True)
    time.sleep(60)  # the first Ctrl-C lands here; the cleanup that follows is long

copy_values, write_demo = from_array_module._copy_values, cli._write_demo
from_array_module._copy_values = lambda *args: (copy_values(*args), ready_then_wait())
cli._write_demo = lambda *args: (write_demo(*args), ready_then_wait())
raise SystemExit(cli.main())  # as the torchzarr script runs it: argv from sys.argv
"""


@pytest.mark.parametrize(
    "argv", [["rechunk", "{src}", "{dest}", "--chunks", "1"], ["demo", "{dest}", "--rows", "9000"]]
)
def test_a_held_ctrl_c_waits_for_the_cleanup_and_the_exit(tmp_path, argv):
    """A Ctrl-C key held down sends SIGINT every few milliseconds, through the cleanup (the
    removal of 1000 chunk files) and the interpreter's exit: one line, 130, nothing left."""
    src = tmp_path / "src.zarr"
    tz.create_array(src, data=torch.arange(1000), chunks=(1000,))
    dest = tmp_path / "new" / "dst.zarr"
    argv = [a.format(src=src, dest=dest) for a in argv]
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_CTRL_C, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        sent = 0
        while proc.poll() is None and sent < 5000:  # until it exits (at most ~10 s)
            proc.send_signal(signal.SIGINT)
            sent += 1
            time.sleep(0.002)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    where = f"/ of {dest}" if argv[0] == "rechunk" else str(dest)
    assert (proc.returncode, err) == (
        130,
        f"torchzarr {argv[0]}: interrupted (nothing was left at {where})\n",
    )
    assert sent > 1 and not (tmp_path / "new").exists()


@pytest.mark.parametrize("scheme", ["sqlite", "lmdb"])
def test_a_failed_rechunk_to_a_new_database_removes_it_and_its_folders(
    tmp_path, capsys, source, scheme
):
    if scheme == "lmdb":
        pytest.importorskip("lmdb")
    (source / "c" / "30").write_bytes(b"damaged")  # a late chunk: the copy fails part way
    dest = f"{scheme}://{tmp_path}/a/b/data.db"
    status, _, err = _run(capsys, "rechunk", source, dest, "--chunks", 8)
    assert status == 1 and err.endswith(f"(nothing was left at / of {dest})\n")
    assert not (tmp_path / "a").exists()
    # one there before, holding nothing or another array, stays
    assert _run(capsys, "copy", source, dest, "--dest-path", "keep")[0] == 0
    with resolve_store(dest, mode="a") as store:
        store.delete_prefix("")
    assert _run(capsys, "rechunk", source, dest, "--chunks", 8)[0] == 1
    assert (tmp_path / "a" / "b" / "data.db").exists()
    assert _run(capsys, "copy", source, dest, "--dest-path", "keep")[0] == 0
    status, _, err = _run(capsys, "rechunk", source, dest, "--chunks", 8, "--dest-path", "x")
    assert status == 1 and "(nothing was left at /x of" in err
    assert tz.open_group(dest, mode="r", use_consolidated=False)["keep"].shape == (40,)


def _interrupt_the_third_write(monkeypatch):
    from torchzarr.core.array import Array

    real, calls = Array.__setitem__, []

    def setitem(self, selection, value):
        calls.append(selection)
        if len(calls) == 3:  # the first images and labels are in
            raise KeyboardInterrupt
        real(self, selection, value)

    monkeypatch.setattr(Array, "__setitem__", setitem)


@pytest.mark.parametrize("name", ["new/demo.zarr", "new/demo.zip"])
def test_ctrl_c_during_a_demo_removes_the_dataset_it_began(tmp_path, capsys, monkeypatch, name):
    dest = tmp_path / name
    with monkeypatch.context() as patch:
        _interrupt_the_third_write(patch)
        status, out, err = _run(capsys, "demo", dest, "--rows", 9000)
    assert (status, out) == (130, "")
    assert err == f"torchzarr demo: interrupted (nothing was left at {dest})\n"
    assert not (tmp_path / "new").exists()
    assert _run(capsys, "demo", dest, "--rows", 10)[0] == 0
    with monkeypatch.context() as patch:
        _interrupt_the_third_write(patch)
        status, _, err = _run(capsys, "demo", dest, "--rows", 9000, "--overwrite")
    assert status == 130
    assert err.endswith(f"(nothing was left at {dest}: --overwrite deleted what it held first)\n")
    with pytest.raises(tz.errors.GroupNotFoundError):
        tz.open_group(dest, mode="r")  # no dataset that opens, its images mostly zeros


def test_a_failed_demo_leaves_a_folder_that_was_there_before(tmp_path, capsys, monkeypatch):
    (tmp_path / "kept.zarr").mkdir()
    _interrupt_the_third_write(monkeypatch)
    assert _run(capsys, "demo", tmp_path / "kept.zarr", "--rows", 9000)[0] == 130
    assert (tmp_path / "kept.zarr").is_dir() and not any((tmp_path / "kept.zarr").iterdir())
