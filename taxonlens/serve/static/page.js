// The taxonlens page: upload photos to /v1/predict, show each answer, a batch table with a CSV
// download, and a taxonomy search over /v1/taxa. No library, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { ranks: [], thresholds: {}, rows: [] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const pct = (x) => `${(100 * x).toFixed(1)}%`;

function headers() {
  const key = $("key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function detailText(body, status) {
  const d = body && body.detail;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).slice(-1)[0]}: ${e.msg}`).join("; ");
  return d || `HTTP ${status}`;
}

async function getJSON(url) {
  const resp = await fetch(url, { headers: headers() });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(detailText(body, resp.status));
  return body;
}

async function loadModel() {
  try {
    const m = await getJSON("/v1/model");
    state.ranks = m.ranks;
    state.thresholds = m.thresholds;
    $("about").textContent = `${m.about ? m.about + " \u2014 " : ""}${m.leaves} labels over ranks ${m.ranks.join(", ")}.`;
    for (const r of m.ranks) $("rank").append(el("option", { value: r, text: r }));
  } catch (e) {
    $("about").textContent = `Could not load the model's description: ${e.message}`;
  }
}

// "genus Quercus; species not determined": where back-off stopped, in words
function verdict(row) {
  const ranks = state.ranks, reached = row.rank_reached, path = row.path;
  const last = ranks[path.length - 1];
  if (!reached) return `Not determined at any rank (best guess: ${last} ${path[path.length - 1]})`;
  const i = ranks.indexOf(reached);
  const name = row.reached_path[row.reached_path.length - 1];
  return i >= path.length - 1 ? `${reached} ${name}` : `${reached} ${name}; ${ranks[i + 1]} not determined`;
}

function breadcrumb(row) {
  const reachedDepth = row.reached_path.length;
  const items = row.path.map((name, d) => el("li", { class: d < reachedDepth ? "determined" : "undetermined" },
    el("span", { class: "rank-name", text: `${state.ranks[d]} ` }), name));
  return el("nav", { class: "breadcrumb", "aria-label": "taxonomy path" }, el("ol", {}, ...items));
}

function bars(row) {
  const box = el("div", { class: "bars" });
  row.path.forEach((_, d) => {
    const rank = state.ranks[d], conf = row[`confidence_${rank}`], t = state.thresholds[rank];
    const trusted = t !== null && t !== undefined && conf >= t;
    const tText = t === null || t === undefined ? (rank in state.thresholds ? "never trusted" : "no threshold")
      : `threshold ${pct(t)}`;
    const bar = el("div", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1",
      "aria-valuenow": String(conf), "aria-label": `${rank} confidence ${pct(conf)}, ${tText}` },
      el("div", { class: `fill${trusted || t === undefined ? "" : " below"}`, style: `width:${pct(conf)}` }));
    if (t !== null && t !== undefined) bar.append(el("div", { class: "threshold", style: `left:${pct(t)}` }));
    box.append(el("span", { class: "bar-label", text: rank }), bar,
      el("span", { class: "bar-value", text: `${pct(conf)} \u00b7 ${tText}` }));
  });
  return box;
}

function card(file, row) {
  const c = el("article", { class: "card" }, el("h3", { text: row.file_name }));
  if (file) c.prepend(el("img", { src: URL.createObjectURL(file), alt: `photo ${row.file_name}` }));
  if (row.error) {
    c.append(el("p", { class: "error", role: "alert", text: `Could not read this photo: ${row.error}` }));
    return c;
  }
  c.append(breadcrumb(row), el("p", { class: "verdict", text: verdict(row) }), bars(row));
  if (row.alternatives.length) {
    c.append(el("p", { text: "Other answers:" }), el("ol", { class: "alternatives" },
      ...row.alternatives.map((a) => el("li", { text: `${a.path.join(" \u203a ")} (${pct(a.score)})` }))));
  }
  return c;
}

function addToTable(row) {
  const answer = row.error ? "" : row.reached_path.join(" \u203a ") || "(none)";
  const conf = row.error || !row.rank_reached ? "" : pct(row[`confidence_${row.rank_reached}`]);
  $("table").tBodies[0].append(el("tr", {}, el("td", { text: row.file_name }), el("td", { text: answer }),
    el("td", { text: row.rank_reached || "" }), el("td", { text: conf }), el("td", { text: row.error })));
  $("batch").hidden = false;
}

async function predict(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const params = new URLSearchParams({ top_k: $("top-k").value || "5" });
  if ($("rank").value) params.set("rank", $("rank").value);
  if ($("subset").value.trim()) params.set("subset", $("subset").value.trim());
  $("status").textContent = `Naming ${files.length} photo${files.length > 1 ? "s" : ""}\u2026`;
  let resp, body;
  try {
    resp = await fetch(`/v1/predict?${params}`, { method: "POST", body: form, headers: headers() });
    body = await resp.json().catch(() => ({}));
  } catch (e) {
    $("status").textContent = `The server could not be reached: ${e.message}`;
    return;
  }
  if (!body.predictions) {
    $("status").textContent = `The photos were refused (${resp.status}): ${detailText(body, resp.status)}`;
    return;
  }
  body.predictions.forEach((row, i) => {
    state.rows.push(row);
    $("results").append(card(files[i], row));
    addToTable(row);
  });
  const bad = body.predictions.filter((r) => r.error).length;
  $("status").textContent = `${body.predictions.length - bad} named, ${bad} could not be read.`;
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function downloadCSV() {
  const cols = ["file_name", "path", "rank_reached", "reached_path", "score",
    ...state.ranks.map((r) => `confidence_${r}`), "error"];
  const lines = [cols.join(",")];
  for (const row of state.rows) {
    const flat = { ...row, path: row.path.join(" > "), reached_path: row.reached_path.join(" > ") };
    lines.push(cols.map((c) => csvCell(flat[c])).join(","));
  }
  const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  const a = el("a", { href: url, download: "taxonlens-predictions.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function showTaxon(id) {
  const box = $("taxon");
  try {
    const t = await getJSON(`/v1/taxa/${id}`);
    const lineage = el("ol", {}, ...t.lineage.map((n) => el("li", {},
      el("span", { class: "rank-name", text: `${n.rank} ` }),
      el("button", { class: "link", type: "button", text: n.name, onclick: () => showTaxon(n.id) }))));
    const kids = t.children.map((k) => el("li", {}, el("button", { class: "link", type: "button",
      text: `${k.name}`, onclick: () => showTaxon(k.id) }), ` (${k.rank}, ${k.leaves} label${k.leaves > 1 ? "s" : ""})`));
    box.replaceChildren(el("h3", { text: `${t.rank} ${t.name}` }),
      el("nav", { class: "breadcrumb", "aria-label": "path of the taxon" }, lineage),
      el("p", { text: `${t.leaves} label${t.leaves > 1 ? "s" : ""} under it; ${t.children.length} children.` }),
      el("ul", { class: "plain" }, ...kids));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

async function search(event) {
  event.preventDefault();
  const q = $("q").value.trim();
  const list = $("search-results");
  if (!q) return;
  try {
    const found = await getJSON(`/v1/taxa/search?${new URLSearchParams({ q })}`);
    if (!found.taxa.length) { list.replaceChildren(el("li", { text: `No taxon starts with \u201c${q}\u201d.` })); return; }
    list.replaceChildren(...found.taxa.map((t) => el("li", {}, el("button", { class: "link", type: "button",
      text: t.name, onclick: () => showTaxon(t.id) }), ` ${t.rank}${t.homonym ? ", in " + t.path.slice(0, -1).join(" \u203a ") : ""}`)));
  } catch (e) {
    list.replaceChildren(el("li", { class: "error", text: e.message }));
  }
}

function setUp() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => { e.preventDefault(); predict([...e.dataTransfer.files]); });
  $("files").addEventListener("change", (e) => { predict([...e.target.files]); e.target.value = ""; });
  $("csv").addEventListener("click", downloadCSV);
  $("clear").addEventListener("click", () => {
    state.rows = []; $("results").replaceChildren(); $("table").tBodies[0].replaceChildren(); $("batch").hidden = true;
  });
  $("search-form").addEventListener("submit", search);
  loadModel();
}

setUp();
