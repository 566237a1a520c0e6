"""Fetching untrusted URLs without server-side request forgery.

Used for URL image inputs and for webhooks. Rules:

* http and https only; the host must resolve, and **every** address it resolves to must be
  public (no loopback, private, shared, link-local — which holds the cloud metadata address
  169.254.169.254 —, multicast, reserved, unspecified; IPv6 loopback, ULA, link-local; IPv4
  addresses hidden in IPv4-mapped, 6to4, Teredo or NAT64 IPv6 addresses are checked as IPv4).
* The connection goes to the validated address itself (the URL's host is replaced by that IP,
  the ``Host`` header and TLS SNI / certificate check keep the name), so a second DNS answer
  cannot swap in an internal address.
* Redirects are followed by hand, each new URL validated again; at most ``max_redirects``.
* The body streams with a byte cap (``Content-Length`` is checked first) and a wall-clock
  deadline on top of httpx's connect/read timeouts.

``allow_private=True`` (the test-mode flag, ``FACEANCHOR_ALLOW_PRIVATE_URLS``) lets loopback
through and nothing else: every other private, shared, link-local (metadata), ULA, multicast or
reserved address stays refused, on the first URL and on every redirect hop, in every mode.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Callable, Iterable

import httpx

from faceanchor.errors import FaceAnchorError, ImageTooLargeError

Resolver = Callable[[str, int], Iterable[str]]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlRefusedError(FaceAnchorError):
    """A URL was refused before any request was made (scheme, host or address not allowed)."""

    http_status = 400
    type = "url_refused"


class UrlFetchError(FaceAnchorError):
    """A permitted URL could not be fetched (unreachable, timeout, error status, too many redirects)."""

    http_status = 422
    type = "url_fetch_failed"


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise UrlRefusedError(f"the host {host!r} of the URL does not resolve") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def is_loopback(address: str) -> bool:
    """``address`` is a loopback address (127.0.0.0/8, ::1, or IPv4 loopback inside IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def address_problem(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` may not be contacted, or ``None`` if it is a public unicast address
    (or a loopback one with ``allow_loopback``, the test-mode flag)."""
    if allow_loopback and is_loopback(address):
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ip.sixtofour if ip.sixtofour else None)
        if ip.teredo:
            embedded = ip.teredo[1]
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(str(embedded))
            return f"embeds an IPv4 address that {inner}" if inner else None
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address (cloud metadata services live there)"
    if ip.is_private:
        return "is a private address"
    if ip.is_multicast:
        return "is a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "is a reserved address"
    if not ip.is_global:
        return "is not a public address"
    return None


def validate_url(url: str, *, allow_private: bool = False, resolver: Resolver | None = None) -> tuple[httpx.URL, str]:
    """Check a URL; return it parsed and the address to connect to."""
    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 - decoding the IDNA host raises for malformed A-labels (xn--)
        host = _ascii_host(parsed)
    except Exception:
        raise UrlRefusedError("the URL is malformed") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlRefusedError(f"URL scheme {parsed.scheme or '(none)'!r} is not allowed; use http or https")
    if not host:
        raise UrlRefusedError("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
        addresses = [str(literal)]
    except ValueError:
        addresses = list((resolver or system_resolver)(host, port))
    if not addresses:
        raise UrlRefusedError(f"the host {host!r} of the URL does not resolve")
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_private)
        if problem:
            allowed = "only public addresses (and loopback in test mode)" if allow_private else "only public addresses"
            raise UrlRefusedError(f"the URL's host {host!r} resolves to {address}, which {problem}; {allowed} may be fetched")
    return parsed, addresses[0]


def _ascii_host(url: httpx.URL) -> str:
    """The host as sent on the wire: IDNA (punycode) for international names, never unicode."""
    return url.raw_host.decode("ascii")


def _pinned_request(client: httpx.Client, method: str, url: httpx.URL, address: str, **kw) -> httpx.Request:  # noqa: ANN003
    headers = dict(kw.pop("headers", None) or {})
    default_port = 443 if url.scheme == "https" else 80
    host = _ascii_host(url)
    authority = f"[{host}]" if ":" in host else host
    headers["Host"] = authority if url.port in (None, default_port) else f"{authority}:{url.port}"
    pinned = url.copy_with(host=address)
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request(method, pinned, headers=headers, extensions=extensions, **kw)


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float = 10.0,
    allow_private: bool = False,
    max_redirects: int = 5,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> bytes:
    """GET an untrusted URL under the rules above and return its body."""
    deadline = time.monotonic() + timeout
    current = url
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), follow_redirects=False,
                      transport=transport, trust_env=False) as client:
        for _hop in range(max_redirects + 1):
            parsed, address = validate_url(current, allow_private=allow_private, resolver=resolver)
            request = _pinned_request(client, "GET", parsed, address)
            try:
                response = client.send(request, stream=True)
            except httpx.TimeoutException:
                raise UrlFetchError(f"fetching {parsed.host} timed out") from None
            except httpx.HTTPError as e:
                raise UrlFetchError(f"could not fetch the URL from {parsed.host}: {type(e).__name__}") from None
            try:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise UrlFetchError("the URL redirected without a Location")
                    current = str(parsed.join(location))
                    continue
                if response.status_code != 200:
                    raise UrlFetchError(f"fetching the URL returned HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageTooLargeError(f"the URL's content is {declared} bytes, over the limit of {max_bytes} bytes")
                chunks: list[bytes] = []
                total = 0
                try:
                    for chunk in response.iter_bytes():
                        total += len(chunk)
                        if total > max_bytes:
                            raise ImageTooLargeError(f"the URL's content is over the limit of {max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise UrlFetchError(f"fetching {parsed.host} took longer than {timeout:g} s")
                        chunks.append(chunk)
                except httpx.TimeoutException:
                    raise UrlFetchError(f"fetching {parsed.host} timed out") from None
                except httpx.HTTPError as e:
                    raise UrlFetchError(f"the transfer from {parsed.host} failed: {type(e).__name__}") from None
                return b"".join(chunks)
            finally:
                response.close()
        raise UrlFetchError(f"the URL redirected more than {max_redirects} times")


def post_pinned(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = 10.0,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """POST to an untrusted URL (no redirects followed); return the status code.

    Raises :class:`UrlRefusedError` for a refused address and :class:`UrlFetchError` for
    network errors (the caller decides about retries)."""
    parsed, address = validate_url(url, allow_private=allow_private, resolver=resolver)
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), follow_redirects=False,
                      transport=transport, trust_env=False) as client:
        request = _pinned_request(client, "POST", parsed, address, headers=headers, content=body)
        try:
            response = client.send(request)
        except httpx.HTTPError as e:
            raise UrlFetchError(f"could not reach {parsed.host}: {type(e).__name__}") from None
        response.close()
        return response.status_code
