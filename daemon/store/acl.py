"""Grant one user the right to traverse a directory, and nobody else anything.

Run as root, the embedded Postgres runs as a dedicated system user that must reach its data
directory and the bundled binaries. Where a directory on the way is private (a home
directory, 0700), the narrowest grant is a POSIX ACL entry `user:<that user>:--x`: group and
others keep exactly the access they had (the mask is the old group bits plus that one x).

The ACL is written as the kernel's `system.posix_acl_access` extended attribute (the same
bytes `setfacl` writes; layout in linux/posix_acl_xattr.h), so no extra tool is needed.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

XATTR = "system.posix_acl_access"
_VERSION = 2
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_UNDEFINED_ID = 0xFFFFFFFF
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
EXECUTE = 0x1

Entries = dict[tuple[int, int], int]  # (tag, id) -> rwx bits


class AclUnsupported(OSError):
    """The file system keeps no POSIX ACLs."""


def can_traverse(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether `uid` (in groups `gids`) may search `path`, from its mode and ACL."""
    st = path.stat()
    entries = _read(path, st.st_mode)
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    mask = entries.get((MASK, _UNDEFINED_ID), EXECUTE)
    if entries.get((USER, uid), 0) & mask & EXECUTE:
        return True
    if st.st_gid in gids and st.st_mode & stat.S_IXGRP:
        return True
    return bool(st.st_mode & stat.S_IXOTH)


def grant_traverse(path: Path, uid: int) -> None:
    """Add `user:<uid>:--x` to the directory's access ACL, changing nothing else."""
    st = path.stat()
    entries = _read(path, st.st_mode)
    entries[(USER, uid)] = entries.get((USER, uid), 0) | EXECUTE
    group_class = [bits for (tag, _), bits in entries.items() if tag in (USER, GROUP_OBJ, GROUP)]
    mask = 0
    for bits in group_class:
        mask |= bits
    entries[(MASK, _UNDEFINED_ID)] = mask
    try:
        os.setxattr(path, XATTR, encode(entries))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
            raise AclUnsupported(exc.errno, f"no POSIX ACLs on the file system of {path}") from exc
        raise


def _read(path: Path, mode: int) -> Entries:
    try:
        return decode(os.getxattr(path, XATTR))
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    return {
        (USER_OBJ, _UNDEFINED_ID): (mode >> 6) & 0o7,
        (GROUP_OBJ, _UNDEFINED_ID): (mode >> 3) & 0o7,
        (OTHER, _UNDEFINED_ID): mode & 0o7,
    }


def encode(entries: Entries) -> bytes:
    body = b"".join(_ENTRY.pack(tag, bits, ident) for (tag, ident), bits in sorted(entries.items()))
    return _HEADER.pack(_VERSION) + body


def decode(raw: bytes) -> Entries:
    (version,) = _HEADER.unpack_from(raw)
    if version != _VERSION or (len(raw) - _HEADER.size) % _ENTRY.size:
        raise ValueError("not a POSIX ACL")
    entries: Entries = {}
    for offset in range(_HEADER.size, len(raw), _ENTRY.size):
        tag, bits, ident = _ENTRY.unpack_from(raw, offset)
        key_id = ident if tag in (USER, GROUP) else _UNDEFINED_ID
        entries[(tag, key_id)] = bits
    return entries
