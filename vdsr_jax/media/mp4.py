"""The ICC colour profile of an MP4 or QuickTime video: a ColourInformationBox ('colr') of colour type 'prof'
in the video track's sample entry (ISO/IEC 14496-12, 12.1.5; the QuickTime File Format's 'colr' atom).
FFmpeg's demuxer reads it (as the stream's ICC_PROFILE side data, which reaches every decoded frame); its
muxer writes it only from stream side data, which PyAV cannot set, so it is added to the finished file.

ISO/IEC 14496-12, 4.2: a box is a 32-bit size (1: a 64-bit size follows the type; 0: to the end of the file)
and a 4-byte type, then its fields and boxes. The path to a sample entry is moov/trak/mdia/minf/stbl/stsd;
stsd has 8 bytes of fields (version, flags, entry count) before its entries (8.5.2), a VisualSampleEntry 78
before its boxes (12.1.3), and a track's handler type ('vide' for video) is at byte 16 of its hdlr box
(8.4.3).
"""
import struct
from pathlib import Path

from vdsr_jax.media.images import insert_bytes

# The boxes on the way to a sample entry, each with the bytes of fields before its own boxes.
_PATH_FIELDS = {b"trak": 0, b"mdia": 0, b"minf": 0, b"stbl": 0, b"stsd": 8}
_VISUAL_SAMPLE_ENTRY_FIELDS = 78


def _box(data: bytes, pos: int, end: int) -> tuple[int, int, bytes]:
    """(header size, box size, type) of the box at `pos` of `data`, which ends by `end`."""
    size, kind = struct.unpack_from(">I4s", data, pos)
    if size == 1:
        return 16, struct.unpack_from(">Q", data, pos + 8)[0], kind
    return 8, (end - pos if size == 0 else size), kind


def _children(data: bytes, start: int, end: int):
    """(offset, header size, size, type) of each box from `start` to `end` of `data`."""
    pos = start
    while pos + 8 <= end:
        header, size, kind = _box(data, pos, end)
        yield pos, header, size, kind
        pos += max(size, 8)


def _top_level(file) -> list[tuple[int, int, int, bytes]]:
    """(offset, header size, size, type) of each top-level box of an open file, reading only their headers."""
    boxes, end = [], file.seek(0, 2)
    pos = 0
    while pos + 8 <= end:
        file.seek(pos)
        header, size, kind = _box(file.read(16).ljust(16, b"\0"), 0, end - pos)
        boxes.append((pos, header, size, kind))
        pos += max(size, 8)
    return boxes


def _video_sample_entry(moov: bytes, header: int) -> list[tuple[int, int, int]]:
    """[(offset, header size, size)] of trak, mdia, minf, stbl, stsd and the first sample entry of the first
    video track of the bytes of a moov box, or [] where there is none."""
    for pos, head, size, kind in _children(moov, header, len(moov)):
        if kind != b"trak":
            continue
        chain, start, end = [(pos, head, size)], pos + head, pos + size
        for wanted in (b"mdia", b"minf", b"stbl", b"stsd"):
            found = next(((p, h, s) for p, h, s, k in _children(moov, start, end) if k == wanted), None)
            if found is None:
                break
            if wanted == b"mdia":
                handler = next((moov[p + h + 8:p + h + 12] for p, h, s, k in _children(moov, found[0] + found[1],
                                found[0] + found[2]) if k == b"hdlr"), None)
                if handler != b"vide":
                    break
            chain.append(found)
            start, end = found[0] + found[1] + _PATH_FIELDS[wanted], found[0] + found[2]
        else:
            entry = next(_children(moov, start, end), None)
            if entry is not None:
                return chain + [entry[:3]]
    return []


def insert_icc_profile(path: Path, icc: bytes) -> None:
    """Put `icc` into the MP4 or QuickTime file at `path` as a 'colr' box of type 'prof' at the end of the
    first video track's sample entry, after the boxes FFmpeg wrote there ('avcC', 'colr' 'nclx', 'pasp', …),
    updating the sizes of the boxes around it. The file's moov box must follow its media data (FFmpeg writes
    it last unless asked to move it to the front), so that no chunk offset changes."""
    with open(path, "rb") as file:
        boxes = _top_level(file)
        moov = next(box for box in boxes if box[3] == b"moov")
        assert all(box[0] < moov[0] for box in boxes if box[3] == b"mdat"), "moov follows the media data"
        file.seek(moov[0])
        data = file.read(moov[2])
    chain = _video_sample_entry(data, moov[1])
    assert chain, "a video written by FFmpeg has a video track with a sample entry"
    assert chain[-1][2] >= 8 + _VISUAL_SAMPLE_ENTRY_FIELDS, "a visual sample entry"
    colr = struct.pack(">I4s4s", 12 + len(icc), b"colr", b"prof") + icc
    entry_end = moov[0] + chain[-1][0] + chain[-1][2]
    insert_bytes(path, entry_end, colr)
    with open(path, "r+b") as file:
        for pos, header, size in [moov[:3], *((moov[0] + p, h, s) for p, h, s in chain)]:
            file.seek(pos + (8 if header == 16 else 0))
            file.write(struct.pack(">Q" if header == 16 else ">I", size + len(colr)))
