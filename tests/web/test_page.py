"""The web page (src/faceanchor/web) against the API that serves it, without a browser.

The page makes every request through ``call("METHOD", `path`)`` in app.js and builds the request
body from the ``data-field`` controls of index.html. These tests parse both files and check each
call against the app's routes and OpenAPI schema, so the page and the API cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

import tiny_engine  # noqa: E402

from faceanchor.api.app import create_app  # noqa: E402
from faceanchor.config import Settings  # noqa: E402

WEB = resources.files("faceanchor") / "web"
MODULES = {p.name: p.read_text(encoding="utf-8") for p in WEB.iterdir() if p.name.endswith(".js")}
APP_JS = "\n".join(MODULES.values())  # every ES module of the studio
INDEX = (WEB / "index.html").read_text(encoding="utf-8")
CODE = re.sub(r"(^|\s)//.*$", "", APP_JS, flags=re.M)  # app.js without its comments

CALL = re.compile(r"""\bcall\(\s*"([A-Z]+)"\s*,\s*(?:`([^`]*)`|"([^"]*)")""")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


class _Elements(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001, ANN201
        self.elements.append((tag, {k: v or "" for k, v in attrs}))


def _elements() -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(INDEX)
    return parser.elements


def _apps_offered() -> list[tuple[str, str]]:
    """(method, app) of each option the page puts in its method select: what GET v1/methods lists."""
    from faceanchor.api.methods import list_methods

    assert 'call("GET", "v1/methods")' in CODE, "the page no longer fills its methods from the server"
    return [(m["name"], m["app"]) for m in list_methods()["methods"]]


def _calls() -> list[tuple[str, str]]:
    return [(m, tpl if tpl else plain) for m, tpl, plain in CALL.findall(CODE)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("web") / "home", rate_limit_per_minute=0)
    return create_app(settings, tiny_engine.TinyEngine())


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)  # no lifespan: static files and routing need no loaded engine


def _concrete_paths(template: str) -> list[str]:
    """The template with each ${…} filled: app names by every app the page offers, ids by a sample id."""
    apps = sorted({app for _, app in _apps_offered()} | {"character/generate", "character/id-photo", "character/edit"})
    paths = [template]
    for expr in PLACEHOLDER.findall(template):
        values = apps if expr.split(".")[-1] in ("app", "queue") else ["0123abcd"]
        paths = [p.replace("${" + expr + "}", v, 1) for p in paths for v in values]
    return paths


def _operation(spec: dict, method: str, path: str) -> tuple[str, dict] | None:
    """The OpenAPI operation serving METHOD PATH (path parameters checked against their patterns)."""
    for template, item in spec["paths"].items():
        op = item.get(method.lower())
        if op is None:
            continue
        names = re.findall(r"\{([^}]+)\}", template)
        regex = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
        m = re.match(regex, path)
        if not m:
            continue
        params = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "path"}
        pattern_ok = all(re.search(params[n].get("schema", {}).get("pattern", ""), v) for n, v in zip(names, m.groups()))
        if pattern_ok:
            return template, op
    return None


def test_page_and_its_assets_are_served(client):
    page = client.get("/web/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="app.js"></script>' in page.text
    for name, kind in [(m, "javascript") for m in MODULES] + [("style.css", "text/css")]:
        resp = client.get(f"/web/{name}")
        assert resp.status_code == 200 and kind in resp.headers["content-type"], name
    root = client.get("/", follow_redirects=False)
    assert root.status_code in (301, 302, 307, 308) and root.headers["location"].endswith("/web/")


def test_every_request_of_the_page_goes_through_call():
    # one fetch (inside call), nothing that could reach an endpoint unchecked
    # one fetch inside call(); the other reads a blob: URL of the page itself ("send to edit")
    # (code.js only writes a fetch() snippet as text for the user)
    live = re.sub(r"(^|\s)//.*$", "", "\n".join(v for k, v in MODULES.items() if k != "code.js"), flags=re.M)
    assert len(re.findall(r"\bfetch\(", live)) == 2 and "await fetch(url)).blob()" in live
    assert not re.search(r"\b(EventSource|XMLHttpRequest|WebSocket|sendBeacon)\b", CODE)
    # the paths are relative to the API root (one level above /web/), never absolute URLs from answers
    assert 'new URL("../", document.baseURI)' in APP_JS
    calls = _calls()
    assert {m for m, _ in calls} >= {"GET", "POST", "PUT"}
    assert len(calls) >= 7, calls


def test_every_call_of_the_page_is_a_route_of_the_api(app, client):
    spec = app.openapi()
    assert {app_name for _, app_name in _apps_offered()}, "the page offers no app"
    for method, template in _calls():
        assert not template.startswith(("/", "http")), template
        path_part, _, query = template.partition("?")
        if path_part == "openapi.json":  # the schema itself, not an operation in it
            assert client.get("/openapi.json").status_code == 200
            continue
        for path in _concrete_paths(path_part):
            found = _operation(spec, method, "/" + path)
            assert found is not None, f"app.js calls {method} /{path}, which the API does not document"
            accepted = {p["name"] for p in found[1].get("parameters", []) if p["in"] == "query"}
            for name in (kv.split("=")[0] for kv in query.split("&") if kv):
                assert name in accepted, f"{method} {found[0]} takes no query parameter {name!r}"
            # and the app really routes it: without a key a real route answers 401 (health: 200/503), never 404/405
            resp = client.request(method, "/" + path + ("?" + query if query else ""))
            assert resp.status_code not in (404, 405), f"{method} /{path}: {resp.status_code} {resp.text}"


def test_the_methods_offered_are_served_by_their_app(client):
    offered = _apps_offered()
    assert offered
    listed = client.get("/v1/methods").json()
    for method, app_name in offered:
        assert method in listed["apps"].get(app_name, ()), f"the page sends method {method} to /queue/{app_name}"
    assert "option" not in INDEX_HTML_SELECT(), "the method list is the server's, not written into the page"


def INDEX_HTML_SELECT() -> str:
    html = (resources.files("faceanchor") / "web" / "index.html").read_text()
    start = html.index('<select id="method"')
    return html[start : html.index("</select>", start)].split("-->")[-1]


def _schema_of_submit(app) -> tuple[dict, dict]:
    spec = app.openapi()
    ref = spec["paths"]["/queue/{app}"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]], spec


def _bounds(prop: dict) -> tuple[float | None, float | None]:
    for option in [prop, *prop.get("anyOf", [])]:
        if "minimum" in option or "maximum" in option:
            return option.get("minimum"), option.get("maximum")
    return None, None


def test_the_fields_form_js_places_are_fields_of_the_request_body(app):
    # form.js builds the controls from this schema; the names it places by hand must exist in it
    body, _ = _schema_of_submit(app)
    layout = MODULES["form.js"][MODULES["form.js"].index("const LAYOUT"):MODULES["form.js"].index("};")]
    names = re.findall(r'"([a-z_]+)"', layout)
    assert len(names) > 15 and set(names) <= set(body["properties"]), set(names) - set(body["properties"])


def test_every_element_the_script_uses_is_on_the_page():
    ids = {a["id"] for _, a in _elements() if "id" in a}
    used = set(re.findall(r"""\$\("([^"]+)"\)""", CODE))
    assert used, "app.js uses no elements?"
    assert used <= ids, f"app.js uses missing elements: {sorted(used - ids)}"


def _props(spec: dict, name: str) -> set[str]:
    return set(spec["components"]["schemas"][name]["properties"])


def _enum(spec: dict, schema: str, field: str) -> list[str]:
    prop = spec["components"]["schemas"][schema]["properties"][field]
    for option in [prop, *prop.get("anyOf", [])]:
        if "enum" in option:
            return option["enum"]
    raise AssertionError(f"{schema}.{field} has no enum")


def test_the_page_sends_every_character_and_edit_field(app):
    # the generation fields come from GenerateBody (form.js builds a control for each); the fields the
    # character, edit and create bodies add on top are written by app.js itself: each must be sent by name
    spec = app.openapi()
    gen = _props(spec, "GenerateBody")
    extra = (_props(spec, "CharacterBody") | _props(spec, "EditBody")) - gen
    create = _props(spec, "CreateBody")
    images = _props(spec, "CharacterImages")
    assert extra >= {"character_id", "reference_set", "mode", "strength", "mask_source", "images"}, extra
    app_js = re.sub(r"(^|\s)//.*$", "", MODULES["app.js"], flags=re.M)
    missing = [n for n in sorted(extra | create | images) if not re.search(rf"\b{n}\b\s*[:=,}}]|\.{n}\b", app_js)]
    assert missing == [], f"app.js never sends {missing}"


def test_the_fixed_choices_of_the_page_are_the_api_enums(app):
    # the selects index.html writes by hand hold exactly the values the API accepts
    spec = app.openapi()
    elements = _elements()

    def options(select_id: str) -> list[str]:
        start = INDEX.index(f'<select id="{select_id}"')
        block = INDEX[start:INDEX.index("</select>", start)]
        return [m or t for m, t in re.findall(r'<option(?: value="([^"]*)")?[^>]*>([^<]*)</option>', block)]

    refs = _enum(spec, "CharacterBody", "reference_set")
    assert options("char-refs") == refs and options("edit-refs") == refs
    assert options("edit-mask-source") == _enum(spec, "EditBody", "mask_source")
    modes = [a["value"] for t, a in elements if t == "input" and a.get("name") == "edit-mode"]
    assert modes == _enum(spec, "EditBody", "mode")
