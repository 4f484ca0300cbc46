// kerasviz dashboard: vanilla JavaScript, no dependencies. The server does the model work;
// this file keeps the selection (model, image, layer, target, tab), asks for what the visible
// tab needs, and draws the answers. Long jobs are polled: each poll returns the snapshots taken
// since the last one.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  model: null, // model key
  image: null, // image key
  layer: null, // layer path
  target: null, // class index or null (predicted)
  tab: "features",
  channels: null, // list of ints or null (top k)
  compare: { mode: "images", image: null, layer: null },
  subjectSize: null, // [h, w, c] of the fitted image
};
const serial = {}; // latest request number per panel: stale answers are dropped
let busy = 0;

// ---------------------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "-";
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return value.toExponential(2);
  return value.toFixed(digits);
}

function setBusy(delta) {
  busy += delta;
  $("busy").hidden = busy <= 0;
}

function showMessage(text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
}

async function api(path, body, panel) {
  const mine = panel ? (serial[panel] = (serial[panel] || 0) + 1) : 0;
  setBusy(1);
  try {
    const options = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    let data;
    try {
      data = await response.json();
    } catch (e) {
      throw new Error(`The server answered ${response.status} without JSON.`);
    }
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    if (panel && serial[panel] !== mine) return null; // a newer request replaced this one
    return data;
  } finally {
    setBusy(-1);
  }
}

function currentModel() {
  return state.info.models.find((m) => m.key === state.model);
}

function layerRow(path) {
  return currentModel().layers.find((l) => l.path === path);
}

function rfText(rf) {
  if (!rf) return "-";
  if (rf.global) return "global";
  return `${rf.size.join("x")} / ${rf.stride.join("x")}`;
}

function writeHash() {
  const params = new URLSearchParams();
  params.set("model", state.model);
  if (state.image) params.set("image", state.image);
  if (state.layer) params.set("layer", state.layer);
  params.set("tab", state.tab);
  if (state.target !== null) params.set("target", state.target);
  history.replaceState(null, "", "#" + params.toString());
}

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  return Object.fromEntries(params.entries());
}

// ---------------------------------------------------------------------------- sidebar

function renderModels() {
  const select = $("model");
  select.replaceChildren(...state.info.models.map((m) => el("option", { value: m.key, text: m.name })));
  select.value = state.model;
}

function renderTargets() {
  const select = $("target");
  const options = [el("option", { value: "", text: "predicted class" })];
  currentModel().classes.forEach((name, i) => options.push(el("option", { value: String(i), text: `${i}: ${name}` })));
  select.replaceChildren(...options);
  select.value = state.target === null ? "" : String(state.target);
}

function renderImages() {
  if (!state.compare.image || !state.info.images.some((i) => i.key === state.compare.image)) {
    const other = state.info.images.find((i) => i.key !== state.image);
    state.compare.image = other ? other.key : state.image;
  }
  const box = $("images");
  box.replaceChildren(
    ...state.info.images.map((image) => {
      const cls = image.key === state.image ? "active" : image.key === state.compare.image ? "second" : "";
      return el(
        "button",
        { type: "button", class: cls, title: image.name, "data-key": image.key, onclick: () => selectImage(image.key) },
        el("img", { src: image.thumb, alt: image.name }),
        el("span", { class: "tag", text: image.name }),
      );
    }),
  );
  const options = state.info.images.map((image) => el("option", { value: image.key, text: image.name }));
  $("cmp-image").replaceChildren(...options);
  $("cmp-image").value = state.compare.image;
}

function renderLayers() {
  const model = currentModel();
  const body = $("layers").tBodies[0];
  body.replaceChildren(
    ...model.layers.map((layer) => {
      const usable = layer.spatial;
      const row = el(
        "tr",
        {
          class: (usable ? "layer" : "flat") + (layer.path === state.layer ? " active" : ""),
          "data-path": layer.path,
          title: usable ? layer.path : `${layer.path}: no spatial output`,
          onclick: usable ? () => selectLayer(layer.path) : null,
        },
        el("td", {}, document.createTextNode(layer.path), el("span", { class: "type", text: layer.type })),
        el("td", { text: layer.shape ? layer.shape.map((s) => (s === null ? "?" : s)).join("x") : "-" }),
        el("td", { text: rfText(layer.rf) }),
      );
      return row;
    }),
  );
  $("layer-names").replaceChildren(...model.layers.filter((l) => l.spatial).map((l) => el("option", { value: l.path })));
  const spatial = model.layers.filter((l) => l.spatial);
  $("cmp-layer").replaceChildren(...spatial.map((l) => el("option", { value: l.path, text: l.path })));
  if (!state.compare.layer || !spatial.some((l) => l.path === state.compare.layer)) {
    const other = spatial.find((l) => l.path !== state.layer);
    state.compare.layer = other ? other.path : state.layer;
  }
  $("cmp-layer").value = state.compare.layer || "";
}

function renderLayerInfo() {
  const layer = layerRow(state.layer);
  $("layer-input").value = state.layer || "";
  $("layer-title").textContent = layer ? `Layer ${layer.path}` : "Layer";
  const rows = [];
  if (layer) {
    rows.push(["type", layer.type]);
    rows.push(["output", layer.shape ? layer.shape.join(" x ") : "-"]);
    if (layer.rf) {
      rows.push(["RF size", layer.rf.global ? "whole input" : layer.rf.size.join(" x ") + " px"]);
      rows.push(["RF stride", layer.rf.stride.join(" x ") + " px"]);
      rows.push(["RF start", layer.rf.start.join(", ")]);
    }
  }
  $("layer-info").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  for (const row of $("layers").tBodies[0].rows) {
    const active = row.dataset.path === state.layer;
    row.classList.toggle("active", active);
    if (active) row.scrollIntoView({ block: "nearest" });
  }
}

// ---------------------------------------------------------------------------- selection

function selectModel(key) {
  state.model = key;
  const model = currentModel();
  state.layer = model.default_layer || (model.layers.find((l) => l.spatial) || {}).path || null;
  state.target = null;
  state.compare.layer = null;
  clearChannels();
  renderTargets();
  renderLayers();
  refresh();
}

function selectImage(key) {
  state.image = key;
  renderImages();
  refresh();
}

function clearChannels() {
  state.channels = null; // explicit channels belong to one layer
  $("channels").value = "";
}

async function selectLayer(path) {
  const previous = state.layer;
  if (path !== previous) clearChannels();
  state.layer = path;
  renderLayerInfo();
  const ok = await refreshTab();
  if (!ok && !layerRow(path)) {
    state.layer = previous; // an unknown name: keep the last good layer
    renderLayerInfo();
  }
  writeHash();
}

function parseChannels(text) {
  const out = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const range = part.match(/^(\d+)-(\d+)$/);
    if (range) {
      for (let c = +range[1]; c <= +range[2] && out.length < 64; c++) out.push(c);
    } else if (/^\d+$/.test(part)) out.push(+part);
    else throw new Error(`Channels: expected numbers or ranges like 0-7. Received: ${part}`);
  }
  return out.length ? out : null;
}

// ---------------------------------------------------------------------------- panels

async function refresh() {
  writeHash();
  renderLayerInfo();
  await refreshSubject();
  await refreshTab();
}

async function refreshSubject() {
  if (!state.image) return;
  try {
    const data = await api("/api/predict", { model: state.model, image: state.image }, "predict");
    if (!data) return;
    $("subject").src = data.image;
    state.subjectSize = data.size;
    $("subject-box").hidden = true;
    const image = state.info.images.find((i) => i.key === state.image);
    $("subject-caption").textContent = `${image ? image.name : ""} · fitted to ${data.size[0]}x${data.size[1]}`;
    const max = Math.max(...data.top.map((t) => Math.abs(t.score)), 1e-12);
    $("predictions").replaceChildren(
      ...data.top.map((t) =>
        el(
          "li",
          {},
          el(
            "div",
            { class: "bar" },
            el("span", { class: "name", text: t.name }),
            el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * Math.abs(t.score)) / max}%;display:block` })),
            el("span", { class: "value", text: fmt(t.score) }),
          ),
        ),
      ),
    );
  } catch (error) {
    showMessage(error.message);
  }
}

async function refreshTab() {
  if (!state.image || !state.layer) return true;
  try {
    if (state.tab === "features") await loadFeatures();
    else if (state.tab === "attribution") await loadAttribution();
    else if (state.tab === "inversion") prepareInversion();
    else if (state.tab === "compare") await loadCompare();
    return true;
  } catch (error) {
    showMessage(error.message);
    return false;
  }
}

async function loadFeatures() {
  const data = await api(
    "/api/features",
    { model: state.model, image: state.image, layer: state.layer, channels: state.channels, k: 16 },
    "features",
  );
  if (!data) return;
  const [h, w, c] = data.shape;
  $("maps-note").textContent = `${data.layer}: ${h}x${w}, ${c} channels; showing ${state.channels ? "chosen" : "the top " + data.channels.length} (each scaled to its own min..max) · ${data.ms} ms`;
  $("maps").replaceChildren(
    ...data.channels.map((tile) => {
      const img = el("img", { class: "map", src: tile.png, alt: `channel ${tile.index}`, "data-channel": tile.index });
      img.addEventListener("click", (event) => pickUnit(event, tile.index, h, w));
      return el("figure", { "data-channel": tile.index }, img, el("figcaption", { text: `#${tile.index} · max ${fmt(tile.max, 2)}` }));
    }),
  );
  const top = data.top;
  const max = Math.max(...top.map((t) => Math.abs(t.mean)), 1e-12);
  $("top").replaceChildren(
    ...top.map((t) =>
      el(
        "div",
        { class: "bar" },
        el("span", { class: "name", text: `#${t.index}` }),
        el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * Math.abs(t.mean)) / max}%;display:block` })),
        el("span", { class: "value", text: fmt(t.mean) }),
      ),
    ),
  );
  const filters = data.filters;
  if (!filters) {
    $("filters-note").textContent = "this layer has no convolution kernel";
    $("filters").replaceChildren();
  } else {
    $("filters-note").textContent = `${filters.kind} ${filters.shape.join("x")}${filters.note ? " · " + filters.note : ""}`;
    $("filters").replaceChildren(
      ...filters.tiles.map((t) => el("figure", {}, el("img", { src: t.png, alt: `filter ${t.index}` }), el("figcaption", { text: `#${t.index}` }))),
    );
  }
}

async function pickUnit(event, channel, h, w) {
  const img = event.currentTarget;
  const y = Math.min(h - 1, Math.floor((event.offsetY / img.clientHeight) * h));
  const x = Math.min(w - 1, Math.floor((event.offsetX / img.clientWidth) * w));
  document.querySelectorAll("#maps figure").forEach((f) => f.classList.toggle("picked", +f.dataset.channel === channel));
  try {
    const data = await api("/api/unit", { model: state.model, image: state.image, layer: state.layer, channel, y, x }, "unit");
    if (!data) return;
    $("unit-hint").hidden = true;
    $("unit-body").hidden = false;
    const [top, left, bottom, right] = data.box;
    $("unit-text").textContent =
      `${data.layer} channel ${channel} at (${y}, ${x}): activation ${fmt(data.activation)} ` +
      `(channel max ${fmt(data.channel_max)}). Receptive field rows ${top}..${bottom - 1}, ` +
      `columns ${left}..${right - 1} (${data.rf.size.join("x")} px, stride ${data.rf.stride.join("x")}).`;
    $("unit-framed").src = data.framed;
    $("unit-crop").src = data.crop;
    drawBox(data.box);
    $("unit-pattern").removeAttribute("src");
    $("unit-pattern-crop").removeAttribute("src");
    $("unit-pattern-caption").textContent = "pattern: starting…";
    followJob(data.job, "pattern", {
      frame: (f, job) => {
        $("unit-pattern").src = f.png;
        $("unit-pattern-crop").src = f.crop;
        $("unit-pattern-caption").textContent = `pattern after ${f.step} of ${job.total} steps`;
        $("unit-progress").value = job.step / job.total;
      },
      done: (job) => {
        $("unit-progress").value = 1;
        if (job.state === "done") $("unit-pattern-caption").textContent = `pattern after ${job.total} steps (objective ${fmt(job.result.objective)})`;
      },
    });
  } catch (error) {
    showMessage(error.message);
  }
}

function drawBox(box) {
  const size = state.subjectSize;
  const node = $("subject-box");
  if (!size) return;
  const [top, left, bottom, right] = box;
  node.style.top = `${(100 * top) / size[0]}%`;
  node.style.left = `${(100 * left) / size[1]}%`;
  node.style.height = `${(100 * (bottom - top)) / size[0]}%`;
  node.style.width = `${(100 * (right - left)) / size[1]}%`;
  node.hidden = false;
}

async function loadAttribution() {
  const base = { model: state.model, image: state.image, target: state.target };
  // One request per CAM method: the cheap ones show at once, Score-CAM follows.
  const rows = state.info.cams.map((method) => {
    const cells = [el("img", { alt: `${method}, receptive-field projection` }), el("img", { alt: `${method}, bilinear` })];
    const note = el("span", { class: "note", text: "computing…" });
    const row = el("tr", { "data-method": method }, el("td", {}, document.createTextNode(method), note), el("td", {}, cells[0]), el("td", {}, cells[1]));
    return { method, row, cells, note };
  });
  $("cams").tBodies[0].replaceChildren(...rows.map((r) => r.row));
  const cams = Promise.all(
    rows.map(async ({ method, cells, note }) => {
      const data = await api("/api/cam", { ...base, layer: state.layer, methods: [method] }, `cam-${method}`);
      if (!data) return;
      const m = data.methods[0];
      cells[0].src = m.receptive_field.png;
      cells[1].src = m.bilinear.png;
      note.textContent = `${data.layer} · ${data.target_name} · ${m.ms} ms`;
    }),
  );
  cams.catch(() => {}); // reported once, by the await below
  const saliency = await api("/api/saliency", base, "saliency");
  if (saliency) $("saliency").src = saliency.png;
  await cams;
  $("smoothgrad").removeAttribute("src");
  $("ig").removeAttribute("src");
  $("gradients-progress").value = 0;
  const job = await api("/api/jobs", { kind: "gradients", ...base }, "gradients-job");
  if (!job) return;
  followJob(job.job, "gradients", {
    frame: (f) => {
      if (f.kind === "smoothgrad") $("smoothgrad").src = f.png;
      if (f.kind === "ig") $("ig").src = f.png;
    },
    progress: (job) => ($("gradients-progress").value = job.step / job.total),
    done: (job) => {
      $("gradients-progress").value = 1;
      if (job.state === "done") {
        $("ig-caption").textContent = `Integrated gradients (${job.result.steps} steps; completeness gap ${fmt(job.result.ig_delta)})`;
        $("gradients-note").textContent = `explaining ${currentModel().classes[job.result.target]} · SmoothGrad and IG in ${job.seconds} s`;
      }
    },
  });
}

function prepareInversion() {
  $("inv-original").src = $("subject").src;
  $("inv-start").textContent = `Invert ${state.layer}`;
}

async function startInversion() {
  prepareInversion();
  const steps = +$("inv-steps").value;
  const every = +$("inv-every").value;
  const job = await api("/api/jobs", { kind: "invert", model: state.model, image: state.image, layer: state.layer, steps, every }, "invert-start");
  if (!job) return;
  const points = [];
  $("inv-strip").replaceChildren();
  $("inv-current").removeAttribute("src");
  $("inv-progress").value = 0;
  $("inv-metrics").textContent = "";
  drawCurve(points, job.total);
  followJob(job.job, "invert", {
    frame: (f, state_) => {
      $("inv-current").src = f.png;
      $("inv-caption").textContent = `step ${f.step} of ${state_.total}`;
      $("inv-metrics").textContent = `SSIM ${fmt(f.ssim)} · PSNR ${f.psnr === null ? "∞" : fmt(f.psnr, 2)} dB`;
      points.push([f.step, f.ssim]);
      drawCurve(points, state_.total);
      $("inv-progress").value = f.step / state_.total;
      const strip = $("inv-strip");
      strip.append(el("figure", {}, el("img", { src: f.png, alt: `step ${f.step}` }), el("figcaption", { text: `${f.step}` })));
      while (strip.children.length > 12) strip.removeChild(strip.children[0]);
    },
    done: (job) => {
      if (job.state === "cancelled") $("inv-caption").textContent += " (stopped)";
      if (job.state === "done") $("inv-caption").textContent = `step ${job.total} of ${job.total} · ${job.seconds} s`;
    },
  });
}

function drawCurve(points, total) {
  const svg = $("inv-curve");
  const ns = "http://www.w3.org/2000/svg";
  const parts = [];
  const grid = document.createElementNS(ns, "path");
  grid.setAttribute("d", "M0 15 H300 M0 75 H300 M0 135 H300");
  grid.setAttribute("stroke", "#e3e6ec");
  parts.push(grid);
  for (const [y, label] of [[15, "SSIM 1"], [135, "0"]]) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", 4);
    t.setAttribute("y", y - 3);
    t.setAttribute("font-size", 10);
    t.setAttribute("fill", "#8a92a1");
    t.textContent = label;
    parts.push(t);
  }
  if (points.length) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map(([s, v]) => `${(300 * s) / total},${135 - 120 * Math.max(0, Math.min(1, v))}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#2f6fde");
    line.setAttribute("stroke-width", 2);
    line.setAttribute("vector-effect", "non-scaling-stroke");
    parts.push(line);
  }
  svg.replaceChildren(...parts);
}

async function sideView(node, title, image, layer) {
  const base = { model: state.model, image, layer };
  const [pred, feats, cam] = [
    await api("/api/predict", { model: state.model, image }),
    await api("/api/features", { ...base, k: 8 }),
    await api("/api/cam", { ...base, target: state.target, methods: ["Grad-CAM"] }),
  ];
  const best = pred.top[0];
  const m = cam.methods[0];
  node.replaceChildren(
    el("h3", { text: title }),
    el("p", { class: "hint", text: `predicted ${best.name} (${fmt(best.score)}); Grad-CAM of ${cam.target_name} at ${cam.layer}` }),
    el(
      "div",
      { class: "pair" },
      el("figure", {}, el("img", { src: pred.image, alt: "image" }), el("figcaption", { text: "image" })),
      el("figure", {}, el("img", { class: "cmp-cam", src: m.receptive_field.png, alt: "Grad-CAM" }), el("figcaption", { text: "Grad-CAM, exact receptive-field projection" })),
    ),
    el("h3", { text: `Top channels of ${feats.layer}` }),
    el("div", { class: "tiles" }, ...feats.channels.map((t) => el("figure", {}, el("img", { src: t.png, alt: `channel ${t.index}` }), el("figcaption", { text: `#${t.index} · mean ${fmt(t.mean, 2)}` })))),
  );
}

async function loadCompare() {
  const mine = (serial.compare = (serial.compare || 0) + 1);
  const layersMode = state.compare.mode === "layers";
  $("cmp-image-label").hidden = layersMode;
  $("cmp-layer-label").hidden = !layersMode;
  const image = (key) => (state.info.images.find((i) => i.key === key) || { name: key }).name;
  const a = { title: layersMode ? `layer ${state.layer}` : image(state.image), image: state.image, layer: state.layer };
  const b = layersMode
    ? { title: `layer ${state.compare.layer}`, image: state.image, layer: state.compare.layer }
    : { title: image(state.compare.image), image: state.compare.image, layer: state.layer };
  const nodeA = el("div");
  const nodeB = el("div");
  await sideView(nodeA, a.title, a.image, a.layer);
  await sideView(nodeB, b.title, b.image, b.layer);
  if (serial.compare !== mine) return;
  $("cmp-a").replaceChildren(...nodeA.childNodes);
  $("cmp-b").replaceChildren(...nodeB.childNodes);
}

// ---------------------------------------------------------------------------- jobs

const following = {};

async function followJob(id, slot, handlers) {
  following[slot] = id;
  let after = 0;
  for (;;) {
    if (following[slot] !== id) return; // replaced by a newer job of this slot
    let job;
    try {
      const response = await fetch(`/api/jobs/${id}?after=${after}&wait=2`);
      job = await response.json();
      if (!response.ok) throw new Error(job.error || `HTTP ${response.status}`);
    } catch (error) {
      showMessage(error.message);
      return;
    }
    if (following[slot] !== id) return;
    for (const frame of job.frames) handlers.frame && handlers.frame(frame, job);
    after = job.next;
    handlers.progress && handlers.progress(job);
    $("jobs").textContent = job.state === "running" ? `${slot}: step ${job.step} of ${job.total}` : "";
    if (job.state === "error") showMessage(job.error);
    if (["done", "error", "cancelled"].includes(job.state)) {
      handlers.done && handlers.done(job);
      return;
    }
  }
}

async function stopJob(slot) {
  const id = following[slot];
  if (!id) return;
  await fetch(`/api/jobs/${id}/cancel`, { method: "POST", headers: { "X-Kerasviz": "1" } });
}

// ---------------------------------------------------------------------------- upload

async function upload(file) {
  const limit = state.info.limits.upload_bytes;
  setBusy(1);
  try {
    if (file.size > limit) {
      // The server checks too; this answers at once without sending megabytes.
      throw new Error(`Expected an upload of at most ${limit.toLocaleString()} bytes. Received: ${file.size.toLocaleString()} bytes.`);
    }
    const response = await fetch("/api/upload", {
      method: "POST",
      headers: { "X-Kerasviz": "1", "X-Filename": encodeURIComponent(file.name).slice(0, 200), "Content-Type": "application/octet-stream" },
      body: file,
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
    state.info.images.push(data);
    clearMessage();
    selectImage(data.key);
  } catch (error) {
    showMessage(`Upload of ${file.name}: ${error.message}`);
  } finally {
    setBusy(-1);
    $("upload").value = "";
  }
}

// ---------------------------------------------------------------------------- start

function bind() {
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  $("target").addEventListener("change", (e) => {
    state.target = e.target.value === "" ? null : +e.target.value;
    refreshTab();
    writeHash();
  });
  $("message-close").addEventListener("click", clearMessage);
  $("upload").addEventListener("change", (e) => e.target.files.length && upload(e.target.files[0]));
  $("layer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("layer-input").value.trim();
    if (name) selectLayer(name);
  });
  $("channels-form").addEventListener("submit", (e) => {
    e.preventDefault();
    try {
      state.channels = parseChannels($("channels").value);
      loadFeatures().catch((error) => showMessage(error.message));
    } catch (error) {
      showMessage(error.message);
    }
  });
  document.querySelectorAll(".tabs button").forEach((button) =>
    button.addEventListener("click", () => {
      state.tab = button.dataset.tab;
      document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b === button));
      document.querySelectorAll(".tab").forEach((t) => (t.hidden = t.id !== `tab-${state.tab}`));
      if (state.tab !== "features") $("subject-box").hidden = true;
      writeHash();
      refreshTab();
    }),
  );
  $("inversion-form").addEventListener("submit", (e) => {
    e.preventDefault();
    startInversion().catch((error) => showMessage(error.message));
  });
  $("inv-stop").addEventListener("click", () => stopJob("invert"));
  document.querySelectorAll('input[name="cmp"]').forEach((r) =>
    r.addEventListener("change", () => {
      state.compare.mode = r.value;
      refreshTab();
    }),
  );
  $("cmp-image").addEventListener("change", (e) => {
    state.compare.image = e.target.value;
    renderImages();
    refreshTab();
  });
  $("cmp-layer").addEventListener("change", (e) => {
    state.compare.layer = e.target.value;
    refreshTab();
  });
}

async function start() {
  bind();
  try {
    state.info = await api("/api/info");
  } catch (error) {
    showMessage(`Cannot load the dashboard: ${error.message}`);
    return;
  }
  const limits = state.info.limits;
  $("limits").textContent = `Up to ${(limits.upload_bytes / 1048576).toFixed(0)} MB and ${(limits.pixels / 1e6).toFixed(0)} million pixels; centre-cropped and resized to the model's input.`;
  const hash = readHash();
  state.model = state.info.models.some((m) => m.key === hash.model) ? hash.model : state.info.models[0].key;
  renderModels();
  const model = currentModel();
  state.layer = model.default_layer || (model.layers.find((l) => l.spatial) || {}).path || null;
  if (hash.layer && model.layers.some((l) => l.path === hash.layer)) state.layer = hash.layer;
  state.target = hash.target !== undefined && hash.target !== "" ? +hash.target : null;
  state.image = state.info.images.some((i) => i.key === hash.image) ? hash.image : (state.info.images[0] || {}).key || null;
  renderTargets();
  renderImages();
  renderLayers();
  if (hash.tab && $(`tab-${hash.tab}`)) {
    document.querySelector(`.tabs button[data-tab="${hash.tab}"]`).click();
  }
  if (!state.image) showMessage("No images yet: upload a PNG or JPEG to start.");
  await refresh();
  document.body.dataset.ready = "1";
}

start();
