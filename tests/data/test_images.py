"""Safe image decoding: one ImageError per bad file, every mode to upright 8-bit RGB."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taxonlens.data.images import DEFAULT_MAX_PIXELS, iter_images, load_image, load_image_bytes
from taxonlens.errors import ImageError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _noise(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    Image.effect_noise(size, 60).convert("RGB").save(path)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` but whose data holds almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _cut(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _close(pixel: tuple[int, ...], expected: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, expected, strict=True))


# ---------------------------------------------------------------- failures
def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected words in the reason)."""
    (tmp / "folder.jpg").mkdir()
    (tmp / "empty.jpg").write_bytes(b"")
    (tmp / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp / "notes.png").write_text("not an image at all\n")
    return {
        "truncated jpeg": (_cut(_noise(tmp / "full.jpg"), tmp / "cut.jpg"), "truncated"),
        "truncated png": (_cut(_noise(tmp / "full.png"), tmp / "cut.png"), "truncated"),
        "random bytes": (tmp / "random.jpg", "not a recognised image format"),
        "zero bytes": (tmp / "empty.jpg", "empty file (0 bytes)"),
        "text file": (tmp / "notes.png", "not a recognised image format"),
        "bomb": (_png_header_only(tmp / "bomb.png", 40_000, 40_000), "decompression bomb"),
        "directory": (tmp / "folder.jpg", "is a directory"),
        "missing": (tmp / "missing.jpg", "no such file"),
    }


@pytest.mark.parametrize(
    "case", ["truncated jpeg", "truncated png", "random bytes", "zero bytes", "text file", "bomb", "directory", "missing"]
)
def test_bad_file_raises_image_error_with_reason(tmp_path: Path, case: str) -> None:
    path, reason = _bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert e.value.path == str(path)
    assert reason in e.value.reason
    assert str(e.value).startswith(f"{path}: ")


@pytest.mark.parametrize("case", ["truncated jpeg", "truncated png", "random bytes", "zero bytes", "text file", "bomb"])
def test_bytes_in_memory_fail_as_their_file_does(tmp_path: Path, case: str) -> None:
    path, reason = _bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as e:
        load_image_bytes(path.read_bytes(), "upload.jpg")
    assert e.value.path == "upload.jpg" and reason in e.value.reason


def test_bytes_in_memory_decode_as_their_file_does(tmp_path: Path) -> None:
    path = _noise(tmp_path / "a.png", (30, 20))
    assert np.array_equal(np.asarray(load_image_bytes(path.read_bytes(), "a.png")), np.asarray(load_image(path)))
    with pytest.raises(ImageError, match="30x20 = 600 pixels exceeds the limit of 599"):
        load_image_bytes(path.read_bytes(), "a.png", max_pixels=599)


def test_max_pixels_refuses_large_images(tmp_path: Path) -> None:
    path = _noise(tmp_path / "a.png", (30, 20))
    with pytest.raises(ImageError, match="30x20 = 600 pixels exceeds the limit of 599"):
        load_image(path, max_pixels=599)
    assert load_image(path, max_pixels=600).size == (30, 20)


def test_default_limit_is_max_pixels_not_pils_warning_threshold(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "big.png", 10_000, 10_000)  # 1e8 px: above PIL's 89 M warning
    assert 10_000 * 10_000 < DEFAULT_MAX_PIXELS
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert "truncated" in e.value.reason  # decoded (and found short), not refused for its size
    with pytest.raises(ImageError, match="exceeds the limit of 50000000"):
        load_image(path, max_pixels=50_000_000)


def test_iter_images_yields_errors_without_stopping(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    good = _noise(tmp_path / "good.png")
    paths = [good, *(p for p, _ in bad.values()), good]
    out = list(iter_images(paths))
    assert [p for p, _ in out] == [str(p) for p in paths]
    assert isinstance(out[0][1], Image.Image) and isinstance(out[-1][1], Image.Image)
    for (path, reason), (_, result) in zip(bad.values(), out[1:-1], strict=True):
        assert isinstance(result, ImageError) and reason in result.reason, path


# ---------------------------------------------------------------- orientation and modes
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), BLUE)
    img.paste(RED, (0, 0, 10, 10))  # top-left block
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert _close(out.getpixel((15, 5)), RED)  # the block is now top-right
    assert _close(out.getpixel((5, 5)), BLUE)


def test_grayscale(tmp_path: Path) -> None:
    Image.new("L", (7, 5), 128).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert (out.mode, out.size, out.getpixel((3, 2))) == ("RGB", (7, 5), (128, 128, 128))


def test_16_bit_grayscale(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 30000], [40000, 50000, 65535]], dtype=np.uint16)
    src = Image.fromarray(values)
    assert src.mode == "I;16"
    for name in ("g16.png", "g16.tif"):
        src.save(tmp_path / name)
        out = load_image(tmp_path / name)
        arr = np.asarray(out)
        assert out.mode == "RGB" and arr.shape == (2, 3, 3), name
        grey = arr[..., 0].ravel().astype(int)
        assert grey[0] == 0 and grey[-1] == 255 and np.all(np.diff(grey) > 0), (name, grey)


def test_rgba_transparency_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 3), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 0, 128))
    img.save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert (out.mode, out.size) == ("RGB", (4, 3))
    assert out.getpixel((0, 0)) == WHITE
    assert _close(out.getpixel((1, 0)), (127, 127, 127), tol=2)
    assert out.getpixel((2, 2)) == RED


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (5, 4), 1)
    img.putpalette([0, 0, 0, *RED] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.save(tmp_path / "p.png", transparency=0)
    with Image.open(tmp_path / "p.png") as src:
        assert src.mode == "P" and "transparency" in src.info
    out = load_image(tmp_path / "p.png")
    assert (out.mode, out.size) == ("RGB", (5, 4))
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((4, 3)) == RED


def test_cmyk(tmp_path: Path) -> None:
    img = Image.new("CMYK", (6, 2), (0, 255, 255, 0))  # red in CMYK
    img.putpixel((0, 0), (0, 0, 0, 0))  # white
    img.save(tmp_path / "c.tif")
    img.save(tmp_path / "c.jpg", quality=95)
    for name in ("c.tif", "c.jpg"):
        out = load_image(tmp_path / name)
        assert (out.mode, out.size) == ("RGB", (6, 2)), name
        assert _close(out.getpixel((5, 1)), RED), name
    assert load_image(tmp_path / "c.tif").getpixel((0, 0)) == WHITE
