"""Multiresolution hash-grid encodings (tiny-cuda-nn semantics) and the direction encoding."""

from switchnerf.encoding.experts import HashExperts
from switchnerf.encoding.functional import hash_encode
from switchnerf.encoding.hashgrid import HashGrid
from switchnerf.encoding.levels import GridSpec, LevelTable
from switchnerf.encoding.sh import SHEncoding

__all__ = ["GridSpec", "HashExperts", "HashGrid", "LevelTable", "SHEncoding", "hash_encode"]
