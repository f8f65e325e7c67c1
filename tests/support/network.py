"""The network a company puts between a load generator and the API, for real: Debian's
tinyproxy (a forward proxy that logs every request and CONNECT), a TLS server whose certificate
a private CA signed (tests/support/tls_front.py), and that CA's files."""

from __future__ import annotations

import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import trustme

from harness.emulator.process import stop_process
from tests.support.processes import ROOT, free_port

PROXY_USER, PROXY_PASSWORD = "loadtest", "pr0xy-secret-Pa55"


class Tinyproxy:
    """tinyproxy on a free loopback port, its log in `folder`; with `auth`, it asks for PROXY_USER's password."""

    def __init__(self, folder: Path, auth: bool = False) -> None:
        executable = shutil.which("tinyproxy")
        assert executable, "tinyproxy is not installed: `apt-get install -y tinyproxy-bin` (make test does it)"
        self.port = free_port()
        self.log = folder / "tinyproxy.log"
        config = folder / "tinyproxy.conf"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 600", f'LogFile "{self.log}"', "LogLevel Info", "MaxClients 500"]
        lines += ["Allow 127.0.0.1", "DisableViaHeader Yes", *([f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}"] if auth else [])]
        config.write_text("\n".join(lines) + "\n")
        self.url = f"http://127.0.0.1:{self.port}"
        self.url_with_credentials = f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{self.port}" if auth else self.url
        self._process = subprocess.Popen([executable, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while "listening on" not in self.text() and "Listening on" not in self.text():
            assert self._process.poll() is None, f"tinyproxy exited: {self.text()[-2000:]}"
            assert time.monotonic() < deadline, "tinyproxy did not start listening within 20 s"
            time.sleep(0.05)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def requests(self, path: str) -> int:
        """Plain requests it forwarded to `path` (an http target)."""
        return len(re.findall(rf"Request \(file descriptor \d+\): POST http://[^ ]+{re.escape(path)} HTTP", self.text()))

    def tunnels(self) -> int:
        """CONNECT tunnels it opened (an https target)."""
        return len(re.findall(r"Request \(file descriptor \d+\): CONNECT ", self.text()))

    def stop(self) -> None:
        stop_process(self._process)


class PrivateCA:
    """A CA of the test's own and a certificate it issued for 127.0.0.1 and localhost, as files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.chain, self.key = folder / "server-chain.pem", folder / "server-key.pem"
        server.private_key_and_cert_chain_pem.write_to_path(str(self.key))
        self.chain.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))

    def hashed_dir(self) -> Path:
        """A folder as SSL_CERT_DIR wants it: the CA under its subject hash (`openssl rehash`)."""
        directory = self.folder / "certs"
        directory.mkdir(exist_ok=True)
        shutil.copy(self.ca_file, directory / "private-ca.pem")
        subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
        return directory


class TlsFront:
    """tests/support/tls_front.py in its own process: https://127.0.0.1:PORT in front of `upstream_port`."""

    def __init__(self, upstream_port: int, ca: PrivateCA) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tests.support.tls_front", str(self.port), str(upstream_port), str(ca.chain), str(ca.key)]
        self._process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], 20)
        assert ready and self._process.stdout.readline().strip() == "ready", "the TLS server did not start"

    def stop(self) -> None:
        stop_process(self._process)
        if self._process.stdout is not None:
            self._process.stdout.close()
