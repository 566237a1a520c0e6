"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory, started on
a free port with its unix socket in that directory, stopped and deleted at the end.

The binaries come from PATH or ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql``
package). PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres``
user (or ``nobody``) through ``runuser``, in a directory it owns. Without any binaries the
PostgreSQL tests skip, unless ``FACEANCHOR_REQUIRE_PG`` is set: then they fail (CI sets it
implicitly by installing the package; the README's test command installs it).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True):
        if os.access(os.path.join(bindir, "initdb"), os.X_OK) and os.access(os.path.join(bindir, "pg_ctl"), os.X_OK):
            return Path(bindir)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class PgCluster:
    """One running cluster; :meth:`url` names a fresh database in it."""

    USER = "faceanchor"

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = _free_port()
        self.run_as = _unprivileged_user()
        # Not under pytest's tmp dir: that is 0700 root's, which the unprivileged user cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="faceanchor-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log = self.root / "server.log"
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        conf = self.data / "postgresql.conf"
        settings = {
            "listen_addresses": "''",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",  # a test cluster: speed over crash safety of PostgreSQL itself
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        with open(conf, "a") as f:
            f.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.start()
        atexit.register(self.destroy)  # also when the session ends without its finaliser

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120)
        if check and res.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}\n{tail}")
        return res

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", f"-p {self.port}", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self) -> None:
        """Stop (dropping every client connection) and start again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "-o", f"-p {self.port}", "restart")

    def destroy(self) -> None:
        if self.root.exists():
            self.stop("immediate")
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ databases

    def _dsn(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.USER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(host=str(self.socket_dir), port=self.port, user=self.USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self._dsn(name)


def start_cluster() -> PgCluster | None:
    """A started cluster, or ``None`` when no PostgreSQL is installed (callers skip, or fail
    when ``FACEANCHOR_REQUIRE_PG`` is set)."""
    bindir = find_bindir()
    if bindir is None:
        return None
    return PgCluster(bindir)
