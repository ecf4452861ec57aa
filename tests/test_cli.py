"""The ``torchzarr`` command line: info, tree, copy, rechunk, bench and demo, and its errors."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.cli import main
from torchzarr.storage.copy import copy_keys
from torchzarr.storage.memory import MemoryStore


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_demo_writes_a_dataset_the_datasets_train_on(tmp_path, capsys):
    status, out, _ = _run(capsys, "demo", tmp_path / "demo.zarr", "--rows", 600)
    assert status == 0 and "wrote 600 images" in out
    root = tz.open_group(tmp_path / "demo.zarr", mode="r")
    assert root["images"].shape == (600, 32, 32, 3) and root["labels"].shape == (600,)
    batches = list(tz.ZarrIterableDataset(root, batch_size=256, seed=0))
    assert sum(len(b["labels"]) for b in batches) == 600
    labels = root["labels"][:]
    means = [root["images"][:][labels == c].float().mean().item() for c in range(2)]
    assert abs(means[0] - means[1]) > 1  # classes differ: something to learn
    status, _, err = _run(capsys, "demo", tmp_path / "demo.zarr")
    assert status == 1 and "already exists" in err  # no silent overwrite
    assert _run(capsys, "demo", tmp_path / "demo.zarr", "--rows", 10, "--overwrite")[0] == 0


def test_demo_into_an_anonymous_memory_store_consolidates_the_group_it_wrote(capsys):
    status, out, err = _run(capsys, "demo", "memory://", "--rows", 3)  # a new store each open
    assert (status, err) == (0, "") and "wrote 3 images" in out


def test_info_and_tree_describe_groups_and_arrays(tmp_path, capsys):
    root = tz.open_group(tmp_path, mode="w")
    root.attrs["project"] = "x"
    root.create_array("a/b", shape=(4, 2), dtype=torch.float32)
    root.create_array("c", shape=(3,), dtype=torch.int8)
    status, out, _ = _run(capsys, "info", tmp_path)
    assert status == 0 and re.search(r"Arrays +: 1 \(c\)", out)
    assert re.search(r"Groups +: 1 \(a\)", out) and re.search(r"Attributes +: project", out)
    assert re.search(r"Consolidated +: no", out)
    status, out, _ = _run(capsys, "consolidate", tmp_path)
    assert status == 0 and "3 nodes" in out
    assert re.search(r"Consolidated +: yes", _run(capsys, "info", tmp_path)[1])
    assert _run(capsys, "consolidate", tmp_path, "--path", "c")[0] == 1  # an array
    status, out, _ = _run(capsys, "info", tmp_path, "--path", "a/b")
    assert "Shape              : (4, 2)" in out and "torch.float32" in out
    status, out, _ = _run(capsys, "tree", tmp_path)
    assert out.splitlines() == [
        "/",
        "├── a [G]",
        "│   └── b [A] (4, 2) torch.float32",
        "└── c [A] (3,) torch.int8",
    ]
    assert _run(capsys, "tree", tmp_path, "--level", 1)[1].count("[A]") == 1
    assert _run(capsys, "tree", tmp_path, "--path", "c")[1].strip() == "/c [A] (3,) torch.int8"


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_tree_and_info_write_what_the_outputs_encoding_holds(tmp_path, monkeypatch, encoding):
    root = tz.open_group(tmp_path, mode="w")
    root.attrs["caf\u00e9 \u540d"] = 1  # é is in cp1252, 名 in neither
    root.create_array("a/b", shape=(4, 2), dtype=torch.float32)
    root.create_array("c", shape=(3,), dtype=torch.int8)

    def run(*argv):
        stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)  # as PYTHONIOENCODING
        monkeypatch.setattr(sys, "stdout", stream)
        status = main([str(a) for a in argv])
        stream.flush()
        return status, stream.buffer.getvalue().decode(encoding)

    status, out = run("tree", tmp_path)
    assert status == 0 and out.splitlines() == [
        "/",
        "|-- a [G]",
        "|   `-- b [A] (4, 2) torch.float32",
        "`-- c [A] (3,) torch.int8",
    ]
    status, out = run("info", tmp_path)
    assert status == 0 and "\\u540d" in out  # escaped, not a traceback
    assert ("caf\u00e9" if encoding == "cp1252" else "caf\\xe9") in out


def test_info_names_arrays_of_unsupported_dtypes(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(tmp_path), mode="w")
        group.create_array("time", shape=(2,), dtype="M8[ns]")
    status, out, _ = _run(capsys, "info", tmp_path)
    assert status == 0 and re.search(r"Unsupported dtypes +: time", out)
    status, out, _ = _run(capsys, "info", tmp_path, "--path", "time")
    assert status == 0 and re.search(r"Data type +: numpy.datetime64 \(no torch dtype", out)
    assert re.search(r"Shape +: \(2,\)", out) and re.search(r"Zarr format +: 3", out)


def test_info_shows_the_stored_metadata_of_an_array_of_an_unknown_codec(tmp_path, capsys):
    tz.create_array(tmp_path, path="x", data=torch.arange(4), chunks=(2,))
    document = json.loads((tmp_path / "x" / "zarr.json").read_text())
    document["codecs"].append({"name": "foo_codec"})
    (tmp_path / "x" / "zarr.json").write_text(json.dumps(document))
    status, out, _ = _run(capsys, "info", tmp_path, "--path", "x")
    assert status == 0 and re.search(r"Unreadable +: .*unknown codec 'foo_codec'", out)
    assert re.search(r"Data type +: int64\n", out) and re.search(r"Chunk shape +: \(2,\)", out)


def test_consolidate_counts_the_arrays_of_unsupported_dtypes_it_gathers(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(tmp_path), mode="w")
        group.create_array("text", shape=(3,), dtype="<U5")
        group.create_array("time", shape=(2,), dtype="M8[ns]")
        group.create_array("x", shape=(4,), dtype="f4")
        group.create_group("sub").create_array("names", shape=(2,), dtype=str)
    status, out, _ = _run(capsys, "consolidate", tmp_path)
    assert status == 0 and "the metadata of 5 nodes" in out
    root = tz.open_group(tmp_path, mode="r", use_consolidated=True)
    assert len(root.member_metadata()) == 5


def test_rechunk_messages_name_its_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # help lines wrapped at a known width
    src = tz.create_array(tmp_path / "src.zarr", data=torch.arange(40.0), chunks=(5,), shards=(20,))
    args = ["rechunk", tmp_path / "src.zarr", tmp_path / "new.zarr"]
    status, _, err = _run(capsys, *args, "--chunks", "15")  # 15 does not divide the shards
    assert status == 1 and "pass --shards too" in err and "or --shards none for" in err
    assert "shards=" not in err and "from_array" not in err
    assert not (tmp_path / "new.zarr").exists()
    assert _run(capsys, *args, "--chunks", "15", "--shards", "none")[0] == 0
    assert torch.equal(tz.open_array(tmp_path / "new.zarr", mode="r")[:], src[:])
    with pytest.raises(SystemExit):
        main(["rechunk", "--help"])
    assert "--fill-value=-inf" in capsys.readouterr().out  # "--fill-value -inf" is no value
    status, _, _ = _run(capsys, *args[:2], tmp_path / "inf.zarr", "--fill-value=-inf")
    assert status == 0 and tz.open_array(tmp_path / "inf.zarr", mode="r").fill_value == -math.inf


def test_rechunk_refusals_name_its_options_and_the_real_cause(tmp_path, capsys):
    v3, v2 = tmp_path / "v3.zarr", tmp_path / "v2.zarr"
    tz.create_array(v3, shape=(4,), dtype=torch.int8, zarr_format=3)
    tz.create_array(v2, shape=(4,), dtype=torch.int8, zarr_format=2)
    status, _, err = _run(capsys, "rechunk", v3, v2)  # a node there, of the other format
    assert status == 1 and "an array of Zarr v2 already exists at '/'" in err
    assert err.rstrip().endswith(": pass --overwrite to replace it") and "zarr_format" not in err
    status, _, err = _run(capsys, "rechunk", v2, tmp_path / "o.zarr", "--shards", 4)
    assert status == 1 and "shards need --zarr-format 3 (Zarr v2 has no sharding)" in err
    assert "zarr_format=" not in err and not (tmp_path / "o.zarr").exists()


def test_demo_and_rechunk_refusals_name_the_options_that_help(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    status, _, err = _run(capsys, "demo", tmp_path / "folder", "--rows", 2)
    assert status == 1 and err.rstrip().endswith("; --overwrite deletes them first")
    assert "mode 'w" not in err and (tmp_path / "folder" / "notes.txt").exists()
    v2, group = tmp_path / "v2.zarr", tmp_path / "g.zarr"
    tz.create_array(v2, data=torch.arange(4), zarr_format=2)
    tz.open_group(group, mode="w")  # Zarr v3
    status, _, err = _run(capsys, "rechunk", v2, group, "--dest-path", "x")
    assert status == 1 and err.rstrip().endswith("must be Zarr v3: pass --zarr-format 3)")
    assert _run(capsys, "rechunk", v2, group, "--dest-path", "x", "--zarr-format", 3)[0] == 0
    for name, other in (("y/.zgroup", 3), ("zarr.json", 2)):
        formats = ["--zarr-format", 5 - other]
        status, _, err = _run(
            capsys, "rechunk", v2, tmp_path / "n.zarr", "--dest-path", name, *formats
        )
        assert status == 1 and f"(pass --zarr-format {other} for a node of that name)" in err
        assert "zarr_format=" not in err
    status, out, _ = _run(capsys, "rechunk", v2, tmp_path / "n.zarr", "--dest-path", "zarr.json")
    assert status == 0 and out.startswith("wrote /zarr.json")  # a v2 node: the name is free


def test_rechunk_writes_transposed_v3_chunks_as_v2_memory_order_or_says_why_not(tmp_path, capsys):
    values = np.arange(24, dtype="i4").reshape(4, 6)
    transpose = zarr.codecs.TransposeCodec(order=(1, 0))
    zarr.create_array(tmp_path / "t.zarr", data=values, chunks=(2, 3), filters=[transpose])
    args = ["rechunk", tmp_path / "t.zarr", tmp_path / "t2.zarr", "--zarr-format", 2]
    assert _run(capsys, *args)[0] == 0
    v2 = tz.open_array(tmp_path / "t2.zarr", mode="r")
    assert (v2.zarr_format, v2.order, v2.filters) == (2, "F", ())
    assert v2[:].tolist() == values.tolist()
    assert zarr.open_array(tmp_path / "t2.zarr", mode="r")[:].tolist() == values.tolist()
    cube = np.arange(24, dtype="i4").reshape(2, 3, 4)  # (0, 2, 1): no memory order of v2
    swap = zarr.codecs.TransposeCodec(order=(0, 2, 1))
    zarr.create_array(tmp_path / "c.zarr", data=cube, chunks=(1, 3, 4), filters=[swap])
    args = ["rechunk", tmp_path / "c.zarr", tmp_path / "c2.zarr", "--zarr-format", 2]
    status, _, err = _run(capsys, *args)
    assert status == 1 and "cannot write it as --zarr-format 2" in err
    assert "transpose order [0, 2, 1]" in err and "filters=" not in err
    assert not (tmp_path / "c2.zarr").exists()
    assert _run(capsys, *args[:3])[0] == 0  # as v3, the filters kept
    assert tz.open_array(tmp_path / "c2.zarr", mode="r")[:].tolist() == cube.tolist()


def test_copy_moves_hierarchies_between_stores_byte_for_byte(tmp_path, capsys):
    _run(capsys, "demo", tmp_path / "src.zarr", "--rows", 300)
    status, out, err = _run(
        capsys, "copy", tmp_path / "src.zarr", tmp_path / "out.zip", "--progress"
    )
    assert status == 0 and "copied" in out and "keys" in err
    for name in ("images", "labels"):
        ours = tz.open_array(tmp_path / "src.zarr", path=name, mode="r")[:]
        assert torch.equal(tz.open_array(tmp_path / "out.zip", path=name, mode="r")[:], ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = zarr.open_group(zarr.storage.ZipStore(tmp_path / "out.zip", mode="r"), mode="r")
        assert theirs["labels"][:].tolist() == ours.tolist()
    args = ["copy", tmp_path / "out.zip", tmp_path / "back.zarr", "--path", "labels"]
    assert _run(capsys, *args, "--dest-path", "y/labels")[0] == 0
    assert torch.equal(tz.open_array(tmp_path / "back.zarr", path="y/labels")[:], ours)
    status, _, err = _run(capsys, *args, "--dest-path", "y/labels")
    assert status == 1 and "--overwrite" in err  # nothing replaced unless asked
    assert _run(capsys, *args, "--dest-path", "y/labels", "--overwrite")[0] == 0
    for missing in (
        ["copy", tmp_path / "no-such.zarr", tmp_path / "never.zarr"],
        ["copy", tmp_path / "src.zarr", tmp_path / "never.zarr", "--path", "typo"],
    ):
        status, _, err = _run(capsys, *missing)
        assert status == 1 and "nothing to copy" in err  # not "copied 0 keys"
    assert not (tmp_path / "never.zarr").exists()


@pytest.mark.parametrize(
    ("zarr_format", "dest_name"), [(3, "small.zarr"), (2, "small.zarr"), (3, "small.zip")]
)
def test_copy_keeps_the_destinations_consolidated_metadata_current(
    tmp_path, capsys, zarr_format, dest_name
):
    def hierarchy(where, rows):
        root = tz.open_group(where, mode="w", zarr_format=zarr_format)
        root.create_array("labels", data=torch.arange(rows))
        root.create_array("grp/sub/x", data=torch.arange(rows * 2))
        tz.consolidate_metadata(where)
        root.store.close()

    big, small = tmp_path / "big.zarr", tmp_path / dest_name
    hierarchy(big, 300)
    hierarchy(small, 10)
    copy = ["copy", big, small, "--path"]
    assert _run(capsys, *copy, "labels", "--overwrite")[0] == 0
    assert _run(capsys, *copy, "labels", "--dest-path", "more/labels")[0] == 0
    assert _run(capsys, *copy, "grp", "--dest-path", "grp2")[0] == 0
    assert _run(capsys, *copy, "grp/sub", "--overwrite")[0] == 0
    root = tz.open_group(small, mode="r", use_consolidated=True)  # one read: no listing
    assert root["labels"].shape == (300,)  # not the old shape: no rows dropped
    assert torch.equal(root["labels"][:], torch.arange(300))
    assert sorted(root) == ["grp", "grp2", "labels", "more"]  # the parents made: all listed
    assert root["more/labels"].shape == (300,) and root["grp2/sub/x"].shape == (600,)
    assert root["grp/sub/x"].shape == (600,)
    assert root.member_metadata() == tz.open_group(small, mode="r+").member_metadata()
    status, _, err = _run(capsys, *copy, "labels", "--dest-path", "labels/inner")
    assert status == 1 and "an array exists at 'labels'" in err


def test_rechunk_writes_the_array_with_new_chunks_shards_and_codecs(tmp_path, capsys):
    _run(capsys, "demo", tmp_path / "src.zarr", "--rows", 300)
    src = tz.open_array(tmp_path / "src.zarr", path="images", mode="r")
    args = ["rechunk", tmp_path / "src.zarr", tmp_path / "new.zarr", "--path", "images"]
    status, out, _ = _run(capsys, *args, "--chunks", "64,32,32,3", "--shards", "128,32,32,3")
    assert status == 0 and "chunks (64, 32, 32, 3), shards (128, 32, 32, 3)" in out
    new = tz.open_array(tmp_path / "new.zarr", path="images", mode="r")
    assert (new.chunks, new.shards) == ((64, 32, 32, 3), (128, 32, 32, 3))
    assert torch.equal(new[:], src[:])
    v2 = [*args[:2], tmp_path / "v2.zarr", "--path", "images", "--zarr-format", "2"]
    assert _run(capsys, *v2, "--compressors", "none")[0] == 0
    plain = tz.open_array(tmp_path / "v2.zarr", path="images", mode="r")
    assert plain.zarr_format == 2 and plain.compressors == () and plain.chunks == src.chunks
    assert torch.equal(plain[:], src[:])
    status, _, err = _run(capsys, *args, "--chunks", "64")  # one size for a 4-d array
    assert status == 1 and "chunks" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        _run(capsys, *args, "--chunks", "a,b")


def test_rechunk_fill_value_option_sets_or_drops_the_fill(tmp_path, capsys):
    src = tz.create_array(tmp_path / "src.zarr", data=torch.arange(4.0))  # v3, fill 0
    args = ["rechunk", tmp_path / "src.zarr"]
    assert _run(capsys, *args, tmp_path / "kept.zarr", "--zarr-format", "2")[0] == 0
    assert tz.open_array(tmp_path / "kept.zarr", mode="r").metadata.fill_value == 0
    none = [*args, tmp_path / "none.zarr", "--zarr-format", "2", "--fill-value", "none"]
    assert _run(capsys, *none)[0] == 0
    assert tz.open_array(tmp_path / "none.zarr", mode="r").metadata.fill_value is None
    assert _run(capsys, *args, tmp_path / "nan.zarr", "--fill-value", "nan")[0] == 0
    nan = tz.open_array(tmp_path / "nan.zarr", mode="r")
    assert math.isnan(nan.fill_value) and torch.equal(nan[:], src[:])
    with pytest.raises(SystemExit):
        _run(capsys, *args, tmp_path / "bad.zarr", "--fill-value", "zero")


def test_copy_keys_batches_replaces_and_reports():
    source = MemoryStore({f"a/c/{i}": bytes([i]) * 100 for i in range(70)} | {"b/x": b"1"})
    dest = MemoryStore({"a/old": b"stale"})
    seen = []
    with pytest.raises(tz.errors.NodeExistsError, match="a/old"):
        copy_keys(source, dest, "a")
    result = copy_keys(
        source, dest, "a", overwrite=True, jobs=3, progress=lambda d, t: seen.append((d, t))
    )
    assert (result.keys, result.nbytes) == (70, 7000)
    assert sorted(dest.list_prefix("")) == sorted(f"a/c/{i}" for i in range(70))  # old key gone
    failing = MemoryStore({"a/old": b"stale"})
    failing.set_many = lambda items: (_ for _ in ()).throw(tz.errors.StoreError("disk full"))
    with pytest.raises(tz.errors.StoreError, match="disk full"):
        copy_keys(source, failing, "a", overwrite=True)
    assert failing.get("a/old") == b"stale"  # a failed copy deletes nothing
    assert seen[-1] == (70, 70) and len(seen) > 1  # in batches
    with pytest.raises(tz.errors.InvalidArgumentError, match="jobs"):
        copy_keys(source, MemoryStore(), jobs=0)
    kept = MemoryStore({"x/old": b"keep"})
    with pytest.raises(tz.errors.NodeNotFoundError, match="nothing to copy: no keys at 'typo'"):
        copy_keys(source, kept, "typo", dest_path="x", overwrite=True)
    assert kept.get("x/old") == b"keep"  # an empty source never empties the destination


@pytest.mark.parametrize(("path", "dest_path"), [("a", "a"), ("a", "a/c"), ("a/c", "a"), ("", "x")])
def test_copy_keys_refuses_overlapping_copies_within_one_store(path, dest_path):
    store = MemoryStore({"a/c/0": b"1", "a/zarr.json": b"{}"})
    with pytest.raises(tz.errors.InvalidArgumentError, match="overlap"):
        copy_keys(store, store, path, dest_path=dest_path, overwrite=True)
    assert sorted(store.list_prefix("")) == ["a/c/0", "a/zarr.json"]  # nothing deleted
    assert copy_keys(store, store, "a", dest_path="b").keys == 2  # disjoint: fine


def test_copy_keys_refuses_overlapping_copies_between_stores_of_one_directory(tmp_path):
    tz.create_array(tmp_path / "x.zarr", shape=(4,), dtype=torch.int8)[:] = 1
    whole, inside = tz.LocalStore(tmp_path / "x.zarr"), tz.LocalStore(tmp_path / "x.zarr" / "sub")
    with pytest.raises(tz.errors.InvalidArgumentError, match="overlap"):
        copy_keys(whole, inside, overwrite=True)  # would copy the directory into itself
    assert not (tmp_path / "x.zarr" / "sub").exists()
    sibling = tz.LocalStore(tmp_path / "x.zarr2")  # a name that only starts the same
    assert copy_keys(whole, sibling).keys == 2


def test_bench_reports_a_rate_and_errors_are_one_line(tmp_path, capsys):
    arr = tz.create_array(tmp_path, shape=(64, 64), dtype=torch.float32, chunks=(16, 64))
    arr[:] = torch.from_numpy(np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    status, out, _ = _run(capsys, "bench", tmp_path, "--rounds", 2, "--threads", 1)
    assert status == 0 and "full read: " in out and "4 chunks read, 1 thread)" in out
    status, out, _ = _run(capsys, "bench", tmp_path, "--rounds", 1, "--max-mb", 0.001024)
    assert status == 0 and "rows 0:4: " in out and "1 chunk read" in out  # a slab that fits
    status, out, err = _run(capsys, "info", tmp_path / "missing")
    assert status == 1 and out == "" and err.startswith("torchzarr info: no array or group")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "{store}", "--rounds", "0"],
        ["bench", "{store}", "--rounds", "-2"],
        ["bench", "{store}", "--threads", "-1"],
        ["bench", "{store}", "--max-mb", "0"],
        ["bench", "{store}", "--max-mb", "nan"],
        ["tree", "{store}", "--level", "0"],
        ["tree", "{store}", "--level", "-1"],
        ["demo", "{store}/demo.zarr", "--seed", "-1"],
        ["demo", "{store}/demo.zarr", "--rows", "-5"],
        ["demo", "{store}/demo.zarr", "--rows", "0"],
        ["demo", "{store}/demo.zarr", "--rows", str(2**63)],
        ["copy", "{store}", "{store}/copy.zarr", "--jobs", "0"],
        ["rechunk", "{store}", "{store}/new.zarr", "--shards", "0"],
        ["rechunk", "{store}", "{store}/new.zarr", "--chunks", "4,0"],
    ],
)
def test_numeric_options_out_of_range_are_usage_errors(tmp_path, capsys, argv):
    tz.create_array(tmp_path, shape=(8,), dtype=torch.float32)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_:
        main([a.format(store=tmp_path) for a in argv])
    err = capsys.readouterr().err
    option = next(a for a in argv if a.startswith("--"))
    assert exit_.value.code == 2 and f"argument {option}: " in err.splitlines()[-1]
    assert "Traceback" not in err and sorted(tmp_path.rglob("*")) == before  # nothing written


def test_python_dash_m_runs_the_command_line(tmp_path):
    tz.open_group(tmp_path, mode="w").create_array("x", shape=(1,), dtype="int8")
    done = subprocess.run(
        [sys.executable, "-m", "torchzarr", "tree", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert done.stdout.splitlines() == ["/", "└── x [A] (1,) torch.int8"]


def test_copy_keys_takes_paths_and_urls_and_closes_what_it_opened(tmp_path):
    src = tz.create_array(tmp_path / "src.zarr", shape=(3,), dtype=torch.int16)
    src[:] = torch.tensor([1, 2, 3], dtype=torch.int16)
    result = copy_keys(str(tmp_path / "src.zarr"), f"zip://{tmp_path / 'out.zip'}")
    assert result.keys >= 2
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:  # the directory was written
        assert "zarr.json" in archive.namelist()
    assert tz.open_array(tmp_path / "out.zip", mode="r")[:].tolist() == [1, 2, 3]


def _copy_destination(tmp_path, zarr_format):
    """A source with a group ``g`` over an array ``x``, and a consolidated destination with
    an array ``labels`` and a group ``grp``, in one format; what the destination holds."""
    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    tz.open_group(src, mode="w", zarr_format=zarr_format).create_array("g/x", data=torch.arange(3))
    dest = tz.open_group(dst, mode="w", zarr_format=zarr_format)
    dest.create_array("labels", data=torch.arange(1, 5), chunks=(4,))
    dest.create_group("grp")
    tz.consolidate_metadata(dst)

    def contents():
        store = tz.LocalStore(dst)
        return {key: store.get(key) for key in store.list_prefix("")}

    return src, dst, contents


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_copy_into_an_array_is_refused_before_writing(tmp_path, capsys, zarr_format):
    src, dst, contents = _copy_destination(tmp_path, zarr_format)
    before = contents()
    for argv in [
        [src, dst, "--path", "g", "--dest-path", "labels/inner"],
        [src, dst, "--path", "g", "--dest-path", "labels/c", "--overwrite"],
        [src, dst, "--path", "g/x", "--dest-path", "labels/a/b", "--overwrite"],
    ]:
        status, _, err = _run(capsys, "copy", *argv)
        assert status == 1 and contents() == before  # nothing written, nothing deleted
        assert "an array exists at 'labels'" in err and "nothing was copied" in err
    assert torch.equal(tz.open_array(dst, path="labels", mode="r")[:], torch.arange(1, 5))


@pytest.mark.parametrize(("dest_format", "other_format"), [(3, 2), (2, 3)])
def test_copy_into_a_group_of_the_other_format_is_refused_before_writing(
    tmp_path, capsys, dest_format, other_format
):
    src, dst, contents = _copy_destination(tmp_path, dest_format)
    other = tmp_path / "other.zarr"
    tz.open_group(other, mode="w", zarr_format=other_format).create_array("x", data=torch.arange(3))
    before = contents()
    for dest_path in ["grp/x", "grp/new/x", "new/x"]:  # the parent, or the nearest group above
        status, _, err = _run(capsys, "copy", other, dst, "--path", "x", "--dest-path", dest_path)
        assert status == 1 and contents() == before
        assert f"is Zarr v{dest_format}" in err
        assert f"which lists no v{other_format} node" in err and "nothing was copied" in err
    # a node of the hierarchy's format gets its missing parents in that format
    assert _run(capsys, "copy", src, dst, "--path", "g/x", "--dest-path", "grp/new/x")[0] == 0
    root = tz.open_group(dst, mode="r", use_consolidated=True)
    assert root["grp/new"].metadata.zarr_format == dest_format
    assert torch.equal(root["grp/new/x"][:], torch.arange(3))


def test_tree_shows_a_root_array_of_an_unsupported_dtype_as_its_group_shows_it(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.create_array(str(tmp_path / "s"), shape=(3,), chunks=(2,), dtype=str)[:] = "abc"
        zarr.open_group(str(tmp_path / "g"), mode="w").create_array("x", shape=(3,), dtype=str)
    status, out, err = _run(capsys, "tree", tmp_path / "s")
    assert (status, out, err) == (0, "/ [A] unsupported dtype string\n", "")
    status, out, _ = _run(capsys, "tree", tmp_path / "g")
    assert status == 0 and out.endswith("x [A] unsupported dtype string\n")
    status, out, _ = _run(capsys, "tree", tmp_path / "g", "--path", "x")
    assert (status, out) == (0, "/x [A] unsupported dtype string\n")


def test_info_shows_an_array_with_a_damaged_shard_and_names_the_shard(tmp_path, capsys):
    arr = zarr.create_array(str(tmp_path), shape=(20, 8), chunks=(5, 4), shards=(10, 8), dtype="f4")
    arr[:] = 1.0
    (tmp_path / "c" / "1" / "0").write_bytes(b"x")
    status, out, err = _run(capsys, "info", tmp_path)
    assert status == 0 and err == "" and re.search(r"Shape +: \(20, 8\)", out)
    assert re.search(r"Chunks initialized +: 4/8", out)
    assert re.search(r"Damaged shards +: 1 \(c/1/0\): index unreadable", out)
