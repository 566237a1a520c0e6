"""Image quotas per key (per UTC day and month): the 429 with the numbers, /v1/usage, `faceanchor keys usage`."""

import json
import time

from api_helpers import Harness, b64, png_bytes, tiny
from typer.testing import CliRunner

from faceanchor.config import Settings
from faceanchor.service import quotas


def _body(samples=1, **kw):
    return dict({"face_image": b64(png_bytes()), "num_inference_steps": 1, "samples": samples}, **kw)


def test_daily_quota_refuses_with_the_numbers_and_usage_shows_them(tmp_path):
    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, images_per_day=50)
    with Harness(settings, tiny.TinyEngine()) as h:
        key, info = h.service.keys.create("q", images_per_day=3)  # the key's own limit wins over the server's 50
        hk = {"x-api-key": key}
        c = h.client
        r = c.post("/v1/instantid", json=_body(2, seed=1), headers=hk)
        assert r.status_code == 200, r.text
        r = c.post("/queue/instantid", json=_body(2, seed=2), headers=hk)
        assert r.status_code == 429, r.text
        e = r.json()["error"]
        assert e["type"] == "quota_exceeded"
        assert "2 of 3 images per day used, this request needs 2" in e["message"]
        assert r.headers["x-quota-limit"] == "3" and r.headers["x-quota-used"] == "2" and r.headers["x-quota-period"] == "day"
        assert 0 < int(r.headers["retry-after"]) <= 86400
        # one more image still fits; then nothing does
        assert c.post("/queue/instantid", json=_body(1, seed=3), headers=hk).status_code == 200
        assert c.post("/v1/instantid", json=_body(1, seed=4), headers=hk).status_code in (406, 429)
        u = c.get("/v1/usage", headers=hk).json()
        assert u["key_id"] == info.id and u["day"]["images"] == 3 and u["day"]["limit"] == 3 and u["day"]["remaining"] == 0
        assert u["month"]["limit"] is None and u["month"]["images"] == 3
        # other keys have their own count (and the server's limit)
        other = c.get("/v1/usage", headers=h.headers).json()
        assert other["day"] == dict(other["day"], images=0, limit=50)
        # a repeated idempotency key returns its job without counting again
        k2, _ = h.service.keys.create("q2", images_per_day=1)
        hk2 = {"x-api-key": k2, "Idempotency-Key": "same"}
        same = _body(1, seed=9)
        first = c.post("/queue/instantid", json=same, headers=hk2)
        again = c.post("/queue/instantid", json=same, headers=hk2)
        assert first.status_code == again.status_code == 200 and first.json()["request_id"] == again.json()["request_id"]


def test_failed_and_cancelled_jobs_do_not_count_and_monthly_limit(tmp_path):
    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, images_per_month=2)
    with Harness(settings, tiny.TinyEngine()) as h:
        c = h.client
        flat = b64(png_bytes(noise=False))  # the tiny engine finds no face: the job fails
        r = c.post("/v1/instantid", json=dict(_body(2), face_image=flat), headers=h.headers)
        assert r.status_code in (400, 422), r.text
        assert c.get("/v1/usage", headers=h.headers).json()["month"]["images"] == 0
        assert c.post("/v1/instantid", json=_body(2), headers=h.headers).status_code == 200
        r = c.post("/queue/instantid", json=_body(1), headers=h.headers)
        assert r.status_code == 429 and "2 of 2 images per month used" in r.json()["error"]["message"]
        assert r.headers["x-quota-period"] == "month"


def test_period_bounds_and_images_of_a_request():
    # 2026-02-15 12:00 UTC: the day starts at midnight, February has 28 days in 2026
    now = 1771156800.0
    assert quotas.period_bounds("day", now) == (1771113600.0, 1771200000.0)
    start, end = quotas.period_bounds("month", now)
    assert time.gmtime(start)[:3] == (2026, 2, 1) and time.gmtime(end)[:3] == (2026, 3, 1)
    assert quotas.images_of("instantid", {"samples": 3}) == 3
    assert quotas.images_of("character/generate", {"fields": {"samples": 2}}) == 2
    assert quotas.images_of("character/id-photo", {"fields": {}}) == 4


def test_cli_keys_usage_and_create_flags(tmp_path):
    from faceanchor.cli.app import build_app

    cli = build_app()
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]

    def invoke(_app, args):
        return runner.invoke(cli, [*home, *args])

    runner_invoke = invoke
    r = runner_invoke(None, ["keys", "create", "--name", "boss", "--admin"])
    assert r.exit_code == 0, r.output
    r = runner_invoke(None, ["keys", "create", "--name", "shop", "--tenant", "acme", "--images-per-day", "5", "--images-per-month", "100"])
    assert r.exit_code == 0, r.output
    listed = json.loads(runner_invoke(None, ["keys", "list", "--json"]).output)
    by = {k["name"]: k for k in listed}
    assert by["boss"]["admin"] is True and by["shop"]["tenant"] == "acme" and by["shop"]["images_per_day"] == 5
    r = runner_invoke(None, ["keys", "usage", "--json"])
    assert r.exit_code == 0, r.output
    rows = {u["name"]: u for u in json.loads(r.output)}
    assert rows["shop"]["day"]["limit"] == 5 and rows["shop"]["month"]["limit"] == 100 and rows["shop"]["day"]["images"] == 0
    r = runner_invoke(None, ["keys", "usage", by["shop"]["id"]])
    assert r.exit_code == 0 and "day 0/5  month 0/100" in r.output, r.output
    r = runner_invoke(None, ["keys", "usage", "ffffffffffff"])
    assert r.exit_code != 0
    r = runner_invoke(None, ["keys", "create", "--tenant", "bad tenant!"])
    assert r.exit_code != 0
