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
  of every other time (perf_counter_ns) with the offset of the two clocks sampled right after
  the read (two clock reads, well under a microsecond apart). NTP slews the wall clock by at
  most 500 ppm, so a stamp read 30 ms after its packet is off by at most 15 us; a step of the
  wall clock is caught: a stamp that maps into the future or before the connection's previous
  stamp is clamped to that bound and counted (`clamped`).
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

__all__ = ["KERNEL", "USER", "ReceiveClock", "StampedSocket", "kernel_stamps_supported", "stamping_problem"]

STAMPS_VARIABLE = "HARNESS_RECEIVE_STAMPS"
KERNEL = "kernel"  # the kernel's receive stamps (SO_TIMESTAMPNS), mapped to the monotonic clock
USER = "user"  # stamped when the harness read the bytes (TLS, or a kernel without the option)

# SO_TIMESTAMPNS_NEW (asm-generic, Linux >= 5.1): a struct __kernel_timespec of two 64-bit
# fields on every architecture; SO_TIMESTAMPNS_OLD on older kernels (a timespec: the same on
# 64-bit machines). The cmsg type of a stamp is the option's own number.
SO_TIMESTAMPNS_NEW = 64
SO_TIMESTAMPNS_OLD = 35
TIMESPEC = struct.Struct("qq")
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size)

perf_ns = time.perf_counter_ns
wall_ns = time.time_ns


class ReceiveClock:
    """The stamp of a connection's last read (perf_counter_ns), and how its stamps were taken."""

    __slots__ = ("arrived_ns", "clamped", "kernel_reads", "user_reads")

    def __init__(self) -> None:
        self.arrived_ns = 0
        self.kernel_reads = 0  # reads stamped by the kernel
        self.user_reads = 0  # reads that came without a kernel stamp (stamped when read)
        self.clamped = 0  # kernel stamps outside [previous stamp, now]: a step of the wall clock


def user_stamps_asked() -> bool:
    """HARNESS_RECEIVE_STAMPS=user: stamp when read even where the kernel could (a control)."""
    return os.environ.get(STAMPS_VARIABLE) == USER


def stamping_problem() -> str | None:
    """A start-up check: HARNESS_RECEIVE_STAMPS is `kernel` (the default) or `user`."""
    value = os.environ.get(STAMPS_VARIABLE, KERNEL)
    return None if value in (KERNEL, USER) else f"{STAMPS_VARIABLE}={value!r}: use {KERNEL} (the default) or {USER}"


def _enable(sock: Any) -> int | None:
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


@functools.cache
def kernel_stamps_supported() -> bool:
    """Whether this kernel stamps received data for a TCP socket (probed on a socket of its own),
    and the environment does not ask for user-space stamps."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return _enable(probe) is not None


class StampedSocket(gevent.socket.socket):
    """A gevent TCP socket whose reads carry the kernel's receive stamp into `clock`."""

    def __init__(self, family: int, type: int, proto: int, clock: ReceiveClock) -> None:
        super().__init__(family, type, proto)
        self.clock = clock
        self.stamp_option = _enable(self)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.stamp_option is None:
            data = super().recv(bufsize, flags)
            self.clock.arrived_ns = perf_ns()
            self.clock.user_reads += 1
            return data
        data, ancillary, _, _ = self.recvmsg(bufsize, ANCILLARY_SIZE, flags)
        now = perf_ns()
        offset = wall_ns() - now
        clock = self.clock
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == self.stamp_option and len(payload) >= TIMESPEC.size:
                seconds, nanoseconds = TIMESPEC.unpack_from(payload)
                stamp = seconds * 1_000_000_000 + nanoseconds - offset
                if not clock.arrived_ns <= stamp <= now:
                    clock.clamped += 1
                    stamp = min(max(stamp, clock.arrived_ns), now)
                clock.arrived_ns = stamp
                clock.kernel_reads += 1
                return data
        clock.arrived_ns = now  # no stamp came (the end of the stream): stamped as read
        clock.user_reads += 1
        return data
