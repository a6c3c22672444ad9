"""scripts/decoder_diff.py on a tiny archive: the table has every decoder, IJG 6b equals Pillow."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodbench.paths import REPO_ROOT


def _tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8)).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def test_decoder_diff_script_on_a_tiny_archive(tmp_path):
    pytest.importorskip("jpeglib")
    rng = np.random.default_rng(2)
    _tar(tmp_path / "a.tar.gz", {f"S/{i}.jpg": _jpeg(rng, 32) for i in range(3)})
    out = tmp_path / "d.md"
    res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "decoder_diff.py"), "--archive",
                          str(tmp_path / "a.tar.gz"), "--glob", "S/*", "--n", "2", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    text = out.read_text()
    assert "the first 2 JPEGs" in text and "`S/0.jpg`, `S/1.jpg`" in text
    assert "| IJG libjpeg 6b | 0.000 | 0 | 100.0 % | 2 of 2 |" in text  # 6b = libjpeg-turbo's output
    assert "| IJG libjpeg 9b |" in text
