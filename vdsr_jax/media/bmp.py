"""The ICC colour profile of a BMP file, which Pillow neither reads nor writes: a BITMAPV5HEADER whose colour
space type is PROFILE_EMBEDDED ("MBED"), with the profile's offset from the start of that header and its size
(Microsoft, "BITMAPV5HEADER structure", wingdi.h). Windows, Chromium and ImageMagick read it.

A BMP file: the 14-byte BITMAPFILEHEADER ("BM", the file size, two reserved words, the offset of the pixel
array), an info header that starts with its own size (40 for BITMAPINFOHEADER, 124 for BITMAPV5HEADER), the
colour table, the pixel array. All numbers are little-endian.
"""
import struct

_FILE_HEADER = 14
_INFO_HEADER = 40  # BITMAPINFOHEADER, as Pillow writes it
_V5_HEADER = 124
_PROFILE_EMBEDDED = 0x4D424544  # "MBED"
_LCS_GM_IMAGES = 4  # rendering intent: perceptual, for photographs


def read_icc_profile(data: bytes) -> bytes | None:
    """The embedded ICC profile of a BMP file's bytes, or None (other headers, other colour space types). A
    profile cut short by the end of the file comes as far as it goes, even empty (`images.profile_damage` then
    says so)."""
    if data[:2] != b"BM" or len(data) < _FILE_HEADER + _V5_HEADER:
        return None
    header = _FILE_HEADER
    size, = struct.unpack_from("<I", data, header)
    colour_space, = struct.unpack_from("<I", data, header + 56)
    if size < _V5_HEADER or colour_space != _PROFILE_EMBEDDED:
        return None
    offset, length = struct.unpack_from("<II", data, header + 112)
    return data[header + offset:header + offset + length]


def with_icc_profile(bmp: bytes, icc: bytes) -> bytes:
    """The bytes of a BMP file with a BITMAPINFOHEADER (as Pillow writes it) given a BITMAPV5HEADER that
    embeds `icc`, placed after the pixel array; the colour table and pixels are unchanged. The V5 fields the
    info header lacks are zero (colour masks, which BI_RGB does not use; endpoints and gammas, which an
    embedded profile replaces), the intent perceptual."""
    size, = struct.unpack_from("<I", bmp, _FILE_HEADER)
    assert bmp[:2] == b"BM" and size == _INFO_HEADER, "a BMP with a BITMAPINFOHEADER"
    grown = len(bmp) + _V5_HEADER - _INFO_HEADER
    pixels_at, = struct.unpack_from("<I", bmp, 10)
    file_header = b"BM" + struct.pack("<IHHI", grown + len(icc), 0, 0, pixels_at + _V5_HEADER - _INFO_HEADER)
    info = bytearray(bmp[_FILE_HEADER:_FILE_HEADER + _INFO_HEADER].ljust(_V5_HEADER, b"\0"))
    struct.pack_into("<I", info, 0, _V5_HEADER)
    struct.pack_into("<I", info, 56, _PROFILE_EMBEDDED)
    struct.pack_into("<IIII", info, 108, _LCS_GM_IMAGES, grown - _FILE_HEADER, len(icc), 0)
    return file_header + bytes(info) + bmp[_FILE_HEADER + _INFO_HEADER:] + icc
