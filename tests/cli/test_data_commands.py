"""`tympan data ingest / shard / inspect` called in-process through tympan.cli.main."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from tympan.cli import main


def test_ingest_shard_inspect_and_errors(tmp_path, capsys, s3_server, ray_cluster):
    for label, freq in [("dog", 300.0), ("rain", 500.0)]:
        for i in range(2):
            t = np.arange(16000) / 16000
            (tmp_path / "corpus" / label).mkdir(parents=True, exist_ok=True)
            sf.write(tmp_path / "corpus" / label / f"{i}.wav",
                     (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    (tmp_path / "corpus" / "rain" / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    m = str(tmp_path / "m.parquet")
    assert main(["data", "ingest", "folder", str(tmp_path / "corpus"), "--out", m]) == 0
    assert "folder: 5 clips" in capsys.readouterr().out
    out = str(tmp_path / "shards")
    assert main(["data", "shard", m, "--out", out, "--shard-size", "2"]) == 0
    text = capsys.readouterr().out
    assert "clips: 4" in text and "rejects: 1" in text and "clips/s" in text
    assert main(["data", "inspect", out]) == 0
    text = capsys.readouterr().out
    assert "3 shards, 4 clips" in text and "dog" in text and "rejects: 1" in text

    # errors: a message naming the file and line, and a non-zero exit
    (tmp_path / "esc" / "meta").mkdir(parents=True)
    (tmp_path / "esc" / "meta" / "esc50.csv").write_text("filename,fold\n1-1-A-0.wav,1\n")
    assert main(["data", "ingest", "esc50", str(tmp_path / "esc"), "--out", m]) == 1
    assert "esc50.csv:1: header" in capsys.readouterr().err
    assert main(["data", "ingest", "esc50", str(tmp_path / "esc"), "--out", m,
                 "--template", "{ytid}.{ext}"]) == 2
    assert main(["data", "shard", str(tmp_path / "none.parquet"), "--out", out]) == 1
    assert "none.parquet" in capsys.readouterr().err
    assert main(["data", "shard", m, "--out", out, "--shard-size", "0"]) == 2
    assert "shard_size" in capsys.readouterr().err
    assert main(["data", "inspect", str(tmp_path / "corpus")]) == 1
    assert "no shard-NNNNNN.tar" in capsys.readouterr().err
