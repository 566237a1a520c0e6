"""The test-mode flag (allow_private) lets loopback through and nothing else, on every redirect hop.

A real loopback server redirects to the cloud metadata address and to private ranges: each
redirect target is refused before any connection, in test mode as well as by default.
"""

import pytest
from local_server import LocalServer

from faceanchor.service.fetch import UrlRefusedError, address_problem, fetch_url, post_pinned, validate_url

REFUSED_TARGETS = [
    "http://169.254.169.254/latest/meta-data/",  # AWS/GCP/Azure metadata (link-local)
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS IMDS over IPv6 (ULA)
    "http://[fe80::1]/",  # IPv6 link-local
    "http://10.0.0.1/",
    "http://10.255.1.2:8080/img",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space (CGNAT)
    "http://[::ffff:169.254.169.254]/",  # metadata hidden in an IPv4-mapped address
    "http://[::ffff:10.0.0.1]/",
    "http://0.0.0.0/",
]


@pytest.fixture
def server():
    with LocalServer() as s:
        yield s


@pytest.mark.parametrize("target", REFUSED_TARGETS)
def test_redirect_from_loopback_to_private_is_refused_in_test_mode(server, target):
    with pytest.raises(UrlRefusedError, match="only public addresses \\(and loopback in test mode\\)"):
        fetch_url(f"{server.url}/redirect-to?{target}", max_bytes=10**6, allow_private=True, timeout=2)


@pytest.mark.parametrize("target", REFUSED_TARGETS)
def test_private_targets_refused_directly_in_every_mode(target):
    for mode in (False, True):
        with pytest.raises(UrlRefusedError):
            validate_url(target, allow_private=mode)
        with pytest.raises(UrlRefusedError):
            post_pinned(target, b"{}", {}, allow_private=mode, timeout=1)


def test_a_name_resolving_to_metadata_is_refused_in_test_mode():
    with pytest.raises(UrlRefusedError, match="link-local"):
        validate_url("http://metadata.example/", allow_private=True, resolver=lambda h, p: ["169.254.169.254"])
    with pytest.raises(UrlRefusedError, match="private"):  # one bad address among good ones is enough
        validate_url("http://mixed.example/", allow_private=True, resolver=lambda h, p: ["127.0.0.1", "10.1.2.3"])


def test_loopback_allowed_only_with_the_flag(server):
    assert fetch_url(f"{server.url}/redirect-to?/img", max_bytes=10**6, allow_private=True) == server.image
    with pytest.raises(UrlRefusedError, match="loopback"):
        fetch_url(f"{server.url}/img", max_bytes=10**6)
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("::1", allow_loopback=True) is None
    assert address_problem("::ffff:127.0.0.1", allow_loopback=True) is None
    assert address_problem("169.254.169.254", allow_loopback=True) is not None
    assert address_problem("fd00:ec2::254", allow_loopback=True) is not None
