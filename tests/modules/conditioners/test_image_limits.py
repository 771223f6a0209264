"""Images that declare huge sizes are refused before decoding, with a clear error (issue 16, items 10 and 13)."""
import struct
import tracemalloc
import zlib

import pytest
import torch
from PIL import Image

from audiocraft_patched.modules.conditioners import vision
from audiocraft_patched.modules.conditioners.vision import load_image


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that declares width x height RGB pixels but holds a few bytes of data (a 'bomb' shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_12000_square_png_is_refused_from_its_header(tmp_path):
    png_header_only(tmp_path / "big.png", 12000, 12000)  # above our limit, below Pillow's error threshold
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"big\.png.*12000 x 12000 = 144000000 pixels, the limit is 67108864"):
        load_image(tmp_path / "big.png", where="images[0]")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # never decoded (decoding would take 430 MB)


def test_pillow_decompression_bomb_error_becomes_a_clear_error(tmp_path):
    png_header_only(tmp_path / "bomb.png", 20000, 20000)  # past 2x Pillow's MAX_IMAGE_PIXELS: it raises itself
    with pytest.raises(ValueError, match=r"bomb\.png' is too large to decode safely.*downscale"):
        load_image(tmp_path / "bomb.png")


def test_in_memory_images_obey_the_same_limit(monkeypatch):
    monkeypatch.setattr(vision, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match="11 x 10 = 110 pixels, the limit is 100"):
        load_image(Image.new("RGB", (11, 10)))
    with pytest.raises(ValueError, match="10 x 11 = 110 pixels"):
        load_image(torch.zeros(3, 11, 10, dtype=torch.uint8))
    assert load_image(torch.zeros(3, 10, 10, dtype=torch.uint8)).size == (10, 10)
