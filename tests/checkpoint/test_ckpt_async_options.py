"""AsyncCheckpointer refuses bad save options where they are given, not later from its thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import AsyncCheckpointer
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, UnknownCodecError


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"keep": 0}, InvalidArgumentError, "keep must be >= 1, got 0"),
        ({"chunk_bytes": 1.5}, ArgumentTypeError, "chunk_bytes must be an int"),
        ({"kep": 2}, ArgumentTypeError, "no option 'kep'.*keep"),
        ({"compressors": "bogus"}, UnknownCodecError, "bogus"),
    ],
)
def test_bad_options_are_refused_by_the_constructor(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        AsyncCheckpointer(**options)


def test_bad_options_of_one_save_are_refused_by_that_save(tmp_path: Path) -> None:
    with AsyncCheckpointer(keep=2) as saver:
        with pytest.raises(ArgumentTypeError, match="'fsnyc'"):
            saver.save({"w": torch.ones(1)}, str(tmp_path / "a"), fsnyc=False)
        assert saver.wait() is None  # nothing was started
        saver.save({"w": torch.ones(1)}, str(tmp_path / "a"), fsync=False)
        assert saver.wait() == "v000001"
