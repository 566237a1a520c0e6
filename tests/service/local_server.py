"""A loopback HTTP server for fetch and webhook tests (never any non-loopback target)."""

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def image_bytes() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((40, 40), 50).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


class LocalServer:
    def __init__(self):
        self.image = image_bytes()
        self.posts: list[tuple[str, dict, bytes]] = []
        self.post_statuses: list[int] = []  # answers for successive POSTs (then 200)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                p = self.path
                if p == "/img":
                    self._send(200, owner.image, "image/png")
                elif p.startswith("/redirect-to?"):
                    self.send_response(302)
                    self.send_header("Location", p.split("?", 1)[1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif p == "/loop":
                    self.send_response(302)
                    self.send_header("Location", "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif p == "/big":
                    self._send(200, b"x" * 100_000, "image/png")
                elif p == "/big-chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for _ in range(100):
                        chunk = b"y" * 1000
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.write(b"0\r\n\r\n")
                elif p == "/slow":
                    time.sleep(2)
                    self._send(200, owner.image, "image/png")
                elif p == "/host":
                    self._send(200, self.headers.get("Host", "").encode(), "text/plain")
                else:
                    self._send(404, b"nope", "text/plain")

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                owner.posts.append((self.path, dict(self.headers), body))
                status = owner.post_statuses.pop(0) if owner.post_statuses else 200
                self._send(status, b"ok", "text/plain")

            def _send(self, status, body, ctype):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
