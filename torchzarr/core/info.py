"""``Array.info``: a printable summary of an array's layout and storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ArrayInfo"]


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class ArrayInfo:
    """Facts about an array; ``str(info)`` is a human table.

    Example:
        >>> import torchzarr as tz, torch
        >>> arr = tz.create_array("memory://", shape=(4,), dtype=torch.int32, chunks=(2,))
        >>> arr.info.nchunks, arr.info.nchunks_initialized
        (2, 0)
    """

    name: str
    zarr_format: int
    shape: tuple[int, ...]
    dtype: Any
    chunks: tuple[int, ...]
    codecs: tuple[str, ...]
    fill_value: Any
    store: str
    nbytes: int
    nbytes_stored: int
    nchunks: int
    nchunks_initialized: int
    read_only: bool

    @property
    def ratio(self) -> float:
        """Decoded bytes over stored bytes of the initialised chunks' share (inf if none)."""
        if not self.nbytes_stored:
            return float("inf")
        share = self.nbytes * self.nchunks_initialized / max(self.nchunks, 1)
        return share / self.nbytes_stored

    def __str__(self) -> str:
        rows = [
            ("Name", self.name),
            ("Zarr format", str(self.zarr_format)),
            ("Shape", str(self.shape)),
            ("Data type", str(self.dtype)),
            ("Chunk shape", str(self.chunks)),
            ("Codecs", ", ".join(self.codecs) or "none"),
            ("Fill value", repr(self.fill_value)),
            ("Store", self.store),
            ("Read-only", str(self.read_only)),
            ("No. bytes", f"{self.nbytes} ({_human(self.nbytes)})"),
            ("No. bytes stored", f"{self.nbytes_stored} ({_human(self.nbytes_stored)})"),
            ("Storage ratio", f"{self.ratio:.1f}"),
            ("Chunks initialized", f"{self.nchunks_initialized}/{self.nchunks}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)
