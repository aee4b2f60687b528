"""The demo site's one HTML page: its users on a world map, refreshed every few seconds.

Why a module of its own: markup is noise next to the callback logic in
:mod:`simulator.demosite`. The page must work offline on a projector, so it has no
external assets: inline CSS, an inline SVG map (equirectangular, a graticule instead of
coastlines), a ``<meta refresh>`` instead of JavaScript. Every value is HTML-escaped;
names come from fake users but the page must not trust what arrives in a callback.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

MAP_W, MAP_H = 720, 360
MAX_ROWS = 200

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#f6f7f9;color:#1d2330}
h1{font-size:1.4rem;margin:0 0 .8rem}
.counters span{display:inline-block;margin:0 1.2rem .8rem 0}
.counters b{font-size:1.2rem}
svg{background:#dfe9f3;border:1px solid #b8c6d6;max-width:100%;height:auto}
svg line{stroke:#c3d2e2;stroke-width:1}
svg circle{fill:#d2452f;stroke:#fff;stroke-width:1}
table{border-collapse:collapse;margin-top:1rem;width:100%;background:#fff}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid #e3e6ea;font-size:.9rem}
th{background:#eef1f5}
td.none{color:#8a94a3}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _point(location: Mapping[str, Any]) -> tuple[float, float] | None:
    try:
        lat, lon = float(location["latitude"]), float(location["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return (lon + 180) / 360 * MAP_W, (90 - lat) / 180 * MAP_H


def _map(users: Sequence[Mapping[str, Any]]) -> str:
    lines = [f'<line x1="{x}" y1="0" x2="{x}" y2="{MAP_H}"/>' for x in range(0, MAP_W + 1, 60)]
    lines += [f'<line x1="0" y1="{y}" x2="{MAP_W}" y2="{y}"/>' for y in range(0, MAP_H + 1, 60)]
    dots = []
    for user in users:
        loc = user.get("location")
        if not isinstance(loc, Mapping):
            continue
        point = _point(loc)
        if point is None:
            continue
        label = _esc(f"{user.get('name') or user.get('user_id')}: {loc.get('display_name')}")
        dots.append(f'<circle cx="{point[0]:.1f}" cy="{point[1]:.1f}" r="4">'
                    f"<title>{label}</title></circle>")
    return (f'<svg viewBox="0 0 {MAP_W} {MAP_H}" width="{MAP_W}" height="{MAP_H}" '
            f'role="img" aria-label="users on a world map">{"".join(lines)}{"".join(dots)}</svg>')


def _row(user: Mapping[str, Any]) -> str:
    loc = user.get("location")
    if isinstance(loc, Mapping):
        place = (f"{_esc(loc.get('display_name'))} "
                 f"({_esc(loc.get('latitude'))}, {_esc(loc.get('longitude'))})")
        place_cell = f"<td>{place}</td>"
    else:
        place_cell = '<td class="none">not located</td>'
    return (f"<tr><td>{_esc(user.get('user_id'))}</td><td>{_esc(user.get('name'))}</td>"
            f"{place_cell}<td>{_esc(user.get('event_type'))}</td>"
            f"<td>{_esc(user.get('via'))}</td></tr>")


def render_page(
    title: str, users: Sequence[Mapping[str, Any]], counters: Mapping[str, int], refresh: float
) -> str:
    """The whole page; ``users`` most recent first, at most :data:`MAX_ROWS` rows shown."""
    stats = "".join(f"<span>{_esc(k)} <b>{v}</b></span>" for k, v in counters.items())
    rows = "".join(_row(u) for u in users[:MAX_ROWS])
    more = (f"<p>and {len(users) - MAX_ROWS} more (see users.json)</p>"
            if len(users) > MAX_ROWS else "")
    refresh_tag = f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh > 0 else ""
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"{refresh_tag}<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_esc(title)}: {len(users)} users</h1><div class=\"counters\">{stats}</div>"
        f"{_map(users)}"
        "<table><thead><tr><th>user</th><th>name</th><th>location</th><th>last event</th>"
        f"<th>via</th></tr></thead><tbody>{rows}</tbody></table>{more}"
        '<p><a href="users.json">users.json</a></p></body></html>'
    )
