"""The MCP tools' helpers: image arguments, keys from headers, progress values, previews, job ids."""

import base64
import io

import pytest
from client_helpers import face_jpeg
from mcp.server.mcpserver.exceptions import ToolError
from PIL import Image

from faceanchor.client import JobStatus, Progress
from faceanchor.mcp.backend import IN_PROCESS_URL, Backend, BackendError, presented_key
from faceanchor.mcp.server import _preview, _progress, _split_job


def test_image_arguments(tmp_path):
    photo = tmp_path / "me.jpg"
    data = face_jpeg()
    photo.write_bytes(data)
    local = Backend("http://x", "k")
    assert base64.b64decode(local.image(str(photo), "face_image")) == data
    assert local.image(" https://example.com/a.jpg ", "f") == "https://example.com/a.jpg"
    b64 = base64.b64encode(data).decode()
    assert local.image(b64, "f") == b64
    with pytest.raises(BackendError, match="face_image: image .* is not a file"):
        local.image(str(tmp_path / "nope.jpg"), "face_image")
    with pytest.raises(BackendError, match="give a file path"):
        local.image("  ", "face_image")
    net = Backend("http://x", None, allow_paths=False)
    with pytest.raises(BackendError, match="does not read file paths"):
        net.image(str(photo), "face_image")
    with pytest.raises(BackendError, match="does not read file paths"):
        net.image("/etc/passwd", "face_image")
    assert net.image(b64, "f") == b64 and net.image("data:image/png;base64,AAAA", "f").startswith("data:")


def test_keys_come_from_the_backend_or_the_request_headers():
    assert presented_key({"X-API-Key": " k1 "}) == "k1"
    assert presented_key({"authorization": "Bearer k2"}) == "k2"
    assert presented_key({"Authorization": "Key k3"}) == "k3"
    assert presented_key({"authorization": "Basic abc"}) is None and presented_key(None) is None
    with pytest.raises(BackendError, match="an API key is required"):
        Backend("http://x").client({})
    assert Backend("http://x", "own").client({"x-api-key": "theirs"})._core.key == "own"


def test_file_urls_only_where_an_outside_host_can_fetch_them():
    assert Backend(IN_PROCESS_URL).file_url(f"{IN_PROCESS_URL}/files/abc") is None
    mounted = Backend(IN_PROCESS_URL, public_url="http://gpu:8000/")
    assert mounted.file_url(f"{IN_PROCESS_URL}/files/abc") == "http://gpu:8000/files/abc"
    assert Backend("http://gpu:8000", "k", public_url="http://gpu:8000").file_url("http://gpu:8000/files/x") == "http://gpu:8000/files/x"


def test_progress_values():
    def st(status, progress=None, **kw):
        return JobStatus(request_id="r", status=status, progress=progress, **kw)

    assert _progress(st("IN_QUEUE", queue_position=2)) == (0.0, "in queue, position 2")
    assert _progress(st("IN_PROGRESS")) == (0.0, "starting")
    assert _progress(st("IN_PROGRESS", Progress("denoise", 3, 10))) == (0.3, "denoise step 3/10")
    assert _progress(st("IN_PROGRESS", Progress("denoise", 10, 10, sample=1, fraction=0.75))) == (0.75, "denoise step 10/10 (image 2)")
    assert _progress(st("IN_PROGRESS", Progress("denoise", 10, 10, fraction=1.0)))[0] < 1.0  # 1.0 only when done
    assert _progress(st("COMPLETED")) == (1.0, "done")
    assert _progress(st("FAILED"))[0] is None


def test_preview_is_a_small_jpeg_keeping_the_aspect():
    buf = io.BytesIO()
    Image.new("RGB", (1024, 512), (200, 10, 10)).save(buf, "PNG")
    im = Image.open(io.BytesIO(base64.b64decode(_preview(buf.getvalue()))))
    assert im.format == "JPEG" and im.size == (256, 128)
    r, g, b = im.getpixel((5, 5))
    assert r > 180 and g < 40 and b < 40


def test_job_ids():
    assert _split_job("character/generate:abc") == ("character/generate", "abc")
    assert _split_job("instantid:r1") == ("instantid", "r1")
    for bad in ("abc", ":abc", "instantid:"):
        with pytest.raises(ToolError, match="APP:REQUEST_ID"):
            _split_job(bad)
