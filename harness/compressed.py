"""The files a run writes line by line, gzip-compressed as they grow, and read back at any time.

Records, points and the emulator's log take about 1.7 KB per request as plain text; gzip at
level 1 (a few microseconds a line) brings them to about 0.23 KB (`make soak` measures it).
A file whose name ends in `.gz` is written as a gzip stream; `flush` ends a deflate block
(Z_SYNC_FLUSH), so every line written before it can be read while the file still grows: the
reader here takes the complete lines of a file without its gzip trailer (a run in progress,
or one killed), and of several gzip members one after the other (a file appended to again).
`zcat` and `gzip -dc` read the finished files, as do `influx write --file points.lp.gz` and
`jq`-after-`zcat` pipelines. A name without `.gz` stays plain text.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

LEVEL = 1  # the fastest: most of the gain, a few microseconds per line
READ_BLOCK = 1 << 16
GZIP_WBITS = 16 + zlib.MAX_WBITS


def open_lines(path: Path) -> IO[bytes]:
    """A binary file to append lines to: gzip-compressed if its name ends in `.gz`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        return gzip.open(path, "ab", compresslevel=LEVEL)  # type: ignore[return-value]
    return path.open("ab")


def _decompressed(file: IO[bytes]) -> Iterator[bytes]:
    """The bytes of every gzip member in turn; a member cut short gives what it holds."""
    inflate = zlib.decompressobj(GZIP_WBITS)
    while block := file.read(READ_BLOCK):
        while block:
            yield inflate.decompress(block)
            if not inflate.eof:
                break
            block = inflate.unused_data  # the next member, appended later
            inflate = zlib.decompressobj(GZIP_WBITS)


def read_lines(path: Path) -> list[bytes]:
    """The complete lines of a plain or gzip file (without their line ends), also while it is
    being written: a last line without its end is left out."""
    with path.open("rb") as file:
        if path.suffix != ".gz":
            data = file.read()
        else:
            try:
                data = b"".join(_decompressed(file))
            except zlib.error as exc:
                raise ValueError(f"{path}: not a gzip file ({exc})") from None
    return data.split(b"\n")[:-1]
