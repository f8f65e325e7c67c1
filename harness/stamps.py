"""Receive stamps from the kernel: when a response's bytes reached this host, not when the
event loop got round to reading them.

A load generator stamps each SSE line when its greenlet reads it. When hundreds of streams
deliver their first token in the same millisecond, the greenlets read one after the other,
and the last ones are late by the work of all the others (tens of ms at a few hundred
streams). The kernel stamps every packet as it arrives (SO_TIMESTAMPNS) and hands the stamp
over with the data (recvmsg), so the stamp no longer depends on how busy the loop is.

- `StampedSocket`: a gevent socket whose `recv` reads the data with its kernel stamp (of the
  last packet the read took) into the connection's `ReceiveClock`; the fast transport's
  plain-HTTP connections are made of these. A line's stamp is the stamp of the read that
  brought its last byte (a line found in what an earlier read brought came with that read).
- The kernel's software stamps are on CLOCK_REALTIME; each is mapped to the monotonic clock
  of every other time (perf_counter_ns) with the offset of the two clocks (`ClockOffset`):
  the wall clock read between two monotonic reads, against their midpoint, and read again if
  the process was preempted between them (an error under 2 us; a pause of tens of us between
  two plain reads would map the stamp that much too early). The offset is sampled again when
  the last sample is more than OFFSET_REUSE_NS (1 ms) old, not at every read: sampling took
  two clock reads and a loop at each of a stream's reads. NTP slews the wall clock by at most
  500 ppm, so a stamp read 30 ms after its packet with an offset 1 ms old is off by at most
  15.5 us; a step of the wall clock is caught: a stamp that maps into the future or before
  the connection's previous stamp is clamped to that bound and counted (`clamped`).
- The limits, measured rather than assumed (tests/test_stamps.py): on loopback a packet is
  stamped when the sender hands it to the loopback device, which is the same instant as
  its arrival; TCP merges segments that wait unread into one, under the stamp of the latest,
  so a read that finds several events waiting stamps them all when the last one came (never
  later than the read itself: the error is bounded by the user-space stamp it replaces).
  TLS is decrypted from records the kernel has stamped, but Python's ssl module reads the
  socket itself: https connections keep user-space stamps.
- Where the kernel refuses the option (not Linux, an old kernel), or with
  HARNESS_RECEIVE_STAMPS=user in the environment (the benchmark's control), connections are
  stamped when read, as before; the summary says which stamping a run used.
"""

from __future__ import annotations

import functools
import os
import socket
import struct
import sys
import time
from typing import Any

import gevent.socket

try:
    from harness._loopread import counts as native_counts
except ImportError:  # not built: every read is counted here
    native_counts = None  # type: ignore[assignment]

__all__ = ["KERNEL", "MIXED", "READS", "USER", "ReceiveClock", "StampedSocket", "kernel_stamps_supported", "stamping_problem"]

STAMPS_VARIABLE = "HARNESS_RECEIVE_STAMPS"
KERNEL = "kernel"  # the kernel's receive stamps (SO_TIMESTAMPNS), mapped to the monotonic clock
USER = "user"  # stamped when the harness read the bytes (TLS, or a kernel without the option)
MIXED = "mixed"  # a distributed run whose workers differ

# SO_TIMESTAMPNS_NEW (asm-generic, Linux >= 5.1): a struct __kernel_timespec of two 64-bit
# fields on every architecture; SO_TIMESTAMPNS_OLD on older kernels (a timespec: the same on
# 64-bit machines). The cmsg type of a stamp is the option's own number.
SO_TIMESTAMPNS_NEW = 64
SO_TIMESTAMPNS_OLD = 35
TIMESPEC = struct.Struct("qq")
TIMESPEC_SIZE = TIMESPEC.size
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
SOL_SOCKET = socket.SOL_SOCKET
# the two clocks' offset: the wall clock read between two monotonic reads, taken at their
# midpoint (error at most half their distance); read again when more than this came between
CLOCK_PAIR_LIMIT_NS = 4_000
CLOCK_PAIR_RETRIES = 3  # at most (a host whose clock reads are always slower keeps the last pair)
unpack_timespec = TIMESPEC.unpack_from

OFFSET_REUSE_NS = 1_000_000  # a sampled offset of the two clocks maps the stamps of reads this long after it

perf_ns = time.perf_counter_ns
wall_ns = time.time_ns


class ClockOffset:
    """The monotonic clock less the wall clock (ns), and when it was sampled (monotonic)."""

    __slots__ = ("offset_ns", "sampled_ns")

    def __init__(self) -> None:
        self.offset_ns = 0
        self.sampled_ns = -OFFSET_REUSE_NS - 1  # (never: the first stamp samples it)

    def sample(self) -> None:
        """The wall clock read between two monotonic reads, against their midpoint; read again
        when more than CLOCK_PAIR_LIMIT_NS came between them (preempted)."""
        before, wall, after = perf_ns(), wall_ns(), perf_ns()
        for _ in range(CLOCK_PAIR_RETRIES):
            if after - before <= CLOCK_PAIR_LIMIT_NS:
                break
            before, wall, after = perf_ns(), wall_ns(), perf_ns()
        self.offset_ns = (before + after) // 2 - wall
        self.sampled_ns = after


CLOCKS = ClockOffset()  # the process's (stamps are mapped in the event loop's thread only)


class ReceiveClock:
    """The stamp of the last read of a transport's connection (perf_counter_ns)."""

    __slots__ = ("arrived_ns",)

    def __init__(self) -> None:
        self.arrived_ns = 0


class StampedReads:
    """This process's reads of stamped sockets, by how they were stamped: the evidence behind a
    run's `stamping` (the summary's `run.stamped_reads`, each worker's own)."""

    __slots__ = ("clamped", "kernel", "user")

    def __init__(self) -> None:
        self.kernel = 0  # reads with the kernel's stamp
        self.user = 0  # reads that came without one (a connection's end, or the option refused): stamped when read
        self.clamped = 0  # kernel stamps outside [previous stamp, now]: a step of the wall clock

    def counts(self) -> dict[str, int]:
        """These counts, and those of the streams read in C (harness/_loopread.c)."""
        counts = {"kernel": self.kernel, "user": self.user, "clamped": self.clamped}
        if native_counts is not None:
            for kind, count in native_counts().items():
                counts[kind] += count
        return counts

    def since(self, start: dict[str, int]) -> dict[str, int]:
        """The counts since `start` (a run's share: one process may run several in turn)."""
        return {kind: count - start.get(kind, 0) for kind, count in self.counts().items()}


READS = StampedReads()


def user_stamps_asked() -> bool:
    """HARNESS_RECEIVE_STAMPS=user: stamp when read even where the kernel could (a control)."""
    return os.environ.get(STAMPS_VARIABLE) == USER


def stamping_problem() -> str | None:
    """A start-up check: HARNESS_RECEIVE_STAMPS is `kernel` (the default) or `user`."""
    value = os.environ.get(STAMPS_VARIABLE, KERNEL)
    return None if value in (KERNEL, USER) else f"{STAMPS_VARIABLE}={value!r}: use {KERNEL} (the default) or {USER}"


def enable_stamps(sock: Any) -> int | None:
    """Turn the kernel's receive stamps on; the option's number, or None where it is refused."""
    if not sys.platform.startswith("linux") or user_stamps_asked():
        return None
    for option in (SO_TIMESTAMPNS_NEW, SO_TIMESTAMPNS_OLD):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
        except OSError:
            continue
        return option
    return None


_KEEPER: list[socket.socket] = []  # the probe, open for the process's life


@functools.cache
def kernel_stamps_supported() -> bool:
    """Whether this kernel stamps received data for a TCP socket (probed on a socket of its own),
    and the environment does not ask for user-space stamps.

    The probe stays open: Linux stamps arriving packets only while some socket asks for it, and
    turns stamping back on some milliseconds after one asks again (deferred work). Without a
    socket that keeps asking, a connection opened after the last stamped one closed got its
    first packets unstamped (measured: 29 of 30 such reads)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if enable_stamps(probe) is None:
        probe.close()
        return False
    _KEEPER.append(probe)
    return True


class StampedSocket(gevent.socket.socket):
    """A gevent TCP socket whose reads carry the kernel's receive stamp into `clock`."""

    def __init__(self, family: int, type: int, proto: int, clock: ReceiveClock) -> None:
        super().__init__(family, type, proto)
        self.clock = clock
        self.stamp_option = enable_stamps(self) if kernel_stamps_supported() else None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.stamp_option is None:
            data = super().recv(bufsize, flags)
            self._read_now()
            return data
        data, ancillary, _, _ = self.recvmsg(bufsize, ANCILLARY_SIZE, flags)
        self._take_stamp(ancillary)
        return data

    @property
    def read_watcher(self) -> Any:
        """gevent's own watcher of this socket's readability (a libev io watcher)."""
        return self._read_event  # type: ignore[attr-defined]

    def recv_ready(self, bufsize: int) -> bytes | None:
        """A read that never waits, for the event loop's own callback when the socket is readable:
        None when nothing is there after all."""
        raw = self._sock  # type: ignore[attr-defined]  # gevent's socket wraps a non-blocking one of the standard library
        try:
            if self.stamp_option is None:
                data: bytes = raw.recv(bufsize)
                self._read_now()
                return data
            data, ancillary, _, _ = raw.recvmsg(bufsize, ANCILLARY_SIZE)
        except BlockingIOError:
            return None
        self._take_stamp(ancillary)
        return data

    def _read_now(self) -> None:
        self.clock.arrived_ns = perf_ns()
        READS.user += 1

    def _take_stamp(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        """The clock's stamp: the kernel's (mapped to the monotonic clock, clamped to the previous
        stamp and now), or now where none came (the end of the stream). The stamp is the only
        control message asked for: it is the first, if any (the per-read path is kept short)."""
        clock = self.clock
        if ancillary:
            level, kind, payload = ancillary[0]
            if kind == self.stamp_option and level == SOL_SOCKET and len(payload) >= TIMESPEC_SIZE:
                now = perf_ns()
                offset = CLOCKS
                if now - offset.sampled_ns > OFFSET_REUSE_NS:
                    offset.sample()
                    now = offset.sampled_ns
                seconds, nanoseconds = unpack_timespec(payload)
                stamp = seconds * 1_000_000_000 + nanoseconds + offset.offset_ns
                if not clock.arrived_ns <= stamp <= now:
                    READS.clamped += 1
                    stamp = min(max(stamp, clock.arrived_ns), now)
                clock.arrived_ns = stamp
                READS.kernel += 1
                return
        self._read_now()
