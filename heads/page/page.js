// report.html: draws the page from the JSON embedded in it (heads/page/data.py). No network, no framework.
"use strict";
const DATA = JSON.parse(document.getElementById("page-data").textContent);
const $ = (id) => document.getElementById(id);
const PLOT_CONFIG = {displaylogo: false, responsive: true};

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children || []) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  return node;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits === undefined ? 4 : digits);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// A table whose rows sort when a header is clicked (numbers as numbers), and that a filter can narrow.
function sortableTable(container, columns, rows, id) {
  const table = el("table", {id: id, class: "sortable"});
  const head = el("tr", {}, columns.map((c, i) => el("th", {"data-col": i, text: c.name, title: "sort"})));
  const body = el("tbody");
  table.appendChild(el("thead", {}, [head]));
  table.appendChild(body);
  let order = {col: -1, dir: 1};
  function draw(data) {
    body.replaceChildren(...data.map((r) => el("tr", {}, columns.map((c) => {
      const v = c.value(r);
      const cell = el("td", {text: c.show ? c.show(r) : fmt(v)});
      if (typeof v === "number") cell.setAttribute("class", "num");
      return cell;
    }))));
  }
  let current = rows.slice();
  head.addEventListener("click", (ev) => {
    const col = Number(ev.target.getAttribute("data-col"));
    if (Number.isNaN(col)) return;
    order = {col: col, dir: order.col === col ? -order.dir : (columns[col].descending ? -1 : 1)};
    const value = columns[col].value;
    current.sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * order.dir;
    });
    head.querySelectorAll("th").forEach((th, i) => th.setAttribute("aria-sort", i === col ? (order.dir > 0 ? "ascending" : "descending") : "none"));
    draw(current);
  });
  draw(current);
  container.replaceChildren(table);
  return {filter: (keep) => { current = rows.filter(keep); draw(current); }};
}

function summary() {
  const e = DATA.evaluation, best = DATA.ranking[0];
  const items = [];
  if (best) items.push(["best", `${best.head} on ${best.view} ${fmt(best.params)}`]);
  items.push(["questions evaluated", fmt(e.n)], ["accuracy", fmt(e.accuracy)], ["macro F1 (all classes)", fmt(e.macro_f1)],
             ["balanced accuracy", fmt(e.balanced_accuracy)], ["top-5 accuracy", fmt(e.top5_accuracy)]);
  if (e.benchmark) items.unshift([`${e.benchmark.metric} figure (official scoring)`, fmt(e.benchmark.primary, 2)]);
  const list = el("dl", {id: "summary-figures"});
  for (const [k, v] of items) { list.appendChild(el("dt", {text: k})); list.appendChild(el("dd", {text: v})); }
  const parts = [list];
  if (DATA.warning) parts.unshift(el("p", {class: "banner", id: "warning", text: `Warning: ${DATA.warning}.`}));
  if (DATA.holdout) parts.push(el("p", {class: "note", text: `Evaluated on a held-out part of split ${DATA.holdout.split}: ` +
    `${DATA.holdout.evaluated_questions} questions (--test-fraction ${DATA.holdout.test_fraction}, seed ${DATA.holdout.seed}; ` +
    `${DATA.holdout.rule}); trained on the other ${DATA.holdout.training_questions}.`}));
  for (const [name, figures] of Object.entries(DATA.breakdowns)) {
    parts.push(el("h3", {text: `per ${name}`}));
    const rows = Object.entries(figures).map(([k, v]) => ({k: k, v: v}));
    const box = el("div");
    sortableTable(box, [{name: name, value: (r) => r.k}, {name: "score", value: (r) => r.v, descending: true}], rows, `by-${name.replace(" ", "-")}`);
    parts.push(box);
  }
  $("summary-body").replaceChildren(...parts);
}

function ranking() {
  const vqa = DATA.ranking.some((r) => r.benchmark);
  const cols = [
    {name: "head", value: (r) => r.head}, {name: "view", value: (r) => r.view},
    {name: "params", value: (r) => JSON.stringify(r.params || {})},
    {name: "validation", value: (r) => r.validation_accuracy, descending: true}];
  if (vqa) cols.push({name: "benchmark figure", value: (r) => (r.benchmark ? r.benchmark.primary : null), descending: true});
  cols.push({name: "accuracy", value: (r) => r.accuracy, descending: true}, {name: "top-5", value: (r) => r.top5_accuracy, descending: true},
            {name: "macro F1", value: (r) => r.macro_f1, descending: true}, {name: "fit s", value: (r) => r.fit_s},
            {name: "predict s", value: (r) => r.predict_s});
  sortableTable($("ranking-table"), cols, DATA.ranking, "ranking-grid");
  $("skipped").replaceChildren(...DATA.skipped.map((s) => el("li", {text: `${s.head} on ${s.view}: ${s.reason}`})));
}

function classes() {
  const t = sortableTable($("class-table"), [
    {name: "class", value: (r) => r.class}, {name: "support", value: (r) => r.support, descending: true},
    {name: "precision", value: (r) => r.precision, descending: true}, {name: "recall", value: (r) => r.recall, descending: true},
    {name: "F1", value: (r) => r.f1, descending: true},
    {name: "confused with", value: (r) => r.confused_with.map((c) => `${c[0]} (${c[1]})`).join(", ")}], DATA.per_class, "class-grid");
  $("class-filter").addEventListener("input", (ev) => {
    const q = ev.target.value.toLowerCase();
    t.filter((r) => r.class.toLowerCase().includes(q) || r.confused_with.some((c) => String(c[0]).toLowerCase().includes(q)));
  });
}

function card(index) {
  const s = DATA.samples[String(index)];
  const thumb = DATA.thumbnails[s.image];
  const picture = thumb ? el("img", {src: thumb, alt: s.image, class: "thumb"}) : el("div", {class: "nothumb", text: s.image});
  const answers = s.answer_scores ? Object.entries(s.answer_scores).map(([a, v]) => `${a} (${v})`).join(", ")
    : (s.answers ? s.answers.join(", ") : s.label);
  const wrong = s.score < 0.5;
  return el("div", {class: "card " + (wrong ? "wrong" : "right"), "data-index": String(index)}, [
    picture,
    el("div", {class: "q", text: s.question || "(image classification)"}),
    el("div", {text: `answers: ${answers}`}),
    el("div", {class: "pred", text: `predicted: ${s.prediction}` + (s.confidence === null ? "" : ` (${(100 * s.confidence).toFixed(1)}%)`) + ` · score ${fmt(s.score, 2)}`}),
    el("div", {class: "top5", text: "top-5: " + s.top5.map((t) => `${t[0]}${t[1] === null ? "" : " " + (100 * t[1]).toFixed(1) + "%"}`).join(", ")}),
  ]);
}

function galleries() {
  const g = DATA.gallery;
  $("gallery-note").textContent = `${g.n_wrong} of ${DATA.n_samples} questions are wrong (score below 0.5); ` +
    `the ${g.errors.length} most confident of them, then ${g.right.length} right answers drawn at random. ${DATA.thumbnail_note}`;
  $("gallery-errors").replaceChildren(...g.errors.map(card));
  $("gallery-right").replaceChildren(...g.right.map(card));
}

function confusionPlot() {
  const c = DATA.confusion;
  $("confusion-note").textContent = `Rows: the true class; columns: the prediction; ${c.of}. Click a cell to list its questions.`;
  if (!c.labels.length) return;
  const z = c.matrix.map((row) => { const n = row.reduce((a, b) => a + b, 0); return row.map((v) => (n ? v / n : 0)); });
  Plotly.newPlot("confusion-plot", [{type: "heatmap", z: z, x: c.labels, y: c.labels, customdata: c.matrix, colorscale: [[0, "#f7fbff"], [1, "#08306b"]],
    zmin: 0, zmax: 1, hovertemplate: "true %{y}<br>predicted %{x}<br>%{customdata} questions<extra></extra>"}],
    {margin: {l: 120, b: 120, t: 10, r: 10}, yaxis: {autorange: "reversed", title: "true"}, xaxis: {title: "predicted"}, height: 560},
    PLOT_CONFIG);
  $("confusion-plot").on("plotly_click", (ev) => {
    const p = ev.points[0];
    showCell(c.labels.indexOf(p.y), c.labels.indexOf(p.x));
  });
}

function showCell(r, col) {
  const c = DATA.confusion, examples = c.cells[`${r},${col}`] || [];
  const title = el("h3", {id: "cell-title", text: `true ${c.labels[r]}, predicted ${c.labels[col]}: ${c.matrix[r][col]} questions` +
    (examples.length < c.matrix[r][col] ? ` (the first ${examples.length})` : "")});
  $("cell-examples").replaceChildren(title, el("div", {class: "cards"}, examples.map(card)));
}
window.showConfusionCell = showCell;  // (the browser test clicks a cell through this when a canvas click is not exact)

function calibrationPlot() {
  const cal = DATA.calibration;
  if (!cal) { $("ece").textContent = "The model gives no confidence: no calibration."; return; }
  $("ece").textContent = `Expected calibration error ${(100 * cal.ece).toFixed(2)}% over ${cal.n} questions (${cal.bins.length} confidence bins).`;
  const mid = cal.bins.map((b) => (b.low + b.high) / 2);
  Plotly.newPlot("calibration-plot", [
    {type: "bar", x: mid, y: cal.bins.map((b) => b.accuracy), width: cal.bins.map((b) => b.high - b.low), name: "accuracy",
     customdata: cal.bins.map((b) => b.n), hovertemplate: "confidence %{x:.2f}<br>accuracy %{y:.3f}<br>%{customdata} questions<extra></extra>"},
    {type: "scatter", mode: "lines", x: [0, 1], y: [0, 1], name: "perfect calibration", line: {dash: "dot"}}],
    {xaxis: {title: "confidence", range: [0, 1]}, yaxis: {title: "accuracy", range: [0, 1]}, height: 380, margin: {t: 10}}, PLOT_CONFIG);
}

function umapPlot() {
  const u = DATA.umap;
  if (!u) { $("umap-note").textContent = "Not computed for this report (featcache sweep/evaluate --umap draws it)."; return; }
  $("umap-note").textContent = `${u.index.length} questions, ${u.what}. Hover a point for its question and image; the legend toggles classes.`;
  const byClass = {}, correct = {true: [], false: []};
  u.index.forEach((idx, i) => {
    const s = DATA.samples[String(idx)];
    const key = u.top_classes.includes(s.label) ? s.label : "other classes";
    (byClass[key] = byClass[key] || []).push(i);
    correct[s.score >= 0.5].push(i);
  });
  const trace = (name, members, visible) => ({type: "scattergl", mode: "markers", name: name, visible: visible,
    x: members.map((i) => u.x[i]), y: members.map((i) => u.y[i]), customdata: members.map((i) => u.index[i]),
    text: members.map((i) => { const s = DATA.samples[String(u.index[i])]; return `${s.question || s.image}<br>${s.label} → ${s.prediction}`; }),
    hovertemplate: "%{text}<extra></extra>", marker: {size: 5}});
  const classTraces = Object.entries(byClass).map(([k, m]) => trace(k, m, true));
  const okTraces = [trace("right", correct[true], false), trace("wrong", correct[false], false)];
  const n = classTraces.length;
  Plotly.newPlot("umap-plot", classTraces.concat(okTraces), {height: 520, margin: {t: 30},
    updatemenus: [{type: "buttons", direction: "right", x: 0, y: 1.12, buttons: [
      {label: "by class", method: "restyle", args: ["visible", classTraces.map(() => true).concat([false, false])]},
      {label: "right / wrong", method: "restyle", args: ["visible", classTraces.map(() => false).concat([true, true])]}]}]}, PLOT_CONFIG);
  $("umap-plot").on("plotly_hover", (ev) => { $("umap-hover").replaceChildren(card(ev.points[0].customdata)); });
  void n;
}

function provenance() {
  const env = DATA.provenance.environment, cache = DATA.provenance.cache;
  const rows = [["command", env.command], ["created", env.created], ["featcache commit", env.git_commit || "-"],
                ["machine", `${env.machine} (${env.cpu_count} CPUs), Python ${env.python}`],
                ["versions", Object.entries(env.versions || {}).map(([k, v]) => `${k} ${v}`).join(", ")]];
  for (const k of ["model_id", "model_revision", "model_fingerprint", "dataset_name", "dataset_source", "compute_dtype", "store_dtype", "featcache_version"]) {
    if (cache[k] !== undefined) rows.push([k, cache[k]]);
  }
  const list = el("dl");
  for (const [k, v] of rows) { list.appendChild(el("dt", {text: k})); list.appendChild(el("dd", {text: fmt(v)})); }
  $("provenance-body").replaceChildren(list);
}

for (const draw of [summary, ranking, classes, galleries, confusionPlot, calibrationPlot, umapPlot, provenance]) {
  try { draw(); } catch (err) { console.error(`report section ${draw.name} failed: ${err}`); }
}
document.body.setAttribute("data-ready", "true");
