"""How the ``torchzarr`` command fails: a rechunk that stops part way, a bad environment
setting, and a reader that closes the output early."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchzarr as tz
import torchzarr.cli as cli
from torchzarr import cli_options
from torchzarr.cli import main
from torchzarr.errors import StoreError


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _contents(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def damaged(tmp_path):
    """An array of 20 values whose last chunk cannot be decoded: a copy of it fails late."""
    src = tz.create_array(tmp_path / "src.zarr", shape=(20,), dtype=torch.int64, chunks=(5,))
    src[:] = torch.arange(1, 21)
    (tmp_path / "src.zarr" / "c" / "3").write_bytes(b"damaged")
    return tmp_path / "src.zarr"


def test_a_failed_rechunk_removes_the_array_it_began(tmp_path, capsys, damaged):
    dest = tmp_path / "dst.zarr"
    status, _, err = _run(capsys, "rechunk", damaged, dest, "--chunks", 10)
    assert status == 1 and "chunk 'c/3'" in err and f"nothing was left at / of {dest}" in err
    assert _contents(dest) == {}  # no array reading as its fill value
    with pytest.raises(tz.errors.NodeNotFoundError):
        tz.open_array(dest, mode="r")
    assert _run(capsys, "rechunk", damaged, tmp_path / "dst.zip")[0] == 1
    assert sorted(tz.ZipStore(tmp_path / "dst.zip", mode="r").list_prefix("")) == []


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_a_failed_rechunk_into_a_hierarchy_leaves_it_as_it_was(
    tmp_path, capsys, damaged, zarr_format
):
    dest = tmp_path / "dst.zarr"
    root = tz.open_group(dest, mode="w", zarr_format=zarr_format)
    root.create_array("keep", data=torch.arange(3))
    tz.consolidate_metadata(dest)
    before = _contents(dest)
    argv = ["rechunk", damaged, dest, "--dest-path", "new/sub/x", "--zarr-format", zarr_format]
    status, _, err = _run(capsys, *argv)
    assert status == 1 and "nothing was left at /new/sub/x" in err
    assert _contents(dest) == before  # its parents and consolidated entries gone too
    assert sorted(tz.open_group(dest, mode="r", use_consolidated=True)) == ["keep"]


def test_a_failed_rechunk_never_deletes_what_was_there(tmp_path, capsys, damaged):
    dest = tmp_path / "dst.zarr"
    root = tz.open_group(dest, mode="w")
    root.create_array("keep", data=torch.arange(3))
    stray = dest / "loose" / "c" / "9"  # keys of no node, under the new array's path
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not ours")
    status, _, err = _run(capsys, "rechunk", damaged, dest, "--dest-path", "loose")
    assert status == 1 and f"no array is left at /loose of {dest}: what was there" in err
    assert stray.read_bytes() == b"not ours"  # the array it began goes, the stray key stays
    assert sorted(p.name for p in (dest / "loose").iterdir()) == ["c"]
    status, _, err = _run(capsys, "rechunk", damaged, dest, "--dest-path", "keep", "--overwrite")
    assert status == 1 and f"no array is left at /keep of {dest}: --overwrite deleted" in err
    assert "keep" not in tz.open_group(dest, mode="r")


def test_a_refused_rechunk_writes_nothing_and_says_nothing_of_leftovers(tmp_path, capsys, damaged):
    dest = tmp_path / "dst.zarr"
    tz.open_group(dest, mode="w").create_array("keep", data=torch.arange(3))
    before = _contents(dest)
    for argv in [
        [damaged, dest, "--dest-path", "keep"],  # a node there, and no --overwrite
        [damaged, dest, "--dest-path", "keep", "--overwrite", "--chunks", "2,2"],
        [damaged, dest, "--dest-path", "keep/x"],  # below an array
        [damaged, damaged, "--overwrite"],  # onto itself
    ]:
        status, _, err = _run(capsys, "rechunk", *argv)
        assert status == 1 and "left" not in err and err.count("\n") == 1
        assert "ReadOnly" not in err and "from_array" not in err
        assert _contents(dest) == before
    assert tz.open_array(dest, path="keep", mode="r")[:].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("dtype", "value", "shown"),
    [
        (torch.float32, "1e39", "1e+39"),  # past float32: refused as the library refuses it
        (torch.float32, "1e400", "1e400"),  # past every float, which Python reads as inf
        (torch.float64, "-1e400", "-1e400"),
        (torch.complex64, "1e400j", "1e400j"),
        (torch.int64, "9" * 400, "9" * 400),  # an int past every float: no traceback
        (torch.float32, "9" * 400, "9" * 400),
    ],
)
def test_rechunk_refuses_a_fill_value_past_the_dtype_as_out_of_range(
    tmp_path, capsys, dtype, value, shown
):
    tz.create_array(tmp_path / "src.zarr", data=torch.ones(4, dtype=dtype))
    argv = ["rechunk", tmp_path / "src.zarr", tmp_path / "out.zarr", f"--fill-value={value}"]
    status, _, err = _run(capsys, *argv)
    name = str(dtype).removeprefix("torch.")
    assert status == 1 and err.count("\n") == 1  # one line, no traceback
    assert err.startswith(f"torchzarr rechunk: fill_value {shown} does not fit dtype {name}")
    assert not (tmp_path / "out.zarr").exists()
    for spelled in ("inf", "-Infinity", "infj"):  # infinities spelled out stay accepted
        assert cli_options.fill(spelled) == (complex if "j" in spelled else float)(spelled)


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_closing_the_output_ends_the_command_quietly(tmp_path, capsys, monkeypatch):
    tz.open_group(tmp_path, mode="w").create_array("x", shape=(1,), dtype="int8")
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", _ClosedPipe())
        status = main(["tree", str(tmp_path)])
    assert status == 141 and capsys.readouterr().err == ""

    def broken_store(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "open_node", broken_store)  # a store's connection: an error
    status, _, err = _run(capsys, "info", tmp_path)
    assert status == 1 and err.startswith("torchzarr info: ") and "Broken pipe" in err


def test_a_closed_pipe_stops_the_command_without_a_message(tmp_path):
    tz.open_group(tmp_path, mode="w").create_array("x", shape=(1,), dtype="int8")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torchzarr", "tree", str(tmp_path)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")


def test_an_output_closed_from_the_start_stops_the_command_without_a_traceback(
    tmp_path, monkeypatch
):
    tz.open_group(tmp_path, mode="w").create_array("x", shape=(1,), dtype="int8")
    done = subprocess.run(  # python -m torchzarr info ... >&-: sys.stdout is None
        ["sh", "-c", '"$0" -m torchzarr info "$1" >&-', sys.executable, str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (141, "")
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["tree", str(tmp_path)]) == 141
    assert main(["info", str(tmp_path / "missing")]) == 141  # its error has no reader either


def _with_environment(argv, **variables):
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, **variables}
    )


def test_a_bad_environment_setting_is_one_line_from_the_command(tmp_path):
    script = Path(sys.executable).with_name("torchzarr")
    commands = [[sys.executable, "-m", "torchzarr", "--help"]]
    commands += [[str(script), "tree", str(tmp_path)]] if script.exists() else []
    for argv in commands:
        done = _with_environment(argv, TORCHZARR_THREADS="0")
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == (
            "torchzarr: environment variable TORCHZARR_THREADS='0': "
            "setting 'threads' must be a positive int, got 0\n"
        )
    done = _with_environment([sys.executable, "-m", "torchzarr", "--help"], TORCHZARR_TIMEOUT="inf")
    assert done.returncode == 1 and "or none for no bound" in done.stderr
    # in a program of its own, importing the package still raises the error
    done = _with_environment([sys.executable, "-c", "import torchzarr"], TORCHZARR_THREADS="0")
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert "InvalidArgumentError: environment variable TORCHZARR_THREADS='0'" in done.stderr


@pytest.mark.parametrize(("zarr_format", "name"), [(3, "zarr.json"), (2, ".zarray")])
def test_a_copy_to_a_metadata_name_of_its_format_writes_nothing(
    tmp_path, capsys, zarr_format, name
):
    # the chunks went to y/zarr.json/c/0 before the copy failed, and were left there
    src = tz.create_array(tmp_path / "src.zarr", data=torch.arange(4), zarr_format=zarr_format)
    tz.open_group(tmp_path / "g.zarr", mode="w", zarr_format=zarr_format)
    before = _contents(tmp_path / "g.zarr")
    status, _, err = _run(
        capsys, "copy", src.store.root, tmp_path / "g.zarr", "--dest-path", f"y/{name}"
    )
    assert status == 1 and "nothing was copied" in err and name in err
    assert _contents(tmp_path / "g.zarr") == before


def test_a_copy_failing_as_it_joins_the_hierarchy_says_the_copy_is_complete(
    tmp_path, capsys, monkeypatch
):
    src = tz.create_array(tmp_path / "src.zarr", data=torch.arange(4))
    tz.open_group(tmp_path / "g.zarr", mode="w").create_group("keep")

    def refused(*args, **kwargs):
        raise StoreError("the disk went away")

    monkeypatch.setattr(cli, "refresh_consolidated", refused)
    status, _, err = _run(capsys, "copy", src.store.root, tmp_path / "g.zarr", "--dest-path", "x")
    assert status == 1 and "the disk went away" in err
    assert "path /x is complete" in err and "torchzarr consolidate" in err
    assert torch.equal(tz.open_array(tmp_path / "g.zarr", path="x", mode="r")[:], torch.arange(4))


@pytest.mark.parametrize("command", ["copy", "rechunk"])
@pytest.mark.parametrize("dest", ["{src}/backup.zip", "sqlite://{src}/a/b.db", "lmdb://{src}/b"])
def test_a_file_store_inside_the_source_directory_is_refused_as_overlapping(
    tmp_path, capsys, command, dest
):
    # the first copy wrote into the source; a re-run copied the old zip into the new one
    src = tz.create_array(tmp_path / "src.zarr", data=torch.arange(4), chunks=(2,)).store.root
    before, dest = _contents(src), dest.format(src=src)
    for overwrite in ([], ["--overwrite"]):
        status, out, err = _run(capsys, command, src, dest, *overwrite)
        assert (status, out, err.count("\n")) == (1, "", 1)
        assert err.startswith(f"torchzarr {command}: cannot {command} '/' of LocalStore(")
        assert err.endswith("the two overlap (the same data, or one inside the other)\n")
        assert _contents(src) == before  # nothing written, no folder made


def test_a_zip_copied_into_the_directory_holding_it_is_refused_as_overlapping(tmp_path, capsys):
    src = tz.create_array(tmp_path / "src.zarr", data=torch.arange(4), chunks=(2,)).store.root
    assert _run(capsys, "copy", src, tmp_path / "a.zip")[0] == 0
    status, _, err = _run(capsys, "copy", tmp_path / "a.zip", tmp_path, "--overwrite")
    assert status == 1 and "the two overlap" in err and (tmp_path / "a.zip").is_file()
    # beside it (another path of the directory), or in a folder of its own: no overlap
    assert _run(capsys, "copy", tmp_path / "a.zip", tmp_path, "--dest-path", "x")[0] == 0
    assert _run(capsys, "rechunk", src, tmp_path / "src.zarr.zip", "--chunks", 4)[0] == 0
    assert tz.open_array(tmp_path / "src.zarr.zip", mode="r")[:].tolist() == [0, 1, 2, 3]


_UNDER_A_MEMORY_LIMIT = """
import resource, sys
import torchzarr.cli as cli
with open("/proc/self/status") as status:  # what the interpreter and torch take, and 1 GiB
    size = next(int(line.split()[1]) << 10 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + (1 << 30), size + (1 << 30)))
raise SystemExit(cli.main())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_a_rechunk_out_of_memory_is_one_line_naming_the_array_and_what_to_do(tmp_path):
    """A container's memory limit (``ulimit -v``) below the physical memory that the chunk
    check looks at: a chunk of 2 GB built whole fails to allocate."""
    pytest.importorskip("resource")
    src = tz.create_array(tmp_path / "src.zarr", data=torch.ones(100, 37, dtype=torch.float64))
    dest = tmp_path / "new" / "dst.zarr"
    argv = ["rechunk", str(src.store.root), str(dest), "--chunks", "16000,16000"]
    done = _with_environment(
        [sys.executable, "-c", _UNDER_A_MEMORY_LIMIT, *argv], TORCHZARR_THREADS="1"
    )
    assert (done.returncode, done.stdout, done.stderr.count("\n")) == (1, "", 1), done.stderr
    assert done.stderr.startswith(
        f"torchzarr rechunk: ran out of memory copying array / of {src.store.root} "
        f"((100, 37) torch.float64) to {dest}: "
    )
    assert "pick smaller --chunks (or --shards)" in done.stderr
    assert done.stderr.endswith(f"(nothing was left at / of {dest})\n")
    assert not (tmp_path / "new").exists()


def test_any_command_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    def too_large(*args, **kwargs):
        raise MemoryError("Unable to allocate 6.71 GiB for an array with shape (30000, 30000)")

    monkeypatch.setattr(cli, "open_node", too_large)
    status, out, err = _run(capsys, "info", tmp_path)
    assert (status, out) == (1, "")
    assert err == (
        "torchzarr info: ran out of memory: Unable to allocate 6.71 GiB for an array with "
        "shape (30000, 30000)\n"
    )
