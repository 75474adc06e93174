"""Recorded audio from Debian main: fetch packages into a cache, convert to 16 kHz FLAC, provenance.

About 12 hours of real recordings ship in Debian main as game and education data (ANCHORS.md
section 8). They are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into a
cache directory (no system install, no root), then each audio file is converted once to 16 kHz
mono FLAC. Every :class:`Recording` keeps its provenance: the Debian package and version, the
path inside the package, and the package's copyright file (the licence terms travel with it).
Identical files (same bytes; game data often ships one file under several names or as hard
links) are kept once, with the other names listed as ``aliases``.

Cache layout (default ``~/.cache/tympan/debian``, or ``$TYMPAN_DEBIAN_CACHE``)::

    debs/                         downloaded .deb files (removed once unpacked)
    root/<package>/               the unpacked package tree; ``.completed`` holds its version
    flac/<package>/<path>.flac    converted audio; ``index.json`` lists hashes, durations, rejects

A file that does not decode is skipped and listed in the index's rejects, never silently lost.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".ogg", ".wav", ".flac", ".mp3", ".opus")
# The packages with real recordings (ANCHORS.md section 8), and what tympan uses them for.
PACKAGES: dict[str, str] = {
    "hedgewars-data": "15+ voice actors x ~60 phrases (speaker id), effects, music",
    "ktuberling-data": "children's-game words spoken by native speakers in ~20 languages",
    "tuxpaint-stamps-default": "bird and animal recordings, spoken descriptions in ~12 languages, photo cut-outs",
    "lincity-ng-data": "city ambience beds: traffic, industry, market, harbour, farm, residential",
    "megaglest-data": "nature ambience beds (day birds, night, rain, wind), unit voices, music",
    "widelands-data": "animals (birds, frogs, wolves, farm), workshop noises, music",
    "wesnoth-1.16-music": "orchestral music",
    "supertux-data": "game music and effects",
}


class DebianSourceError(RuntimeError):
    """A Debian package cannot be fetched, unpacked or read; the message names the package."""


@dataclass(frozen=True)
class Recording:
    package: str
    path: str                  # path inside the package, e.g. usr/share/.../voices/Classic/Amazing.ogg
    flac: str                  # the converted 16 kHz mono FLAC in the cache
    duration_s: float
    sha1: str                  # hash of the original file's bytes (the de-duplication key)
    version: str               # Debian package version
    copyright: str             # the package's copyright file in the cache
    aliases: tuple[str, ...] = field(default_factory=tuple)   # other paths with identical bytes

    @property
    def source_id(self) -> str:
        """Stable provenance id ``package:path`` (used to keep test sources out of pretraining)."""
        return f"{self.package}:{self.path}"

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    def load(self) -> np.ndarray:
        """float32 [n] at 16 kHz."""
        x, sr = sf.read(self.flac, dtype="float32", always_2d=False)
        if sr != SAMPLE_RATE:
            raise DebianSourceError(f"{self.flac}: sample rate {sr}, expected {SAMPLE_RATE} (stale cache?)")
        return x

    def provenance(self) -> dict:
        return {"package": self.package, "version": self.version, "path": self.path,
                "copyright": f"usr/share/doc/{self.package}/copyright", "sha1": self.sha1}


def default_cache_dir() -> Path:
    env = os.environ.get("TYMPAN_DEBIAN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tympan" / "debian"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive file lock, so two builds (e.g. two test processes) share one cache safely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], package: str, what: str, cwd: Path | None = None) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        raise DebianSourceError(f"Debian package {package!r}: {cmd[0]} is not on PATH, so the package "
                                f"cannot be {what} (tympan fetches recordings with apt-get download + dpkg -x)")
    p = subprocess.run([exe, *cmd[1:]], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise DebianSourceError(f"Debian package {package!r}: {' '.join(cmd)} failed ({what}): "
                                f"{(p.stderr or p.stdout).strip()[-500:]}")
    return p.stdout


def _fetch_one(name: str, cache: Path) -> Path:
    root = cache / "root" / name
    done = root / ".completed"
    if done.exists():
        return root
    with _locked(cache / "locks" / f"{name}.lock"):
        if done.exists():          # another process finished it while we waited
            return root
        debs = cache / "debs" / name
        debs.mkdir(parents=True, exist_ok=True)
        for old in debs.glob("*.deb"):
            old.unlink()
        _run(["apt-get", "download", name], name, "downloaded (is it in the apt sources? try apt-get update)",
             cwd=debs)
        found = sorted(debs.glob("*.deb"))
        if not found:
            raise DebianSourceError(f"Debian package {name!r}: apt-get download produced no .deb in {debs}")
        deb = found[0]
        version = _run(["dpkg-deb", "-f", str(deb), "Version"], name, "read").strip()
        tmp = cache / "root" / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(["dpkg", "-x", str(deb), str(tmp)], name, "unpacked")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        (root / ".completed").write_text(version + "\n")
        deb.unlink()
    return root


def ensure_packages(names: Iterable[str], cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Download and unpack each Debian package once; returns package -> unpacked root.

    Raises :class:`DebianSourceError` naming the package when apt-get/dpkg is missing or fails.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    names = list(dict.fromkeys(names))
    # Fetch and unpack are I/O + xz bound in child processes: two at a time keeps 2 cores busy.
    with ThreadPoolExecutor(max_workers=2) as pool:
        roots = list(pool.map(lambda n: _fetch_one(n, cache), names))
    return dict(zip(names, roots))


def package_version(root: Path) -> str:
    return (root / ".completed").read_text().strip()


# ---- conversion -------------------------------------------------------------------------

def _convert(src: str, dst: str) -> dict:
    """One file -> 16 kHz mono FLAC. Runs in a worker process; returns index facts or a reject."""
    from tympan.datasets.audio import DecodeError, decode_audio
    try:
        data = Path(src).read_bytes()
        sha1 = hashlib.sha1(data).hexdigest()
        x = decode_audio(src)
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak < 1e-4:
            return {"sha1": sha1, "error": "silent"}
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{dst}.tmp.flac"
        sf.write(tmp, np.clip(x, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, dst)
        return {"sha1": sha1, "duration_s": round(len(x) / SAMPLE_RATE, 4)}
    except DecodeError as e:
        return {"sha1": "", "error": f"{e.reason}: {e}"[:300]}
    except (OSError, RuntimeError, ValueError) as e:
        return {"sha1": "", "error": f"undecodable: {e}"[:300]}


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)


def _audio_files(root: Path) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(AUDIO_EXTENSIONS):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def recordings(cache_dir: str | os.PathLike | None, package: str, include: Sequence[str] | None = None,
               *, exclude: Sequence[str] = (), limit: int | None = None, workers: int = 2) -> list[Recording]:
    """The package's audio files (those matching any ``include`` glob, default all, and no
    ``exclude`` glob) as 16 kHz FLAC; ``limit`` keeps that many files evenly spaced by path
    (small builds convert only what they use).

    Fetches the package if needed, converts files not yet converted (``workers`` processes), and
    returns one :class:`Recording` per distinct content, sorted by path. Files that fail to decode
    or are silent are recorded in ``flac/<package>/index.json`` under ``rejects``.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    root = ensure_packages([package], cache)[package]
    version = package_version(root)
    files = _audio_files(root)
    if include:
        files = [f for f in files if any(fnmatch.fnmatch(f, pat) for pat in include)]
    files = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in exclude)]
    if limit is not None and limit < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    out_dir = cache / "flac" / package
    index_path = out_dir / "index.json"
    with _locked(cache / "locks" / f"{package}.flac.lock"):
        index: dict[str, dict] = json.loads(index_path.read_text()) if index_path.exists() else {}
        if index.get("_version") != version:       # a new package version: reconvert everything
            index = {"_version": version}
        todo = [f for f in files if f not in index]
        if todo:
            jobs = [(str(root / f), str(out_dir / f) + ".flac") for f in todo]
            if workers > 1 and len(jobs) > 8:
                with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
                    facts = list(pool.map(_convert, *zip(*jobs), chunksize=8))
            else:
                facts = [_convert(s, d) for s, d in jobs]
            index.update(zip(todo, facts))
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = index_path.with_name(".index.json.tmp")
            tmp.write_text(json.dumps(index, indent=0, sort_keys=True))
            os.replace(tmp, index_path)
    by_hash: dict[str, list[str]] = {}
    for f in files:
        facts = index[f]
        if "error" not in facts:
            by_hash.setdefault(facts["sha1"], []).append(f)
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    recs = []
    for paths in by_hash.values():
        first = paths[0]
        recs.append(Recording(package=package, path=first, flac=str(out_dir / first) + ".flac",
                              duration_s=index[first]["duration_s"], sha1=index[first]["sha1"],
                              version=version, copyright=str(copyright_file),
                              aliases=tuple(paths[1:])))
    return sorted(recs, key=lambda r: r.path)


def rejects(cache_dir: str | os.PathLike | None, package: str) -> dict[str, str]:
    """Files of ``package`` that were skipped at conversion: path -> reason."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    index_path = cache / "flac" / package / "index.json"
    if not index_path.exists():
        return {}
    index = json.loads(index_path.read_text())
    return {k: v["error"] for k, v in index.items() if not k.startswith("_") and "error" in v}


def recording_dict(rec: Recording) -> dict:
    return asdict(rec)
