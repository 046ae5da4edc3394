"""POST /datasets, GET /datasets and GET /datasets/{id} on the real app, files and database."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.errors import InvalidInput, NotFound
from app.main import create_app
from app.tables import Dataset
from tests.conftest import DATA_DIR, make_settings

LABELLED = [("a fine phone", "pos"), ("it broke", "neg"), ("love it", "pos"), ("awful", "neg")]


def upload(client: TestClient, filename: str, content: bytes | str, **form: str):  # type: ignore[no-untyped-def]
    data = content.encode() if isinstance(content, str) else content
    return client.post("/datasets", files={"file": (filename, data)}, data=form)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_files() -> dict[str, bytes | str]:
    npz = io.BytesIO()
    np.savez(npz, x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 0, 1]))
    idx = bytes([0, 0, 8, 3]) + np.array([3, 6, 5], ">u4").tobytes() + bytes(90)
    pngs = io.BytesIO()
    with zipfile.ZipFile(pngs, "w") as archive:
        for label in ("cat", "dog"):
            for i in range(2):
                archive.writestr(f"{label}/{i}.png", png(np.full((7, 7), i * 9, np.uint8)))
    return {
        "api-corpus.txt": "Now is the winter of our discontent\n",
        "api-reviews.csv": "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in LABELLED),
        "api-reviews.tsv": "".join(f"{t}\t{lab}\n" for t, lab in LABELLED),
        "api-reviews.jsonl": "".join(
            json.dumps({"text": t, "label": lab}) + "\n" for t, lab in LABELLED
        ),
        "api-images.npz": npz.getvalue(),
        "api-images-idx3-ubyte.gz": gzip.compress(idx),
        "api-pets.zip": pngs.getvalue(),
    }


def test_upload_each_format_then_list_and_get(client: TestClient) -> None:
    expected = {
        "api-corpus.txt": ("txt", "text", 36),
        "api-reviews.csv": ("csv", "labelled-text", 4),
        "api-reviews.tsv": ("tsv", "labelled-text", 4),
        "api-reviews.jsonl": ("jsonl", "labelled-text", 4),
        "api-images.npz": ("npz", "images", 4),
        "api-images-idx3-ubyte.gz": ("idx", "images", 3),
        "api-pets.zip": ("zip", "images", 4),
    }
    ids = {}
    for filename, content in sample_files().items():
        response = upload(client, filename, content)
        assert response.status_code == 201, response.text
        body = response.json()
        fmt, kind, records = expected[filename]
        assert (body["format"], body["kind"], body["num_records"]) == (fmt, kind, records)
        assert body["name"] == filename and body["builtin"] is False
        assert len(body["sha256"]) == 64 and body["size_bytes"] > 0
        ids[filename] = body["id"]
    csv = client.get(f"/datasets/{ids['api-reviews.csv']}").json()
    assert csv["meta"]["labels"] == ["neg", "pos"]
    assert csv["meta"]["label_counts"] == {"neg": 2, "pos": 2}
    pets = client.get(f"/datasets/{ids['api-pets.zip']}").json()
    assert pets["meta"]["image_size"] == [7, 7] and pets["meta"]["labels"] == ["cat", "dog"]
    listing = client.get("/datasets").json()
    assert listing["count"] == len(listing["data"])
    assert set(ids.values()) <= {d["id"] for d in listing["data"]}


def test_stored_file_is_content_addressed_and_reparses(client: TestClient) -> None:
    from models.data.uploads import load_file

    body = upload(client, "stored.txt", "stored bytes, stored once\n").json()
    state_dir = client.app.state.settings.state_dir  # type: ignore[attr-defined]
    path = state_dir / "datasets" / f"{body['sha256']}.txt"
    assert path.read_text() == "stored bytes, stored once\n"
    dataset = client.app.state.datasets.get(body["id"])  # type: ignore[attr-defined]
    assert client.app.state.datasets.path_of(dataset) == path  # type: ignore[attr-defined]
    assert load_file(path, body["format"]).text == "stored bytes, stored once\n"  # type: ignore[union-attr]
    assert list((state_dir / "datasets" / "tmp").iterdir()) == []  # no temporary leftovers


def test_the_same_file_twice_is_the_same_dataset(client: TestClient) -> None:
    content = "text,label\nsame,a\nfile,b\ntwice,a\nhere,b\n"
    first = upload(client, "first.csv", content, name="my reviews")
    assert first.status_code == 201 and first.json()["name"] == "my reviews"
    again = upload(client, "renamed.csv", content, name="other name")
    assert again.status_code == 200
    assert again.json() == first.json()
    named = client.app.state.datasets.resolve("my reviews")  # type: ignore[attr-defined]
    assert named.id == first.json()["id"]


def test_a_concurrent_equal_upload_returns_the_row_that_won(client: TestClient) -> None:
    service = client.app.state.datasets  # type: ignore[attr-defined]
    won = upload(client, "race.txt", "raced\n").json()
    # The loser got past the sha256 lookup before the winner committed: the unique index says no.
    loser = Dataset(
        name="late", kind="text", format="txt", sha256=won["sha256"], size_bytes=6, path="x"
    )
    dataset, created = service._insert(loser)
    assert not created and dataset.id == won["id"] and dataset.name == "race.txt"


def test_a_name_shared_by_several_uploads_needs_the_id(client: TestClient) -> None:
    service = client.app.state.datasets  # type: ignore[attr-defined]
    ids = [upload(client, "t.txt", f"text {i}\n", name="twin").json()["id"] for i in range(2)]
    with pytest.raises(InvalidInput, match=r"2 datasets are named 'twin' .*refer to one by its id"):
        service.resolve("twin")
    assert service.resolve(str(ids[1])).id == ids[1] and service.resolve("digits").builtin
    with pytest.raises(NotFound):
        service.resolve("no such dataset")


def test_a_file_over_the_json_body_limit_is_still_accepted(client: TestClient) -> None:
    big = "To be, or not to be: that is the question.\n" * 3000  # 129 KB > max_body_bytes (64 KB)
    response = upload(client, "big.txt", big)
    assert response.status_code == 201 and response.json()["size_bytes"] == len(big)


@pytest.mark.parametrize(
    ("filename", "content", "status", "code", "message"),
    [
        ("data.exe", b"MZ\x90\x00", 415, "unsupported_format", "accepted: .csv, .gz, .idx"),
        ("r.csv", "sentence,sentiment\nhi,pos\n", 422, "invalid_dataset", "`text` and `label`"),
        ("r.csv", "text,label\nhi,pos\nho,pos\n", 422, "invalid_dataset", "2 distinct labels"),
        (
            "c.txt",
            b"ok\n\xc3\x28",
            422,
            "invalid_dataset",
            "not valid UTF-8: byte 0xc3 at offset 3",
        ),
        ("i.npz", b"PK\x03\x04 broken", 422, "invalid_dataset", "not a readable npz file"),
        ("", b"abc", 422, "validation_error", ""),
    ],
)
def test_bad_uploads_say_what_is_wrong(
    client: TestClient, filename: str, content: bytes | str, status: int, code: str, message: str
) -> None:
    response = upload(client, filename, content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and message in error["message"]


def test_missing_file_field_and_unknown_id(client: TestClient) -> None:
    response = client.post("/datasets", data={"name": "x"})
    assert response.status_code == 422 and response.json()["error"]["message"].startswith("file")
    missing = client.get("/datasets/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert client.get("/datasets/abc").status_code == 422


def test_builtins_are_listed(client: TestClient) -> None:
    builtins = {d["name"]: d for d in client.get("/datasets").json()["data"] if d["builtin"]}
    digits = builtins["digits"]
    assert (digits["kind"], digits["format"], digits["num_records"]) == ("images", "builtin", 1797)
    assert digits["meta"]["image_size"] == [8, 8]
    assert digits["meta"]["splits"] == {"train": 1437, "test": 360}
    if (DATA_DIR / "sentiment").is_dir():
        assert builtins["sentiment"]["meta"]["labels"] == ["negative", "positive"]
        assert builtins["tinyshakespeare"]["kind"] == "text"
        assert builtins["mnist"]["meta"]["splits"] == {"train": 8000, "test": 2000}
    # registering again at startup is a no-op
    assert client.app.state.datasets.sync_builtin() == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def bare() -> Iterator[TestClient]:
    """The app's middleware and auth without its lifespan: no worker needed for refusals."""
    settings = make_settings(
        Path("/nonexistent"),
        max_upload_bytes=4096,
        api_keys="reader-key-123:read,admin-key-456:admin",
    )
    yield TestClient(create_app(settings), raise_server_exceptions=False)


def test_too_large_upload_is_413(bare: TestClient) -> None:
    admin = {"Authorization": "Bearer admin-key-456"}
    response = bare.post("/datasets", files={"file": ("big.txt", b"x" * 5000)}, headers=admin)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["details"] == {"max_bytes": 4096}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        yield b"--b\r\nContent-Disposition: form-data; name=file; filename=a.txt\r\n\r\n"
        for _ in range(10):
            yield b"y" * 1000

    streamed = bare.post(
        "/datasets",
        content=chunks(),
        headers={**admin, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "payload_too_large"


def test_upload_needs_admin_scope(bare: TestClient) -> None:
    files = {"file": ("a.txt", b"hello")}
    assert bare.post("/datasets", files=files).status_code == 401
    reader = {"Authorization": "Bearer reader-key-123"}
    response = bare.post("/datasets", files=files, headers=reader)
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


HOSTILE = ["\x1b[2Jwiped", "title\x1b]0;pwned\x07", "bell\x07", "tab\there", "del\x7f", "c1\x9b2J"]
HOSTILE += ["rtl\u202eexe.txt", "isolate\u2066x", "line\u2028break"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_names_with_control_characters_are_refused(client: TestClient, bad: str) -> None:
    """A name reaches terminals (the CLI, logs, a curl): no escape sequence may be stored in
    one, whether it is given as `name`, comes from the file name, or names a label."""
    corpus = f"a corpus named {bad!r}\n"
    named = upload(client, "fine.txt", corpus, name=bad)
    assert named.status_code == 422, named.text
    assert named.json()["error"]["code"] == "invalid_input"
    assert "control character" in named.json()["error"]["message"]
    # by hand: httpx percent-encodes most controls in a file name, a hostile client need not
    part = f'Content-Disposition: form-data; name="file"; filename="{bad}.txt"\r\n\r\n'
    body = f"--B\r\n{part}{corpus}\r\n--B--\r\n".encode()
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    from_file = client.post("/datasets", content=body, headers=headers)
    assert from_file.status_code == 422, from_file.text
    rows = "text,label\n" + "".join(f"t{i},{bad if i % 2 else 'ok'}\n" for i in range(4))
    labels = upload(client, "labels.csv", rows)
    assert labels.status_code == 422 and "label" in labels.json()["error"]["message"], labels.text
    job = {"kind": "text-ngram", "dataset": "tinyshakespeare", "name": bad}
    assert client.post("/train", json=job).status_code == 422
    names = [d["name"] for d in client.get("/datasets").json()["data"]]
    assert not any(bad in name for name in names)
