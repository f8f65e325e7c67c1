"""Files written gzip-compressed as they grow (harness/compressed.py), read back at any time."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from harness.compressed import open_lines, read_lines


def test_every_flushed_line_is_readable_while_the_file_grows_and_after(tmp_path: Path) -> None:
    path = tmp_path / "lines.jsonl.gz"
    file = open_lines(path)
    file.write(b'{"n": 1}\n{"n": 2}\n{"n": ')  # the third line is not complete yet
    file.flush()
    assert read_lines(path) == [b'{"n": 1}', b'{"n": 2}']  # no gzip trailer yet: read all the same
    file.write(b"3}\n")
    file.close()
    assert read_lines(path) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 3  # a standard gzip file


def test_a_file_appended_to_again_holds_several_members_read_in_order(tmp_path: Path) -> None:
    path = tmp_path / "lines.gz"
    for start in (0, 10):
        with open_lines(path) as file:
            file.writelines(f"{n}\n".encode() for n in range(start, start + 10))
    assert read_lines(path) == [str(n).encode() for n in range(20)]


def test_a_file_cut_short_by_a_kill_gives_its_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.gz"
    with open_lines(path) as file:
        file.writelines(f"line {n:05d} {'x' * 50}\n".encode() for n in range(5000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    lines = read_lines(path)
    assert 0 < len(lines) < 5000 and lines == [f"line {n:05d} {'x' * 50}".encode() for n in range(len(lines))]


def test_plain_files_stay_plain_and_a_bad_gzip_file_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "lines.jsonl"
    with open_lines(plain) as file:
        file.write(b"a\nb\n")
    assert plain.read_bytes() == b"a\nb\n" and read_lines(plain) == [b"a", b"b"]
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"bad\.gz: not a gzip file"):
        read_lines(bad)
