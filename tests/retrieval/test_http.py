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
    ({"q": "..."}, "has no word (no letter or digit)"),
    ({"q": "!!!"}, "has no word"),
    ({"q": "\U0001F600"}, "has no word"),
    ({"q": "\u200b"}, "has no word"),
    ({"q": "\u200b\u200b \u2060"}, "has no word"),
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


def test_a_token_guards_every_path_but_healthz(client):
    _, service = client
    token = "s3cret-token"
    http = TestClient(build_app(service, token=token))
    hit = http.get("/api/search", params={"q": "a man", "k": 1}, headers={"Authorization": f"Bearer {token}"})
    assert hit.status_code == 200
    image = hit.json()["hits"][0]["url"]
    assert http.get("/healthz").status_code == 200
    for path in ("/", "/api/docs", "/api/info", "/api/search?q=a+man", image, "/openapi.json", "/nothing/here"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            answer = http.get(path, headers=headers)
            assert answer.status_code == 401, (path, headers)
            assert "Authorization: Bearer TOKEN" in answer.text and "/?token=TOKEN" in answer.text
    assert http.get("/api/info", headers={"Authorization": f"bearer {token}"}).status_code == 200
    assert http.get("/?token=wrong", follow_redirects=False).status_code == 401

    # a browser's first visit trades the token for a cookie and drops it from the address
    first = http.get(f"/?token={token}", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert "cpcl_token=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert http.get("/").status_code == 200 and 'id="query"' in http.get("/").text
    assert http.get("/api/search", params={"q": "a man", "k": 1}).json()["hits"][0]["url"] == image
    assert http.get(image).status_code == 200
    http.cookies.clear()
    assert http.get(image).status_code == 401


def test_the_serve_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch, capsys):
    from cpcl.cli import main

    monkeypatch.delenv("CPCL_SERVE_TOKEN", raising=False)
    for content, needle in (("", "expected one token without spaces"), ("two words", "expected one token"),
                            (None, "cannot read it"), ("x", "a token of 1 characters is guessed in moments"),
                            ("clé-secrète-de-vingt-caractères", "characters an Authorization header cannot carry")):
        token_file = tmp_path / "token.txt"
        token_file.unlink(missing_ok=True)
        if content is not None:
            token_file.write_text(content)
        # refused before the index is opened: the index need not exist
        assert main(["serve", str(tmp_path / "no-index"), "--token-file", str(token_file)]) == 2
        err = capsys.readouterr().err
        assert f"--token-file {token_file}: " in err and needle in err and err.count("\n") == 1, err
    for value in ("a b", "   "):  # set but blank: refused, never served without a token
        monkeypatch.setenv("CPCL_SERVE_TOKEN", value)
        assert main(["serve", str(tmp_path / "no-index")]) == 2
        assert "$CPCL_SERVE_TOKEN: expected one token" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_serving(tmp_path, capsys):
    import socket

    from cpcl.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "no-index"), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--host 127.0.0.1 --port {port}: cannot listen there" in err and "serving" not in err
