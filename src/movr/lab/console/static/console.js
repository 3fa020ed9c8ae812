/* The MovR lab console: one page over the lab's console API (/lab/api/*, see the console package).
 *
 * Vanilla JS and SVG, no build step, nothing from the internet. The lab's token comes from the page's
 * <meta name="movr-lab-token">; every API call sends it in X-Movr-Lab-Token, and the live stream (an
 * EventSource cannot send headers) takes it as ?token=. Every piece of text from the lab goes in through
 * textContent, never as HTML.
 */
"use strict";

(() => {
  const TOKEN = document.querySelector('meta[name="movr-lab-token"]')?.content || "";
  const SVGNS = "http://www.w3.org/2000/svg";
  const STALE_AFTER_MS = 2500; // the stream sends about two updates a second
  const MAX_REQUESTS = 50;
  const TOPOLOGY_COLORS = ["#c2410c", "#7c3aed", "#0b7a75", "#2563eb", "#0891b2", "#be185d"];
  const LINK_COLOR = "#5b7fa6";
  const DOWN_COLOR = "#d64545";
  const DELAY_COLOR = "#e08a00";

  const state = {
    topo: null,
    health: null,
    traffic: null,
    requests: [],
    observations: [],
    selectedCity: null,
    hoverCity: null,
    lastUpdate: 0,
    stream: null,
    streamClosed: false,
    regionIndex: new Map(),
    linkInfo: new Map(),
    map: null,
    saved: null,
    savedCity: null,
    pendingFault: null,
    busy: false,
    settledFaults: new Set(),
    sawStream: false,
    placementLoading: false,
  };

  // --- small helpers ---------------------------------------------------------------------------------------

  function build(ns, tag, attrs, children) {
    const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "on")
        for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
      else if (key === "class" && !ns) node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const h = (tag, attrs, ...children) => build(null, tag, attrs, children);
  const s = (tag, attrs, ...children) => build(SVGNS, tag, attrs, children);
  const $ = (selector) => document.querySelector(selector);

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, body) {
    const init = { headers: { "X-Movr-Lab-Token": TOKEN, Accept: "application/json" } };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, "The lab did not answer: is it still running?");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      const message = data && data.error && data.error.message;
      throw new ApiError(response.status, message || `The lab answered ${response.status}.`);
    }
    return data;
  }

  /** How people write a city, as the app does: "washington dc" -> "Washington DC". */
  function cityName(city) {
    return String(city)
      .split(/\s+/)
      .map((word) => (word.length <= 2 ? word.toUpperCase() : word.charAt(0).toUpperCase() + word.slice(1)))
      .join(" ");
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
    if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
    if (ms >= 100) return `${ms.toFixed(0)} ms`;
    if (ms >= 10) return `${ms.toFixed(1)} ms`;
    return `${ms.toFixed(2)} ms`;
  }

  function fmtRate(rate) {
    if (!rate) return "0/s";
    if (rate < 0.05) return "<0.1/s";
    return rate >= 10 ? `${rate.toFixed(0)}/s` : `${rate.toFixed(1)}/s`;
  }

  function plural(n, word, many) {
    return `${n} ${n === 1 ? word : many || `${word}s`}`;
  }

  function clock(epochSeconds) {
    const d = new Date(epochSeconds * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  /** The app's region colour class: the region's place in the preset, mod 5 (movr.web.app's region_class). */
  function regionClass(region) {
    const index = state.regionIndex.get(region);
    return index === undefined ? "region-none" : `region-${index % 5}`;
  }

  function regionColor(region) {
    const index = state.regionIndex.get(region);
    if (index === undefined) return "#6c757d";
    const css = getComputedStyle(document.documentElement)
      .getPropertyValue(`--movr-region-${index % 5}`)
      .trim();
    return css || ["#2f6fde", "#9b4dca", "#0b8f6a", "#d9534f", "#b8860b"][index % 5];
  }

  /** A region's badge in the app's colours; `live`: struck through while the region is down (current views only,
   * never a record of the past such as the timeline). */
  function regionBadge(region, live) {
    if (!region) return h("span", { class: "region-badge region-none", text: "none" });
    const health = state.health && state.health.regions[region];
    const down = Boolean(live && health && !health.up);
    return h("span", { class: `region-badge ${regionClass(region)}${down ? " region-down" : ""}`, text: region });
  }

  function showAlert(message) {
    const box = $("#console-alert");
    box.textContent = message;
    box.classList.toggle("d-none", !message);
  }

  function spinner(label) {
    return h("span", {}, h("span", { class: "spinner-border spinner-border-sm me-2", role: "status" }), label);
  }

  /** A latency beside its floor: the bar is the latency, the dark tick the floor, on a scale up to `max`. */
  function vsFloor(latency, floor, max, failed) {
    const pct = (v) => `${Math.max(0, Math.min(100, (v / max) * 100)).toFixed(1)}%`;
    const lat = h("span", { class: `lat${failed ? " failed" : ""}` });
    lat.style.width = pct(latency);
    const track = h("span", { class: "track" }, lat);
    if (floor !== null && floor !== undefined) {
      const mark = h("span", { class: "floor", title: `floor ${fmtMs(floor)}` });
      mark.style.left = `calc(${pct(floor)} - 1px)`;
      track.append(mark);
    }
    const figs = h(
      "span",
      { class: "figs" },
      h("strong", { text: fmtMs(latency) }),
      floor === null || floor === undefined ? null : h("span", { class: "of", text: ` / floor ${fmtMs(floor)}` }),
    );
    return h("div", { class: "vs-floor" }, track, figs);
  }

  // --- the lab, as the topology describes it -----------------------------------------------------------------

  function regionsOf(topo) {
    return topo.regions.map((region) => region.name);
  }

  function pairs(topo) {
    const names = regionsOf(topo);
    const out = [];
    names.forEach((a, i) => names.slice(i + 1).forEach((b) => out.push([a, b])));
    return out;
  }

  function serversIn(region) {
    return state.topo.servers.filter((server) => server.region === region);
  }

  /** The region a client in `city` is sent to now: the nearest region whose app is in rotation. */
  function servingRegion(city) {
    const topo = state.topo;
    const candidates = topo.regions
      .filter((region) => region.app)
      .map((region) => region.name)
      .filter((region) => {
        const app = state.health && state.health.apps[region];
        return !app || app.in_rotation;
      });
    if (topo.topology === "single") return candidates.includes(topo.primary_region) ? topo.primary_region : null;
    const rtts = topo.client_rtt_ms[city] || {};
    let best = null;
    for (const region of candidates) if (best === null || rtts[region] < rtts[best]) best = region;
    return best;
  }

  function pairKey(a, b) {
    return [a, b].sort().join("|");
  }

  /** Every region pair's live state: partitioned, delayed (the round trip added) and WAN round trips/s. */
  function pairStates() {
    const out = new Map();
    for (const [a, b] of pairs(state.topo)) out.set(pairKey(a, b), { down: false, added: 0, rate: 0 });
    const health = state.health;
    if (health) {
      for (const [a, b] of health.partitions || []) {
        const entry = out.get(pairKey(a, b));
        if (entry) entry.down = true;
      }
      for (const [name, link] of Object.entries(health.links || {})) {
        const info = state.linkInfo.get(name);
        if (!info || info.from === info.to_region) continue;
        const entry = out.get(pairKey(info.from, info.to_region));
        if (!entry) continue;
        if (link.down && info.purpose === "app") entry.down = true;
        entry.added = Math.max(entry.added, link.added_ms || 0);
      }
    }
    const rates = (state.traffic && state.traffic.wan_round_trips_per_s) || {};
    for (const [name, rate] of Object.entries(rates)) {
      const info = state.linkInfo.get(name);
      if (!info) continue;
      const entry = out.get(pairKey(info.from, info.to_region));
      if (entry) entry.rate += rate;
    }
    return out;
  }

  function regionHealth(region) {
    const health = state.health && state.health.regions[region];
    if (!health) return { label: "…", cls: "", up: "unknown" };
    if (!health.up) return { label: "DOWN", cls: "down", up: "false" };
    const appOut = health.app === false && state.topo.regions.find((r) => r.name === region).app;
    if (health.servers_up < health.servers || appOut || health.in_rotation === false) {
      return { label: "DEGRADED", cls: "degraded", up: "degraded" };
    }
    return { label: "UP", cls: "", up: "true" };
  }

  // --- the header --------------------------------------------------------------------------------------------

  function renderSummary() {
    const topo = state.topo;
    const parts = [h("strong", { text: topo.topology }), " topology · preset ", h("strong", { text: topo.preset })];
    if (topo.survival) {
      parts.push(" · survival goal ", h("strong", { text: topo.survival.goal }));
      const supers = Object.keys(topo.survival.super_regions || {});
      if (supers.length) parts.push(` (super region ${supers.join(", ")})`);
    } else {
      parts.push(" · no survival goal");
    }
    parts.push(` · delays ×${topo.scale}`);
    $("#lab-summary").replaceChildren(...parts);
  }

  function tickLive() {
    const box = $("#live-state");
    const text = box.querySelector(".live-text");
    const age = Date.now() - state.lastUpdate;
    if (state.streamClosed) {
      box.dataset.state = "refused";
      text.textContent = "disconnected: the lab refused the stream or stopped; reload the page";
    } else if (!state.lastUpdate) {
      box.dataset.state = "connecting";
      text.textContent = "connecting…";
    } else if (age > STALE_AFTER_MS) {
      box.dataset.state = "stale";
      text.textContent = `no update for ${Math.round(age / 1000)} s`;
    } else {
      box.dataset.state = "live";
      text.textContent = "live";
    }
    renderObservations(); // their ages move on
  }

  // --- region cards (the server-rendered list, filled in) --------------------------------------------------

  function buildRegionCards() {
    const list = $("#regions");
    const items = new Map([...list.querySelectorAll("li[data-region]")].map((li) => [li.dataset.region, li]));
    for (const region of state.topo.regions) {
      let li = items.get(region.name);
      if (!li) {
        li = h("li", { class: "lab-region", "data-region": region.name });
        list.append(li);
      }
      li.setAttribute("data-testid", `region-${region.name}`);
      const head = h(
        "div",
        { class: "region-head" },
        regionBadge(region.name),
        region.primary ? h("span", { class: "small-note", text: "primary region" }) : null,
        h("span", { class: "region-state ms-auto", "data-testid": "region-state", text: "…" }),
      );
      const facts = [plural(region.cities.length, "client city", "client cities")];
      if (region.survival_goal) facts.push(`survives ${region.survival_goal} failure`);
      if (region.super_region) facts.push(`super region ${region.super_region}`);
      const servers = h("ul", { class: "server-list" });
      const actions = h(
        "div",
        { class: "region-actions" },
        h("button", {
          class: "btn btn-outline-danger",
          type: "button",
          "data-testid": "kill-region",
          text: "Kill region…",
          on: { click: () => proposeFault("kill", region.name) },
        }),
        h("button", {
          class: "btn btn-outline-success",
          type: "button",
          "data-testid": "heal-region",
          text: "Heal region…",
          on: { click: () => proposeFault("heal", region.name) },
        }),
      );
      const rate = h("span", { class: "rate" });
      li.replaceChildren(head, h("div", { class: "region-facts" }, facts.join(" · "), " · ", rate), servers, actions);
    }
    updateRegionCards();
  }

  /** A server in a region card; a database server (`onPick`) is a shortcut to kill or heal it. */
  function serverRow(name, role, up, title, onPick) {
    const dot = h("span", { class: `health-dot${up === null ? " unknown" : up ? "" : " down"}` });
    return h(
      "li",
      {
        title: onPick ? `${title}: click to ${up === false ? "heal" : "kill"} it` : title,
        class: onPick ? "pickable" : null,
        "data-server": name,
        "data-up": up === null ? "unknown" : String(up),
        on: onPick ? { click: onPick } : null,
      },
      dot,
      h("span", { class: "name", text: name }),
      h("span", { class: `role${role.startsWith("primary") ? " primary" : ""}`, text: role }),
    );
  }

  function updateRegionCards() {
    const health = state.health;
    const rates = (state.traffic && state.traffic.requests_per_s) || {};
    for (const region of state.topo.regions) {
      const li = $(`#regions li[data-region="${CSS.escape(region.name)}"]`);
      if (!li) continue;
      const status = regionHealth(region.name);
      li.dataset.up = status.up;
      const pill = li.querySelector(".region-state");
      pill.textContent = status.label;
      pill.className = `region-state ms-auto ${status.cls}`;
      li.querySelector(".rate").textContent = `${fmtRate(rates[region.name] || 0)} requests`;
      const rows = [];
      if (region.app) {
        const app = health && health.apps[region.name];
        const up = app ? app.up && app.in_rotation : null;
        const role = !app
          ? "app server"
          : app.up
            ? app.in_rotation
              ? "app server, in rotation"
              : "app server, out of rotation"
            : "app server, down";
        rows.push(serverRow(`app-${region.name}`, role, up, "serves the app to this region's clients"));
      } else {
        rows.push(h("li", { class: "muted" }, "no app server in this topology"));
      }
      for (const server of serversIn(region.name)) {
        const live = health && health.servers[server.name];
        const role = (live && live.role) || server.role;
        const whose = server.group === region.name ? "" : ` of ${server.group}'s data`;
        const label = role === "primary" ? `primary${whose}` : `standby${whose}`;
        const up = live ? live.up : null;
        rows.push(
          serverRow(
            server.name,
            up === false ? `${label}, down` : label,
            up,
            `database server holding ${server.group}'s data`,
            () => proposeFault(up === false ? "heal" : "kill", server.name),
          ),
        );
      }
      li.querySelector(".server-list").replaceChildren(...rows);
      const lost = health && health.regions[region.name] && health.regions[region.name].lost;
      li.querySelector('[data-testid="kill-region"]').disabled = Boolean(lost);
    }
  }

  /** Every link of the lab with its live state; the summary line counts those down or delayed. */
  function updateLinks() {
    const live = (state.health && state.health.links) || {};
    const rates = (state.traffic && state.traffic.wan_round_trips_per_s) || {};
    let down = 0;
    let delayed = 0;
    const rows = state.topo.links.map((link) => {
      const now = live[link.name] || {};
      if (now.down) down += 1;
      else if (now.added_ms) delayed += 1;
      const stateText = now.down
        ? "down"
        : now.added_ms
          ? `+${fmtMs(now.added_ms)} added`
          : link.kind === "wan"
            ? "up (WAN)"
            : "up (in region)";
      return h(
        "tr",
        { "data-link": link.name },
        h("td", { text: link.purpose }),
        h("td", {}, regionBadge(link.from)),
        h("td", {}, h("code", { text: link.to }), " ", h("span", { class: "small-note", text: link.to_region })),
        h("td", { class: "num", text: fmtMs(now.rtt_ms === undefined ? link.rtt_ms : now.rtt_ms) }),
        h("td", {}, h("span", { class: `health-dot me-1${now.down ? " down" : ""}` }), stateText),
        h("td", { class: "num", text: rates[link.name] ? fmtRate(rates[link.name]) : "–" }),
      );
    });
    $("#links-body").replaceChildren(...rows);
    const counts = [down && `${down} down`, delayed && `${delayed} delayed`].filter(Boolean).join(", ");
    const unknown = state.health && state.health.links_reachable === false;
    $("#links-summary").textContent = unknown
      ? `${state.topo.links.length} links, state unknown (the links process did not answer just now)`
      : `${state.topo.links.length} links, ${counts || "all up"}`;
  }

  // --- the map -----------------------------------------------------------------------------------------------

  function projection(topo) {
    const points = [...topo.regions, ...topo.cities];
    let lonMin = Math.min(...points.map((p) => p.lon));
    let lonMax = Math.max(...points.map((p) => p.lon));
    let latMin = Math.min(...points.map((p) => p.lat));
    let latMax = Math.max(...points.map((p) => p.lat));
    const padLon = Math.max(5, (lonMax - lonMin) * 0.06);
    const padLat = Math.max(4, (latMax - latMin) * 0.12);
    lonMin -= padLon;
    lonMax += padLon;
    latMin -= padLat;
    latMax += padLat;
    // Equirectangular with its standard parallel in the middle: distances near the regions look right.
    const kx = Math.cos((((latMin + latMax) / 2) * Math.PI) / 180);
    let spanX = (lonMax - lonMin) * kx;
    let spanY = latMax - latMin;
    const widest = 2.4;
    const tallest = 1.4;
    if (spanX / spanY > widest) {
      const grow = (spanX / widest - spanY) / 2;
      latMin = Math.max(-85, latMin - grow);
      latMax = Math.min(85, latMax + grow);
      spanY = latMax - latMin;
    } else if (spanX / spanY < tallest) {
      const grow = (spanY * tallest - spanX) / kx / 2;
      lonMin -= grow;
      lonMax += grow;
      spanX = (lonMax - lonMin) * kx;
    }
    const width = 1000;
    const scale = width / spanX;
    return {
      width,
      height: Math.round(spanY * scale),
      xy: (lat, lon) => [(lon - lonMin) * kx * scale, (latMax - lat) * scale],
    };
  }

  /** The continents' rings in [lon, lat] from the vendored TopoJSON (world-atlas land-110m, Natural Earth). */
  function landRings(topology) {
    const [sx, sy] = topology.transform.scale;
    const [tx, ty] = topology.transform.translate;
    const arcs = topology.arcs.map((arc) => {
      let x = 0;
      let y = 0;
      return arc.map(([dx, dy]) => {
        x += dx;
        y += dy;
        return [x * sx + tx, y * sy + ty];
      });
    });
    const arcPoints = (i) => (i >= 0 ? arcs[i] : arcs[~i].slice().reverse());
    const rings = [];
    for (const geometry of topology.objects.land.geometries) {
      const polygons =
        geometry.type === "Polygon" ? [geometry.arcs] : geometry.type === "MultiPolygon" ? geometry.arcs : [];
      for (const polygon of polygons) {
        for (const ring of polygon) {
          const points = [];
          for (const index of ring) {
            const part = arcPoints(index);
            points.push(...(points.length ? part.slice(1) : part));
          }
          // A ring that crosses the antimeridian (eastern Russia) jumps between 180 and -180: unwrap it, so that
          // it does not draw a band across the world, and draw it once more a world over.
          const unwrapped = [];
          let shift = 0;
          points.forEach(([lon, lat], i) => {
            if (i > 0) {
              const jump = lon + shift - unwrapped[i - 1][0];
              if (jump > 180) shift -= 360;
              else if (jump < -180) shift += 360;
            }
            unwrapped.push([lon + shift, lat]);
          });
          rings.push(unwrapped);
          if (unwrapped.some(([lon]) => lon > 180)) rings.push(unwrapped.map(([lon, lat]) => [lon - 360, lat]));
          if (unwrapped.some(([lon]) => lon < -180)) rings.push(unwrapped.map(([lon, lat]) => [lon + 360, lat]));
        }
      }
    }
    return rings;
  }

  async function drawLand() {
    let topology;
    try {
      const response = await fetch("/lab/static/vendor/world-atlas/land-110m.json");
      if (!response.ok) return;
      topology = await response.json();
    } catch (error) {
      return; // the map still works without its continents
    }
    const { xy } = state.map.projection;
    const d = landRings(topology)
      .map(
        (ring) =>
          `M${ring
            .map(([lon, lat]) =>
              xy(lat, lon)
                .map((v) => v.toFixed(1))
                .join(","),
            )
            .join("L")}Z`,
      )
      .join("");
    state.map.land.replaceChildren(s("path", { class: "land", d, "fill-rule": "evenodd" }));
  }

  /** A gently bent line from p0 to p1, bowed `offset` px to one side; `mid` is its halfway point. */
  function curve(p0, p1, offset) {
    const mx = (p0[0] + p1[0]) / 2;
    const my = (p0[1] + p1[1]) / 2;
    const dx = p1[0] - p0[0];
    const dy = p1[1] - p0[1];
    const length = Math.hypot(dx, dy) || 1;
    // The control point sits twice as far out as the curve's middle.
    const c = [mx - (dy / length) * offset * 2, my + (dx / length) * offset * 2];
    const mid = [0.25 * p0[0] + 0.5 * c[0] + 0.25 * p1[0], 0.25 * p0[1] + 0.5 * c[1] + 0.25 * p1[1]];
    const f = (v) => v.toFixed(1);
    return { d: `M${f(p0[0])},${f(p0[1])}Q${f(c[0])},${f(c[1])} ${f(p1[0])},${f(p1[1])}`, mid };
  }

  /** Bend each region-to-region line to the side that keeps its label furthest from what is drawn already. */
  function placeLinks(pairList, positions, avoid, width, height) {
    const taken = [...positions.values(), ...avoid];
    const placed = [];
    const inside = ([x, y]) => x > 40 && x < width - 40 && y > 30 && y < height - 30;
    for (const [a, b] of pairList) {
      const p0 = positions.get(a);
      const p1 = positions.get(b);
      const length = Math.hypot(p1[0] - p0[0], p1[1] - p0[1]);
      const base = Math.max(30, length * 0.1);
      let best = null;
      for (const offset of [base, -base, base * 1.7, -base * 1.7, base * 2.4, -base * 2.4, 0]) {
        const candidate = curve(p0, p1, offset);
        // The curve's middle and its control point (how far it bows) must stay on the map.
        const control = [2 * candidate.mid[0] - (p0[0] + p1[0]) / 2, 2 * candidate.mid[1] - (p0[1] + p1[1]) / 2];
        const onMap = inside(candidate.mid) && inside(control);
        const clearance =
          Math.min(...taken.map(([x, y]) => Math.hypot(candidate.mid[0] - x, candidate.mid[1] - y))) -
          (onMap ? 0 : 1000);
        if (best === null || clearance > best.clearance + 20) best = { ...candidate, clearance };
      }
      taken.push(best.mid);
      placed.push([a, b, best]);
    }
    return placed;
  }

  function drawMap() {
    const topo = state.topo;
    const svg = $("#map");
    const proj = projection(topo);
    const { width, height, xy } = proj;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const layers = {};
    for (const name of ["land", "links", "clients", "cities", "regions", "labels", "overlay"])
      layers[name] = s("g", { class: `layer-${name}` });
    svg.replaceChildren(...Object.values(layers));
    state.map = { projection: proj, ...layers, pairs: new Map(), regions: new Map(), positions: new Map() };

    for (const region of topo.regions) state.map.positions.set(region.name, xy(region.lat, region.lon));

    // Region-to-region links, bent a little so that their labels stay clear of the straight line of cities.
    // Where the region name tags go (above or below their dot): the links' labels keep clear of them.
    const tagCentres = topo.regions.flatMap((region) => {
      const [x, y] = tagCentre(region.name);
      const half = region.name.length * 4.1 + 8;
      return [
        [x, y],
        [x - half, y],
        [x + half, y],
      ];
    });
    for (const [a, b, { d, mid }] of placeLinks(pairs(topo), state.map.positions, tagCentres, width, height)) {
      const path = s("path", { class: "wan-line", d, stroke: LINK_COLOR, "stroke-width": 2 });
      const rtt = topo.rtt_ms[a][b];
      const label = s("text", {
        class: "wan-label",
        x: mid[0],
        y: mid[1],
        "text-anchor": "middle",
        text: `${Math.round(rtt)} ms`,
      });
      const rate = s("text", { class: "wan-rate", x: mid[0], y: mid[1] + 14, "text-anchor": "middle" });
      const title = s("title", {
        text: `${a} ↔ ${b}: ${rtt} ms round trip (the lab carries ${fmtMs(rtt * topo.scale)})`,
      });
      path.append(title);
      layers.links.append(path);
      layers.labels.append(label, rate);
      state.map.pairs.set(pairKey(a, b), { path, label, rate, rtt });
    }

    // Client cities: a dot in their home region's colour; their round trips appear on hover or selection.
    for (const city of topo.cities) {
      const [x, y] = xy(city.lat, city.lon);
      const dot = s("circle", {
        class: "city",
        cx: x,
        cy: y,
        r: 3.6,
        fill: regionColor(city.region),
        "data-city": city.name,
      });
      const hit = s("circle", { class: "city-hit", cx: x, cy: y, r: 8, "data-city": city.name });
      hit.append(s("title", { text: `${cityName(city.name)} (home region ${city.region}): click to follow it` }));
      hit.addEventListener("mouseenter", () => {
        state.hoverCity = city.name;
        drawClientLines();
      });
      hit.addEventListener("mouseleave", () => {
        state.hoverCity = null;
        drawClientLines();
      });
      hit.addEventListener("click", () => selectCity(state.selectedCity === city.name ? null : city.name));
      layers.cities.append(dot, hit);
    }

    // Regions: a dot in the app's region colour, a name tag, and a line saying how it is doing.
    for (const region of topo.regions) {
      const [x, y] = state.map.positions.get(region.name);
      const color = regionColor(region.name);
      const pulse = s("circle", { class: "pulse", cx: x, cy: y, r: 13, stroke: color });
      const dot = s("circle", { class: "region-dot", cx: x, cy: y, r: 12, fill: color });
      const ring = s("circle", { class: "region-down-ring", cx: x, cy: y, r: 17, visibility: "hidden" });
      const [tx, ty] = tagCentre(region.name);
      const tagWidth = region.name.length * 8.2 + 16;
      const leader = s("line", { class: "region-leader", x1: x, y1: y, x2: tx, y2: ty, stroke: color });
      const tag = s("rect", { x: tx - tagWidth / 2, y: ty - 10, width: tagWidth, height: 20, rx: 10, fill: color });
      const name = s("text", { class: "region-name", x: tx, y: ty + 4.5, "text-anchor": "middle", text: region.name });
      const note = s("text", { class: "region-note", x: tx, y: ty + 25, "text-anchor": "middle" });
      layers.regions.append(leader);
      const node = s("g", { class: "region-node", "data-region": region.name }, pulse, ring, dot);
      node.append(s("title", { text: `${region.name}: click to choose it in the faults panel` }));
      node.addEventListener("click", () => {
        $("#fault-action").value = "kill";
        fillTargets();
        $("#fault-target").value = region.name;
        $("#fault-target").focus();
      });
      layers.regions.append(node);
      layers.labels.append(tag, name, note);
      state.map.regions.set(region.name, { dot, ring, tag, leader, note, pulse, color });
    }
    drawLegend();
    drawLand();
    updateMap([]);
  }

  /** Where a region's name tag goes: above its dot, or, with another region close by, away from that one. */
  function tagCentre(region) {
    const [x, y] = state.map.positions.get(region);
    let nearest = null;
    let best = Infinity;
    for (const [other, [ox, oy]] of state.map.positions) {
      if (other === region) continue;
      const distance = Math.hypot(ox - x, oy - y);
      if (distance < best) {
        best = distance;
        nearest = [ox, oy];
      }
    }
    if (!nearest || best > 160) return [x, y - 32];
    const dx = (x - nearest[0]) / (best || 1);
    const dy = (y - nearest[1]) / (best || 1);
    return [x + dx * 62, y + dy * 34 + (dy <= 0 ? -12 : 12)];
  }

  function drawLegend() {
    const key = (svgChildren, text) =>
      h("span", { class: "key" }, s("svg", { width: 22, height: 12, viewBox: "0 0 22 12" }, svgChildren), text);
    $("#map-legend").replaceChildren(
      key(s("circle", { cx: 11, cy: 6, r: 5, fill: "#2f6fde", stroke: "#fff" }), "region"),
      key(s("circle", { cx: 11, cy: 6, r: 3, fill: "#2f6fde" }), "client city (its home region's colour)"),
      key(
        s("line", { x1: 1, y1: 6, x2: 21, y2: 6, stroke: LINK_COLOR, "stroke-width": 3 }),
        "RTT between regions; thicker with more WAN round trips",
      ),
      key(
        s("line", { x1: 1, y1: 6, x2: 21, y2: 6, stroke: DOWN_COLOR, "stroke-width": 3, "stroke-dasharray": "4 3" }),
        "partitioned",
      ),
      key(s("line", { x1: 1, y1: 6, x2: 21, y2: 6, stroke: DELAY_COLOR, "stroke-width": 3 }), "delay added"),
      h("span", { class: "key", text: `RTTs are the preset's; the lab carries them ×${state.topo.scale}` }),
    );
  }

  function drawClientLines() {
    const city = state.hoverCity || state.selectedCity;
    const layer = state.map.clients;
    layer.replaceChildren();
    state.map.overlay.replaceChildren();
    for (const dot of state.map.cities.querySelectorAll("circle.city")) {
      dot.classList.toggle("selected", dot.dataset.city === state.selectedCity);
    }
    if (!city) return;
    const topo = state.topo;
    const info = topo.cities.find((c) => c.name === city);
    const { xy, width, height } = state.map.projection;
    const from = xy(info.lat, info.lon);
    const serving = servingRegion(city);
    const rtts = topo.client_rtt_ms[city] || {};
    const lines = [];
    for (const region of topo.regions) {
      if (!region.app) continue;
      const to = state.map.positions.get(region.name);
      const isServing = region.name === serving;
      layer.append(
        s("line", {
          class: `client-line${isServing ? " serving" : ""}`,
          x1: from[0],
          y1: from[1],
          x2: to[0],
          y2: to[1],
          stroke: regionColor(region.name),
        }),
      );
      lines.push([region.name, rtts[region.name], isServing]);
    }
    // A card beside the city: its round trip to each region, the one serving it first.
    lines.sort((a, b) => b[2] - a[2] || a[1] - b[1]);
    const rowHeight = 17;
    const boxWidth = 230;
    const boxHeight = 26 + rowHeight * lines.length;
    // Beside the city, where it covers the fewest regions and their name tags, and stays on the map.
    const marks = [...state.map.positions.keys()].flatMap((region) => [
      state.map.positions.get(region),
      tagCentre(region),
    ]);
    const candidates = [
      [from[0] + 14, from[1] - boxHeight / 2],
      [from[0] - 14 - boxWidth, from[1] - boxHeight / 2],
      [from[0] - boxWidth / 2, from[1] + 14],
      [from[0] - boxWidth / 2, from[1] - 14 - boxHeight],
      [from[0] + 14, from[1] + 14],
      [from[0] - 14 - boxWidth, from[1] + 14],
    ];
    const cost = ([x, y]) =>
      marks.filter(([mx, my]) => mx > x - 40 && mx < x + boxWidth + 40 && my > y - 14 && my < y + boxHeight + 14)
        .length + (x < 0 || y < 0 || x + boxWidth > width || y + boxHeight > height ? 100 : 0);
    const [bx, by] = candidates.reduce((best, candidate) => (cost(candidate) < cost(best) ? candidate : best));
    const card = s("g", { class: "city-card", "data-testid": "city-card" });
    card.append(
      s("rect", { x: bx, y: by, width: boxWidth, height: boxHeight, rx: 6 }),
      s("text", { class: "city-label", x: bx + 10, y: by + 17, text: `${cityName(city)} · home ${info.region}` }),
    );
    lines.forEach(([region, rtt, isServing], i) => {
      const y = by + 20 + rowHeight * (i + 1);
      card.append(
        s("circle", { cx: bx + 14, cy: y - 4, r: 4.5, fill: regionColor(region) }),
        s("text", {
          class: `client-label${isServing ? " serving" : ""}`,
          x: bx + 24,
          y,
          text: `${region}: ${fmtMs(rtt)}${isServing ? " · serves it" : ""}`,
        }),
      );
    });
    state.map.overlay.append(card);
  }

  function selectCity(city) {
    state.selectedCity = city;
    if (city) $("#journey-city").value = city;
    drawClientLines();
  }

  function updateMap(newRequests) {
    if (!state.map) return;
    for (const [region, parts] of state.map.regions) {
      const status = regionHealth(region);
      const down = status.up === "false";
      parts.dot.setAttribute("fill", down ? "#adb5bd" : parts.color);
      parts.tag.setAttribute("fill", down ? "#8b949e" : parts.color);
      parts.leader.setAttribute("stroke", down ? "#8b949e" : parts.color);
      parts.ring.setAttribute("visibility", down ? "visible" : "hidden");
      // Only what the region cards cannot show at a glance: that it is gone.
      parts.note.textContent = down ? "DOWN" : "";
      parts.note.classList.toggle("down", down);
      if (newRequests.some((request) => request.region === region)) {
        parts.pulse.classList.remove("on");
        void parts.pulse.getBoundingClientRect(); // restart the animation
        parts.pulse.classList.add("on");
      }
    }
    for (const [key, link] of pairStates()) {
      const parts = state.map.pairs.get(key);
      if (!parts) continue;
      const color = link.down ? DOWN_COLOR : link.added ? DELAY_COLOR : LINK_COLOR;
      parts.path.setAttribute("stroke", color);
      parts.path.setAttribute("stroke-width", (2 + Math.min(6, Math.log2(1 + link.rate))).toFixed(1));
      if (link.down) parts.path.setAttribute("stroke-dasharray", "7 5");
      else parts.path.removeAttribute("stroke-dasharray");
      parts.label.textContent = link.down
        ? `${Math.round(parts.rtt)} ms · partitioned`
        : link.added
          ? `${Math.round(parts.rtt)} ms (+${fmtMs(link.added)} in the lab)`
          : `${Math.round(parts.rtt)} ms`;
      parts.label.classList.toggle("down", link.down);
      parts.label.classList.toggle("delayed", !link.down && link.added > 0);
      parts.rate.textContent = link.rate > 0 ? `${fmtRate(link.rate)} WAN round trips` : "";
    }
    if (state.hoverCity || state.selectedCity) drawClientLines();
  }

  // --- live traffic ------------------------------------------------------------------------------------------

  function barRow(label, value, max, text) {
    const fill = h("div", { class: "bar-fill" });
    fill.style.width = `${max > 0 ? Math.min(100, (value / max) * 100) : 0}%`;
    return h(
      "div",
      { class: "bar-row" },
      h("div", { class: "label" }, label),
      h("div", { class: "bar-track" }, fill),
      h("div", { class: "num", text }),
    );
  }

  function renderTraffic() {
    const traffic = state.traffic || { requests_per_s: {}, wan_round_trips_per_s: {} };
    const perRegion = regionsOf(state.topo).map((region) => [region, traffic.requests_per_s[region] || 0]);
    const maxRegion = Math.max(1, ...perRegion.map(([, rate]) => rate));
    $("#traffic-regions").replaceChildren(
      ...perRegion.map(([region, rate]) => barRow(regionBadge(region, true), rate, maxRegion, fmtRate(rate))),
    );
    const links = Object.entries(traffic.wan_round_trips_per_s || {})
      .filter(([, rate]) => rate > 0)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 10);
    const box = $("#traffic-links");
    if (!links.length) {
      box.replaceChildren(h("div", { class: "empty", text: `None in the last ${traffic.window_s || 5} s.` }));
      return;
    }
    const maxLink = Math.max(1, ...links.map(([, rate]) => rate));
    box.replaceChildren(
      ...links.map(([name, rate]) => {
        const info = state.linkInfo.get(name);
        const label = info
          ? h(
              "span",
              { title: name },
              h("span", { class: "mono", text: `${info.from} → ${info.to}` }),
              h("span", { class: "small-note", text: ` ${info.purpose}` }),
            )
          : h("span", { class: "mono", text: name });
        return barRow(label, rate, maxLink, fmtRate(rate));
      }),
    );
  }

  // --- the last 50 requests ----------------------------------------------------------------------------------

  function statusClass(status) {
    if (status >= 500 || !status) return "server-error";
    if (status >= 400) return "client-error";
    return "ok";
  }

  function renderTimeline(freshIds) {
    const body = $("#timeline-body");
    if (!state.requests.length) return;
    const rows = state.requests.slice().reverse();
    const max = Math.max(1, ...rows.map((r) => Math.max(r.latency_ms || 0, r.floor_ms || 0)));
    body.replaceChildren(
      ...rows.map((r) => {
        const data =
          r.data_regions && r.data_regions.length
            ? r.data_regions.map((region) => regionBadge(region))
            : [h("span", { class: "muted", text: "no data" })];
        const route = h(
          "div",
          { class: "route" },
          h("span", { text: cityName(r.city || "?") }),
          h("span", { class: "arrow", text: "→" }),
          regionBadge(r.region),
          h("span", { class: "arrow", text: "→" }),
          ...data,
          r.rerouted
            ? h("span", {
                class: "rerouted",
                title: `${cityName(r.city)} is usually served by another region`,
                text: "rerouted",
              })
            : null,
        );
        return h(
          "tr",
          { class: freshIds.has(r.id) ? "fresh" : "", "data-request": r.id },
          h("td", { class: "muted", text: clock(r.time) }),
          h(
            "td",
            { class: "path", title: `${r.method} ${r.path}` },
            h("span", { class: "method", text: r.method }),
            " ",
            r.path,
          ),
          h("td", {}, route),
          h("td", { class: `status ${statusClass(r.status)}`, text: r.status || "–" }),
          h("td", {}, vsFloor(r.latency_ms, r.floor_ms, max, r.status >= 500)),
          h("td", { class: "num", title: `${fmtMs(r.sql_ms)} of SQL`, text: r.statements }),
          h("td", { class: "num", text: r.wan_round_trips }),
        );
      }),
    );
  }

  // --- the stream --------------------------------------------------------------------------------------------

  function onUpdate(event) {
    let update;
    try {
      update = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    state.lastUpdate = Date.now();
    state.health = update.health;
    state.traffic = update.traffic;
    const known = new Set(state.requests.map((r) => r.id));
    const arrived = (update.requests || []).filter((r) => !known.has(r.id));
    const first = state.requests.length === 0;
    state.requests = state.requests.concat(arrived).slice(-MAX_REQUESTS);
    state.observations = update.observations || [];
    // Rows move when a fault settles (a failover promotes a standby): count them again, once per fault.
    const settled = state.observations.filter((o) => o.settled && !state.settledFaults.has(o.id));
    if (settled.length && state.topo) {
      const first = state.settledFaults.size === 0 && !state.sawStream;
      settled.forEach((o) => state.settledFaults.add(o.id));
      if (!first) loadPlacement();
    }
    state.sawStream = true;
    updateRegionCards();
    updateLinks();
    updateMap(first ? [] : arrived);
    renderTraffic();
    if (arrived.length) renderTimeline(first ? new Set() : new Set(arrived.map((r) => r.id)));
    renderObservations();
    tickLive();
  }

  function connectStream() {
    const source = new EventSource(`/lab/api/stream?token=${encodeURIComponent(TOKEN)}`);
    state.stream = source;
    source.addEventListener("update", onUpdate);
    source.addEventListener("open", () => {
      state.streamClosed = false;
    });
    source.addEventListener("error", () => {
      // CLOSED: the lab refused the token (401/403) or is gone; CONNECTING: the browser retries by itself.
      state.streamClosed = source.readyState === EventSource.CLOSED;
      tickLive();
    });
  }

  // --- faults ------------------------------------------------------------------------------------------------

  const ACTION_WORDS = { kill: "Kill", heal: "Heal", partition: "Partition", delay: "Add delay to" };

  function fillTargets() {
    const topo = state.topo;
    const action = $("#fault-action").value;
    const select = $("#fault-target");
    const previous = select.value;
    const group = (label, options) =>
      h("optgroup", { label }, ...options.map(([value, text]) => h("option", { value, text })));
    const regionOptions = topo.regions.map((r) => [r.name, `region ${r.name}`]);
    const serverOptions = topo.servers.map((server) => [
      server.name,
      `server ${server.name} (${server.group}'s data, in ${server.region})`,
    ]);
    const pairOptions = pairs(topo).map(([a, b]) => [`${a}|${b}`, `link ${a} ↔ ${b}`]);
    const groups = [];
    if (action === "kill") groups.push(group("Regions", regionOptions), group("Database servers", serverOptions));
    if (action === "heal") {
      groups.push(
        h("option", { value: "all", text: "everything" }),
        group("Regions", regionOptions),
        group("Database servers", serverOptions),
        group("Links (partition or delay)", pairOptions),
      );
    }
    if (action === "partition" || action === "delay") groups.push(group("Links between regions", pairOptions));
    select.replaceChildren(...groups);
    if ([...select.options].some((option) => option.value === previous)) select.value = previous;
    $("#fault-delay-group").classList.toggle("d-none", action !== "delay");
  }

  function faultBody() {
    const action = $("#fault-action").value;
    const value = $("#fault-target").value;
    const target = value.includes("|") ? value.split("|") : value;
    const body = { action, target };
    if (action === "delay") body.delay_ms = Number($("#fault-delay").value);
    return body;
  }

  function describeFault(body) {
    const target = Array.isArray(body.target)
      ? `${body.target[0]} ↔ ${body.target[1]}`
      : body.target === "all"
        ? "everything"
        : body.target;
    const extra = body.action === "delay" && body.delay_ms ? ` (+${body.delay_ms} ms)` : "";
    return `${ACTION_WORDS[body.action] || body.action} ${target}${extra}`;
  }

  function faultMessage(kind, content) {
    const box = $("#fault-message");
    box.className = `alert alert-${kind} mt-2 mb-0`;
    box.replaceChildren(content);
    box.classList.remove("d-none");
  }

  function hideConfirm() {
    $("#fault-confirm").classList.add("d-none");
    state.pendingFault = null;
  }

  /** A fault chosen elsewhere on the page (a region card): into the form, then its prediction. */
  function proposeFault(action, target) {
    $("#fault-action").value = action;
    fillTargets();
    $("#fault-target").value = Array.isArray(target) ? target.join("|") : target;
    predictFault();
    $("#faults-title").scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  async function predictFault() {
    if (state.busy) return;
    const body = faultBody();
    hideConfirm();
    $("#fault-message").classList.add("d-none");
    const button = $("#fault-predict");
    button.disabled = true;
    try {
      const answer = await api("/lab/api/faults/predict", body);
      state.pendingFault = body;
      $("#fault-prediction").textContent = answer.prediction;
      $("#fault-apply").textContent = `${describeFault(body)} now`;
      $("#fault-confirm").classList.remove("d-none");
    } catch (error) {
      faultMessage("danger", document.createTextNode(error.message));
    } finally {
      button.disabled = false;
    }
  }

  async function applyFault() {
    const body = state.pendingFault;
    if (!body || state.busy) return;
    hideConfirm();
    state.busy = true;
    const button = $("#fault-predict");
    button.disabled = true;
    const slow = body.action === "heal" ? " (a heal can take up to half a minute)" : "";
    faultMessage("info", spinner(`${describeFault(body)}…${slow}`));
    try {
      const answer = await api("/lab/api/faults", body);
      const applied = answer.applied || {};
      const done = applied.done && applied.done.length ? `: ${applied.done.join(", ")}` : "";
      const took = applied.took_s === undefined ? "" : ` in ${applied.took_s.toFixed(1)} s`;
      faultMessage(
        "success",
        document.createTextNode(`${describeFault(body)}: done${took}${done}. What happens next appears below.`),
      );
      loadPlacement();
    } catch (error) {
      faultMessage("danger", document.createTextNode(error.message));
    } finally {
      state.busy = false;
      button.disabled = false;
    }
  }

  function renderObservations() {
    const list = $("#observations");
    const observations = state.observations.slice().reverse();
    if (!observations.length) return;
    list.replaceChildren(
      ...observations.map((o) => {
        const body = { action: o.action, target: o.target, delay_ms: o.delay_ms };
        const age =
          o.age_s === undefined ? "" : `${Math.round(o.age_s + (Date.now() - state.lastUpdate) / 1000)} s ago`;
        const figures = [];
        if (o.action === "kill") {
          if (o.failover_s !== null && o.failover_s !== undefined) {
            const how =
              o.failover_from === "requests"
                ? "to the first successful write from one of its cities"
                : "to the controller's re-routing";
            figures.push(
              h(
                "span",
                { "data-testid": "failover" },
                "failover ",
                h("strong", { text: `${o.failover_s.toFixed(1)} s` }),
                ` (${how})`,
              ),
            );
          } else if (o.kind === "region") {
            // A lost server that was a standby needs no failover: only a lost region waits for one.
            figures.push(
              h("span", { "data-testid": "failover" }, o.settled ? "no failover seen" : "failover: waiting…"),
            );
          }
        }
        figures.push(h("span", {}, "errors ", h("strong", { text: o.errors })));
        figures.push(
          h("span", {}, "rerouted ", h("strong", { text: o.rerouted }), ` of ${plural(o.requests, "request")}`),
        );
        for (const promotion of o.controller_failovers || []) {
          figures.push(
            h("span", {
              text: `${promotion.promoted} promoted for ${promotion.group}'s data after ${promotion.after_s.toFixed(1)} s`,
            }),
          );
        }
        const cls = o.settled ? (o.action === "kill" && o.failover_s === null ? "failed" : "settled") : "waiting";
        return h(
          "li",
          { class: cls, "data-testid": "observation", "data-fault": o.id },
          h(
            "div",
            {},
            h("span", { class: "what", text: describeFault(body) }),
            " ",
            h("span", { class: "when", text: `${clock(o.at)} · ${age}${o.settled ? "" : " · watching"}` }),
          ),
          o.prediction ? h("div", { class: "predicted", text: `Predicted: ${o.prediction}` }) : null,
          h("div", { class: "figures" }, figures),
        );
      }),
    );
  }

  function buildFaultForm() {
    fillTargets();
    $("#fault-action").addEventListener("change", () => {
      fillTargets();
      hideConfirm();
    });
    $("#fault-target").addEventListener("change", hideConfirm);
    $("#fault-form").addEventListener("submit", (event) => {
      event.preventDefault();
      predictFault();
    });
    $("#fault-apply").addEventListener("click", applyFault);
    $("#fault-cancel").addEventListener("click", () => {
      hideConfirm();
      $("#fault-message").classList.add("d-none");
    });
  }

  // --- journeys ----------------------------------------------------------------------------------------------

  function buildJourneyForm() {
    const select = $("#journey-city");
    select.replaceChildren(
      ...state.topo.regions.map((region) =>
        h(
          "optgroup",
          { label: region.name },
          ...region.cities.map((city) => h("option", { value: city, text: cityName(city) })),
        ),
      ),
    );
    $("#journey-form").addEventListener("submit", (event) => {
      event.preventDefault();
      runJourney(select.value);
    });
    select.addEventListener("change", () => selectCity(select.value));
  }

  async function runJourney(city) {
    const box = $("#journey-result");
    const button = $("#journey-run");
    button.disabled = true;
    box.replaceChildren(spinner(`Running the journey from ${cityName(city)}: eight requests through the lab…`));
    try {
      const result = await api("/lab/api/journeys", { city });
      box.replaceChildren(...journeyView(result));
    } catch (error) {
      box.replaceChildren(
        h("div", { class: "alert alert-danger mb-0", "data-testid": "journey-error", text: error.message }),
      );
    } finally {
      button.disabled = false;
    }
  }

  function journeyView(result) {
    const home = (state.topo.cities.find((c) => c.name === result.city) || {}).region;
    const servedBy = [...new Set(result.steps.map((step) => step.served_by).filter(Boolean))];
    const out = [];
    const t = result.totals || {};
    out.push(
      h(
        "div",
        { class: "journey-summary", "data-testid": "journey-summary" },
        `From ${cityName(result.city)} (home region `,
        regionBadge(home),
        `) on ${result.topology}: `,
        result.steps.length ? h("strong", { text: fmtMs(t.client_ms) }) : "nothing",
        result.steps.length
          ? ` in all against a floor of ${fmtMs(t.floor_ms)}; ${plural(t.statements, "statement")}, ${plural(t.wan_round_trips, "WAN round trip")}; served by `
          : "",
        ...(result.steps.length ? servedBy.map((region) => regionBadge(region)) : []),
        result.steps.length ? "." : "",
      ),
    );
    if (!result.completed) {
      out.push(
        h("div", {
          class: "alert alert-danger py-2",
          "data-testid": "journey-error",
          text: `The journey stopped: ${result.error}`,
        }),
      );
    }
    if (!result.steps.length) return out;
    const max = Math.max(1, ...result.steps.map((step) => Math.max(step.client_ms, step.floor_ms || 0)));
    const table = h(
      "table",
      { class: "table table-sm align-middle journey-table", "data-testid": "journey-steps" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ...["step", "status", "served by", "client latency against its floor", "SQL", "statements", "WAN"].map(
            (name, i) => h("th", { class: i >= 4 ? "num" : "", text: name }),
          ),
        ),
      ),
      h(
        "tbody",
        {},
        ...result.steps.map((step) =>
          h(
            "tr",
            { "data-step": step.step },
            h("td", { text: step.step }),
            h("td", { class: `status ${statusClass(step.status)}`, text: step.status }),
            h("td", {}, regionBadge(step.served_by)),
            h("td", {}, vsFloor(step.client_ms, step.floor_ms, max, step.status >= 500)),
            h("td", { class: "num", text: fmtMs(step.sql_ms) }),
            h("td", { class: "num", text: step.statements }),
            h("td", { class: "num", text: step.wan_round_trips }),
          ),
        ),
      ),
    );
    out.push(h("div", { class: "table-responsive" }, table));
    out.push(
      h("div", {
        class: "small-note",
        text: `Times are the lab's (delays ×${result.scale}). Username ${result.username}.`,
      }),
    );
    return out;
  }

  // --- the saved comparison across topologies ----------------------------------------------------------------

  async function loadSaved() {
    const chart = $("#saved-chart");
    try {
      state.saved = await api("/lab/api/journeys/saved");
    } catch (error) {
      const hint = error.status === 404 ? " Run `movr bench journey` (or `make demo`) to make one." : "";
      chart.replaceChildren(
        h("p", { class: "muted mb-0", "data-testid": "saved-missing", text: `${error.message}${hint}` }),
      );
      return;
    }
    const cities = state.saved.cities || [];
    // Rome first, when the saved result has it: the article's city.
    state.savedCity = cities.includes("rome") ? "rome" : cities[0];
    const controls = $("#saved-controls");
    controls.replaceChildren(
      h(
        "div",
        { class: "btn-group btn-group-sm", role: "group", "aria-label": "City" },
        ...cities.map((city) =>
          h("button", {
            type: "button",
            class: `btn btn-outline-secondary${city === state.savedCity ? " active" : ""}`,
            "data-city": city,
            text: cityName(city),
            on: {
              click: () => {
                state.savedCity = city;
                for (const b of controls.querySelectorAll("button"))
                  b.classList.toggle("active", b.dataset.city === city);
                renderSaved();
              },
            },
          }),
        ),
      ),
    );
    renderSaved();
  }

  function renderSaved() {
    const saved = state.saved;
    const city = state.savedCity;
    const rows = saved.rows.filter((row) => row.city === city);
    const topologies = saved.topologies.filter((t) => rows.some((row) => row.topology === t));
    const steps = [...new Set(rows.map((row) => row.step))];
    const values = rows.flatMap((row) => [row.client_ms, row.floor_ms]).filter((v) => v > 0);
    if (!values.length) {
      $("#saved-chart").replaceChildren(
        h("p", { class: "muted mb-0", text: `The saved result has no step for ${cityName(city)}.` }),
      );
      return;
    }
    const lo = 10 ** Math.floor(Math.log10(Math.min(...values)));
    const hi = 10 ** Math.ceil(Math.log10(Math.max(...values)));
    const left = 104;
    const right = 64;
    const width = 640;
    const bar = 11;
    const gap = 3;
    const groupGap = 12;
    const top = 22;
    const plotWidth = width - left - right;
    const x = (v) =>
      left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotWidth;
    const groupHeight = topologies.length * (bar + gap) - gap;
    const height = top + steps.length * (groupHeight + groupGap) + 6;
    const svg = s("svg", {
      class: "chart",
      viewBox: `0 0 ${width} ${height}`,
      width: "100%",
      role: "img",
      "aria-label": `Journey from ${cityName(city)} per topology`,
    });
    for (let tick = lo; tick <= hi * 1.001; tick *= 10) {
      svg.append(
        s("line", { class: "grid", x1: x(tick), x2: x(tick), y1: top - 4, y2: height - 4 }),
        s("text", {
          x: x(tick),
          y: 12,
          "text-anchor": "middle",
          text: tick >= 1000 ? `${+(tick / 1000).toPrecision(3)} s` : `${+tick.toPrecision(3)} ms`,
        }),
      );
    }
    steps.forEach((step, i) => {
      const y0 = top + i * (groupHeight + groupGap);
      svg.append(
        s("text", { class: "step-label", x: left - 8, y: y0 + groupHeight / 2 + 4, "text-anchor": "end", text: step }),
      );
      topologies.forEach((topology, j) => {
        const row = rows.find((r) => r.step === step && r.topology === topology);
        if (!row) return;
        const y = y0 + j * (bar + gap);
        const color = TOPOLOGY_COLORS[saved.topologies.indexOf(topology) % TOPOLOGY_COLORS.length];
        const rect = s("rect", {
          x: left,
          y,
          width: Math.max(1, x(row.client_ms) - left),
          height: bar,
          rx: 2,
          fill: color,
        });
        rect.append(
          s("title", {
            text: `${topology}, ${step}: ${fmtMs(row.client_ms)} (floor ${fmtMs(row.floor_ms)}), served by ${row.served_by}, ${plural(row.statements, "statement")}, ${plural(row.wan_round_trips, "WAN round trip")}`,
          }),
        );
        svg.append(
          rect,
          s("line", { class: "floor-mark", x1: x(row.floor_ms), x2: x(row.floor_ms), y1: y - 2, y2: y + bar + 2 }),
          s("text", { class: "value", x: x(row.client_ms) + 4, y: y + bar - 1.5, text: fmtMs(row.client_ms) }),
        );
      });
    });
    const legend = h(
      "div",
      { class: "chart-legend" },
      ...topologies.map((topology) => {
        const swatch = h("span", { class: "swatch" });
        swatch.style.background = TOPOLOGY_COLORS[saved.topologies.indexOf(topology) % TOPOLOGY_COLORS.length];
        const total = rows.filter((r) => r.topology === topology).reduce((sum, r) => sum + r.client_ms, 0);
        return h("span", {}, swatch, h("strong", { text: topology }), ` ${fmtMs(total)} in all`);
      }),
      h("span", {}, h("span", { class: "floor-key me-1" }), "floor"),
    );
    const ratio = (saved.ratios || {})[city] || {};
    const ratioParts = ["single", "hybrid"]
      .filter((t) => ratio[`${t}/multi`])
      .map((t) => `${t}/multi ${ratio[`${t}/multi`].toFixed(1)}×`);
    const notes = [
      legend,
      svg,
      ratioParts.length
        ? h(
            "div",
            { class: "ratio-line", "data-testid": "saved-ratios" },
            `Average SQL time of ${cityName(city)}'s own steps: `,
            h("strong", { text: ratioParts.join(", ") }),
          )
        : null,
      h("div", {
        class: "small-note",
        text: `From ${saved.path}${saved.started_at ? ` (${saved.started_at})` : ""}: preset ${saved.preset}, delays ×${saved.scale}, median of ${plural(saved.rows[0] ? saved.rows[0].samples : 0, "journey")} per step.`,
      }),
    ];
    $("#saved-chart").replaceChildren(...notes.filter(Boolean));
  }

  // --- placement ---------------------------------------------------------------------------------------------

  async function loadPlacement() {
    if (state.placementLoading) return;
    state.placementLoading = true;
    const box = $("#placement");
    const button = $("#placement-refresh");
    button.disabled = true;
    box.replaceChildren(spinner("Counting rows on every server…"));
    try {
      const placement = await api("/lab/api/placement");
      box.replaceChildren(...placementView(placement));
    } catch (error) {
      box.replaceChildren(h("div", { class: "alert alert-danger mb-0", text: error.message }));
    } finally {
      button.disabled = false;
      state.placementLoading = false;
    }
  }

  function placementView(placement) {
    const table = h(
      "table",
      { class: "table table-sm align-middle placement-table", "data-testid": "placement-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { text: "server" }),
          h("th", { text: "runs in" }),
          h("th", { text: "holds the data of" }),
          h("th", { text: "role" }),
          ...placement.tables.map((name) => h("th", { class: "num", text: name })),
        ),
      ),
      h(
        "tbody",
        {},
        ...placement.servers.map((server) =>
          h(
            "tr",
            {},
            h(
              "td",
              {},
              h("span", { class: `health-dot me-1${server.running ? "" : " down"}` }),
              h("code", { text: server.server }),
            ),
            h("td", {}, regionBadge(server.region)),
            h("td", {}, regionBadge(server.group)),
            h("td", { text: server.role }),
            ...(server.rows
              ? placement.tables.map((name) =>
                  h("td", { class: "num", text: server.rows[name] === undefined ? "–" : server.rows[name] }),
                )
              : [h("td", { class: "muted", colspan: placement.tables.length, text: server.error || "not readable" })]),
          ),
        ),
      ),
    );
    const out = [h("div", { class: "table-responsive" }, table)];
    const audit = placement.domicile;
    if (audit) {
      const notAudited = Object.entries(audit.not_audited || {});
      out.push(
        h(
          "div",
          {
            class: `alert ${audit.ok ? "alert-success" : "alert-danger"} verdict mb-0`,
            "data-testid": "domicile-verdict",
          },
          h("strong", {
            text: audit.ok
              ? "Domicile audit passed: "
              : `Domicile audit failed (${plural(audit.violations, "violation")}): `,
          }),
          audit.verdict,
          notAudited.length
            ? h("div", {
                class: "small-note",
                text: `Not audited: ${notAudited.map(([name, why]) => `${name} (${why})`).join("; ")}`,
              })
            : null,
        ),
      );
    } else {
      out.push(
        h("p", {
          class: "small-note mb-0",
          text: "No super region is set, so there is no domicile audit: rows may be copied to any region.",
        }),
      );
    }
    return out;
  }

  // --- start ---------------------------------------------------------------------------------------------------

  async function start() {
    if (!TOKEN) return; // a locked page: it says, server-rendered, how to open it with the lab's token
    try {
      state.topo = await api("/lab/api/topology");
    } catch (error) {
      showAlert(`Could not read the lab's topology: ${error.message}`);
      return;
    }
    state.topo.regions.forEach((region, index) => state.regionIndex.set(region.name, index));
    for (const link of state.topo.links) state.linkInfo.set(link.name, link);
    renderSummary();
    buildRegionCards();
    updateLinks();
    drawMap();
    buildFaultForm();
    buildJourneyForm();
    renderTraffic();
    $("#placement-refresh").addEventListener("click", loadPlacement);
    connectStream();
    setInterval(tickLive, 500);
    loadSaved();
    loadPlacement();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
