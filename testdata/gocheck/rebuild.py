#!/usr/bin/env python3
"""Rebuild a zTOC with the Python FlatBuffers builder, in the reference producer's call order.

usage: rebuild.py GOCHECK_JSON OUR_ZTOC > rebuilt.ztoc

The TOC and uncompressed_archive_size come from gocheck's JSON (Go's archive/tar view of the
layer). The zInfo half -- version, build tool identifier, compressed size, algorithm, max span
id, span digests and the checkpoint bytes -- is read from OUR_ZTOC, because this check is
about the FlatBuffers layout, not about checkpoint generation.

Debian's python3-flatbuffers `Builder` is a port of the Go builder (same alignment, default
elision, vtable trimming and deduplication), so driving it in the order of SPEC §1.5 gives the
bytes the Go producer writes. Strings use CreateString on bytes, which, like Go's
CreateString/CreateByteString, appends a NUL terminator; the checkpoint blob uses
CreateByteVector, which does not. Nothing here is taken from the reference implementation.
"""

import base64
import json
import struct
import sys

import flatbuffers
from flatbuffers.table import Table


def slot(field_id):
    """vtable byte offset of field `field_id`."""
    return 4 + 2 * field_id


# ---------------------------------------------------------------------------------------------
# Reading the parts of our zTOC that the rebuild reuses.

def table_at(buf, pos):
    return Table(buf, pos)


def field(tab, field_id):
    """Absolute position of a present field, or None."""
    off = tab.Offset(slot(field_id))
    return tab.Pos + off if off else None


def scalar(tab, field_id, fmt, default):
    p = field(tab, field_id)
    return default if p is None else struct.unpack_from(fmt, tab.Bytes, p)[0]


def string(tab, field_id):
    p = field(tab, field_id)
    return b"" if p is None else tab.String(p)


def subtable(tab, field_id):
    p = field(tab, field_id)
    return None if p is None else table_at(tab.Bytes, tab.Indirect(p))


def read_ours(buf):
    root = table_at(buf, struct.unpack_from("<I", buf, 0)[0])
    ci = subtable(root, 5)
    if ci is None:
        sys.exit("rebuild.py: our zTOC has no compression_info")
    digests = []
    p = field(ci, 2)
    if p is not None:
        vec = ci.Indirect(p)
        n = struct.unpack_from("<I", buf, vec)[0]
        for i in range(n):
            elem = vec + 4 + 4 * i
            digests.append(ci.String(elem))
    checkpoints = b""
    p = field(ci, 3)
    if p is not None:
        vec = ci.Indirect(p)
        n = struct.unpack_from("<I", buf, vec)[0]
        checkpoints = bytes(buf[vec + 4:vec + 4 + n])
    return {
        "version": string(root, 0),
        "build_tool_identifier": string(root, 1),
        "compressed_archive_size": scalar(root, 2, "<q", 0),
        "algorithm": scalar(ci, 0, "<b", 1),
        "max_span_id": scalar(ci, 1, "<i", 0),
        "span_digests": digests,
        "checkpoints": checkpoints,
    }


# ---------------------------------------------------------------------------------------------
# Building, in the order of SPEC §1.5.

def offset_vector(b, offsets):
    """A vector of offsets; the element at index 0 ends up first."""
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def build_metadata(b, e):
    d = base64.b64decode
    name = b.CreateString(d(e["name"]))
    kind = b.CreateString(e["type"].encode())
    linkname = b.CreateString(d(e["linkname"]))
    uname = b.CreateString(d(e["uname"]))
    gname = b.CreateString(d(e["gname"]))
    mod_time = b.CreateString(e["mod_time"].encode())

    xattrs = []
    for key_b64, value_b64 in sorted(e["xattrs"], key=lambda kv: d(kv[0])):
        key = b.CreateString(d(key_b64))
        value = b.CreateString(d(value_b64))
        b.StartObject(2)
        b.PrependUOffsetTRelativeSlot(0, key, 0)
        b.PrependUOffsetTRelativeSlot(1, value, 0)
        xattrs.append(b.EndObject())
    xattrs = offset_vector(b, xattrs)

    b.StartObject(14)
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(1, kind, 0)
    b.PrependInt64Slot(2, e["uncompressed_offset"], 0)
    b.PrependInt64Slot(3, e["size"], 0)
    b.PrependUOffsetTRelativeSlot(4, linkname, 0)
    b.PrependInt64Slot(5, e["mode"], 0)
    b.PrependUint32Slot(6, e["uid"], 0)
    b.PrependUint32Slot(7, e["gid"], 0)
    b.PrependUOffsetTRelativeSlot(8, uname, 0)
    b.PrependUOffsetTRelativeSlot(9, gname, 0)
    b.PrependUOffsetTRelativeSlot(10, mod_time, 0)
    b.PrependInt64Slot(11, e["devmajor"], 0)
    b.PrependInt64Slot(12, e["devminor"], 0)
    b.PrependUOffsetTRelativeSlot(13, xattrs, 0)
    return b.EndObject()


def rebuild(go, ours):
    b = flatbuffers.Builder(1024 + len(ours["checkpoints"]))
    version = b.CreateString(ours["version"])
    tool = b.CreateString(ours["build_tool_identifier"])

    entries = go["entries"]
    metas = [None] * len(entries)
    for i in reversed(range(len(entries))):
        metas[i] = build_metadata(b, entries[i])
    metadata = offset_vector(b, metas)
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, metadata, 0)
    toc = b.EndObject()

    checkpoints = b.CreateByteVector(ours["checkpoints"])
    digests = [b.CreateString(dg) for dg in ours["span_digests"]]
    digests = offset_vector(b, digests)
    b.StartObject(4)
    b.PrependInt32Slot(1, ours["max_span_id"], 0)
    b.PrependUOffsetTRelativeSlot(2, digests, 0)
    b.PrependUOffsetTRelativeSlot(3, checkpoints, 0)
    # The producer adds the algorithm only for a non-empty algorithm name; ours always has
    # one. Gzip (1) is the schema default and is elided.
    b.PrependInt8Slot(0, ours["algorithm"], 1)
    ci = b.EndObject()

    b.StartObject(6)
    b.PrependUOffsetTRelativeSlot(0, version, 0)
    b.PrependUOffsetTRelativeSlot(1, tool, 0)
    b.PrependUOffsetTRelativeSlot(4, toc, 0)
    b.PrependInt64Slot(2, ours["compressed_archive_size"], 0)
    b.PrependInt64Slot(3, go["uncompressed_archive_size"], 0)
    b.PrependUOffsetTRelativeSlot(5, ci, 0)
    root = b.EndObject()
    b.Finish(root)
    return bytes(b.Output())


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: rebuild.py GOCHECK_JSON OUR_ZTOC")
    with open(sys.argv[1], "rb") as f:
        go = json.load(f)
    with open(sys.argv[2], "rb") as f:
        ours = read_ours(bytearray(f.read()))
    sys.stdout.buffer.write(rebuild(go, ours))


if __name__ == "__main__":
    main()
