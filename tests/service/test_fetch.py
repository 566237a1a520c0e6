"""URL inputs: SSRF refusals (loopback, private, link-local/metadata, IPv6, redirects) and the
positive path against a loopback server with the explicit test-only allowance."""

import httpx
import pytest
from local_server import LocalServer

from faceanchor.errors import ImageTooLargeError
from faceanchor.service.fetch import UrlFetchError, UrlRefusedError, address_problem, fetch_url, post_pinned, validate_url

PUBLIC_IP = "93.184.216.34"  # only ever handed to a mock transport, never contacted


@pytest.fixture(scope="module")
def server():
    with LocalServer() as s:
        yield s


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "2002:7f00:1::", "64:ff9b::a00:1",
    "224.0.0.1", "255.255.255.255",
])
def test_non_public_addresses_have_a_problem(address):
    assert address_problem(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(address) is None


def test_loopback_server_is_refused_by_default(server):
    with pytest.raises(UrlRefusedError, match="loopback"):
        fetch_url(server.url + "/img", max_bytes=10**6)
    with pytest.raises(UrlRefusedError, match="loopback"):
        fetch_url(f"http://localhost:{server.port}/img", max_bytes=10**6)
    with pytest.raises(UrlRefusedError, match="loopback"):
        fetch_url(f"http://[::1]:{server.port}/img", max_bytes=10**6)
    with pytest.raises(UrlRefusedError):
        fetch_url(f"http://[::ffff:127.0.0.1]:{server.port}/img", max_bytes=10**6)
    assert server.posts == []


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/x", "http://192.168.0.10/x", "http://172.31.255.1/x", "http://169.254.169.254/latest/meta-data/",
    "http://[fd12:3456::1]/x", "http://[fe80::1]/x", "https://0.0.0.0/x",
])
def test_private_and_metadata_literals_refused_before_connecting(url):
    def no_network(_request):
        raise AssertionError("nothing may be sent")

    with pytest.raises(UrlRefusedError):
        fetch_url(url, max_bytes=1000, transport=httpx.MockTransport(no_network))


def test_hostname_resolving_to_private_is_refused():
    resolver = lambda host, port: ["8.8.4.4", "10.1.1.1"]  # noqa: E731 - one bad address is enough
    with pytest.raises(UrlRefusedError, match="10.1.1.1"):
        validate_url("http://mixed.example/x", resolver=resolver)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/", "http:///nohost", "not a url"])
def test_bad_schemes_and_malformed(url):
    with pytest.raises(UrlRefusedError):
        fetch_url(url, max_bytes=1000)


def test_connects_to_the_validated_address_with_host_header_and_sni():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, content=b"ok")

    resolver = lambda host, port: [PUBLIC_IP]  # noqa: E731
    assert fetch_url("https://images.example:8443/a.png", max_bytes=100, resolver=resolver,
                     transport=httpx.MockTransport(handler)) == b"ok"
    req = seen[0]
    assert req.url.host == PUBLIC_IP and req.url.port == 8443
    assert req.headers["host"] == "images.example:8443"
    assert req.extensions["sni_hostname"] == "images.example"


@pytest.mark.parametrize("url", ["http://xn--/x", "http://xn--ls8h.example/x", "https://xn--a.example/"])
def test_malformed_idna_hosts_are_refused_not_crashing(url):
    with pytest.raises(UrlRefusedError, match="malformed"):
        validate_url(url, resolver=lambda host, port: [PUBLIC_IP])


def test_international_and_ipv6_hosts_go_on_the_wire_as_ascii():
    seen = []

    def handler(request):
        seen.append(request)
        return httpx.Response(200, content=b"ok")

    resolved = []
    resolver = lambda host, port: resolved.append(host) or [PUBLIC_IP]  # noqa: E731
    transport = httpx.MockTransport(handler)
    assert fetch_url("https://b\u00fccher.example/a.png", max_bytes=100, resolver=resolver, transport=transport) == b"ok"
    assert resolved == ["xn--bcher-kva.example"]
    assert seen[0].headers["host"] == "xn--bcher-kva.example"
    assert seen[0].extensions["sni_hostname"] == "xn--bcher-kva.example"
    assert fetch_url("http://[2606:4700::1111]:81/a.png", max_bytes=100, transport=transport) == b"ok"
    assert seen[1].headers["host"] == "[2606:4700::1111]:81"


def test_redirect_to_private_is_refused(server):
    calls = []

    def handler(request):
        calls.append(str(request.url))
        if len(calls) == 1:
            return httpx.Response(302, headers={"Location": f"http://127.0.0.1:{server.port}/img"})
        raise AssertionError("the private redirect target must never be requested")

    resolver = lambda host, port: [PUBLIC_IP]  # noqa: E731
    with pytest.raises(UrlRefusedError, match="loopback"):
        fetch_url("http://public.example/start", max_bytes=10**6, resolver=resolver, transport=httpx.MockTransport(handler))
    assert len(calls) == 1

    def to_metadata(request):
        return httpx.Response(301, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    with pytest.raises(UrlRefusedError, match="link-local"):
        fetch_url("http://public.example/start", max_bytes=10**6, resolver=resolver, transport=httpx.MockTransport(to_metadata))


def test_positive_fetch_with_test_allowance(server):
    assert fetch_url(server.url + "/img", max_bytes=10**6, allow_private=True) == server.image
    # redirects are followed (and re-validated) by hand
    assert fetch_url(f"{server.url}/redirect-to?/img", max_bytes=10**6, allow_private=True) == server.image
    # the Host header carries the name, not the pinned address
    assert fetch_url(f"http://localhost:{server.port}/host", max_bytes=100, allow_private=True) == f"localhost:{server.port}".encode()


def test_size_cap_timeouts_and_errors(server):
    with pytest.raises(ImageTooLargeError):
        fetch_url(server.url + "/big", max_bytes=1000, allow_private=True)
    with pytest.raises(ImageTooLargeError):
        fetch_url(server.url + "/big-chunked", max_bytes=5000, allow_private=True)
    with pytest.raises(UrlFetchError, match="timed out|longer"):
        fetch_url(server.url + "/slow", max_bytes=10**6, timeout=0.3, allow_private=True)
    with pytest.raises(UrlFetchError, match="404"):
        fetch_url(server.url + "/missing", max_bytes=10**6, allow_private=True)
    with pytest.raises(UrlFetchError, match="redirected more than"):
        fetch_url(server.url + "/loop", max_bytes=10**6, allow_private=True)
    with pytest.raises(UrlFetchError):
        fetch_url("http://127.0.0.1:9/closed", max_bytes=100, allow_private=True, timeout=1)


def test_post_pinned_refuses_private_and_posts_when_allowed(server):
    with pytest.raises(UrlRefusedError):
        post_pinned(server.url + "/hook", b"{}", {})
    assert post_pinned(server.url + "/hook", b"{}", {"X-A": "1"}, allow_private=True) == 200
    assert server.posts[-1][0] == "/hook"
