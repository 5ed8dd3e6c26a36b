"""The twin page, driven in headless Chromium against a real `bentoml serve` whose twin holds a patient with a
pre-operative and a post-operative analysis of the phantom, a partial nephrectomy between them, eGFR values and a
radiologist's SEG (``twin_imaging.testing.demo_twin``). And its sign-in at the HTTP level: the cookie's attributes,
what a cookie alone, a forged one or a revoked key's one can do, the integration role kept out."""

from __future__ import annotations

import base64
import os
import sqlite3
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from serving.launch import start_server
from twin_imaging.access import ApiKeyRegistry
from twin_imaging.testing.browser import browser_missing, twin_page
from twin_imaging.testing.demo_twin import build_demo_twin

PAGE_HEADER = {"X-Twin-Page": "1"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    missing = browser_missing()
    if missing:  # the README's set-up installs both; under CI their absence is a failure
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)
    root = tmp_path_factory.mktemp("page")
    twin = build_demo_twin(root / "data", work_dir=root / "work")
    server = start_server(root)
    try:
        yield server, twin
    finally:
        server.stop()


def audit_rows(server, action: str) -> list[tuple[str, str]]:
    with sqlite3.connect(server.root / "data" / "twin.sqlite3") as db:
        return db.execute("SELECT actor, object_id FROM audit_log WHERE action = ?", (action,)).fetchall()


def liver_share(picture: np.ndarray) -> float:
    """The share of pixels near the liver's colour in the card (140, 86, 75)."""
    return float((np.abs(picture.astype(int) - np.array([140, 86, 75])).sum(axis=2) < 90).mean())


def test_a_clinician_sees_timeline_trends_viewer_and_scenarios(served):
    server, twin = served
    with twin_page(server.url) as browser:
        browser.sign_in(server.keys["clinician"])
        browser.open_patient(twin.patient_id)
        page = browser.page

        # timeline: both analyses, oldest first, the procedure between them as the pre/post boundary
        kinds = page.eval_on_selector_all("#timeline-rows tr", "rows => rows.map(r => r.dataset.kind)")
        assert kinds.count("analysis") == 2 and kinds.count("procedure") == 1
        assert kinds.index("analysis") < kinds.index("procedure") < len(kinds) - 1 - kinds[::-1].index("analysis")
        assert "Partial nephrectomy" in page.inner_text("#timeline-rows tr.boundary")

        # trends: two points per structure, the procedure marked on every chart
        browser.open_view("trends")
        structures = page.eval_on_selector_all(
            "svg.trend[data-series]:not([data-series^=observation])", "s => s.map(e => e.dataset.series)"
        )
        assert {"liver", "spleen", "kidney_right", "kidney_left", "aorta"} <= set(structures)
        for structure in structures:
            assert page.locator(f"circle.point[data-structure={structure}]").count() == 2, structure
            assert page.locator(f"svg[data-series={structure}] line.procedure").count() == 1, structure
        egfr = page.locator('svg[data-series="observation:62238-1"] circle.point')
        assert egfr.count() == 2
        page.click("#compare-form button")
        page.wait_for_selector("#compare-table:not([hidden]) tr[data-structure=kidney_right]")
        change = page.inner_text("#compare-table tr[data-structure=kidney_right] td:nth-child(5)")
        assert float(change) < -10  # the post-operative right kidney is smaller

        # viewer: the planes are not blank and change when a structure is hidden; the 3D view draws the surfaces
        browser.open_view("viewer")
        before = browser.canvas_pixels("#slices")
        assert before.std() > 10 and len(np.unique(before.reshape(-1, 3), axis=0)) > 50
        assert int(page.get_attribute("#render3d", "data-meshes")) >= 5
        surfaces = browser.canvas_pixels("#render3d")
        assert surfaces.std() > 10
        liver_shown = liver_share(surfaces)
        assert liver_shown > 0.02  # the liver's surface, in its colour (lit by the renderer: near it)
        page.uncheck("#show-liver")
        page.wait_for_timeout(500)
        after = browser.canvas_pixels("#slices")
        assert np.abs(before.astype(int) - after.astype(int)).sum(axis=2).astype(bool).mean() > 0.002
        assert liver_share(browser.canvas_pixels("#render3d")) < liver_shown / 5  # hidden in 3D too

        # scenarios: partial and radical side by side, with intervals and the research notice
        browser.open_view("scenarios")
        headers = page.eval_on_selector_all(".scenarios thead th", "h => h.map(e => e.textContent)")
        assert headers[1:] == ["Partial nephrectomy", "Radical nephrectomy"]
        table = page.inner_text(".scenarios")
        assert "New-baseline eGFR" in table and "90 %" in table
        assert page.locator(".scenarios .drivers li").count() >= 4  # what drove the probabilities, per scenario
        assert "imputed" in page.inner_text("#view-scenarios .imputed")
        assert "Research use only" in page.inner_text("#view-scenarios")
        assert "Research use only" in page.inner_text("#research-notice")

        assert browser.console_errors == []
        hosts = {urlsplit(url).netloc for url in browser.requests if not url.startswith("data:")}
        assert hosts == {urlsplit(server.url).netloc}  # nothing left 127.0.0.1:port

    viewed = audit_rows(server, "page_view")
    clinician = next(e.name for e in ApiKeyRegistry.load(server.root / "keys.json").entries if e.role == "clinician")
    assert {view for actor, view in viewed if actor == f"api:{clinician}"} >= {
        "timeline",
        "trends",
        "viewer",
        "scenarios",
    }


def test_an_unknown_patient_gets_a_clear_message(served):
    server, _ = served
    with twin_page(server.url) as browser:
        browser.sign_in(server.keys["clinician"])
        browser.open_patient("NOBODY-42", expect_success=False)
        assert "No patient with the id “NOBODY-42” is in the twin" in browser.message()
        assert browser.page.is_hidden("#patient")


def test_an_integration_key_cannot_open_the_page(served):
    server, _ = served
    with twin_page(server.url) as browser:
        browser.sign_in(server.keys["integration"], expect_success=False)
        assert "needs a clinician key" in browser.message()
        assert browser.page.context.cookies() == []
        assert browser.page.is_hidden("#search") and browser.page.is_hidden("#patient")
    refused = httpx.post(
        f"{server.url}/page/session", headers={"Authorization": f"Bearer {server.keys['integration']}"}
    )
    assert refused.status_code == 403 and "set-cookie" not in refused.headers


def test_the_session_cookie_is_httponly_strict_and_worth_only_what_its_key_is(served, tmp_path):
    server, twin = served
    answer = httpx.post(f"{server.url}/page/session", headers={"Authorization": f"Bearer {server.keys['clinician']}"})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(cookie.split("; "))
    assert server.keys["clinician"] not in cookie
    jar = {"twin_imaging_session": cookie.split(";")[0].split("=", 1)[1]}
    body = {"patient_id": twin.patient_id}

    assert httpx.post(f"{server.url}/v1/twin/get", json=body, cookies=jar, headers=PAGE_HEADER).status_code == 200
    assert httpx.post(f"{server.url}/v1/twin/get", json=body, cookies=jar).status_code == 403  # not from the page
    forged = {"twin_imaging_session": jar["twin_imaging_session"][:-2] + "00"}
    assert httpx.post(f"{server.url}/v1/twin/get", json=body, cookies=forged, headers=PAGE_HEADER).status_code == 401
    assert httpx.get(f"{server.url}/page/whoami", cookies=jar, headers=PAGE_HEADER).json()["signed_in"] is True
    assert httpx.get(f"{server.url}/page/whoami").json() == {"signed_in": False}

    page = httpx.get(f"{server.url}/page/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "http" not in policy
    assert "Patient twin" in page.text and twin.patient_id not in page.text

    # a second clinician signs in, then loses the key: the session ends with it
    registry = ApiKeyRegistry.load(server.root / "keys.json")
    key = registry.create("locum", role="clinician")
    answer = httpx.post(f"{server.url}/page/session", headers={"Authorization": f"Bearer {key}"})
    locum = {"twin_imaging_session": answer.headers["set-cookie"].split(";")[0].split("=", 1)[1]}
    assert httpx.post(f"{server.url}/v1/twin/get", json=body, cookies=locum, headers=PAGE_HEADER).status_code == 200
    registry.revoke("locum")
    gone = httpx.post(f"{server.url}/v1/twin/get", json=body, cookies=locum, headers=PAGE_HEADER)
    assert gone.status_code == 401 and "sign in again" in gone.json()["error"]


def test_the_pages_own_routes_refuse_what_they_cannot_do(served):
    server, twin = served
    clinician = {"Authorization": f"Bearer {server.keys['clinician']}"}
    integration = {"Authorization": f"Bearer {server.keys['integration']}"}
    view = httpx.post(
        f"{server.url}/page/api/view", json={"patient_id": twin.patient_id, "view": "x"}, headers=clinician
    )
    assert view.status_code == 422 and "unknown view" in view.json()["error"]
    unknown = httpx.post(
        f"{server.url}/page/api/view", json={"patient_id": "NOBODY", "view": "trends"}, headers=clinician
    )
    assert unknown.status_code == 404
    assert (
        httpx.post(f"{server.url}/page/api/meshes", json={"analysis_id": "0" * 32}, headers=clinician).status_code
        == 404
    )
    refused = httpx.post(
        f"{server.url}/page/api/meshes", json={"analysis_id": twin.analysis_ids[0]}, headers=integration
    )
    assert refused.status_code == 403
    meshes = httpx.post(f"{server.url}/page/api/meshes", json={"analysis_id": twin.analysis_ids[0]}, headers=clinician)
    assert meshes.status_code == 200 and meshes.headers["content-security-policy"].startswith("default-src 'self'")
    liver = next(m for m in meshes.json()["meshes"] if m["name"] == "liver")
    vertices = np.frombuffer(base64.b64decode(liver["vertices"]), dtype="<f4").reshape(-1, 3)
    faces = np.frombuffer(base64.b64decode(liver["faces"]), dtype="<u4").reshape(-1, 3)
    assert len(vertices) > 100 and faces.max() < len(vertices)
    assert httpx.post(f"{server.url}/page/api/meshes", content=b"[1]", headers=clinician).status_code == 422
