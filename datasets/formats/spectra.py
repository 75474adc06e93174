"""Sensor spectra: CSV files of timestamped fast third-octave frames -> continuous runs.

Acoustic sensor networks (e.g. CENSE, Lorient) store 29 third-octave band levels in dB every
125 ms, one CSV per sensor and period (Gontier et al., Sensors 2017). Continuity is the data's
main fault: sensors go down, clocks jump, rows repeat. A manifest row here is one *continuous
run* of frames of one sensor; slicing into samples happens later and never straddles a run
boundary.

Reading (pyarrow's CSV engine, in typed blocks checked on whole columns; only a block holding
a fault is read again as text to name its lines: :func:`read_frames`), so a year of one sensor
is minutes:
- the time column: ``time_column`` or the first column named like time/timestamp/date; ISO 8601
  strings or epoch seconds / milliseconds (told apart by magnitude);
- band columns: ``bands`` as a comma list of column names or a regular expression whose first
  group is the centre frequency in Hz; default: the columns named after the 29 centre
  frequencies (``31.5``, ``31.5Hz``, ``1000 Hz``, ``1.25k``...), in frequency order;
- the sensor: ``sensor_column`` (several sensors per file) or the file name's stem.

Faults, each counted by reason in the report:
- malformed rows (wrong column count, empty line, bad timestamp, non-numeric or NaN level, a
  level outside [-50, 200] dB) are refused with ``file:line: reason``; the file goes on;
- a row identical to the previous one of its sensor (same time, same levels) is dropped;
- a gap (step > 1.5 periods), a backwards jump or a repeated time with other levels ends a
  run; the period is the median step, checked against the expected 125 ms.
Manifest row per run: ``clip_id = {sensor}@{start time ISO}``, ``source`` the CSV,
``start_s``/``end_s`` seconds from the file's earliest frame (a clock that jumps back
makes a later run start earlier), ``meta`` = sensor, epoch start
``t0``, ``period_s``, ``frames``, ``lines`` [first, last], ``columns`` (the band columns in
frequency order) and ``bands_hz``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tympan.datasets import storage
from tympan.datasets.formats.common import IngestReport, MetadataError, first_of, list_relative
from tympan.datasets.manifest import make_row
from tympan.datasets.thirdoctave import CENTRES_HZ, N_BANDS, NOMINAL_HZ

Rows = list[dict[str, Any]]
EXPECTED_PERIOD_S = 0.125
LEVEL_RANGE_DB = (-50.0, 200.0)
_TIME_NAMES = re.compile(r"^(time|timestamp|date|datetime|epoch|t)(_?(utc|s|ms))?$", re.I)
_FREQ_NAME = re.compile(r"^\s*(?:f|band_?|lz?eq_?)?(\d+(?:\.\d+)?)\s*(k)?\s*(?:hz)?\s*$", re.I)


@dataclass
class SpectraReport(IngestReport):
    sensors: int = 0
    runs: int = 0
    frames: int = 0
    hours: float = 0.0
    period_s: float | None = None
    gaps: int = 0
    gap_hours: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)     # reason -> rows
    rejected: list[str] = field(default_factory=list)         # "file:line: reason", every one
    rejected_list: str | None = None                          # M.rejected_rows.txt

    def refuse(self, uri: str, line: int, reason: str, kind: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        self.rejected.append(f"{uri}:{line}: {reason}")

    def summary(self) -> str:
        lines = [super().summary(),
                 f"  sensors {self.sensors}, runs {self.runs}, frames {self.frames}, "
                 f"{self.hours:.2f} h, period {self.period_s} s",
                 f"  gaps {self.gaps} ({self.gap_hours:.2f} h)"]
        if self.dropped:
            lines.append("  rows dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())))
        lines += first_of(self.rejected, "  refused ", "refused rows")
        if self.rejected_list:
            lines.append(f"  refused rows listed in {self.rejected_list}")
        return "\n".join(lines)


@lru_cache(maxsize=4096)
def _band_of(name: str) -> int | None:
    m = _FREQ_NAME.match(name)
    if not m:
        return None
    hz = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    i = int(np.argmin(np.abs(np.log(CENTRES_HZ / hz))))
    return i if abs(hz / NOMINAL_HZ[i] - 1) < 0.03 or abs(hz / CENTRES_HZ[i] - 1) < 0.03 else None


def band_columns(uri: str, header: list[str], bands: str | None) -> list[str]:
    """The band columns in frequency order (see the module doc); a MetadataError names what
    is missing."""
    if bands and ("," in bands or bands in header):
        cols = [c.strip() for c in bands.split(",")]
        missing = [c for c in cols if c not in header]
        if missing:
            raise MetadataError(uri, 1, f"band columns {missing} not in the header {header}")
        return cols
    found: dict[int, str] = {}
    if bands:
        try:
            rx = re.compile(bands)
        except re.error as e:
            raise MetadataError(uri, 0, f"--bands {bands!r} is not a regular expression: {e}") from None
        for c in header:
            m = rx.search(c)
            if m and m.groups():
                i = _band_of(m.group(1))
                if i is not None:
                    found[i] = c
    else:
        for c in header:
            i = _band_of(c)
            if i is not None:
                found[i] = c
    if not found:
        raise MetadataError(uri, 1, f"no third-octave band columns in the header {header}; "
                            "name them with --bands")
    missing = [NOMINAL_HZ[i] for i in range(N_BANDS) if i not in found]
    if bands is None and missing:
        raise MetadataError(uri, 1, f"band columns for {missing} Hz not found in the header; "
                            "name the columns with --bands")
    return [found[i] for i in sorted(found)]


def _time_column(uri: str, header: list[str], name: str | None) -> str:
    if name:
        if name not in header:
            raise MetadataError(uri, 1, f"time column {name!r} not in the header {header}")
        return name
    for c in header:
        if _TIME_NAMES.match(c.strip()):
            return c
    raise MetadataError(uri, 1, f"no time column (time/timestamp/date) in the header {header}; "
                        "name it with --time-column")


@dataclass
class Frames:
    """One block of well-formed rows of one file, in file order."""
    sensor: np.ndarray        # object [N]
    time: np.ndarray          # float64 [N], epoch seconds
    levels: np.ndarray        # float32 [N, n_bands]
    line: np.ndarray          # int64 [N], 1-based line numbers in the file


_ZONE = re.compile(r"(?:Z|[+-]\d\d(?::?\d\d)?)\s*$", re.I)


def _ns_to_seconds(ns: np.ndarray) -> np.ndarray:
    """int64 ns since the epoch -> float64 seconds. The one formula both readers use, so the
    same text gives the same bits whichever reader saw it (repeats are found by equality)."""
    return ns.astype(np.float64) / 1e9


def _time_mode(col: pa.Array) -> tuple[str, pa.DataType]:
    """How a file writes its times, decided on its first rows (as text): ``iso``, epoch ``s``
    or ``ms`` (told apart by magnitude), and the type the typed reader parses them as
    (ISO with a zone on every value -> UTC timestamps; on none -> naive timestamps, taken as
    UTC; mixed -> text, parsed by pandas)."""
    import pandas as pd

    text = pd.Series(col.to_numpy(zero_copy_only=False), dtype=object).dropna().astype(str)
    num = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
    finite = num[np.isfinite(num)]
    if finite.size * 2 >= max(len(num), 1) and finite.size:
        return ("ms" if np.median(np.abs(finite)) > 1e11 else "s"), pa.float64()
    # over the values that parse (an empty line or a bad time in the first rows says nothing)
    text = text[pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").notna().to_numpy()]
    zoned = text.str.contains(_ZONE).to_numpy(bool)
    if zoned.all():
        return "iso", pa.timestamp("ns", tz="UTC")
    return "iso", (pa.timestamp("ns") if not zoned.any() else pa.string())


def _epoch_seconds(col: pa.Array | pa.ChunkedArray, mode: str) -> np.ndarray:
    """float64 epoch seconds, NaN where a value does not parse (``mode`` from :func:`_time_mode`)."""
    import pandas as pd

    if pa.types.is_timestamp(col.type):
        ns = pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False)
        return _ns_to_seconds(ns)
    if mode != "iso":
        try:
            num = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):      # some rows are not numbers
            num = pd.to_numeric(pd.Series(col.to_numpy(zero_copy_only=False)), errors="coerce").to_numpy(np.float64)
        return num / (1000.0 if mode == "ms" else 1.0)
    ts = pd.to_datetime(pd.Series(col.to_numpy(zero_copy_only=False)), utc=True, format="ISO8601",
                        errors="coerce")
    bad = ts.isna().to_numpy()
    ns = ts.dt.tz_convert(None).to_numpy("datetime64[ns]").view(np.int64)
    return np.where(bad, np.nan, _ns_to_seconds(ns))


def _levels(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float32 values and a 'not a number' mask (NaN where the text is not a number)."""
    try:
        v = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        return v.astype(np.float32), np.zeros(len(v), bool)
    except pa.ArrowInvalid:
        import pandas as pd
        s = pd.Series(col.to_numpy(zero_copy_only=False))
        v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        text_nan = s.str.strip().str.lower().isin(["nan", "-nan", "+nan"]).to_numpy()
        return v.astype(np.float32), np.isnan(v) & ~text_nan


def _same(n: int, value: str) -> np.ndarray:
    """object [n], every item the same str object (cheap to build and to compare)."""
    a = np.empty(n, dtype=object)
    a.fill(value)
    return a


def _after_newline(view: memoryview, start: int) -> int:
    """The offset just after the first newline at or after ``start`` (the end if none)."""
    for a in range(start, len(view), 1 << 20):
        i = bytes(view[a:a + (1 << 20)]).find(b"\n")
        if i >= 0:
            return a + i + 1
    return len(view)


def _chunks(uri: str, block_size: int) -> Iterator[memoryview]:
    """The file after its header line, in pieces of about ``block_size`` bytes, each ending
    at a line end (the CSV reader is told values hold no newlines, so a newline always ends
    a row and a piece is always whole rows). Pieces are handed on without a copy: a local
    file is memory-mapped; a remote one is read piece by piece, the partial line after a
    piece's last newline read again with the next."""
    if storage.is_local(uri):
        try:
            mm = pa.memory_map(storage.local_path(uri))
        except (OSError, pa.ArrowException):     # empty or unmappable: read it instead
            mm = None
        if mm is not None:
            with mm:
                view = memoryview(mm.read_buffer())
                size = len(view)
                pos = _after_newline(view, 0)
                while pos < size:
                    end = min(pos + block_size, size)
                    if end < size:               # back to the last newline in the piece's tail
                        tail = max(pos, end - (1 << 16))
                        back = bytes(view[tail:end]).rfind(b"\n")
                        end = tail + back + 1 if back >= 0 else _after_newline(view, end)
                    yield view[pos:end]
                    pos = end
            return
    with storage.open_input(uri) as f:
        f.readline()
        pos = f.tell()
        size = block_size
        while True:
            f.seek(pos)
            data = f.read(size)
            if len(data) < size:                 # the end of the file
                if data:
                    yield memoryview(data)
                return
            cut = data.rfind(b"\n") + 1
            if not cut:                          # a line longer than the block: read more
                size *= 2
                continue
            yield memoryview(data)[:cut]
            pos += cut
            size = block_size


def _parse(chunk: bytes | memoryview, header: list[str], types: dict[str, pa.DataType], *, threads: bool,
           include: list[str] | None = None, strings_can_be_null: bool = False
           ) -> tuple[pa.Table, list[Any]]:
    """One piece -> (table of the rows with the header's column count, the refused rows as
    pyarrow hands them: ``number`` (1-based in the piece, None when read with threads),
    ``actual_columns``, ``expected_columns``). Raises ArrowInvalid when a typed value does not
    convert."""
    refused: list[Any] = []

    def invalid(row) -> str:
        refused.append(row)
        return "skip"

    tab = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(chunk)),
        read_options=pacsv.ReadOptions(column_names=header, use_threads=threads),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=include,
                                             null_values=[""], strings_can_be_null=strings_can_be_null))
    return tab, refused


def read_frames(uri: str, report: SpectraReport, *, time_column: str | None = None,
                bands: str | None = None, sensor_column: str | None = None,
                block_size: int = 16 << 20) -> Iterator[Frames]:
    """Well-formed rows of one sensor CSV, block by block; malformed rows are refused into
    ``report`` (``file:line: reason``). Shared by ingest and by the shard writer.

    Each block of ``block_size`` bytes is parsed by pyarrow with typed columns (levels float64,
    times as timestamps or numbers; multithreaded) and checked on whole columns. Only a block
    that is not clean (a value that does not convert, a refused column count, a NaN, empty or
    impossible value) is read again, serially and as text, to name each refused line with its
    number and its text: a faulty block costs two reads, a clean one a single typed read."""
    with storage.open_input(uri) as f:
        head = f.readline().decode("utf-8", "replace").strip("\r\n")
    header = [h.strip() for h in head.split(",")]
    tcol = _time_column(uri, header, time_column)
    cols = band_columns(uri, header, bands)
    if sensor_column and sensor_column not in header:
        raise MetadataError(uri, 1, f"sensor column {sensor_column!r} not in the header {header}")
    default_sensor = PurePosixPath(uri.rstrip("/")).stem
    used = list(dict.fromkeys([tcol, *cols, *([sensor_column] if sensor_column else [])]))
    typed: dict[str, pa.DataType] = {c: pa.float64() for c in cols}
    typed[tcol] = pa.string()               # until the first block says how times are written
    if sensor_column:
        typed[sensor_column] = pa.string()
    mode = ""
    first_line = 2                          # the file's line number of the block's first line
    for chunk in _chunks(uri, block_size):
        if not mode:
            peek = bytes(chunk[:1 << 16])       # the first rows, as text
            peek_tab, _ = _parse(peek[:peek.rfind(b"\n") + 1] or chunk, header,
                                 {c: pa.string() for c in header}, threads=False)
            mode, typed[tcol] = _time_mode(peek_tab.column(tcol))
        try:
            tab, refused = _parse(chunk, header, typed, threads=True, include=used)
            frames = None if refused else _clean(tab, tcol, cols, sensor_column, default_sensor,
                                                 mode, first_line)
        except pa.ArrowInvalid:                 # a value that is not a number / time
            frames = None
        if frames is None:
            tab, refused = _parse(chunk, header, {c: pa.string() for c in header}, threads=False)
            frames = _checked(uri, report, tab, refused, header, tcol, cols, sensor_column,
                              default_sensor, mode, first_line)
        first_line += tab.num_rows + len(refused)
        yield frames


def _clean(tab: pa.Table, tcol: str, cols: list[str], sensor_column: str | None,
           default_sensor: str, mode: str, first_line: int) -> Frames | None:
    """The typed block as Frames, or None when any row needs a refusal (the caller then reads
    it as text to name them)."""
    n = tab.num_rows
    if any(tab.column(c).null_count for c in [tcol, *cols]):
        return None                               # an empty line or value
    t = _epoch_seconds(tab.column(tcol), mode)
    lv = np.empty((n, len(cols)), np.float32)
    r0 = 0
    for batch in tab.select(cols).to_batches():   # batch by batch: the temporaries stay in cache
        r1 = r0 + batch.num_rows
        lv[r0:r1] = np.vstack([batch.column(k).to_numpy() for k in range(len(cols))]).T   # [B, F]
        r0 = r1
    # NaN fails both comparisons (min/max propagate it), inf the range
    if n and not (np.isfinite(t).all() and lv.min() >= LEVEL_RANGE_DB[0] and lv.max() <= LEVEL_RANGE_DB[1]):
        return None
    sensor = (tab.column(sensor_column).fill_null("").to_numpy(zero_copy_only=False).astype(object)
              if sensor_column else _same(n, default_sensor))
    return Frames(sensor, t, lv, np.arange(first_line, first_line + n, dtype=np.int64))


def _checked(uri: str, report: SpectraReport, tab: pa.Table, refused: list[Any], header: list[str],
             tcol: str, cols: list[str], sensor_column: str | None, default_sensor: str, mode: str,
             first_line: int) -> Frames:
    """A block read as text, every row checked; refused rows go to ``report`` with their line."""
    skipped, out = [], []          # out: (line, reason, kind), reported in line order
    for row in refused:
        skipped.append(first_line + row.number - 1)
        out.append((skipped[-1], f"{row.actual_columns} columns, expected {row.expected_columns}",
                    "wrong column count"))
    n = tab.num_rows
    # line of kept row j: first_line + j + (refused lines before it)
    idx = np.arange(n)
    s = np.asarray(sorted(skipped), dtype=np.int64) - first_line
    before = s - np.arange(len(s))
    lines = first_line + idx + np.searchsorted(before, idx, side="right")
    t = _epoch_seconds(tab.column(tcol), mode)
    lv = np.empty((n, len(cols)), np.float32)
    bad_text = np.zeros(n, bool)
    for k, c in enumerate(cols):
        lv[:, k], nan_text = _levels(tab.column(c))
        bad_text |= nan_text
    empty = np.ones(n, bool)
    for c in header:
        empty &= (pc.utf8_length(pc.fill_null(tab.column(c), "")).to_numpy(zero_copy_only=False) == 0)
    ok = np.ones(n, bool)
    for mask, kind in ((empty, "empty line"), (~empty & ~np.isfinite(t), "bad timestamp"),
                       (~empty & bad_text, "non-numeric level"),
                       (~empty & ~bad_text & np.isnan(lv).any(1), "NaN level"),
                       (~empty & ~bad_text & ((lv < LEVEL_RANGE_DB[0]) | (lv > LEVEL_RANGE_DB[1])).any(1),
                        "impossible level")):
        hit = mask & ok
        for j in np.flatnonzero(hit):
            detail = kind
            if kind == "bad timestamp":
                detail = f"bad timestamp {tab.column(tcol)[j].as_py()!r}"
            elif kind in ("non-numeric level", "impossible level", "NaN level"):
                k = int(np.flatnonzero(~np.isfinite(lv[j]) | (lv[j] < LEVEL_RANGE_DB[0])
                                       | (lv[j] > LEVEL_RANGE_DB[1]))[0])
                detail = f"{kind} {tab.column(cols[k])[j].as_py()!r} in column {cols[k]!r}"
            out.append((int(lines[j]), detail, kind))
        ok &= ~hit
    for line, detail, kind in sorted(out):
        report.refuse(uri, line, detail, kind)
    sensor = (tab.column(sensor_column).to_numpy(zero_copy_only=False).astype(object) if sensor_column
              else _same(n, default_sensor))
    return Frames(sensor[ok], t[ok], lv[ok], lines[ok])


def _by_sensor(sensor: np.ndarray) -> list[tuple[str, np.ndarray | None]]:
    """``[(sensor id, row mask or None for all rows)]`` in sorted id order. A file without a
    sensor column holds one id (the common case: no mask, no sort of N strings)."""
    if not len(sensor):
        return []
    if (sensor == sensor[0]).all():
        return [(sensor[0], None)]
    import pandas as pd
    return [(s, sensor == s) for s in sorted(pd.unique(sensor))]


@dataclass
class _Run:
    sensor: str
    t0: float
    t_last: float
    frames: int
    first_line: int
    last_line: int
    last_levels: np.ndarray


def continuous_runs(blocks: Iterator[Frames], report: SpectraReport,
                    period_s: float | None = None) -> tuple[list[_Run], float]:
    """Cut each sensor's frames into continuous runs (see the module doc), block by block (a
    run may span blocks). Gaps are judged against ``period_s`` (default: the sensors' 125 ms);
    the median step is measured and returned so the caller can check it."""
    period = period_s or EXPECTED_PERIOD_S
    open_runs: dict[str, _Run] = {}
    runs: list[_Run] = []
    steps: list[np.ndarray] = []
    for b in blocks:
        for sensor, m in _by_sensor(b.sensor):
            t, lv, ln = (b.time, b.levels, b.line) if m is None else (b.time[m], b.levels[m], b.line[m])
            run = open_runs.get(sensor)
            prev_t = np.concatenate([[run.t_last if run else np.nan], t[:-1]])
            step = t - prev_t
            dup = step == 0
            n_dup = 0
            if dup.any():                         # the levels of the (few) rows with a repeated time
                j = np.flatnonzero(dup)
                prev_lv = lv[np.maximum(j - 1, 0)]
                if j[0] == 0:
                    prev_lv[0] = run.last_levels
                dup[j] = (lv[j] == prev_lv).all(1)
                n_dup = int(dup.sum())
            report.dropped["repeated row"] = report.dropped.get("repeated row", 0) + n_dup
            if n_dup:
                keep = ~dup
                t, lv, ln = t[keep], lv[keep], ln[keep]
                # the step to the previous KEPT frame (a dropped duplicate has the same time)
                step = t - np.concatenate([[run.t_last if run else np.nan], t[:-1]])
            steps.append(step[(step > 0) & (step < 1.5 * period)])
            gap = step > 1.5 * period
            report.gaps += int(gap.sum())
            report.gap_hours += float(np.sum(step[gap] - period)) / 3600
            breaks = ~np.isfinite(step) | gap | (step <= 0)
            cuts = sorted({0, len(t), *np.flatnonzero(breaks).tolist()})
            for a, z in zip(cuts[:-1], cuts[1:]):
                if breaks[a] or run is None:              # a new run starts at frame a
                    if run is not None:
                        runs.append(run)
                    run = _Run(str(sensor), float(t[a]), float(t[z - 1]), int(z - a), int(ln[a]),
                               int(ln[z - 1]), lv[z - 1])
                else:                                     # the open run goes on
                    run.frames += z - a
                    run.t_last, run.last_line, run.last_levels = float(t[z - 1]), int(ln[z - 1]), lv[z - 1]
            open_runs[sensor] = run
    runs.extend(open_runs.values())
    allsteps = np.concatenate(steps) if steps else np.zeros(0)
    measured = float(np.median(allsteps)) if allsteps.size else None
    return runs, measured


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ingest_spectra(src: str, media: str | None = None, *, time_column: str | None = None,
                   bands: str | None = None, sensor_column: str | None = None,
                   period_s: float | None = None, split: str = "train") -> tuple[Rows, SpectraReport]:
    """Every ``*.csv`` under ``src`` (or ``src`` itself) -> one manifest row per continuous run.
    ``split``: a split name for every run, or ``by-sensor`` (a stable 80/10/10 hash of the
    sensor id, so no sensor is in two splits)."""
    report = SpectraReport("spectra", src)
    if src.lower().endswith(".csv"):
        files = [src]
    else:
        files = [storage.join(src, r) for r in list_relative(src) if r.lower().endswith(".csv")]
    if not files:
        raise MetadataError(src, 0, "no .csv files found")
    rows: Rows = []
    sensors: set[str] = set()
    periods = []
    for uri in sorted(files):
        cols_seen: list[str] = []

        def blocks():
            for b in read_frames(uri, report, time_column=time_column, bands=bands,
                                 sensor_column=sensor_column):
                yield b

        with storage.open_input(uri) as f:
            header = [h.strip() for h in f.readline().decode("utf-8", "replace").strip("\r\n").split(",")]
        cols_seen = band_columns(uri, header, bands)
        tcol = _time_column(uri, header, time_column)
        runs, measured = continuous_runs(blocks(), report, period_s)
        if measured is not None:
            periods.append(measured)
            expect = period_s or EXPECTED_PERIOD_S
            if abs(measured - expect) > 0.1 * expect:
                report.warnings.append(f"{uri}: median frame step {measured:.4f} s, expected {expect} s")
        first_t = min((r.t0 for r in runs), default=0.0)
        p = period_s or measured or EXPECTED_PERIOD_S
        hz = [float(CENTRES_HZ[_band_of(c)]) if _band_of(c) is not None else None for c in cols_seen]
        for r in sorted(runs, key=lambda r: (r.first_line, r.sensor)):
            sensors.add(r.sensor)
            report.runs += 1
            report.frames += r.frames
            report.hours += r.frames * p / 3600
            s = split
            if split == "by-sensor":
                import zlib
                u = zlib.crc32(r.sensor.encode()) % 100
                s = "train" if u < 80 else "valid" if u < 90 else "test"
            rows.append(make_row(f"{r.sensor}@{_iso(r.t0)}", uri, start_s=r.t0 - first_t,
                                 end_s=r.t0 - first_t + r.frames * p, split=s,
                                 meta={"kind": "spectra", "sensor": r.sensor, "t0": r.t0,
                                       "period_s": p, "frames": r.frames,
                                       "lines": [r.first_line, r.last_line],
                                       "columns": cols_seen, "bands_hz": hz,
                                       # how to read the file again (tympan data shard)
                                       "time_column": tcol, "sensor_column": sensor_column}))
    report.sensors = len(sensors)
    report.period_s = round(float(np.median(periods)), 6) if periods else None
    report.count_rows(rows)
    return rows, report
