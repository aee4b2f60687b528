/*
 * backchannel live dashboard: plain ES2020, no framework, no build step, no network beyond
 * the gateway that serves it (d3-geo, topojson-client and the world map are in vendor/).
 *
 * DATA CONTRACT with the gateway (the page codes against exactly this):
 *
 *   GET /v1/feeds/signups   Server-Sent Events. Each message:
 *       id: <event id>
 *       event: feed
 *       data: <CloudEvent JSON>
 *     where the CloudEvent's "data" is
 *       {"name": str, "city": str|null, "region": str|null, "country": str|null,
 *        "country_code": str|null, "latitude": float|null, "longitude": float|null,
 *        "site": str}
 *     A signup whose latitude (or longitude) is null goes to no marker.
 *
 *   GET /v1/feeds/activity  Server-Sent Events, same shape; the CloudEvent's "data" is
 *       {"line": str, "type": str, "source": str,
 *        "status": "ok"|"failed"|"deadletter"|"received"}
 *
 *   GET /v1/status          JSON, polled every 2 s:
 *       {"components": {"worker":  {"state": "running"|"stopped"|"degraded", "detail": str},
 *                       "gateway": {...}, "bot": {...}, "xmpp": {...}},
 *        "deadletters": int, "events_total": int, "queue_depth": int, "in_flight": int,
 *        "breakers": {"geocode": "closed"|"open"|"half-open", ...}}
 *     Every key may be missing; unknown components and breakers are shown as they come.
 *
 *   Event rate (events/s over the last 2 minutes) comes from events_total deltas between
 *   status polls; while those are not available it falls back to activity-stream arrivals.
 *   EventSource reconnects by itself (sending Last-Event-ID); if the browser gives up
 *   (non-200 answer) the page opens a new one with backoff. Event ids are de-duplicated.
 *
 *   Hooks for browser tests: map markers are circle.signup-marker, stream lines are
 *   .activity-line, the dead-letter count is #deadletters.
 *
 * Loaded as a classic script in a page it boots the dashboard; required from Node it only
 * exports the pure helpers (for tests), touching no DOM.
 */
(function (root) {
  "use strict";

  const CONFIG = Object.freeze({
    signupsUrl: "/v1/feeds/signups",
    activityUrl: "/v1/feeds/activity",
    statusUrl: "/v1/status",
    worldUrl: "vendor/countries-110m.json",
    statusEveryMs: 2000,
    statusTimeoutMs: 5000,
    rateWindowS: 120,
    maxMarkers: 2000,
    maxLines: 200,
    maxLabels: 4,
    labelMs: 6000,
    markerFullMs: 30 * 1000,
    markerFadeMs: 15 * 60 * 1000,
    markerMinOpacity: 0.22,
    reconnectMinMs: 1000,
    reconnectMaxMs: 30000,
    dedupeIds: 5000,
  });

  /* ------------------------------------------------------------------ pure helpers */

  /** Parse one SSE payload into {event, data}; null when it is not a CloudEvent object. */
  function parseCloudEvent(text) {
    let ce;
    try {
      ce = JSON.parse(text);
    } catch (_err) {
      return null;
    }
    if (ce === null || typeof ce !== "object" || Array.isArray(ce)) return null;
    let data = ce.data;
    if (typeof data === "string") {
      try {
        data = JSON.parse(data);
      } catch (_err) {
        data = null;
      }
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) data = {};
    return { event: ce, data };
  }

  /** A finite number or null (JSON null, strings and NaN all become null). */
  function num(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  /** The smallest 1/2/5 x 10^k that is >= value, and at least 1. */
  function niceMax(value) {
    if (!(value > 1)) return 1;
    const exp = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (step * exp >= value) return step * exp;
    }
    return 10 * exp;
  }

  /** Opacity of a marker by age: full for a while, then fading to a floor. */
  function markerOpacity(ageMs) {
    if (ageMs <= CONFIG.markerFullMs) return 1;
    const f = Math.min(1, (ageMs - CONFIG.markerFullMs) / CONFIG.markerFadeMs);
    return 1 - f * (1 - CONFIG.markerMinOpacity);
  }

  /** A set of the most recent `limit` ids, to drop events replayed after a reconnect. */
  class RecentIds {
    constructor(limit) {
      this.limit = limit;
      this.set = new Set();
      this.order = [];
    }
    /** True the first time an id is seen (empty ids are never duplicates). */
    add(id) {
      if (!id) return true;
      if (this.set.has(id)) return false;
      this.set.add(id);
      this.order.push(id);
      if (this.order.length > this.limit) this.set.delete(this.order.shift());
      return true;
    }
  }

  /**
   * Events per second over a sliding window, from two sources: events_total samples of
   * the status poll (preferred) and activity arrivals (fallback, one-second bins).
   * series() returns intervals {t0, t1, v} in ms, oldest first.
   */
  class RateTracker {
    constructor(windowS) {
      this.windowMs = windowS * 1000;
      this.samples = []; // {t, total}
      this.arrivals = []; // t
    }
    addStatusSample(t, total) {
      if (num(total) === null) return;
      this.samples.push({ t, total });
      this.prune(t);
    }
    addArrival(t) {
      this.arrivals.push(t);
      this.prune(t);
    }
    prune(now) {
      const keep = now - this.windowMs - 10000;
      while (this.samples.length > 2 && this.samples[1].t < keep) this.samples.shift();
      while (this.arrivals.length && this.arrivals[0] < keep) this.arrivals.shift();
    }
    statusIntervals(now) {
      const out = [];
      const from = now - this.windowMs;
      for (let i = 1; i < this.samples.length; i++) {
        const a = this.samples[i - 1];
        const b = this.samples[i];
        const dt = (b.t - a.t) / 1000;
        const dv = b.total - a.total;
        if (dt <= 0 || dv < 0 || b.t < from) continue; // dv < 0: counter reset on restart
        out.push({ t0: Math.max(a.t, from), t1: b.t, v: dv / dt });
      }
      return out;
    }
    streamIntervals(now) {
      const end = Math.floor(now / 1000) * 1000; // the current second is not complete yet
      const start = end - this.windowMs;
      const bins = new Array(this.windowMs / 1000).fill(0);
      for (const t of this.arrivals) {
        if (t >= start && t < end) bins[Math.floor((t - start) / 1000)] += 1;
      }
      return bins.map((v, i) => ({ t0: start + i * 1000, t1: start + (i + 1) * 1000, v }));
    }
    /** {source: "status"|"stream", intervals, current} */
    series(now) {
      const last = this.samples[this.samples.length - 1];
      const fresh = last !== undefined && now - last.t < 10000;
      const status = fresh ? this.statusIntervals(now) : [];
      if (status.length > 0) {
        return { source: "status", intervals: status, current: status[status.length - 1].v };
      }
      const stream = this.streamIntervals(now);
      const recent = stream.slice(-5);
      const current = recent.reduce((s, b) => s + b.v, 0) / Math.max(1, recent.length);
      return { source: "stream", intervals: stream, current };
    }
  }

  const helpers = { CONFIG, parseCloudEvent, num, niceMax, markerOpacity, RecentIds, RateTracker };

  if (typeof module === "object" && module && module.exports) {
    module.exports = helpers;
  }
  if (typeof document === "undefined") return;

  /* ------------------------------------------------------------------ DOM helpers */

  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const svgEl = (name, attrs) => {
    const el = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  };
  const fmtInt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const fmtRate = new Intl.NumberFormat(undefined, {
    minimumFractionDigits: 1,
    maximumFractionDigits: 1,
  });
  const pad2 = (n) => String(n).padStart(2, "0");
  const clockText = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const str = (v) => (typeof v === "string" && v.trim() !== "" ? v.trim() : null);

  function eventTime(ce) {
    const t = typeof ce.time === "string" ? Date.parse(ce.time) : NaN;
    return Number.isFinite(t) ? new Date(t) : new Date();
  }

  function placeOf(d) {
    const parts = [str(d.city), str(d.region), str(d.country) || str(d.country_code)];
    const seen = new Set();
    return parts.filter((p) => p && !seen.has(p) && seen.add(p)).join(", ");
  }

  /* ------------------------------------------------------------------ connection dots */

  function setConn(name, state, text) {
    const el = $(`conn-${name}`);
    if (!el) return;
    el.dataset.state = state;
    el.querySelector(".conn-state").textContent = text || state;
  }

  /** One EventSource per feed, replaced with backoff if the browser stops retrying. */
  function openFeed(name, url, onData) {
    const ids = new RecentIds(CONFIG.dedupeIds);
    let retryMs = CONFIG.reconnectMinMs;
    const connect = () => {
      setConn(name, "connecting");
      const es = new EventSource(url);
      es.onopen = () => {
        retryMs = CONFIG.reconnectMinMs;
        setConn(name, "live");
      };
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {
          es.close();
          setConn(name, "offline", `retry in ${Math.round(retryMs / 1000)} s`);
          setTimeout(connect, retryMs);
          retryMs = Math.min(retryMs * 2, CONFIG.reconnectMaxMs);
        } else {
          setConn(name, "reconnecting");
        }
      };
      const handle = (msg) => {
        if (!ids.add(msg.lastEventId)) return;
        const parsed = parseCloudEvent(msg.data);
        if (parsed === null) {
          console.warn("dashboard: %s feed sent a message that is not a CloudEvent", name);
          return;
        }
        try {
          onData(parsed.event, parsed.data);
        } catch (err) {
          console.error("dashboard: %s feed handler failed", name, err);
        }
      };
      es.addEventListener("feed", handle);
      es.onmessage = handle; // tolerate a server that omits "event: feed"
    };
    connect();
  }

  /* ------------------------------------------------------------------ map */

  const map = {
    projection: null,
    markers: [], // {g, t}
    labels: [],
    seen: 0,
  };

  function initMap() {
    const base = $("map-base");
    if (!root.d3 || typeof root.d3.geoNaturalEarth1 !== "function") {
      $("map-error").hidden = false;
      return;
    }
    const d3 = root.d3;
    const sphere = { type: "Sphere" };
    map.projection = d3.geoNaturalEarth1().fitExtent([[8, 8], [952, 492]], sphere);
    const path = d3.geoPath(map.projection);
    base.append(svgEl("path", { class: "sphere", d: path(sphere) }));
    base.append(svgEl("path", { class: "graticule", d: path(d3.geoGraticule10()) }));

    fetch(CONFIG.worldUrl)
      .then((r) => {
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        return r.json();
      })
      .then((world) => {
        const countries = root.topojson.feature(world, world.objects.countries);
        const g = svgEl("g", { class: "countries" });
        for (const f of countries.features) {
          const p = svgEl("path", { class: "country", d: path(f) || "" });
          if (f.properties && f.properties.name) p.dataset.name = f.properties.name;
          g.append(p);
        }
        const borders = root.topojson.mesh(world, world.objects.countries, (a, b) => a !== b);
        g.append(svgEl("path", { class: "borders", d: path(borders) || "" }));
        base.append(g);
      })
      .catch((err) => {
        console.error("dashboard: world map failed to load", err);
        $("map-error").hidden = false;
      });

    const markers = $("map-markers");
    markers.addEventListener("pointerover", (e) => showTooltip(e));
    markers.addEventListener("pointermove", (e) => showTooltip(e));
    markers.addEventListener("pointerout", () => ($("tooltip").hidden = true));
    setInterval(fadeMarkers, 5000);
  }

  function showTooltip(e) {
    const c = e.target.closest && e.target.closest(".signup");
    const tip = $("tooltip");
    if (!c) {
      tip.hidden = true;
      return;
    }
    tip.replaceChildren();
    const strong = document.createElement("strong");
    strong.textContent = c.dataset.name || "(no name)";
    const place = document.createElement("span");
    place.textContent = c.dataset.place || "";
    const meta = document.createElement("span");
    meta.className = "tip-meta";
    meta.textContent = [c.dataset.site, c.dataset.time].filter(Boolean).join(" · ");
    tip.append(strong, place, meta);
    const box = $("map-wrap").getBoundingClientRect();
    tip.style.left = `${e.clientX - box.left + 14}px`;
    tip.style.top = `${e.clientY - box.top + 14}px`;
    tip.hidden = false;
  }

  function fadeMarkers() {
    const now = Date.now();
    for (const m of map.markers) m.g.style.opacity = String(markerOpacity(now - m.t));
  }

  function addSignup(ce, d) {
    map.seen += 1;
    $("signup-count").textContent = fmtInt.format(map.seen);
    const name = str(d.name) || "(no name)";
    const place = placeOf(d);
    const when = eventTime(ce);

    $("latest-name").textContent = name;
    $("latest-place").textContent = place || "location unknown";
    $("map-latest").hidden = false;

    const lat = num(d.latitude);
    const lon = num(d.longitude);
    if (lat === null || lon === null || map.projection === null) return;
    const xy = map.projection([lon, lat]);
    if (!xy || !Number.isFinite(xy[0]) || !Number.isFinite(xy[1])) return;
    const [x, y] = xy;

    const g = svgEl("g", { class: "signup", transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` });
    g.dataset.name = name;
    g.dataset.place = place;
    g.dataset.site = str(d.site) || "";
    g.dataset.time = clockText(when);
    const pulse = svgEl("circle", { class: "signup-pulse", r: 5 });
    const dot = svgEl("circle", { class: "signup-marker", r: 4.5 });
    dot.dataset.name = name;
    dot.dataset.city = str(d.city) || "";
    g.append(pulse, dot);
    pulse.addEventListener("animationend", () => pulse.remove(), { once: true });
    setTimeout(() => pulse.remove(), 4000); // in case animations are off
    $("map-markers").append(g);
    map.markers.push({ g, t: Date.now() });
    while (map.markers.length > CONFIG.maxMarkers) map.markers.shift().g.remove();
    $("marker-count").textContent = fmtInt.format(map.markers.length);

    addLabel(x, y, place ? `${name} · ${str(d.city) || place}` : name);
  }

  function addLabel(x, y, text) {
    const right = x < 720;
    const label = svgEl("text", {
      class: "signup-label",
      x: (x + (right ? 10 : -10)).toFixed(1),
      y: (y + 4).toFixed(1),
      "text-anchor": right ? "start" : "end",
    });
    label.textContent = text;
    // A new label replaces any label close to it, so bursts in one city stay legible.
    for (const other of map.labels.filter((l) => Math.hypot(l._x - x, l._y - y) < 24)) {
      other.remove();
      map.labels.splice(map.labels.indexOf(other), 1);
    }
    label._x = x;
    label._y = y;
    $("map-labels").append(label);
    map.labels.push(label);
    while (map.labels.length > CONFIG.maxLabels) map.labels.shift().remove();
    setTimeout(() => {
      label.remove();
      const i = map.labels.indexOf(label);
      if (i >= 0) map.labels.splice(i, 1);
    }, CONFIG.labelMs);
  }

  /* ------------------------------------------------------------------ activity stream */

  const STATUSES = new Set(["ok", "failed", "deadletter", "received"]);
  let lineCount = 0;

  function addActivity(ce, d) {
    rate.addArrival(Date.now());
    const status = STATUSES.has(d.status) ? d.status : "unknown";
    const li = document.createElement("li");
    li.className = `activity-line status-${status} new`;
    const time = document.createElement("time");
    const when = eventTime(ce);
    time.dateTime = when.toISOString();
    time.textContent = clockText(when);
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = status === "deadletter" ? "dead" : status;
    const text = document.createElement("span");
    text.className = "line-text";
    text.textContent = str(d.line) || str(d.type) || str(ce.type) || "(event)";
    const meta = document.createElement("span");
    meta.className = "line-meta";
    meta.textContent = [str(d.type), str(d.source)].filter(Boolean).join(" · ");
    const foot = document.createElement("span");
    foot.className = "line-foot";
    foot.append(time, meta);
    li.append(badge, text, foot);

    const stream = $("stream");
    stream.prepend(li);
    li.addEventListener("animationend", () => li.classList.remove("new"), { once: true });
    while (stream.childElementCount > CONFIG.maxLines) stream.lastElementChild.remove();
    lineCount = stream.childElementCount;
    $("activity-count").textContent = String(lineCount);
  }

  /* ------------------------------------------------------------------ status */

  const COMPONENT_ORDER = ["worker", "gateway", "bot", "xmpp"];
  const COMPONENT_STATES = new Set(["running", "stopped", "degraded"]);
  const BREAKER_STATES = new Set(["closed", "open", "half-open"]);
  let lastStatusAt = 0;

  function setNumber(id, value) {
    const v = num(value);
    $(id).textContent = v === null ? "–" : fmtInt.format(v);
    return v;
  }

  function renderStatus(s) {
    const dead = setNumber("deadletters", s.deadletters);
    $("tile-deadletters").classList.toggle("alert", dead !== null && dead > 0);
    setNumber("events-total", s.events_total);
    setNumber("queue-depth", s.queue_depth);
    setNumber("in-flight", s.in_flight);
    rate.addStatusSample(Date.now(), num(s.events_total));

    const comps = s.components && typeof s.components === "object" ? s.components : {};
    const names = [
      ...COMPONENT_ORDER,
      ...Object.keys(comps).filter((n) => !COMPONENT_ORDER.includes(n)).sort(),
    ];
    const list = $("components");
    list.replaceChildren(
      ...names.map((n) => {
        const c = comps[n] && typeof comps[n] === "object" ? comps[n] : {};
        const state = COMPONENT_STATES.has(c.state) ? c.state : "unknown";
        const li = document.createElement("li");
        li.className = `component state-${state}`;
        const dot = document.createElement("span");
        dot.className = "dot";
        const label = document.createElement("span");
        label.className = "comp-name";
        label.textContent = n;
        const st = document.createElement("span");
        st.className = "comp-state";
        st.textContent = state;
        const detail = document.createElement("span");
        detail.className = "comp-detail";
        detail.textContent = str(c.detail) || "";
        li.append(dot, label, st, detail);
        return li;
      }),
    );

    const breakers = s.breakers && typeof s.breakers === "object" ? s.breakers : {};
    $("breakers").replaceChildren(
      ...Object.keys(breakers)
        .sort()
        .map((n) => {
          const state = BREAKER_STATES.has(breakers[n]) ? breakers[n] : "unknown";
          const li = document.createElement("li");
          li.className = `breaker breaker-${state}`;
          li.textContent = `${n} `;
          const b = document.createElement("b");
          b.textContent = state;
          li.append(b);
          return li;
        }),
    );
  }

  async function pollStatus() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), CONFIG.statusTimeoutMs);
    try {
      const r = await fetch(CONFIG.statusUrl, { cache: "no-store", signal: ctl.signal });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const s = await r.json();
      renderStatus(s && typeof s === "object" ? s : {});
      lastStatusAt = Date.now();
      setConn("status", "live", "ok");
      document.body.classList.remove("status-stale");
    } catch (err) {
      setConn("status", "offline", "unreachable");
      document.body.classList.add("status-stale");
    } finally {
      clearTimeout(timer);
      setTimeout(pollStatus, CONFIG.statusEveryMs);
    }
  }

  function renderStatusAge() {
    const el = $("status-age");
    if (!lastStatusAt) {
      el.textContent = "waiting for status";
      return;
    }
    const age = Math.round((Date.now() - lastStatusAt) / 1000);
    el.textContent = age <= 3 ? "up to date" : `updated ${age} s ago`;
  }

  /* ------------------------------------------------------------------ rate chart */

  const rate = new RateTracker(CONFIG.rateWindowS);

  function renderChart() {
    const svg = $("rate-chart");
    const w = Math.max(200, Math.round(svg.clientWidth || 600));
    const h = Math.max(80, Math.round(svg.clientHeight || 160));
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    const now = Date.now();
    const { source, intervals, current } = rate.series(now);
    const fontPx = parseFloat(getComputedStyle(svg).fontSize) * 0.8 || 13; // --fs-small
    const padL = Math.round(fontPx * 3.4);
    const padR = 8;
    const padT = Math.round(fontPx * 0.8);
    const padB = Math.round(fontPx * 1.9);
    const from = now - CONFIG.rateWindowS * 1000;
    const max = niceMax(Math.max(0, ...intervals.map((i) => i.v)) * 1.1);
    const xs = (t) => padL + ((t - from) / (now - from)) * (w - padL - padR);
    const ys = (v) => h - padB - (v / max) * (h - padT - padB);
    const base = ys(0);

    const parts = [];
    for (const v of [0, max / 2, max]) {
      const y = ys(v).toFixed(1);
      parts.push(svgEl("line", { class: "grid", x1: padL, x2: w - padR, y1: y, y2: y }));
      const t = svgEl("text", {
        class: "axis",
        x: padL - 6,
        y: Number(y) + fontPx * 0.35,
        "text-anchor": "end",
      });
      t.textContent = max < 10 && v % 1 ? v.toFixed(1) : fmtInt.format(v);
      parts.push(t);
    }
    for (const [s, label] of [[120, "−2 min"], [60, "−1 min"], [0, "now"]]) {
      const x = xs(now - s * 1000);
      const anchor = s === 120 ? "start" : s === 0 ? "end" : "middle";
      const t = svgEl("text", { class: "axis", x: x.toFixed(1), y: h - 4, "text-anchor": anchor });
      t.textContent = label;
      parts.push(t);
    }

    let line = "";
    let area = "";
    let prevEnd = null;
    let runStart = null;
    for (const iv of intervals) {
      const x0 = xs(iv.t0).toFixed(1);
      const x1 = xs(iv.t1).toFixed(1);
      const y = ys(iv.v).toFixed(1);
      if (prevEnd === null || Math.abs(iv.t0 - prevEnd) > 1) {
        if (runStart !== null) area += `L${xs(prevEnd).toFixed(1)},${base.toFixed(1)}Z`;
        line += `M${x0},${y}`;
        area += `M${x0},${base.toFixed(1)}L${x0},${y}`;
        runStart = iv.t0;
      } else {
        line += `L${x0},${y}`;
        area += `L${x0},${y}`;
      }
      line += `L${x1},${y}`;
      area += `L${x1},${y}`;
      prevEnd = iv.t1;
    }
    if (runStart !== null) area += `L${xs(prevEnd).toFixed(1)},${base.toFixed(1)}Z`;
    if (area) parts.push(svgEl("path", { class: "rate-area", d: area }));
    if (line) parts.push(svgEl("path", { class: "rate-line", d: line }));
    svg.replaceChildren(...parts);

    $("rate-now").textContent = `${fmtRate.format(current)} /s`;
    $("rate-source").textContent =
      source === "status" ? "from status, last 2 min" : "from stream, last 2 min";
  }

  /* ------------------------------------------------------------------ boot */

  function tick() {
    $("clock").textContent = clockText(new Date());
    renderStatusAge();
  }

  function boot() {
    initMap();
    tick();
    renderChart();
    setInterval(tick, 1000);
    setInterval(renderChart, 500);
    if (typeof ResizeObserver === "function") {
      new ResizeObserver(() => renderChart()).observe($("chart-wrap"));
    }
    openFeed("signups", CONFIG.signupsUrl, addSignup);
    openFeed("activity", CONFIG.activityUrl, addActivity);
    pollStatus();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", boot, { once: true });
  } else {
    boot();
  }
})(typeof globalThis !== "undefined" ? globalThis : this);
