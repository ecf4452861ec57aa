"""SQLite and LMDB stores alike: a file appears only with the first write."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz


@pytest.mark.parametrize("url", ["sqlite://{}/data.db", "lmdb://{}/data.lmdb"])
def test_opening_a_missing_array_creates_no_file(tmp_path, url):
    url = url.format(tmp_path)
    with pytest.raises(tz.errors.ArrayNotFoundError):
        tz.open_array(url)  # mode "a": read-write, but nothing is written
    assert list(tmp_path.iterdir()) == []
    tz.open_array(url, shape=(2,), dtype=torch.int8)[:] = 3  # the first write creates it
    assert tz.open_array(url, mode="r")[:].tolist() == [3, 3]
