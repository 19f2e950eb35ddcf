"""Multiresolution hash-grid encodings (tiny-cuda-nn semantics) and the direction encoding."""

from switchnerf.encoding.experts import HashExperts
from switchnerf.encoding.hashgrid import HashGrid
from switchnerf.encoding.sh import SHEncoding
from switchnerf.ops.hash_encode import hash_encode
from switchnerf.ops.hash_levels import GridSpec, LevelTable

__all__ = ["GridSpec", "HashExperts", "HashGrid", "LevelTable", "SHEncoding", "hash_encode"]
