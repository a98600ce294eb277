"""Bloom filters of external ids: does an archived part hold a given prediction? Pure NumPy,
and simple enough to recompute anywhere: BLAKE2b-64 of the UTF-8 id, split into two 32-bit
halves h1 and h2, and K positions (h1 + i * h2) mod bits, bits numbered from the least
significant bit of each byte (PostgreSQL's get_bit order)."""

import hashlib
from collections.abc import Iterable

import numpy as np

K = 7
# 10 bits per id with 7 positions: a false match about 1% of the time.
BITS_PER_KEY = 10
MIN_BITS = 64


def id_hashes(external_id: str) -> tuple[int, int]:
    digest = int.from_bytes(hashlib.blake2b(external_id.encode(), digest_size=8).digest(), "little")
    return digest & 0xFFFFFFFF, (digest >> 32) | 1  # an odd step visits K distinct bits


def positions(external_id: str, bits: int) -> list[int]:
    h1, h2 = id_hashes(external_id)
    return [(h1 + i * h2) % bits for i in range(K)]


def bloom_bits(keys: int) -> int:
    """The filter's length for `keys` ids: whole bytes."""
    return max(MIN_BITS, -(-keys * BITS_PER_KEY // 8) * 8)


def bloom_build(external_ids: Iterable[str], bits: int) -> bytes:
    hashes = np.array([id_hashes(e) for e in external_ids], dtype=np.uint64).reshape(-1, 2)
    field = np.zeros(bits, dtype=np.uint8)
    for i in range(K):
        field[(hashes[:, 0] + np.uint64(i) * hashes[:, 1]) % np.uint64(bits)] = 1
    return np.packbits(field, bitorder="little").tobytes()


def byte_and_mask(position: int) -> tuple[int, int]:
    """Which byte of the filter holds bit `position`, and its mask there."""
    return position // 8, 1 << (position % 8)


def bloom_contains(bloom: bytes, bits: int, external_id: str) -> bool:
    return all(bloom[b] & m for b, m in (byte_and_mask(p) for p in positions(external_id, bits)))
