"""Hostile uploads against a real server: each gets a clear 4xx in the one error shape, and
leaves nothing behind, neither a file under state_dir/datasets (its tmp dir included) nor a
row in the database; nothing in them is ever unpickled."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.e2e.server import Server

pytestmark = pytest.mark.e2e
MB = 1024 * 1024


class Exploit:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def png(side: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(side: int) -> bytes:
    """A valid 2x2 PNG whose header claims side x side pixels (CRC fixed up)."""
    small = png(2)
    header = bytearray(small[:33])
    header[16:24] = side.to_bytes(4, "big") * 2
    header[29:33] = zlib.crc32(bytes(header[12:29])).to_bytes(4, "big")
    return bytes(header) + small[33:]


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def declaring(archive: bytes, size: int) -> bytes:
    """The archive with its first entry's uncompressed size forged in both headers."""
    forged = bytearray(archive)
    struct.pack_into("<I", forged, forged.find(b"PK\x01\x02") + 24, size)
    struct.pack_into("<I", forged, forged.find(b"PK\x03\x04") + 22, size)
    return bytes(forged)


def pets(**extra: bytes) -> dict[str, bytes]:
    """A valid zip's entries: two labels, two PNGs each."""
    return {"cat/1.png": png(), "cat/2.png": png(), "dog/1.png": png(), "dog/2.png": png(), **extra}


def idx_gz() -> bytes:
    header = bytes([0, 0, 8, 3]) + np.array([4, 8, 8], ">u4").tobytes()
    return gzip.compress(header + np.arange(256, dtype=np.uint8).tobytes())


def corrupt(data: bytes) -> bytes:
    """Flips bytes in the middle of a gzip stream (its CRC no longer matches)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 8]) + data[middle + 8 :]


def object_npz(marker: Path) -> bytes:
    x = np.empty(2, dtype=object)
    x[:] = [Exploit(marker), Exploit(marker)]
    buffer = io.BytesIO()
    np.savez(buffer, x=x)  # pickles the objects; loading them would run Exploit.__reduce__
    return buffer.getvalue()


HOSTILE: dict[str, tuple[str, Callable[[Path], bytes], int, str]] = {
    "truncated gzip": ("t-idx3-ubyte.gz", lambda _: idx_gz()[:40], 422, "corrupt or truncated"),
    "corrupt gzip": ("c-idx3-ubyte.gz", lambda _: corrupt(idx_gz()), 422, "corrupt or truncated"),
    "gzip bomb": (
        "b-idx3-ubyte.gz",
        lambda _: gzip.compress(bytes([0, 0, 8, 3]) + bytes(64 * MB)),
        422,
        "likely decompression bomb",
    ),
    "zip bomb by ratio": (
        "bomb.zip",
        lambda _: zip_of(pets(**{"cat/3.png": bytes(64 * MB)})),
        422,
        "more than 100x: refusing a likely decompression bomb",
    ),
    "zip bomb by declared size": (
        "huge.zip",
        lambda _: declaring(zip_of(pets()), 600 * MB),
        422,
        "more than the 536870912-byte limit",
    ),
    "zip entry lying about its size": (
        "liar.zip",
        lambda _: declaring(zip_of(pets()), 10),
        422,
        "Bad CRC-32",
    ),
    "zip entry with ..": (
        "dots.zip",
        lambda _: zip_of(pets(**{"../../etc/cron.d/x.png": png()})),
        422,
        "absolute and `..` paths",
    ),
    "zip entry with an absolute path": (
        "abs.zip",
        lambda _: zip_of(pets(**{"/tmp/cat/x.png": png()})),
        422,
        "absolute and `..` paths",
    ),
    "non-UTF-8 text": ("latin1.txt", lambda _: "café\n".encode("latin-1"), 422, "not valid UTF-8"),
    "one 100 MB line": ("line.txt", lambda _: b"x" * (100 * MB) + b"\n", 422, "line 1 is"),
    "PNG claiming 5000x5000": (
        "big.zip",
        lambda _: zip_of(pets(**{"cat/3.png": png_claiming(5000)})),
        422,
        "5000x5000 pixels",
    ),
    "PNG claiming 60000x60000": (
        "bomb-png.zip",
        lambda _: zip_of(pets(**{"cat/3.png": png_claiming(60000)})),
        422,
        "not a readable PNG",
    ),
    "CSV row missing a column": (
        "short.csv",
        lambda _: b"text,label\nhi,pos\nho\nhu,neg\nha,neg\nhe,pos\n",
        422,
        "line 3: 1 columns, expected 2",
    ),
    "CSV row with an extra column": (
        "long.csv",
        lambda _: b"text,label\nhi,pos\nho,pos,more\nhu,neg\nha,neg\n",
        422,
        "line 3: 3 columns, expected 2",
    ),
    "npz of pickled objects": ("objects.npz", object_npz, 422, "holds Python objects"),
    "an executable": ("tool.exe", lambda _: b"MZ\x90\x00" + bytes(100), 415, "unsupported"),
}


def stored(srv: Server) -> tuple[set[str], int]:
    """Every file under state_dir/datasets, and how many datasets the database holds."""
    root = Path(srv.state_dir) / "datasets"
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    return files, srv.client.get("/datasets").json()["count"]


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_upload_is_refused_and_leaves_nothing_behind(
    server: Server, tmp_path: Path, case: str
) -> None:
    filename, make, status, message = HOSTILE[case]
    marker = tmp_path / "pwned"
    content = make(marker)
    before = stored(server)
    response = server.client.post("/datasets", files={"file": (filename, content)}, timeout=120)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert message in error["message"], error
    assert stored(server) == before
    assert not marker.exists()


def test_a_good_upload_after_them_still_works(server: Server) -> None:
    _, count = stored(server)
    response = server.client.post("/datasets", files={"file": ("pets.zip", zip_of(pets()))})
    assert response.status_code in (200, 201), response.text
    after, after_count = stored(server)
    assert not any(name.startswith("tmp/") for name in after)
    assert f"{response.json()['sha256']}.zip" in after
    assert after_count == count + (response.status_code == 201)
