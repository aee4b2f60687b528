"""Geocoding for the geocode task: an offline GeoNames index and geopy providers.

Only re-exports; the offline index lives in ``offline``, the provider boundary (error
translation, Nominatim policy) in ``providers``, the result shape in ``result``.
"""

from workers.geocoding.offline import (
    OfflineGeocoder,
    get_offline_geocoder,
    normalize_address,
    sample_addresses,
)
from workers.geocoding.providers import (
    Geocoder,
    GeopyProvider,
    OfflineProvider,
    build_geocoder,
)
from workers.geocoding.result import GeoResult

__all__ = [
    "GeoResult",
    "Geocoder",
    "GeopyProvider",
    "OfflineGeocoder",
    "OfflineProvider",
    "build_geocoder",
    "get_offline_geocoder",
    "normalize_address",
    "sample_addresses",
]
