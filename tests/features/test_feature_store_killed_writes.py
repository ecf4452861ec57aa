"""Writers killed at each store mutation of a write: what FeatureStore and xarray see then."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.features import FeatureStore

xr = pytest.importorskip("xarray")
zarr = pytest.importorskip("zarr")

OLD_IDS = list(range(100, 106))  # no id is 0: rows labelled with the fill value would show
NEW_IDS = [101, 102, *range(200, 207)]  # two overwrites, seven appends, a new feature "c"
ALL_IDS = OLD_IDS + NEW_IDS[2:]


def _values(ids: list[int], seed: int, new: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(ids)
    values = {"a": torch.randn(n, 2, generator=g), "b": torch.tensor(ids) * seed}
    if new:
        values["c"] = torch.randn(n, generator=g).half()
    return values


def _killed_at(path: str, mutation: int) -> int:
    """Run the new write in a forked child killed (``os._exit``) just before its
    ``mutation``-th store mutation (a key landing or deleted); its exit status (0: the
    write had fewer mutations and completed)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            count = [0]
            replace, unlink = os.replace, pathlib.Path.unlink

            def hit() -> None:
                count[0] += 1
                if count[0] == mutation:
                    os._exit(42)

            def replace_(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
                hit()
                replace(src, dst, *args, **kwargs)

            def unlink_(self: pathlib.Path, *args: Any, **kwargs: Any) -> None:
                if not self.name.endswith(".partial"):  # a staged file is no key
                    hit()
                unlink(self, *args, **kwargs)

            os.replace = replace_
            pathlib.Path.unlink = unlink_  # type: ignore[method-assign]
            FeatureStore(path, mode="r+").write(NEW_IDS, _values(NEW_IDS, 2, True))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _check(path: str) -> str:
    """What a killed write left: FeatureStore sees exactly the old or the new published
    rows, xarray refuses the store or shows stored rows under their own ids; and the next
    write of the same rows mends it. Returns "old" or "new"."""
    old, new = _values(OLD_IDS, 1, False), _values(NEW_IDS, 2, True)
    fs = FeatureStore(path, mode="r")
    ids = fs.ids.tolist()
    kept = [i for i in OLD_IDS if i not in NEW_IDS]  # rows no write overwrote
    at = [OLD_IDS.index(i) for i in kept]
    got = fs.read(kept, ["a", "b"])
    assert torch.equal(got["a"], old["a"][at]) and torch.equal(got["b"], old["b"][at])
    if ids == OLD_IDS:
        state = "old"
        assert fs.features == ("a", "b")
    else:
        state = "new"
        assert ids == ALL_IDS and fs.features == ("a", "b", "c")
        got = fs.read(NEW_IDS)
        assert all(torch.equal(got[k], new[k]) for k in "abc")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except ValueError as err:  # arrays longer than ids: conflicting sizes
        assert "conflicting sizes" in str(err)
    else:
        shown = ds["ids"].values.tolist()
        assert 0 not in shown  # no row labelled with a placeholder id
        # the published ids; or, killed just before its attribute was written, the whole
        # write stored (every row under its own id), which FeatureStore will not publish
        assert shown == ids or (state == "old" and shown == ALL_IDS)
        if shown == ALL_IDS:
            assert ds["c"].values[OLD_IDS.index(101)] == new["c"][0].item()
            assert ds["b"].values.tolist()[len(OLD_IDS) :] == new["b"][2:].tolist()
    redo = FeatureStore(path, mode="a")
    redo.write(NEW_IDS, _values(NEW_IDS, 2, True))
    got = redo.read(NEW_IDS)
    assert redo.ids.tolist() == ALL_IDS and all(torch.equal(got[k], new[k]) for k in "abc")
    group = zarr.open_group(path, mode="r")
    assert {name: group[name].shape[0] for name in group.array_keys()} == dict.fromkeys(
        ("a", "b", "c", "ids"), len(ALL_IDS)
    )
    return state


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_write_killed_at_any_mutation_leaves_old_or_new_rows_and_no_placeholder_ids(
    tmp_path: Path, zarr_format: int
) -> None:
    base, trial = str(tmp_path / "base"), str(tmp_path / "trial")
    FeatureStore(base, mode="w", zarr_format=zarr_format).write(OLD_IDS, _values(OLD_IDS, 1, False))
    states = []
    for mutation in range(1, 200):
        shutil.rmtree(trial, ignore_errors=True)
        shutil.copytree(base, trial)
        status = _killed_at(trial, mutation)
        assert status in (0, 42), status
        states.append(_check(trial))
        if status == 0:
            break
    assert status == 0 and states[-1] == "new" and states[0] == "old"
    assert len(states) > 5  # every mutation of the write was a kill point
