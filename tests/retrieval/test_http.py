import pytest
from fastapi.testclient import TestClient

from cpcl.retrieval.http import build_app
from cpcl.retrieval.retriever import load_retriever
from cpcl.retrieval.service import MAX_K, MAX_QUERY_CHARS, SearchService, build_index


@pytest.fixture(scope="module")
def client(gallery, tiny_checkpoint, tmp_path_factory):
    retriever = load_retriever(tiny_checkpoint)
    index = build_index(retriever, gallery, tmp_path_factory.mktemp("http") / "idx")
    service = SearchService(retriever, index)
    return TestClient(build_app(service, examples=["a man in red"])), service


def test_page_info_and_search(client):
    http, service = client
    page = http.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text
    info = http.get("/api/info").json()
    assert info["images"] == len(service.index) and info["examples"] == ["a man in red"]
    assert "checkpoint" not in info["model"]  # the server's file layout is not published
    body = http.get("/api/search", params={"q": "a woman in a red coat", "k": 5}).json()
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5]
    expected = service.search("a woman in a red coat", 5)
    assert [h["path"] for h in body["hits"]] == [h.path for h in expected.hits]
    image = http.get(body["hits"][0]["url"])
    assert image.status_code == 200
    assert image.content == service.index.absolute_path(body["hits"][0]["item"]).read_bytes()


@pytest.mark.parametrize("params, needle", [
    ({"q": ""}, "q: String should have at least 1 character"),
    ({"q": "   "}, "the query is empty"),
    ({"q": "x" * (MAX_QUERY_CHARS + 1)}, f"at most {MAX_QUERY_CHARS} characters"),
    ({"q": "a man", "k": 0}, "k: Input should be greater than or equal to 1"),
    ({"q": "a man", "k": MAX_K + 1}, f"k: Input should be less than or equal to {MAX_K}"),
    ({"q": "a man", "k": "ten"}, "k: Input should be a valid integer"),
    ({}, "q: Field required"),
])
def test_malformed_search_requests_get_a_readable_422(client, params, needle):
    response = client[0].get("/api/search", params=params)
    assert response.status_code == 422
    assert needle in response.json()["detail"]


@pytest.mark.parametrize("path", [
    "/images/../../../../etc/passwd",
    "/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/images/..%2F..%2Freid_raw.json",
    "/images//etc/passwd",
    "/images/%2Fetc%2Fpasswd",
    "/images/reid_raw.json",
    "/images/",
])
def test_image_endpoint_serves_only_indexed_files(client, path):
    response = client[0].get(path)
    assert response.status_code == 404
    assert b"root:" not in response.content


def test_an_indexed_file_replaced_by_a_link_out_of_the_root_is_not_served(gallery, tiny_checkpoint, tmp_path):
    import shutil

    root = tmp_path / "g"
    root.mkdir()
    for p in gallery[:3]:
        shutil.copy(p, root / p.name)
    retriever = load_retriever(tiny_checkpoint)
    index = build_index(retriever, root, tmp_path / "idx")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    target = root / index.paths[0]
    target.unlink()
    target.symlink_to(secret)
    http = TestClient(build_app(SearchService(retriever, index)))
    assert http.get(f"/images/{index.paths[0]}").status_code == 404
    assert http.get(f"/images/{index.paths[1]}").status_code == 200


def test_api_docs_work_offline(client):
    """The API page is served by the package and reads /openapi.json: nothing is fetched from another site."""
    page = client[0].get("/api/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text and "/openapi.json" in page.text
    spec = client[0].get("/openapi.json").json()
    assert {"/api/search", "/api/info"} <= set(spec["paths"])
    params = {p["name"]: p for p in spec["paths"]["/api/search"]["get"]["parameters"]}
    assert params["k"]["schema"]["maximum"] == 100 and params["q"]["required"]
