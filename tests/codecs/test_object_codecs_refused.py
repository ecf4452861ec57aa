"""Codecs that build Python objects from stored bytes (numcodecs' ``pickle`` above all) are
refused before anything is decoded or written, even where numcodecs would unpickle."""

from __future__ import annotations

import glob
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numcodecs
import numcodecs.pickles
import numcodecs.registry
import pytest
import torch
from documents import v3_array_document

import torchzarr as tz
from torchzarr.codecs.numcodecs_adapter import (
    OBJECT_CODEC_IDS,
    check_numeric_codec,
    numcodecs_codec_class,
    numcodecs_object,
)
from torchzarr.errors import UnknownCodecError

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


class _Payload:
    """Unpickles to a side effect (the test's marker file) and a valid chunk."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        code = f"(open({self.marker!r}, 'w').close(), __import__('numpy').ones(4, '<f4'))[1]"
        return (eval, (code,))


@pytest.fixture
def unpickling(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """numcodecs as the versions that unpickle (or a process that opted in): Pickle.decode
    unpickles, and each call is recorded."""
    monkeypatch.setenv("NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE", "1")
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True, raising=False)
    calls: list[bytes] = []

    def decode(self: Any, buf: Any, out: Any = None) -> Any:
        calls.append(bytes(buf))
        return pickle.loads(bytes(buf))

    monkeypatch.setattr(numcodecs.pickles.Pickle, "decode", decode)
    return calls


def _v2_array(root: Path, filters: Any, compressor: Any, chunk: bytes) -> None:
    root.mkdir()
    meta = {
        "zarr_format": 2,
        "shape": [4],
        "chunks": [4],
        "dtype": "<f4",
        "compressor": compressor,
        "fill_value": 0,
        "filters": filters,
        "order": "C",
    }
    (root / ".zarray").write_text(json.dumps(meta))
    (root / "0").write_bytes(chunk)


@pytest.mark.parametrize(
    ("filters", "compressor"),
    [([{"id": "pickle"}], None), (None, {"id": "pickle"}), ([{"id": "pickle"}], {"id": "zlib"})],
)
def test_v2_pickle_codec_is_refused_before_any_unpickling(
    tmp_path: Path, unpickling: list[bytes], filters: Any, compressor: Any
) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Payload(str(marker)))
    if compressor is not None and compressor["id"] == "zlib":
        payload = numcodecs.Zlib().encode(payload)
    _v2_array(tmp_path / "a", filters, compressor, payload)
    with pytest.raises(UnknownCodecError, match=r"'pickle' is refused: it unpickles"):
        tz.open_array(str(tmp_path / "a"), mode="r")[...]
    assert unpickling == [] and not marker.exists()


@pytest.mark.parametrize("where", ["after bytes", "inside a shard"])
def test_v3_numcodecs_pickle_is_refused_when_the_array_opens(
    tmp_path: Path, unpickling: list[bytes], where: str
) -> None:
    marker = tmp_path / "ran"
    pickled = {"name": "numcodecs.pickle", "configuration": {}}
    codecs: list[Any] = [BYTES, pickled]
    if where == "inside a shard":
        config = {"chunk_shape": [2], "codecs": codecs}
        codecs = [{"name": "sharding_indexed", "configuration": config}]
    root = tmp_path / "a"
    (root / "c").mkdir(parents=True)
    (root / "zarr.json").write_text(json.dumps(v3_array_document(4, codecs)))
    (root / "c" / "0").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(UnknownCodecError, match=r"node '/' \(zarr.json\).*'pickle' is refused"):
        tz.open_array(str(root), mode="r")
    assert unpickling == [] and not marker.exists()


def test_checkpoint_naming_the_pickle_codec_loads_nothing(
    tmp_path: Path, unpickling: list[bytes]
) -> None:
    marker = tmp_path / "ran"
    ckpt = tmp_path / "ckpt"
    tz.save_checkpoint({"w": torch.zeros(4)}, str(ckpt))
    pickled = [BYTES, {"name": "numcodecs.pickle", "configuration": {}}]
    for path in glob.glob(os.path.join(ckpt, "**", "zarr.json"), recursive=True):
        doc = json.loads(Path(path).read_text())
        if doc.get("node_type") == "array":  # the tensor: its codecs and its chunk replaced
            doc["codecs"] = pickled
            chunk = Path(path).parent / "c" / "0"
            chunk.parent.mkdir(exist_ok=True)
            chunk.write_bytes(pickle.dumps(_Payload(str(marker))))
        for entry in doc.get("consolidated_metadata", {}).get("metadata", {}).values():
            if entry.get("node_type") == "array":
                entry["codecs"] = pickled
        Path(path).write_text(json.dumps(doc))
    with pytest.raises(UnknownCodecError, match="'pickle' is refused"):
        tz.load_checkpoint(str(ckpt))
    assert unpickling == [] and not marker.exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compressors": numcodecs.Pickle()},
        {"compressors": "numcodecs.pickle"},
        {"compressors": {"name": "numcodecs.pickle", "configuration": {}}},
        {"filters": [numcodecs.Pickle()]},
        {"zarr_format": 2, "compressors": numcodecs.Pickle()},
        {"zarr_format": 2, "filters": [{"id": "pickle"}]},
    ],
)
def test_creating_an_array_with_the_pickle_codec_is_refused_before_writing(
    kwargs: dict[str, Any],
) -> None:
    store = tz.MemoryStore()
    with pytest.raises(UnknownCodecError, match="'pickle' is refused"):
        tz.create_array(store, shape=(4,), dtype=torch.float32, **kwargs)
    assert list(store.list_prefix("")) == []


@pytest.mark.parametrize("codec_id", sorted(OBJECT_CODEC_IDS))
def test_object_codecs_are_refused_by_id(codec_id: str) -> None:
    with pytest.raises(UnknownCodecError, match=f"{codec_id!r} is refused"):
        numcodecs_object({"id": codec_id})
    with pytest.raises(UnknownCodecError, match=f"{codec_id!r} is refused"):
        numcodecs_codec_class(codec_id)


@pytest.mark.parametrize(
    "codec",
    [numcodecs.Pickle(), numcodecs.JSON(), numcodecs.VLenUTF8(), numcodecs.VLenBytes()],
    ids=lambda codec: codec.codec_id,
)
def test_object_codec_objects_are_refused(codec: Any) -> None:
    with pytest.raises(UnknownCodecError, match="is refused"):
        numcodecs_object(codec)


def test_an_object_codec_registered_under_another_id_is_refused(
    monkeypatch: pytest.MonkeyPatch, unpickling: list[bytes]
) -> None:
    monkeypatch.setitem(numcodecs.registry.codec_registry, "plain", numcodecs.pickles.Pickle)
    with pytest.raises(UnknownCodecError, match="unpickles"):
        numcodecs_object({"id": "plain"})
    assert unpickling == []


def test_numeric_codecs_pass() -> None:
    for codec in ("zstd", "delta", numcodecs.Zlib(), numcodecs.Shuffle()):
        check_numeric_codec(codec)
