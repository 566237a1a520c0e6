"""The README's code blocks marked ``<!-- runnable -->`` (the line before the block) run as
written with tiny weights: bash in a fresh directory that sees the repository's ``tests/``, the
installed ``faceanchor`` on PATH, a throwaway FACEANCHOR_HOME. Background processes a block
starts (``faceanchor serve ... &``) are ended with it."""

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- runnable -->\n```bash\n(.*?)```", re.S)


def runnable_blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def test_some_blocks_are_marked_runnable():
    blocks = runnable_blocks()
    assert blocks and any("faceanchor remote generate" in b for b in blocks)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.split("\n", 1)[0][:40])
def test_block_runs_as_written(block, tmp_path):
    for port in {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", block)}:
        if not _port_free(port):
            pytest.skip(f"port {port}, which the block uses as written, is taken on this machine")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEANCHOR_")}
    env.update(FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_DEVICE="cpu", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p))
    # files, not pipes: a background process keeps its copy of the block's stdout/stderr open
    with open(tmp_path / "stdout", "w") as fo, open(tmp_path / "stderr", "w") as fe:
        proc = subprocess.Popen(["bash", "-e", "-c", block], cwd=tmp_path, env=env, stdout=fo, stderr=fe, start_new_session=True)
    try:
        proc.wait(timeout=540)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the block's own process group: its background server too
        except ProcessLookupError:
            pass
    out, err = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    assert "Traceback" not in err, err[-4000:]
    for image in (tmp_path / "out").glob("*.png") if (tmp_path / "out").is_dir() else []:
        assert Image.open(image).size == (64, 64)
    if "remote generate" in block:
        written = [Path(line) for line in out.split() if line.endswith(".png")]
        assert written and all((tmp_path / p).is_file() for p in written), out
