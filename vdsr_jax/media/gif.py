"""The GIF89a blocks that Pillow and FFmpeg leave alone: a frame's Graphic Control Extension in a packet of
FFmpeg's GIF encoder, and the ICC colour profile, which GIF carries in an application extension.

GIF89a (https://www.w3.org/Graphics/GIF/spec-gif89a.txt): a 6-byte header and 7-byte Logical Screen
Descriptor (section 18), the global colour table where its flag is set, then extensions (21, a label, data
sub-blocks ending in an empty one; sections 15 and 23-26) and images (2C, a 9-byte descriptor, a local colour
table, the LZW minimum code size, data sub-blocks; sections 20-22) up to the trailer 3B. ICC.1:2022 annex B.6:
a profile is an Application Extension (label FF) whose first sub-block is the identifier "ICCRGBG1" and the
authentication code "012", the profile's bytes following in sub-blocks of up to 255 bytes. Chromium, WebKit
and ImageMagick read it; Pillow neither reads nor writes it.
"""
_ICC_IDENTIFIER = b"ICCRGBG1012"  # application identifier and authentication code (ICC.1, annex B.6)


def _after_colour_table(start: int, flags: int) -> int:
    """Where the blocks after a colour table start: bit 7 of `flags` says there is one, of 3·2^(N+1) bytes
    for N in bits 0-2 (GIF89a, sections 18 and 20)."""
    return start + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)


def _after_sub_blocks(data: bytes, pos: int) -> int:
    """Where the data sub-blocks starting at `pos` end, past their empty terminator (GIF89a, section 15)."""
    while pos < len(data) and data[pos]:
        pos += 1 + data[pos]
    return pos + 1


def _blocks(data: bytes):
    """(offset, label) of each block of a GIF file's bytes after the screen descriptor and global colour table,
    up to the trailer or the end of what is there (an extension's label; None for an image)."""
    pos = _after_colour_table(13, data[10])
    while pos < len(data) and data[pos] != 0x3B:
        introducer = data[pos]
        if introducer == 0x21 and pos + 1 < len(data):
            yield pos, data[pos + 1]
            pos = _after_sub_blocks(data, pos + 2)
        elif introducer == 0x2C and pos + 10 <= len(data):
            yield pos, None
            pos = _after_sub_blocks(data, _after_colour_table(pos + 10, data[pos + 9]) + 1)
        else:  # damaged: the decoder says so
            return


def read_icc_profile(data: bytes) -> bytes | None:
    """The ICC profile of a GIF file's bytes (its first ICCRGBG1 application extension), or None."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None
    for pos, label in _blocks(data):
        if label == 0xFF and data[pos + 2:pos + 3 + len(_ICC_IDENTIFIER)] == bytes([11]) + _ICC_IDENTIFIER:
            profile, at = bytearray(), pos + 3 + len(_ICC_IDENTIFIER)
            while at < len(data) and data[at]:
                profile += data[at + 1:at + 1 + data[at]]
                at += 1 + data[at]
            return bytes(profile)  # (empty where the extension holds none: `images.profile_damage`)
    return None


def icc_extension(icc: bytes) -> bytes:
    """The application extension that carries an ICC profile (ICC.1, annex B.6)."""
    sub_blocks = b"".join(bytes([len(part)]) + part for part in (icc[i:i + 255] for i in range(0, len(icc), 255)))
    return b"\x21\xff" + bytes([len(_ICC_IDENTIFIER)]) + _ICC_IDENTIFIER + sub_blocks + b"\x00"


def icc_offset(head: bytes) -> int | None:
    """Where an ICC profile's extension goes in a GIF file that starts with `head`: after its leading
    application extensions (the NETSCAPE2.0 loop block), before the first frame's blocks, as ImageMagick
    places it; None where `head` ends before that place."""
    return next((pos for pos, label in _blocks(head) if label != 0xFF), None)


def control_extension(data: bytes) -> int | None:
    """Where the Graphic Control Extension (GIF89a, section 23: 21 F9 04, a packed byte, the delay, the
    transparent index, 00) that FFmpeg's GIF encoder writes before a frame starts in its packet; None without
    one. The first packet starts with the header, screen descriptor and global colour table."""
    start = _after_colour_table(13, data[10]) if data[:4] == b"GIF8" else 0
    return start if data[start:start + 3] == b"\x21\xf9\x04" else None
