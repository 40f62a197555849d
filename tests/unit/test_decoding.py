import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from beam_etl.image.decoding import decode_image, decode_mask
from beam_etl.elements import RejectedInput
from tests.support.images import encode, gradient, png_header_only

BIG = 10**9


def test_jpeg_png_and_modes_become_rgb():
    pixels = gradient()
    for data in (encode(Image.fromarray(pixels), "PNG"),
                 encode(Image.fromarray(pixels).convert("RGBA"), "PNG"),
                 encode(Image.fromarray(pixels), "BMP")):
        decoded = decode_image(data, max_pixels=BIG)
        assert decoded.pixels.shape == (60, 80, 3) and decoded.pixels.dtype == np.uint8
        np.testing.assert_array_equal(decoded.pixels, pixels)
    gray = decode_image(encode(Image.fromarray(pixels).convert("L"), "JPEG"), max_pixels=BIG)
    assert gray.pixels.shape == (60, 80, 3)
    assert np.array_equal(gray.pixels[..., 0], gray.pixels[..., 2])
    cmyk = decode_image(encode(Image.fromarray(pixels).convert("CMYK"), "JPEG", quality=98), max_pixels=BIG)
    assert np.abs(cmyk.pixels.astype(int) - pixels).mean() < 6  # colours survive, not inverted
    palette = decode_image(encode(Image.fromarray(pixels).quantize(16), "PNG"), max_pixels=BIG)
    assert palette.pixels.shape == (60, 80, 3)
    sixteen = Image.fromarray((gradient()[..., 0].astype(np.uint16) * 257))
    decoded16 = decode_image(encode(sixteen, "PNG"), max_pixels=BIG)
    np.testing.assert_array_equal(decoded16.pixels[..., 1], gradient()[..., 0])


def test_exif_orientation_is_applied():
    pixels = gradient(40, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; the viewer turns it 90 degrees clockwise
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)
    decoded = decode_image(encode(stored, "JPEG", quality=98, exif=exif.tobytes()), max_pixels=BIG)
    assert (decoded.height, decoded.width) == (40, 100)
    assert decoded.pixels.shape == (40, 100, 3)
    assert np.abs(decoded.pixels.astype(int) - pixels).mean() < 4


def test_jpeg_dct_scaling_keeps_full_size_and_at_least_requested_pixels():
    pixels = np.asarray(Image.fromarray(gradient()).resize((800, 600)))
    decoded = decode_image(encode(Image.fromarray(pixels), "JPEG"), max_pixels=BIG, min_size=(128, 128))
    assert (decoded.height, decoded.width) == (600, 800)
    assert decoded.pixels.shape == (150, 200, 3)  # 1/4 scale: the smallest that is >= 128
    rotated = decode_image(encode(Image.fromarray(pixels), "JPEG"), max_pixels=BIG, min_size=(300, 100))
    assert rotated.pixels.shape == (300, 400, 3)


def test_too_large_is_refused_from_the_header_alone():
    # No pixel data follows the header: decoding would fail as truncated, not as too large.
    with pytest.raises(RejectedInput) as error:
        decode_image(png_header_only(50000, 40000), max_pixels=40_000_000)
    assert error.value.reason == "too_large" and "50000x40000" in error.value.message


@pytest.mark.parametrize("data,reason", [
    (b"", "empty_file"),
    (b"this is not an image at all", "unknown_format"),
    (encode(Image.fromarray(gradient(300, 400)), "JPEG")[:4000], "truncated"),
])
def test_bad_bytes_are_rejected_with_a_reason(data, reason):
    with pytest.raises(RejectedInput) as error:
        decode_image(data, max_pixels=BIG)
    assert error.value.reason == reason and error.value.stage == "decode_image"


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_a_file_cut_short_inside_its_header_is_truncated_not_of_an_unknown_format(kind):
    """A copy or upload cut short: the decoder cannot read the header, and the file lacks the
    end its first bytes promise."""
    data = encode(Image.fromarray(gradient(64, 64)), kind)
    for cut in (12, 40):
        for decode in (decode_image, decode_mask):
            with pytest.raises(RejectedInput) as error:
                decode(data[:cut], max_pixels=BIG)
            assert error.value.reason == "truncated"
            assert f"cut short inside its header ({cut} bytes)" in error.value.message


@pytest.mark.parametrize("data, reason", [
    (b"\xff\xd8\xff\xe0" + b"\x00" * 200 + b"\xff\xd9", "corrupt_header"),  # a JPEG's start and end, no header
    (b"II*\0" + b"\xff" * 60, "corrupt_header"),  # a TIFF's first bytes: whole or not, nothing says
    (b"BMW owners' club newsletter, issue 4", "corrupt_header"),  # (Pillow's reader takes "BM" for a BMP's)
    (b"GIF", "unknown_format"),
])
def test_a_header_that_cannot_be_read_is_told_by_what_the_first_bytes_say(data, reason):
    with pytest.raises(RejectedInput) as error:
        decode_image(data, max_pixels=BIG)
    assert error.value.reason == reason, error.value.message


def test_a_whole_header_that_cannot_be_read_is_corrupt_whatever_follows_the_file_s_end():
    """A header damaged but whole is no file cut short, bytes after its end (a motion photo's
    video, a trailer) or not."""
    jpeg = bytearray(encode(Image.fromarray(gradient(64, 64)), "JPEG"))
    frame = jpeg.index(b"\xff\xc0")
    jpeg[frame + 5:frame + 9] = bytes(4)  # (a height and width of 0)
    png = bytearray(encode(Image.fromarray(gradient(64, 64)), "PNG"))
    png[16:20] = bytes(4)  # (IHDR's width: 0)
    for data in (bytes(jpeg), bytes(jpeg) + bytes(200), bytes(png), bytes(png) + bytes(200)):
        with pytest.raises(RejectedInput) as error:
            decode_image(data, max_pixels=BIG)
        assert error.value.reason == "corrupt_header", error.value.message


def test_masks_keep_label_values():
    labels = (np.arange(60 * 80).reshape(60, 80) % 4).astype(np.uint8)
    np.testing.assert_array_equal(decode_mask(encode(Image.fromarray(labels), "PNG"), max_pixels=BIG), labels)
    palette = Image.fromarray(labels).convert("P")
    palette.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 756)
    np.testing.assert_array_equal(decode_mask(encode(palette, "PNG"), max_pixels=BIG), labels)
    rgb = Image.fromarray(np.repeat(labels[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(decode_mask(encode(rgb, "PNG"), max_pixels=BIG), labels)


def test_colour_mask_is_rejected():
    with pytest.raises(RejectedInput) as error:
        decode_mask(encode(Image.fromarray(gradient()), "PNG"), max_pixels=BIG)
    assert error.value.reason == "not_single_channel"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_jpeg_path_orients_like_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(gradient(40, 64)), "JPEG", quality=95, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, max_pixels=BIG)
    assert (decoded.height, decoded.width) == expected.shape[:2]
    np.testing.assert_array_equal(decoded.pixels, expected)


def test_mask_fast_path_rejects_truncated_and_too_large():
    labels = (np.arange(300 * 200).reshape(300, 200) % 7).astype(np.uint8)
    data = encode(Image.fromarray(labels), "PNG")
    with pytest.raises(RejectedInput) as error:
        decode_mask(data[: len(data) // 2], max_pixels=BIG)
    assert error.value.reason == "truncated"
    with pytest.raises(RejectedInput) as error:
        decode_mask(data, max_pixels=1000)
    assert error.value.reason == "too_large"


def _gray_png(rows: list[list[int]], depth: int) -> bytes:
    """A grayscale PNG of ``depth``-bit samples, written by hand: Pillow writes no 2- or 4-bit grayscale."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packed = b""
    for row in rows:
        bits = "".join(format(value, f"0{depth}b") for value in row)
        bits += "0" * (-len(bits) % 8)
        packed += b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")
    header = struct.pack(">IIBBBBB", len(rows[0]), len(rows), depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(packed)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_low_bit_depth_masks_keep_their_samples_as_labels(depth):
    """Pillow scales 2- and 4-bit grayscale samples to 0-255; the labels are the samples."""
    top = 2**depth - 1
    rows = [[(x + y) % (top + 1) for x in range(7)] for y in range(3)]
    np.testing.assert_array_equal(decode_mask(_gray_png(rows, depth), max_pixels=BIG), np.array(rows, np.uint8))


@pytest.mark.parametrize("kind", ["PNG", "PPM"])  # (Pillow opens a 16-bit PGM in its 32-bit mode "I")
def test_sixteen_bit_images_scale_by_their_depth_whatever_their_content(kind):
    """A dark 16-bit image stays dark: the scale is the format's, not the image's brightest pixel's."""
    for value, expected in ((255, 1), (256, 1), (1000, 4), (32768, 128), (65535, 255)):
        data = encode(Image.fromarray(np.full((4, 5), value, np.uint16)), kind)
        np.testing.assert_array_equal(decode_image(data, max_pixels=BIG).pixels, np.full((4, 5, 3), expected))


@pytest.mark.parametrize("pixels", [np.full((4, 5), 1000, np.int32), np.full((4, 5), 0.5, np.float32)])
def test_pixels_without_a_range_are_rejected_not_guessed(pixels):
    with pytest.raises(RejectedInput) as error:
        decode_image(encode(Image.fromarray(pixels), "TIFF"), max_pixels=BIG)
    assert error.value.reason == "unsupported_mode" and error.value.stage == "decode_image"


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["L", "P", "RGB"])  # the fast 8-bit gray path, Pillow's palette and RGB
def test_a_mask_is_turned_by_its_own_exif_orientation_as_its_image_is(orientation, mode):
    """Image and mask stored alike, both tagged: they come out aligned, as a viewer shows them."""
    labels = (np.arange(40 * 64).reshape(40, 64) // 7 % 5).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    image = decode_image(encode(Image.fromarray(colours[labels]), "PNG", exif=exif.tobytes()), max_pixels=BIG)
    stored = Image.fromarray(labels, "L")
    if mode == "P":
        stored = Image.fromarray(labels, "P")
        stored.putpalette([0, 0, 0] * 256)
    elif mode == "RGB":
        stored = stored.convert("RGB")
    mask = decode_mask(encode(stored, "PNG", exif=exif.tobytes()), max_pixels=BIG)
    assert mask.shape == image.pixels.shape[:2] == ((64, 40) if orientation >= 5 else (40, 64))
    np.testing.assert_array_equal(colours[mask], image.pixels)
    untagged = decode_mask(encode(Image.fromarray(labels, "L"), "PNG"), max_pixels=BIG)
    np.testing.assert_array_equal(untagged, labels)  # no tag: as stored


def _raise_memory_error(*unused, **unused_too):
    raise MemoryError()


@pytest.mark.parametrize("where", ["open", "load", "getexif"])
@pytest.mark.parametrize("decode", ["image", "mask"])
def test_running_out_of_memory_while_decoding_fails_the_step_never_rejects_the_input(monkeypatch, where, decode):
    """This process's fault, not the file's: a rejection would be cached under the file's bytes,
    and every later run would reject a good input (and call its output up to date)."""
    exif = Image.Exif()
    exif[0x0112] = 1
    if decode == "image":  # (a PNG: Pillow decodes it; an EXIF block, which is read for its orientation)
        data = encode(Image.fromarray(gradient()), "PNG", exif=exif.tobytes())
    else:  # (a palette mask: Pillow's, not the 8-bit gray fast path)
        data = encode(Image.fromarray(gradient()[..., 0] % 4).convert("P"), "PNG", exif=exif.tobytes())
    target = {"open": (Image, "open"), "load": (Image.Image, "load"), "getexif": (Image.Image, "getexif")}[where]
    monkeypatch.setattr(*target, _raise_memory_error)
    with pytest.raises(MemoryError):
        (decode_image if decode == "image" else decode_mask)(data, max_pixels=BIG)
