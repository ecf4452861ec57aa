"""SQLiteStore on a full disk: the write's error says what SQLite met (an I/O error, a full
disk), not that a ROLLBACK found no transaction, and the data stored before is intact.

A full disk is stood in for by a file size limit (``RLIMIT_FSIZE``, ``SIGXFSZ`` ignored).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("resource")
signal = pytest.importorskip("signal")
if not hasattr(signal, "SIGXFSZ"):  # pragma: no cover - platforms without file size limits
    pytest.skip("no SIGXFSZ", allow_module_level=True)

from zip_faults import room_left  # noqa: E402

from torchzarr.errors import StoreError  # noqa: E402
from torchzarr.storage.sqlite import SQLiteStore  # noqa: E402


def test_a_write_past_the_room_left_names_the_disk_error_and_keeps_what_was_there(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.db"
    store = SQLiteStore(path)
    store.set("kept", b"k" * 1000)
    # 1 MiB more: a 16 MiB value does not fit
    with room_left(path, 1 << 20), pytest.raises(StoreError) as caught:
        store.set_many({"big/0": b"x" * (8 << 20), "big/1": b"y" * (8 << 20)})
    said = str(caught.value)
    assert "big/0" in said and "no transaction is active" not in said, said
    assert "disk" in said or "full" in said, said  # SQLite's own words
    assert store.get("kept") == b"k" * 1000
    store.set("after", b"a")  # the connection is usable again
    assert sorted(store.list_prefix("")) == ["after", "kept"]
    store.close()
