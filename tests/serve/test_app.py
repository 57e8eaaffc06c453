"""The HTTP API through FastAPI's TestClient: every endpoint, every bad input, auth, CORS, the
queue's 503 and the metrics."""

from __future__ import annotations

import io
import re
import threading
import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from taxonlens.data.images import load_image
from taxonlens.serve.app import create_app
from taxonlens.serve.settings import ServeSettings

#: small limits, so that the refusals are cheap to provoke
SETTINGS = ServeSettings(max_files=4, max_file_bytes=200_000, max_pixels=100_000, max_batch=8, max_queue=8)


@pytest.fixture(scope="module")
def client(recognizer):
    with TestClient(create_app(recognizer, SETTINGS, "a test model")) as c:
        yield c


def _png(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def _files(*items: tuple[str, bytes]) -> list:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _metric(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_predict_answers_each_photo_with_its_predict_row_in_upload_order(client, recognizer, photos):
    a, b = photos[0], photos[5]
    broken = a.read_bytes()[:200]
    r = client.post("/v1/predict?top_k=3", files=_files(("b.png", b.read_bytes()), ("cut.png", broken),
                                                         ("a.png", a.read_bytes())))
    assert r.status_code == 200
    rows = r.json()["predictions"]
    assert [row["file_name"] for row in rows] == ["b.png", "cut.png", "a.png"]
    expected = recognizer.predict([load_image(b), load_image(a)], top_k=3)
    for row, pred in zip([rows[0], rows[2]], expected):
        assert set(row) == set(recognizer.row("x", pred))  # exactly the fields of a predict row
        assert row["path"] == list(pred.path) and row["error"] == ""
        assert row["confidence_genus"] == pytest.approx(pred.confidence["genus"], abs=1e-5)
        assert row["rank_reached"] == "genus" and row["reached_path"] == list(pred.path[:-1])  # species never trusted
        assert len(row["alternatives"]) == 2
    assert rows[1]["path"] == [] and "corrupt or truncated" in rows[1]["error"]


def test_a_request_whose_every_photo_is_unreadable_gets_422_with_the_reasons(client, photos):
    r = client.post("/v1/predict", files=_files(("empty.jpg", b""), ("notes.txt", b"not a photo at all"),
                                                ("cut.png", photos[0].read_bytes()[:120]),
                                                ("bomb.png", _png((400, 400)))))
    assert r.status_code == 422
    errors = [row["error"] for row in r.json()["predictions"]]
    assert errors[0] == "empty file (0 bytes)"
    assert errors[1] == "not a recognised image format"
    assert errors[2].startswith("corrupt or truncated image")
    assert "exceeds the limit of 100000" in errors[3]  # a decompression bomb is refused, not decoded


@pytest.mark.parametrize(("query", "message"), [
    ("rank=tribe", "unknown rank 'tribe'"),
    ("subset=genus=Nosuchgenus", "unknown genus in the subset: Nosuchgenus"),
    ("subset=/etc/passwd", "give RANK=NAME"),  # never a file on the server's disk
    ("top_k=0", "greater than or equal to 1"),
    ("top_k=1000", "less than or equal to 100"),
])
def test_bad_options_get_422(client, photos, query, message):
    r = client.post(f"/v1/predict?{query}", files=_files(("a.png", photos[0].read_bytes())))
    assert r.status_code == 422
    assert message in str(r.json()["detail"])


def test_rank_and_subset_options(client, recognizer, photos):
    tax = recognizer.taxonomy
    genus = tax.names[int(tax.nodes_at_rank("genus")[0])]
    files = _files(*((p.name, p.read_bytes()) for p in photos[:3]))
    rows = client.post(f"/v1/predict?subset=genus={genus}&top_k=10", files=files).json()["predictions"]
    for row in rows:
        assert row["path"][5] == genus and all(a["path"][5] == genus for a in row["alternatives"])
    rows = client.post("/v1/predict?rank=family", files=files).json()["predictions"]
    assert all(len(row["path"]) == 5 and row["species"] == "" for row in rows)


def test_refused_uploads(client, photos):
    photo = photos[0].read_bytes()
    r = client.post("/v1/predict", files=_files(("big.png", b"x" * 250_000)))
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]
    r = client.post("/v1/predict", files=_files(*[(f"{i}.png", photo) for i in range(5)]))
    assert r.status_code == 413 and "more than 4 photos" in r.json()["detail"]
    r = client.post("/v1/predict", content=b"x" * 1_000, headers={"content-type": "multipart/form-data; boundary=zz",
                                                                   "content-length": str(10**9)})
    assert r.status_code == 413
    r = client.post("/v1/predict", content=b"--zz\r\ngarbage without headers",
                    headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 400 and "malformed multipart" in r.json()["detail"]
    r = client.post("/v1/predict", json={"files": ["/etc/passwd"]})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/predict", data={"other": "x"}, files=[("other_file", ("a.png", photo, "image/png"))])
    assert r.status_code == 422 and "no photos" in r.json()["detail"]
    r = client.post("/v1/predict", data={"files": "/etc/passwd"}, files=[("x", ("a.png", photo, "image/png"))])
    assert r.status_code == 400 and "holds files, not text" in r.json()["detail"]


def test_taxa_search_and_taxon(client, recognizer):
    tax = recognizer.taxonomy
    genus = int(tax.nodes_at_rank("genus")[0])
    name = tax.names[genus]
    found = client.get("/v1/taxa/search", params={"q": name[:3].lower()}).json()["taxa"]
    assert any(t["id"] == genus for t in found)
    assert all(t["name"].lower().startswith(name[:3].lower()) for t in found)
    hit = next(t for t in found if t["id"] == genus)
    assert hit["path"] == list(tax.path_names(genus)) and hit["rank"] == "genus"
    assert hit["parent"] == tax.names[tax.parent[genus]]
    taxon = client.get(f"/v1/taxa/{genus}").json()
    assert [n["name"] for n in taxon["lineage"]] == list(tax.path_names(genus))
    assert sorted(c["id"] for c in taxon["children"]) == sorted(int(c) for c in tax.children(genus))
    assert taxon["leaves"] == len(tax.leaves_under(genus))
    assert client.get("/v1/taxa/0").status_code == 404
    assert client.get(f"/v1/taxa/{len(tax)}").status_code == 404
    assert client.get("/v1/taxa/search").status_code == 422
    assert client.get("/v1/taxa/search", params={"q": "zzzz-no-such"}).json()["taxa"] == []


def test_search_shows_homonyms_with_their_parents():
    from taxonlens.serve.taxa import TaxonIndex
    from taxonlens.taxonomy import Taxonomy

    tax = Taxonomy.from_paths([("Plantae", "Morus", "Morus alba"), ("Animalia", "Morus", "Morus bassanus")],
                              ranks=("kingdom", "genus", "species"), allow_homonyms=True)
    found = TaxonIndex(tax).search("mor")
    genera = [t for t in found if t["rank"] == "genus"]
    assert [t["parent"] for t in genera] == ["Animalia", "Plantae"] and all(t["homonym"] for t in genera)
    assert [t["name"] for t in found if t["rank"] == "species"] == ["Morus alba", "Morus bassanus"]


def test_health_model_docs_and_page(client, recognizer):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True}
    model = client.get("/v1/model").json()
    assert model["ranks"] == list(recognizer.taxonomy.ranks) and model["about"] == "a test model"
    assert model["thresholds"]["species"] is None and model["thresholds"]["genus"] == 0.0  # never trusted: null
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in spec["requestBody"]["content"]
    page = client.get("/").text
    assert '<script src="/static/page.js">' in page and "/static/page.css" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # every asset is served here: no CDN
    assert client.get("/static/page.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/index.html").status_code == 404  # only the listed assets
    assert client.get("/static/..%2F__init__.py").status_code == 404


def test_metrics_count_requests_batches_and_errors(client, photos):
    before = {"ok": _metric(client, "taxonlens_requests_total", route="/v1/predict", status="200"),
              "bad": _metric(client, "taxonlens_errors_total", kind="unreadable_photo"),
              "batches": _metric(client, "taxonlens_batch_size_count"),
              "photos": _metric(client, "taxonlens_photos_predicted_total"),
              "options": _metric(client, "taxonlens_errors_total", kind="bad_option")}
    for _ in range(2):
        client.post("/v1/predict", files=_files(("a.png", photos[1].read_bytes()), ("b.txt", b"text")))
    assert _metric(client, "taxonlens_requests_total", route="/v1/predict", status="200") == before["ok"] + 2
    assert _metric(client, "taxonlens_errors_total", kind="unreadable_photo") == before["bad"] + 2
    assert _metric(client, "taxonlens_photos_predicted_total") == before["photos"] + 2
    client.post("/v1/predict?top_k=0", files=_files(("a.png", photos[1].read_bytes())))
    client.post("/v1/predict?rank=tribe", files=_files(("a.png", photos[1].read_bytes())))
    assert _metric(client, "taxonlens_errors_total", kind="bad_option") == before["options"] + 2
    assert _metric(client, "taxonlens_batch_size_count") == before["batches"] + 2
    assert _metric(client, "taxonlens_queue_depth") == 0


def test_api_key_and_cors(recognizer, photos):
    files = _files(("a.png", photos[0].read_bytes()))
    with TestClient(create_app(recognizer, replace(SETTINGS, api_key="s3cret"))) as c:
        assert c.post("/v1/predict", files=files).status_code == 401
        assert c.post("/v1/predict", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/taxa/search", params={"q": "a"}).status_code == 401
        assert c.post("/v1/predict", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
        assert 'kind="unauthorized"} 3.0' in c.get("/metrics").text
        # CORS is off by default: no header lets another origin read the answer
        assert "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "https://x.org"}).headers
    with TestClient(create_app(recognizer, replace(SETTINGS, cors_origins=("https://x.org",)))) as c:
        r = c.get("/healthz", headers={"Origin": "https://x.org"})
        assert r.headers["access-control-allow-origin"] == "https://x.org"


def test_a_full_queue_answers_503_with_retry_after(recognizer, photos):
    started, release = threading.Event(), threading.Event()

    def slow(images):
        started.set()
        assert release.wait(30)
        return recognizer.leaf_probs(images)

    blocked = replace(recognizer)
    object.__setattr__(blocked, "leaf_probs", slow)
    settings = replace(SETTINGS, max_queue=4, max_files=2, max_batch=2, max_wait_ms=0)
    files = _files(("a.png", photos[0].read_bytes()), ("b.png", photos[1].read_bytes()))
    with TestClient(create_app(blocked, settings)) as c:
        answers = []
        first = threading.Thread(target=lambda: answers.append(c.post("/v1/predict", files=files).status_code))
        first.start()
        assert started.wait(30)  # 2 photos in the running batch, the queue is empty
        waiting = [threading.Thread(target=lambda: answers.append(c.post("/v1/predict", files=files).status_code))
                   for _ in range(2)]
        for t in waiting:
            t.start()
        deadline = time.monotonic() + 30
        while c.app.state.batcher.depth < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = c.post("/v1/predict", files=files[:1])
        release.set()
        for t in (first, *waiting):
            t.join(30)
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert sorted(answers) == [200, 200, 200]  # every queued request is answered
        assert 'kind="queue_full"} 1.0' in c.get("/metrics").text
