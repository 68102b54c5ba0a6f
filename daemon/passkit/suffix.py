"""The invisible suffix that makes a repeated message a changed field (Apple alerts only on a
change), and the text a person sees without it."""

from __future__ import annotations

from typing import Final

# Apple alerts only when a field's value changes, so a repeated text gets an invisible suffix.
# Two characters every renderer treats as zero-width; not ZERO WIDTH JOINER, which would fuse
# a trailing emoji with whatever follows it.
_ZW_ZERO = "\u200b"  # ZERO WIDTH SPACE
_ZW_ONE = "\u200c"  # ZERO WIDTH NON-JOINER
_ZW_CHARS = _ZW_ZERO + _ZW_ONE
_BITS_TO_ZW = str.maketrans("01", _ZW_CHARS)
# 24 bits: two writes to one pass collide only if exactly a multiple of 2**24 writes (or ms)
# lie between them; costs 72 bytes of the 10,000.
NONCE_BITS: Final = 24


def invisible_suffix(nonce: int) -> str:
    """`nonce` (mod 2**NONCE_BITS) written in zero-width characters."""
    return format(nonce % 2**NONCE_BITS, f"0{NONCE_BITS}b").translate(_BITS_TO_ZW)


def visible_text(value: str) -> str:
    """The text a person sees: `value` without a trailing invisible suffix."""
    return value.rstrip(_ZW_CHARS)


def with_invisible_nonce(text: str, nonce: int) -> str:
    return visible_text(text) + invisible_suffix(nonce)
