"""A load of an fsspec URL that names one object, not a checkpoint's prefix: a file
``torch.save`` wrote says to use torch.load, as a local path does."""

from __future__ import annotations

import io
import uuid

import fsspec
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import MetadataError, NodeNotFoundError
from torchzarr.storage.fsspec_store import FsspecStore


@pytest.fixture
def place() -> str:
    return f"/ckpt-{uuid.uuid4().hex[:8]}"


def _saved(**kwargs: object) -> bytes:
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_a_torch_save_object_at_an_fsspec_url_says_to_use_torch_load(place):
    fs = fsspec.filesystem("memory")
    fs.pipe(
        {
            f"{place}/model.pt": _saved(),
            f"{place}/legacy.pt": _saved(_use_new_zipfile_serialization=False),
            f"{place}/notes.txt": b"hello",
            f"{place}/dir/x": b"1",
        }
    )
    for name, kind in [("model.pt", "a zip archive"), ("legacy.pt", "a pickle")]:
        said = rf"'memory://{place}/{name}' holds no torchzarr checkpoint: it is {kind} "
        with pytest.raises(MetadataError, match=said + r"written by torch\.save; .*torch\.load"):
            tz.load_checkpoint(FsspecStore(f"memory://{place}/{name}"))
    with pytest.raises(MetadataError, match=r"notes\.txt' holds no .*it is a file, not a"):
        tz.load_checkpoint(FsspecStore(f"memory://{place}/notes.txt"))
    for prefix in ("dir", "missing"):  # no object at the URL: the generic message
        with pytest.raises(NodeNotFoundError, match="no committed checkpoint"):
            tz.load_checkpoint(FsspecStore(f"memory://{place}/{prefix}"))
    with pytest.raises(MetadataError, match=r"model\.pt' holds no"):
        tz.load_checkpoint(FsspecStore(f"memory://{place}/model.pt"), version="v000001")


def test_over_http_a_page_at_the_url_is_no_file_to_name_but_a_torch_save_file_is() -> None:
    import functools
    import http.server

    from http_serving import serving

    index = b"<html>Index of /run/</html>"
    pages = {"/model.pt": _saved(), "/run": index, "/run/": index}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # a directory index at the prefix, a file at model.pt
            body = pages.get(self.path.split("?")[0])
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    with serving(functools.partial(Handler)) as base:
        with pytest.raises(MetadataError, match=r"model\.pt' holds no .*torch\.load"):
            tz.load_checkpoint(f"{base}/model.pt")
        with pytest.raises(NodeNotFoundError, match="no committed checkpoint"):
            tz.load_checkpoint(f"{base}/run")
