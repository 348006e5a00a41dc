"""The run's config.yml inside a `.dxs` file: deflate with a preset dictionary of typical splat run configs.

A config.yml is about 9 KB of YAML that differs from a registered method's default in a few lines (data path,
experiment name, timestamp, the user's settings). LZMA alone stores it in about 2.4 KB, which is most of a file
at extreme ratios (a 400x budget of a small scene is 4 KB). zlib's preset dictionary (`zdict`) lets deflate copy
from a known text instead: with `config_dictionary_1.yml` it takes about 230 bytes.

The dictionary is part of the file format: `config_dictionary_<k>.yml` never changes once released (a test pins its
hash); a better one is added as k + 1 and files name the one they used. Dictionary 1 is `yaml.dump` of the
registered splatfacto, sr3d-splatfacto and difix-splatfacto configs (nerfstudio 1.1.5), the likeliest last
(deflate reaches back 32 KB, so the dictionary stays under that).
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from pathlib import Path
from typing import Tuple

__all__ = ["CONFIG_DICTIONARY", "pack_config", "unpack_config"]

CONFIG_DICTIONARY = 1
"""The dictionary `pack_config` uses."""


@lru_cache(maxsize=None)
def _dictionary(number: int) -> bytes:
    path = Path(__file__).with_name(f"config_dictionary_{number}.yml")
    if not path.is_file():
        raise ValueError(f"config dictionary {number} is unknown to this difix-ns (a newer one wrote the file?)")
    return path.read_bytes()


def pack_config(text: str) -> Tuple[int, bytes]:
    """(dictionary number, deflated bytes) of a config.yml text."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=_dictionary(CONFIG_DICTIONARY))
    return CONFIG_DICTIONARY, compressor.compress(text.encode("utf-8")) + compressor.flush()


def unpack_config(data: bytes, dictionary: int, name: str = "<file>") -> str:
    """The config.yml text of `pack_config`'s bytes; ValueError naming `name` when they do not inflate."""
    try:
        decompressor = zlib.decompressobj(-15, zdict=_dictionary(int(dictionary)))
        text = decompressor.decompress(bytes(data)) + decompressor.flush()
        if not decompressor.eof:
            raise zlib.error("the stream is truncated")
        return text.decode("utf-8")
    except (zlib.error, UnicodeDecodeError, ValueError, TypeError) as error:
        raise ValueError(f"{name}: the embedded config.yml is unreadable ({error})") from None
