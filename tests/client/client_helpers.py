"""Helpers of the client tests (put on sys.path by conftest.py): photos, a live faceanchor server on
loopback (uvicorn in a thread, the tiny engine) and a scripted misbehaving one."""

import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


def noise_png(size=(48, 48)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def face_jpeg(name="obama.jpg", width=300) -> bytes:
    im = Image.open(FACES / name).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return buf.getvalue()


class LiveServer:
    """``create_app(settings, engine)`` served by uvicorn on a free loopback port."""

    def __init__(self, settings, engine):
        import uvicorn

        from faceanchor.api.app import create_app

        self.engine = engine
        self.app = create_app(settings, engine, load_in_background=False, serve_web=False)
        self.service = self.app.state.service
        self.key, self.key_info = self.service.keys.create("client-test")
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


class ScriptedServer:
    """A loopback HTTP server answering from a script: each request takes the next
    ``(status, headers, body)``; ``None`` drops the connection without an answer. It records
    every request (method, path, headers, body)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests: list[dict] = []
        self.times: list[float] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n) if n else b""
                owner.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body})
                owner.times.append(time.monotonic())
                step = owner.script.pop(0) if owner.script else (500, {}, {"error": {"type": "script_over", "message": "no more answers"}})
                if step is None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers, payload = step
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
