"""zstd frames encoded into reused per-thread memory equal numcodecs' own, on any layout."""

from __future__ import annotations

import threading

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import torchzarr as tz
from torchzarr.codecs import BytesCodec, GzipCodec, ZstdCodec, fast_encode
from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.pipeline import V3Pipeline
from torchzarr.core import fast_write
from torchzarr.errors import CodecError
from torchzarr.storage.local import LocalStore

pytestmark = pytest.mark.skipif(
    not fast_encode.available(), reason="numcodecs exports no zstd C API"
)

DTYPES = ["i1", "u2", "<i4", "<f4", "<f8", "<c8"]


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(
        st.sampled_from(DTYPES), hnp.array_shapes(min_dims=1, max_dims=3, max_side=40)
    ),
    level=st.sampled_from([-5, 0, 1, 3, 9]),
    checksum=st.booleans(),
    transpose=st.booleans(),
)
def test_frames_equal_numcodecs_for_any_layout(array, level, checksum, transpose):
    source = array.T if transpose else array  # a non-contiguous view when transposed
    frame = fast_encode.zstd_compress(source, level, checksum)
    expected = numcodecs.Zstd(level=level, checksum=checksum).encode(np.ascontiguousarray(source))
    assert bytes(frame) == bytes(expected)
    decoded = np.frombuffer(numcodecs.Zstd().decode(bytes(frame)), dtype=source.dtype)
    np.testing.assert_array_equal(decoded.reshape(source.shape), source)


def test_each_thread_keeps_its_own_buffer():
    arrays = [np.full(50_000, i, dtype=np.int32) for i in range(4)]
    frames: dict[int, bytes] = {}
    barrier = threading.Barrier(4)

    def work(i):
        view = fast_encode.zstd_compress(arrays[i], 1, False)
        barrier.wait()  # every thread has encoded before any reads its view
        frames[i] = bytes(view)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert frames[i] == numcodecs.Zstd(level=1).encode(arrays[i])


def test_zstd_failures_are_codec_errors():
    with pytest.raises(CodecError, match="zstd codec: cannot encode: compress failed"):
        fast_encode._check(2 ** (8 * np.dtype(np.uintp).itemsize) - 1, "compress")
    assert fast_encode._check(17, "compress") == 17


def _pipeline(codecs, dtype="<f4", shape=(4, 6)):
    return V3Pipeline(codecs, ChunkSpec(shape, np.dtype(dtype), 0))


def test_the_reusing_encoder_applies_only_to_native_zstd_frames():
    assert fast_write.reusing_encoder(_pipeline([BytesCodec("little"), ZstdCodec(3)])) is not None
    assert fast_write.reusing_encoder(_pipeline([BytesCodec("big"), ZstdCodec(3)])) is None
    assert fast_write.reusing_encoder(_pipeline([BytesCodec("little"), GzipCodec(1)])) is None
    assert fast_write.reusing_encoder(_pipeline([BytesCodec("little")])) is None


def test_the_reusing_encoder_falls_back_for_other_dtypes_and_shapes():
    pipeline = _pipeline([BytesCodec("little"), ZstdCodec(1, checksum=True)])
    encode = fast_write.reusing_encoder(pipeline)
    chunk = np.arange(24, dtype="<f4").reshape(4, 6)
    assert bytes(encode(chunk)) == pipeline.encode(chunk)
    as_ints = chunk.astype("<i8")  # cast by the pipeline, as encode() does
    assert bytes(encode(as_ints)) == pipeline.encode(as_ints)
    with pytest.raises(tz.errors.ShapeMismatchError):
        encode(np.zeros((2, 2), dtype="<f4"))


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_engine_writes_read_back_in_zarr_python(tmp_path, fsync, zarr_format):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((50, 70)).astype(np.float32)
    compressors = numcodecs.Zstd(level=2) if zarr_format == 2 else [ZstdCodec(2, checksum=True)]
    arr = tz.create_array(
        LocalStore(tmp_path, fsync=fsync),
        shape=data.shape,
        chunks=(16, 8),  # column chunks: every whole chunk is a non-contiguous region
        dtype=data.dtype,
        zarr_format=zarr_format,
        compressors=compressors,
    )
    arr[:] = data
    arr[3:9, 5:60] = data[3:9, 5:60] * 2  # partial chunks: read, modify, write
    expected = data.copy()
    expected[3:9, 5:60] *= 2
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path), mode="r")[:], expected)
    np.testing.assert_array_equal(tz.open_array(tmp_path, mode="r")[:].numpy(), expected)
