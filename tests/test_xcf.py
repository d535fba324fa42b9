"""XCF reading/writing pieces and GIMP's JPEG-settings parasite, without GIMP (GIMP itself: test_gimp_integration)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from fbcnn_plugins.core.qf_estimation import LUMA_TABLE, ijg_tables
from fbcnn_plugins.gimp.jpeg_settings import header_from_jpeg_settings
from fbcnn_plugins.files.images import ImageFileError
from fbcnn_plugins.files.xcf import (
    _decode_rle, _encode_rle, _linear_to_srgb, _srgb_to_linear, read_xcf,
)


def test_rle_decoder_handles_all_four_run_kinds():
    # One plane of 8 + 300 + 2 + 300 bytes: short repeat, long repeat, short literal, long literal.
    literal = bytes(range(256)) + bytes(range(44))
    data = (bytes([7, 9]) + bytes([127, 1, 44, 5]) + bytes([254, 1, 2])
            + bytes([128, 1, 44]) + literal)
    decoded = _decode_rle(data, 0, 610, 1, Path("x.xcf"))
    assert decoded == b"\x09" * 8 + b"\x05" * 300 + b"\x01\x02" + literal


def test_rle_round_trip_interleaves_byte_planes():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, 64 * 37 * 6, dtype=np.uint8).tobytes()  # 16-bit RGB: 6 byte planes
    assert _decode_rle(_encode_rle(raw, 6), 0, 64 * 37, 6, Path("x.xcf")) == raw


def test_truncated_rle_is_a_clear_error():
    with pytest.raises(ImageFileError, match="x.xcf: XCF tile data is truncated"):
        _decode_rle(bytes([7, 9]), 0, 100, 1, Path("x.xcf"))


def test_srgb_transfer_round_trip():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.abs(_srgb_to_linear(_linear_to_srgb(x)) - x).max() < 1e-6
    assert abs(float(_linear_to_srgb(np.float32(0.2140411))) - 0.5) < 1e-4  # sRGB mid-grey


def test_non_xcf_and_truncated_files_are_refused(tmp_path):
    text = tmp_path / "notes.xcf"
    text.write_text("hello")
    with pytest.raises(ImageFileError, match="notes.xcf: not an XCF file"):
        read_xcf(text)
    cut = tmp_path / "cut.xcf"
    cut.write_bytes(b"gimp xcf v011\0" + struct.pack(">IIII", 64, 64, 0, 150) + b"\0\0\0\x11")
    with pytest.raises(ImageFileError, match="cut.xcf: XCF file is truncated"):
        read_xcf(cut)
    indexed = tmp_path / "indexed.xcf"
    indexed.write_bytes(b"gimp xcf v011\0" + struct.pack(">IIII", 64, 64, 2, 150) + bytes(8))
    with pytest.raises(ImageFileError, match="indexed XCF images are not supported"):
        read_xcf(indexed)


def test_xcf_input_needs_an_xcf_output(tmp_path, capsys):
    from fbcnn_plugins.cli.main import main

    source = tmp_path / "layers.xcf"
    source.write_bytes(b"gimp xcf v011\0" + struct.pack(">IIII", 64, 64, 0, 150) + bytes(8))
    assert main(["restore", str(source), "-o", str(tmp_path / "flat.png"), "--device", "cpu"]) == 1
    assert "name the output .xcf" in capsys.readouterr().err
    assert not (tmp_path / "flat.png").exists()


def _parasite(quality: int, tables: list[np.ndarray], luma_sampling: tuple[int, int] = (2, 2)) -> bytes:
    data = bytes([3, quality, 3, len(tables)]) + bytes([*luma_sampling, 1, 1, 1, 1])
    for table in tables:
        data += b"".join(int(v).to_bytes(2, "big") for v in table)
    return data


def test_gimp_jpeg_settings_parasite():
    exact = header_from_jpeg_settings(_parasite(37, []))
    assert (exact.value, exact.source, exact.chroma) == (37, "header", "4:2:0")
    assert header_from_jpeg_settings(_parasite(37, [], (1, 1))).chroma == "4:4:4"
    assert header_from_jpeg_settings(_parasite(37, [], (2, 1))).chroma == "4:2:2"
    # Tables stored (GIMP found no exact IJG quality) that are in fact IJG tables: matched exactly.
    luma = ijg_tables(LUMA_TABLE)[61]  # quality 62
    assert header_from_jpeg_settings(_parasite(0, [luma])).value == 62
    # Custom tables: no header QF; the caller falls back to the pixels.
    assert header_from_jpeg_settings(_parasite(0, [luma + 1])) is None
    assert header_from_jpeg_settings(None) is None and header_from_jpeg_settings(b"\x03\x50") is None
    assert header_from_jpeg_settings(_parasite(0, [luma])[:-10]) is None  # cut short
