"""How requests reach the target: the forward proxy and the TLS trust, the same for every client
of a run (the fast transport, the SDK transport and the sizing's count_tokens).

Proxies come from the standard variables, read as curl and Python's urllib read them:
`HTTPS_PROXY` for an https target, `HTTP_PROXY` for an http one (`ALL_PROXY` for either; the
lower-case spellings win), credentials in the proxy URL (`http://user:pass@proxy:3128`), and
`NO_PROXY` (host names, domain suffixes, `*`; a port may be given) for the targets reached
directly. An https target goes through the proxy's CONNECT tunnel, so TLS is end to end. The
built-in emulator (and a loopback host chosen in the web UI without --host) is never proxied. The start-up lines name the proxy, its password masked.

TLS trust is the system store, as OpenSSL finds it (the variables `SSL_CERT_FILE` and
`SSL_CERT_DIR` set it, the latter a folder of hashed certificates, `openssl rehash`), and
certifi's bundle on a system without one; certificates and host names are always verified.
"""

from __future__ import annotations

import os
import ssl
import urllib.request
from dataclasses import dataclass
from functools import cache
from urllib.parse import quote, unquote, urlsplit

__all__ = ["Proxy", "ProxyError", "proxy_for", "proxy_problem", "route", "tls_context", "trust_description"]


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy; its repr and `display` never show the password."""

    host: str
    port: int
    user: str | None
    password: str | None
    variable: str  # where it came from (HTTPS_PROXY, ...)

    @property
    def url(self) -> str:
        """The proxy's URL with its credentials (for the HTTP clients only, never printed)."""
        credentials = "" if self.user is None else f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}@"
        return f"http://{credentials}{self.host}:{self.port}"

    @property
    def display(self) -> str:
        credentials = "" if self.user is None else f"{self.user}:***@"
        return f"http://{credentials}{self.host}:{self.port} ({self.variable})"

    def __repr__(self) -> str:
        return f"Proxy({self.display})"


class ProxyError(ValueError):
    """A proxy variable that cannot be used: one line naming it."""


def _variable(scheme: str, fallback: bool = True) -> tuple[str, str] | None:
    """The proxy variable for `scheme` (its name and value), lower case first, as curl reads them;
    an empty one counts as not set; `fallback`: ALL_PROXY when neither is set."""
    names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", *(("all_proxy", "ALL_PROXY") if fallback else ()))
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def proxy_for(base_url: str) -> Proxy | None:
    """The proxy the environment gives for `base_url`; None: reach it directly (no proxy set, or NO_PROXY)."""
    target = urlsplit(base_url)
    found = _variable(target.scheme or "https")
    if found is None:
        return None
    name, value = found
    address = f"{target.hostname}:{target.port}" if target.port else target.hostname or ""
    no_proxy = _variable("no", fallback=False)
    if no_proxy is not None and urllib.request.proxy_bypass_environment(address, {"no": no_proxy[1]}):  # type: ignore[attr-defined]
        return None  # (urllib's NO_PROXY matching, given the value read as the proxies are)
    parsed = urlsplit(value if "://" in value else f"http://{value}")
    if parsed.scheme != "http":
        raise ProxyError(
            f"{name}: only http:// proxies are supported (https targets go through their CONNECT tunnel), got {parsed.scheme}://"
        )
    try:
        port = parsed.port or 80
    except ValueError:
        raise ProxyError(f"{name}: the port is not a number") from None
    if not parsed.hostname:
        raise ProxyError(f"{name}: no proxy host in {value!r}"[:200])
    user = unquote(parsed.username) if parsed.username is not None else None
    password = unquote(parsed.password) if parsed.password is not None else None
    return Proxy(parsed.hostname, port, user, password, name.upper())


def proxy_problem() -> str | None:
    """A proxy variable that is set and cannot be used, in one line (checked at start-up)."""
    for scheme in ("https", "http"):
        try:
            proxy_for(f"{scheme}://target.invalid")
        except ProxyError as error:
            return str(error)
    return None


def route(base_url: str, proxy: Proxy | None) -> str:
    """How requests reach `base_url`, for the start-up lines (no secret in it)."""
    way = f"through the proxy {proxy.display}" if proxy is not None else "directly"
    trust = f"; TLS trust: {trust_description()}" if base_url.startswith("https:") else ""
    return f"requests reach {base_url} {way}{trust}"


@cache
def tls_context() -> ssl.SSLContext:
    """The run's TLS client context: the system store (SSL_CERT_FILE, SSL_CERT_DIR), or certifi's bundle without one."""
    context = ssl.create_default_context()
    if not _system_store():
        import certifi

        context.load_verify_locations(cafile=certifi.where())
    return context


def _system_store() -> bool:
    paths = ssl.get_default_verify_paths()
    return bool((paths.cafile and os.path.isfile(paths.cafile)) or (paths.capath and os.path.isdir(paths.capath)))


def trust_description() -> str:
    """Which certificates the run trusts, for the start-up lines."""
    paths = ssl.get_default_verify_paths()
    if not _system_store():
        return "certifi's bundle (no system store)"
    given = [f"{name}={os.environ[name]}" for name in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(name)]
    return "the system store" + (f" ({', '.join(given)})" if given else f" ({paths.cafile or paths.capath})")
