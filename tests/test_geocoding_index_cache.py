"""The offline index cache: built once in a child process, loaded quickly afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.geocoding import index_cache


def test_builds_in_a_child_then_loads_from_the_cache(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_CACHE_DIR", str(tmp_path))
    path = index_cache.cache_file()
    assert not path.exists()
    first = index_cache.load_or_build()
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    assert first.lookup("Lyon, France") is not None
    again = index_cache.load_or_build()
    found = again.lookup("Osaka, Japan")
    assert found is not None and found.country_code == "JP"


def test_a_corrupt_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKCHANNEL_CACHE_DIR", str(tmp_path))
    path = index_cache.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a pickle at all")
    index = index_cache.load_or_build()
    assert index.lookup("Berlin") is not None
    assert path.read_bytes()[:1] != b"n", "the corrupt file was replaced"
