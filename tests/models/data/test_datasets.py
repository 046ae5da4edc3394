"""Upload parsing and validation on real files, splits, and the built-ins."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import data as datasets
from models.data import DatasetError, ImageSet, LabelledTexts, TextCorpus, uploads
from models.data import builtin as builtins
from tests.conftest import DATA_DIR

REVIEWS = [("great phone", "pos"), ("awful", "neg"), ("love it", "pos"), ("broke", "neg")]


def write(tmp_path: Path, name: str, content: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def parse(tmp_path: Path, name: str, content: bytes | str) -> tuple[str, datasets.Data]:
    return uploads.parse_upload(write(tmp_path, name, content), name)


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    header = bytes([0, 0, 0x08, 3]) + np.array([n, h, w], dtype=">u4").tobytes()
    return gzip.compress(header + images.astype(np.uint8).tobytes())


# ---- accepted formats --------------------------------------------------------------------------


def test_text_corpus_with_bom_and_crlf(tmp_path: Path) -> None:
    fmt, data = parse(tmp_path, "corpus.txt", "\ufeffTo be,\r\nor not to be.\r\n")
    assert fmt == "txt" and isinstance(data, TextCorpus)
    assert data.text == "To be,\nor not to be.\n"
    assert datasets.kind_of(data) == "text"
    assert datasets.describe(data) == {
        "num_records": 21,
        "record": "character",
        "chars": 21,
        "lines": 2,
        "vocab_size": 11,
    }


def test_csv_with_header_extra_columns_and_quotes(tmp_path: Path) -> None:
    rows = "id,Text,label\n" + "".join(
        f'{i},"{t}, really",{lab}\n' for i, (t, lab) in enumerate(REVIEWS)
    )
    fmt, data = parse(tmp_path, "reviews.csv", rows)
    assert fmt == "csv" and isinstance(data, LabelledTexts)
    assert data.texts[0] == "great phone, really"
    assert data.label_names == ["neg", "pos"]
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [1, 0, 1, 0]
    meta = datasets.describe(data)
    assert meta["num_records"] == 4 and meta["label_counts"] == {"neg": 2, "pos": 2}


def test_headerless_tsv_like_the_uci_sentiment_files(tmp_path: Path) -> None:
    content = "".join(f'{t} "quoted   \t{1 if lab == "pos" else 0}\n' for t, lab in REVIEWS)
    fmt, data = parse(tmp_path, "s.tsv", content)
    assert fmt == "tsv" and isinstance(data, LabelledTexts)
    assert data.texts[0] == 'great phone "quoted' and data.label_names == ["0", "1"]


def test_jsonl_with_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    labels = [10, 2, 10, 2, 1, 1]
    lines = [json.dumps({"text": f"example {i}", "label": lab}) for i, lab in enumerate(labels)]
    fmt, data = parse(tmp_path, "x.jsonl", "\n".join(lines) + "\n\n")
    assert fmt == "jsonl" and isinstance(data, LabelledTexts)
    assert data.label_names == ["1", "2", "10"]
    assert data.labels.tolist() == [2, 1, 2, 1, 0, 0]


def test_npz_uint8_with_channel_axis_and_labels(tmp_path: Path) -> None:
    x = np.full((6, 8, 9, 1), 255, dtype=np.uint8)
    y = np.array([3, 5, 3, 5, 7, 7])
    fmt, data = parse(tmp_path, "imgs.npz", npz_bytes(x=x, y=y))
    assert fmt == "npz" and isinstance(data, ImageSet)
    assert data.images.shape == (6, 8, 9) and data.images.dtype == np.float32
    assert data.images.max() == 1.0
    assert data.label_names == ["3", "5", "7"] and data.labels.tolist() == [0, 1, 0, 1, 2, 2]
    meta = datasets.describe(data)
    assert meta["image_size"] == [8, 9] and meta["labelled"] is True


def test_npz_float_without_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((3, 5, 5)).astype(np.float64)
    _, data = parse(tmp_path, "imgs.npz", npz_bytes(x=x))
    assert isinstance(data, ImageSet) and data.labels is None and data.label_names is None
    assert datasets.describe(data)["labelled"] is False


def test_idx_gzip_by_name_and_by_magic_bytes(tmp_path: Path) -> None:
    images = np.arange(2 * 6 * 7).reshape(2, 6, 7) % 256
    fmt, data = parse(tmp_path, "train-images-idx3-ubyte.gz", idx_images(images))
    assert fmt == "idx" and isinstance(data, ImageSet) and data.images.shape == (2, 6, 7)
    assert np.allclose(data.images * 255, images)
    fmt, _ = parse(tmp_path, "images.bin", idx_images(images))  # unknown extension, gzip magic
    assert fmt == "idx"


def test_zip_of_png_folders_inside_a_top_folder(tmp_path: Path) -> None:
    black, white = np.zeros((6, 5), np.uint8), np.full((6, 5), 255, np.uint8)
    entries = {
        "digits/cat/a.png": png(black, "RGB"),
        "digits/cat/b.png": png(black, "RGBA"),
        "digits/dog/a.png": png(white),
        "digits/dog/b.PNG": png(white),
        "digits/.DS_Store": b"junk",
        "__MACOSX/digits/cat/._a.png": b"junk",
    }
    fmt, data = parse(tmp_path, "pets.zip", zip_bytes(entries))
    assert fmt == "zip" and isinstance(data, ImageSet)
    assert data.images.shape == (4, 6, 5) and data.label_names == ["cat", "dog"]
    assert data.images[data.labels == 1].min() == 1.0 and data.images[data.labels == 0].max() == 0


# ---- refused uploads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.txt", b"fine\nthen \xff bad", "not valid UTF-8: byte 0xff at offset 10 (line 2)"),
        ("a.txt", b" \n\t", "empty"),
        ("a.txt", b"ab\x00cd", "NUL byte at offset 2"),
        ("a.csv", "sentence,sentiment\nhi,pos\nho,neg\n", "needs `text` and `label` columns"),
        ("a.csv", "text,label\nhi,pos\nho,pos\n", "at least 2 distinct labels"),
        ("a.csv", "text,label\n", "a header but no rows"),
        ("a.csv", "text,label\nhi,pos\nho,pos\nhu,neg\n", "at least 2 examples; 1 have fewer"),
        ("a.csv", "text,label\nhi,pos\n,neg\n", "line 3: empty text"),
        ("a.csv", "text,label\nhi,pos,extra\n", "line 2: 3 columns, expected 2"),
        ("a.jsonl", '{"text": "hi", "label": 1}\n{"text": "ho"', "line 2: invalid JSON"),
        ("a.jsonl", '{"text": "hi", "label": true}', "line 1: `label` must be a string"),
        ("a.jsonl", '{"txt": "hi", "label": 1}', "line 1: `text` must be a non-empty string"),
        ("a.jsonl", "[1, 2]", "line 1: expected a JSON object, got list"),
        ("a.exe", b"MZ\x90\x00", "unsupported file type '.exe'; accepted: "),
    ],
)
def test_bad_text_uploads_say_what_is_wrong(
    tmp_path: Path, name: str, content: bytes | str, message: str
) -> None:
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(tmp_path, name, content)


def test_unknown_extension_is_its_own_error(tmp_path: Path) -> None:
    with pytest.raises(datasets.UnsupportedFormat, match=r"\.gz.*\.zip"):
        parse(tmp_path, "notes.docx", b"PK\x03\x04")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.zeros(3, np.int64)}, "needs an array named `x`"),
        ({"x": np.zeros((3, 2, 8), np.uint8)}, "images are 2x8; height and width must be 4..256"),
        ({"x": np.zeros((3, 300, 8), np.uint8)}, "images are 300x8"),
        ({"x": np.zeros((3, 8, 8, 3), np.uint8)}, r"got shape \(3, 8, 8, 3\)"),
        ({"x": np.zeros((0, 8, 8), np.uint8)}, "no images"),
        ({"x": np.full((2, 8, 8), 2.0)}, r"float pixels must be finite and in \[0, 1\]"),
        ({"x": np.zeros((2, 8, 8), np.int32)}, "must be uint8 or float"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(3, np.int64)}, "one label per image"),
        ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros(4, np.int64)}, "2 distinct labels"),
        ({"x": np.zeros((2, 8, 8), np.uint8), "y": np.zeros(2)}, "integers or strings"),
    ],
)
def test_bad_npz_uploads(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse(tmp_path, "a.npz", npz_bytes(**arrays))


def test_npz_with_a_pickled_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    x = np.empty(2, dtype=object)
    x[:] = [{"a": 1}, [2]]
    with pytest.raises(DatasetError, match="x: holds Python objects"):
        parse(tmp_path, "a.npz", npz_bytes(x=x))


def test_zip_bomb_is_refused_before_decompression(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(uploads, "MAX_UNCOMPRESSED_BYTES", 1024 * 1024)
    bomb = zip_bytes({"a/x.png": b"\0" * (2 * 1024 * 1024)})  # 2 MiB in ~2 KB
    assert len(bomb) < 10_000
    with pytest.raises(DatasetError, match="unpacks to 2097152 bytes, more than"):
        parse(tmp_path, "bomb.zip", bomb)
    with pytest.raises(DatasetError, match="npz archive unpacks to"):
        parse(tmp_path, "bomb.npz", npz_bytes(x=np.zeros((128, 128, 128), np.uint8)))
    gz = gzip.compress(bytes([0, 0, 8, 3]) + b"\0" * (2 * 1024 * 1024))
    with pytest.raises(DatasetError, match="IDX file unpacks to more than"):
        parse(tmp_path, "x-idx3-ubyte.gz", gz)


def test_a_small_archive_that_unpacks_100x_is_refused_before_decompression(
    tmp_path: Path,
) -> None:
    zeros = b"\0" * (8 * 1024 * 1024)  # 8 MiB in ~8 KB: far below the size limit, not the ratio
    with pytest.raises(DatasetError, match=r"more than 100x: refusing a likely decompression"):
        parse(tmp_path, "bomb.zip", zip_bytes({"a/x.png": zeros, "b/y.png": b"\0"}))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((128, 256, 256), np.uint8))
    with pytest.raises(DatasetError, match=r"npz archive unpacks to \d+ bytes from \d+"):
        parse(tmp_path, "bomb.npz", buffer.getvalue())
    gz = gzip.compress(bytes([0, 0, 8, 3]) + zeros)
    with pytest.raises(DatasetError, match=r"gzip stream of \d+ bytes unpacks to more than"):
        parse(tmp_path, "bomb-idx3-ubyte.gz", gz)
    compressible = np.tile(np.arange(28, dtype=np.uint8), (200, 28, 1))  # real data passes
    assert isinstance(parse(tmp_path, "ok-idx3-ubyte.gz", idx_images(compressible))[1], ImageSet)


@pytest.mark.parametrize(
    "name", ["../evil/x.png", "cat/../../x.png", "/etc/cat/x.png", "C:/cat/x.png", "cat\\x.png"]
)
def test_zip_entries_with_absolute_or_parent_paths_are_refused(tmp_path: Path, name: str) -> None:
    image = png(np.zeros((8, 8), np.uint8))
    entries = {"cat/1.png": image, "cat/2.png": image, "dog/1.png": image, name: image}
    with pytest.raises(DatasetError, match=r"absolute and `\.\.` paths have no place"):
        parse(tmp_path, "pets.zip", zip_bytes(entries))


@pytest.mark.parametrize("name", ["corpus.txt", "reviews.csv", "reviews.jsonl"])
def test_a_line_over_the_limit_is_refused_before_decoding(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "MAX_LINE_BYTES", 1000)
    content = "text,label\nhi,a\nho,a\n" + "x" * 1001 + ",b\nhu,b\n"
    with pytest.raises(DatasetError, match="line 4 is 1003 bytes long; lines may have at most"):
        parse(tmp_path, name, content)
    ok = "text,label\nhi,a\nho,a\n" + "x" * 990 + ",b\nhu,b\n"
    if name != "reviews.jsonl":
        parse(tmp_path, name, ok)


def test_zip_with_too_many_entries(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(uploads, "MAX_ZIP_ENTRIES", 10)
    entries = {f"a/{i}.png": b"" for i in range(11)}
    with pytest.raises(DatasetError, match="has 11 entries, at most 10"):
        parse(tmp_path, "many.zip", zip_bytes(entries, zipfile.ZIP_STORED))


@pytest.mark.parametrize(
    ("side", "message"),
    [
        (5000, "5000x5000 pixels; height and width must be 4..256"),  # checked from the header
        (60000, "not a readable PNG"),  # 3.6 G pixels: Pillow's decompression-bomb guard
    ],
)
def test_png_with_a_huge_declared_size_is_refused_before_decoding(
    tmp_path: Path, side: int, message: str
) -> None:
    small = png(np.zeros((2, 2), np.uint8))  # a valid PNG whose header then claims side x side
    ihdr = bytearray(small[:33])
    ihdr[16:24] = side.to_bytes(4, "big") * 2
    ihdr[29:33] = zlib.crc32(bytes(ihdr[12:29])).to_bytes(4, "big")
    forged = bytes(ihdr) + small[33:]
    entries = {"a/x.png": forged, "a/y.png": forged, "b/x.png": forged}
    with pytest.raises(DatasetError, match=f"a/x.png: .*{message}"):
        parse(tmp_path, "big.zip", zip_bytes(entries))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            {"a/1.png": "8x8", "a/2.png": "8x8", "b/1.png": "8x9", "b/2.png": "8x8"},
            "b/1.png: 8x9 pixels, but the first image is 8x8; all images must be the same size",
        ),
        ({"a/1.png": "8x8", "a/2.png": "8x8", "b/1.jpg": "8x8"}, "b/1.jpg: not a .png file"),
        ({"1.png": "8x8", "2.png": "8x8"}, "1.png: expected one folder per label"),
        ({"a/1.png": "8x8", "a/2.png": "8x8"}, "at least 2 distinct labels"),
        ({"a/1.png": "8x8", "a/2.png": "8x8", "b/1.png": "junk"}, "b/1.png: not a readable PNG"),
        ({"a/1.png": "2x8", "b/1.png": "2x8"}, "a/1.png: 2x8 pixels; height and width"),
        ({}, "holds no images"),
    ],
)
def test_bad_png_zips(tmp_path: Path, entries: dict[str, str], message: str) -> None:
    def content(spec: str) -> bytes:
        if spec == "junk":
            return b"\x89PNG not really"
        h, w = map(int, spec.split("x"))
        return png(np.zeros((h, w), np.uint8))

    archive = zip_bytes({name: content(spec) for name, spec in entries.items()})
    with pytest.raises(DatasetError, match=message):
        parse(tmp_path, "a.zip", archive)


def test_corrupt_archives_and_idx(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a readable zip file"):
        parse(tmp_path, "a.zip", b"PK not a zip at all")
    with pytest.raises(DatasetError, match="not a readable npz file"):
        parse(tmp_path, "a.npz", b"nope")
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        parse(tmp_path, "a.gz", gzip.compress(b"\0\0\x08\x03" + b"\0" * 100)[:20])
    with pytest.raises(DatasetError, match="IDX labels file"):
        parse(tmp_path, "t-labels-idx1-ubyte.gz", gzip.compress(b"\0\0\x08\x01\0\0\0\x02ab"))
    with pytest.raises(DatasetError, match="truncated"):
        parse(tmp_path, "t.idx", b"\0\0\x08\x03" + b"\0\0\0\x09" * 3 + b"\0" * 10)


def test_load_file_reparses_a_stored_upload(tmp_path: Path) -> None:
    path = write(tmp_path, "stored.bin", "text,label\na,x\nb,y\nc,x\nd,y\n")
    data = uploads.load_file(path, "csv")
    assert isinstance(data, LabelledTexts) and data.texts == ["a", "b", "c", "d"]
    with pytest.raises(DatasetError, match="unknown dataset format 'doc'"):
        uploads.load_file(path, "doc")


# ---- splits and built-ins ----------------------------------------------------------------------


def test_split_text_cuts_characters_in_order() -> None:
    train, test = datasets.split(TextCorpus("abcdefghij"), 0.2)
    assert (train.text, test.text) == ("abcdefgh", "ij")  # type: ignore[union-attr]
    with pytest.raises(DatasetError, match="too short"):
        datasets.split(TextCorpus("a"), 0.2)
    with pytest.raises(DatasetError, match="test_fraction"):
        datasets.split(TextCorpus("abc"), 1.0)


def test_split_labelled_is_stratified_seeded_and_falls_back() -> None:
    labels = np.array([0] * 40 + [1] * 10, dtype=np.int64)
    data = LabelledTexts([f"t{i}" for i in range(50)], labels, ["a", "b"])
    train, test = datasets.split(data, 0.2, seed=1)
    assert isinstance(train, LabelledTexts) and isinstance(test, LabelledTexts)
    assert len(train.texts) == 40 and len(test.texts) == 10
    assert np.bincount(test.labels).tolist() == [8, 2]  # stratified
    assert sorted(train.texts + test.texts) == sorted(data.texts)
    again, _ = datasets.split(data, 0.2, seed=1)
    assert again.texts == train.texts  # type: ignore[union-attr]
    # one class of 2 cannot be stratified into a 3-example test set of 3 classes: plain split
    tiny = LabelledTexts(list("abcdefg"), np.array([0, 0, 0, 1, 1, 2, 2]), ["x", "y", "z"])
    train, test = datasets.split(tiny, 0.2)
    assert len(train.texts) + len(test.texts) == 7  # type: ignore[union-attr]


def test_split_images_keeps_labels_aligned() -> None:
    images = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 4, 4), np.float32)
    data = ImageSet(images / 10, np.arange(10) % 2, ["even", "odd"])
    _, test = datasets.split(data, 0.3, seed=0)
    assert isinstance(test, ImageSet) and test.labels is not None
    assert len(test.images) == 3 and test.label_names == ["even", "odd"]
    for image, label in zip(test.images, test.labels, strict=True):
        assert round(float(image[0, 0]) * 10) % 2 == label
    unlabelled, _ = datasets.split(ImageSet(images, None, None), 0.5)
    assert isinstance(unlabelled, ImageSet) and unlabelled.labels is None
    with pytest.raises(DatasetError, match="cannot be split"):
        datasets.split(ImageSet(images[:1], None, None))


def test_builtin_digits_uses_the_official_split() -> None:
    digits = builtins.BUILTIN_DATASETS["digits"]
    assert digits.kind == "images" and digits.available(Path("/nonexistent"))
    train, test = builtins.load_split("builtin", None, "digits", Path("/nonexistent"), 0.5, 7)
    assert isinstance(train, ImageSet) and isinstance(test, ImageSet)
    assert train.images.shape == (1437, 8, 8) and len(test.images) == 360
    assert train.label_names == [str(i) for i in range(10)]
    for name in ("tinyshakespeare", "sentiment", "mnist"):
        assert not builtins.BUILTIN_DATASETS[name].available(Path("/nonexistent"))
    with pytest.raises(DatasetError, match="no data under"):
        builtins.load_split("builtin", None, "mnist", Path("/nonexistent"), 0.2, 0)
    with pytest.raises(DatasetError, match="unknown built-in"):
        builtins.load_split("builtin", None, "cifar", Path("/nonexistent"), 0.2, 0)


@pytest.mark.skipif(not (DATA_DIR / "sentiment").is_dir(), reason="no shared data")
def test_builtins_from_the_shared_data() -> None:
    for builtin in builtins.BUILTIN_DATASETS.values():
        assert builtin.available(DATA_DIR)
    train, test = builtins.BUILTIN_DATASETS["sentiment"].load(DATA_DIR)
    assert isinstance(train, LabelledTexts) and isinstance(test, LabelledTexts)
    assert (len(train.texts), len(test.texts)) == (2400, 600)
    assert train.label_names == ["negative", "positive"] and train.labels.dtype == np.int64
    train, test = builtins.BUILTIN_DATASETS["tinyshakespeare"].load(DATA_DIR)
    assert isinstance(train, TextCorpus) and len(train.text) == int(1_115_394 * 0.9)
    train, test = builtins.BUILTIN_DATASETS["mnist"].load(DATA_DIR)
    assert isinstance(train, ImageSet) and train.images.shape == (8000, 28, 28)
    # the UCI file itself is an accepted upload: a headerless TSV
    fmt, data = uploads.parse_upload(DATA_DIR / "sentiment" / "yelp_labelled.txt", "yelp.tsv")
    assert fmt == "tsv" and datasets.describe(data)["label_counts"] == {"0": 500, "1": 500}


def test_load_split_of_an_upload_is_a_seeded_split(tmp_path: Path) -> None:
    path = write(tmp_path, "c.txt", "x" * 100)
    train, test = builtins.load_split("txt", path, "c", tmp_path, 0.25, 0)
    assert len(train.text) == 75 and len(test.text) == 25  # type: ignore[union-attr]
    with pytest.raises(DatasetError, match="no stored file"):
        builtins.load_split("txt", None, "c", tmp_path, 0.25, 0)
