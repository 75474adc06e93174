"""Every Python snippet in README.md and docs/*.md runs as written.

A snippet is a fenced ```python block, or an indented (4-space) block whose first line is an
import. Each runs in a scratch directory holding what the snippets name: ``clip.mp4`` (a 4-s
H.264 + AAC clip), ``s3://bucket/clip.flac`` on the session's moto S3 server, and
``data/offline`` (the session's small offline build). A snippet that needs something else must
make it itself, or the test fails: the docs are the users' first program.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def snippets(path: Path) -> list[tuple[int, str]]:
    """(first line number, code) of each Python snippet in a markdown file."""
    lines, out, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            out.append((i + 2, "\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        starts_block = lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip())
        if starts_block and re.match(r"    (from \S+ import |import )", lines[i]):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            out.append((i + 1, "\n".join(line[4:] for line in lines[i:j]).strip()))
            i = j
            continue
        i += 1
    return out


CASES = [(p, n, code) for p in DOCS for n, code in snippets(p)]


def test_the_docs_have_snippets():
    names = {p.name for p, _, _ in CASES}
    assert {"README.md", "offline.md"} <= names, names


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, s3_server, offline_small):
    import boto3
    import soundfile as sf

    from tympan.datasets.offline.av import write_mp4

    d = tmp_path_factory.mktemp("snippets")
    rng = np.random.default_rng(0)
    t = np.arange(4 * 16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(32)]
    write_mp4(d / "clip.mp4", frames, 8, audio)
    sf.write(d / "clip.flac", audio, 16000)
    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint_url"])
    s3.create_bucket(Bucket="bucket")
    s3.upload_file(str(d / "clip.flac"), "bucket", "clip.flac")
    (d / "data").mkdir()
    (d / "data" / "offline").symlink_to(offline_small[0])
    return d


@pytest.mark.parametrize("path,line,code", CASES,
                         ids=[f"{p.name}:{n}" for p, n, _ in CASES])
def test_snippet_runs(path, line, code, scratch, monkeypatch):
    monkeypatch.chdir(scratch)
    exec(compile(code, f"{path.name}:{line}", "exec"), {"__name__": "__snippet__"})
