"""What a bulk delete on an object store reports when its request stalls after deleting
part of its keys: the keys still there, not every key it was sent."""

from __future__ import annotations

import asyncio
from typing import Any

from fsspec.asyn import AsyncFileSystem

from torchzarr.storage.fsspec_deletes import remove_objects
from torchzarr.storage.retry import RetryPolicy


class _StallsMidway(AsyncFileSystem):  # type: ignore[misc]
    """Objects at ``paths``; a bulk delete removes the first ``done`` it is sent, then
    never answers (as a request that times out after the server did part of it)."""

    def __init__(self, paths: list[str], done: int) -> None:
        super().__init__(skip_instance_cache=True)
        self.objects, self.done = set(paths), done

    async def _rm(self, path: list[str], **kwargs: Any) -> None:
        self.objects.difference_update(path[: self.done])
        await asyncio.sleep(3600)

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        if path not in self.objects:
            raise FileNotFoundError(path)
        return {"name": path, "size": 1, "type": "file"}


def test_a_bulk_delete_that_times_out_reports_only_the_keys_still_there() -> None:
    paths = [f"stalled/c/{i}" for i in range(30)]
    fs = _StallsMidway(paths, 25)
    failures, made = remove_objects(fs, paths, 0.2, RetryPolicy(retries=0))
    assert made == 1 and sorted(failures) == sorted(paths[25:])  # 5 left, not all 30
    assert all(isinstance(error, TimeoutError) for error in failures.values())
    fs.done = 2  # of the 5 left, 2 are deleted this time; a listing of the prefix tells
    failures, _ = remove_objects(fs, paths[25:], 0.2, RetryPolicy(retries=0), lambda: fs.objects)
    assert sorted(failures) == sorted(paths[27:])
