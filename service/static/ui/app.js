// The learner page: reads the JSON API only (GET /model, /users, /users/{id}/history,
// /users/{id}/mastery/timeline; POST /recommend, /interactions). Every value from the API or the user
// reaches the page as text (textContent / createTextNode / SVG attributes), never as markup.
"use strict";

const KEY_STORAGE = "kt-api-key"; // sessionStorage only: never a URL, never a cookie
const SESSION_GAP_MS = 30 * 60 * 1000; // a new session after 30 minutes without an event
const TIMELINE_POINTS = 30; // mastery points requested (the API allows 50)
const TAG_SERIES = 6;
const RECOMMEND_K = 10;
const PALETTE = ["#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6c4f9e", "#00798c", "#8c564b", "#e377c2", "#555", "#17becf"];
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const state = { userId: null, historyLength: 0, timeline: null, recommendSeq: 0, recommendTimer: null };

// ---------------------------------------------------------------- DOM helpers (text only)
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.dataset[name.slice(5).replace(/-(\w)/g, (_, c) => c.toUpperCase())] = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

const fmtP = (p) => (typeof p === "number" ? p.toFixed(2) : "-");
const fmtNum = (x, digits = 4) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "-");
const fmtTime = (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";

function fmtGap(ms) {
  const minutes = Math.round(ms / 60000);
  if (minutes < 90) return `${minutes} min`;
  const hours = ms / 3600000;
  if (hours < 48) return `${hours.toFixed(1)} h`;
  return `${(hours / 24).toFixed(1)} days`;
}

// ---------------------------------------------------------------- API access and error states
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function errorText(status, body) {
  const detail = body && body.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    return detail.map((d) => (d.field ? `${d.field}: ${d.msg}` : d.msg)).join("; ");
  }
  return `HTTP ${status}`;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit" });
  } catch (err) {
    throw new ApiError(0, "the service cannot be reached");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, errorText(response.status, data));
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return data;
}

function showBanner(text, kind = "error") {
  const banner = $("banner");
  banner.textContent = text;
  banner.dataset.kind = kind;
  banner.hidden = false;
}

function clearBanner() {
  $("banner").hidden = true;
  $("banner").textContent = "";
}

function showKeyPanel(message) {
  $("key-panel").hidden = false;
  $("key-toggle").setAttribute("aria-expanded", "true");
  if (message) $("key-message").textContent = message;
  $("api-key").focus();
}

// One place that turns an API failure into what the user sees; returns true when handled.
function handle(error, what) {
  if (!(error instanceof ApiError)) throw error;
  if (error.status === 401) {
    const had = Boolean(sessionStorage.getItem(KEY_STORAGE));
    showBanner(`Not authorised (401) while loading ${what}: ${had ? "the API key was refused" : "this service needs an API key"}.`);
    showKeyPanel(had ? "The key was refused (401). Enter the key set in KT_API_KEY." : "This service needs an API key (KT_API_KEY). Enter it to continue.");
  } else if (error.status === 503) {
    const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    showBanner(`Unavailable (503) while loading ${what}: ${error.message}.${retry}`);
  } else if (error.status === 0) {
    showBanner(`While loading ${what}: ${error.message}.`);
  } else {
    showBanner(`Error ${error.status} while loading ${what}: ${error.message}`);
  }
  return true;
}

// ---------------------------------------------------------------- model card
function fact(list, name, value, key) {
  list.append(el("dt", {}, name), el("dd", key ? { "data-fact": key } : {}, value));
}

async function loadModel() {
  let model;
  try {
    model = await api("GET", "/model");
  } catch (error) {
    handle(error, "the model card");
    return;
  }
  const metrics = model.metrics || {};
  const list = $("model-card");
  list.replaceChildren();
  fact(list, "Model", model.name, "name");
  fact(list, "Version", model.version, "version");
  fact(list, "Training data", model.data_fingerprint || "not recorded", "fingerprint");
  fact(list, "Questions", `${model.n_questions} (${model.n_tags} tags)`, "questions");
  fact(list, "AUC", fmtNum(metrics.auc), "auc");
  fact(list, "Log loss", fmtNum(metrics.logloss), "logloss");
  fact(list, "ECE", fmtNum(metrics.ece), "ece");
  fact(list, "INT8 graph", model.int8 ? "yes (quantized)" : "no (fp32)", "int8");
  const registered = model.registered_questions === null ? "store unavailable" : `${model.registered_questions} registered`;
  fact(list, "New questions", model.content_cold_start ? `scored from part and tags (${registered})` : `unknown-question token (${registered})`, "cold-start");
  fact(list, "Lectures", model.reads_lectures ? `read (${model.known_lectures} with part and tag)` : "not read by this model", "lectures");
  drawCalibration((metrics.calibration || {}).reliability);
}

function drawCalibration(bins) {
  const box = $("calibration-chart");
  box.replaceChildren();
  if (!Array.isArray(bins) || !bins.length) {
    box.append(el("p", { class: "help" }, "This artifact has no reliability table (it is recorded by training since this release)."));
    return;
  }
  const size = 220, pad = 30, span = size - 2 * pad;
  const x = (p) => pad + p * span, y = (p) => size - pad - p * span;
  const chart = svg("svg", { viewBox: `0 0 ${size} ${size}`, role: "img", "aria-labelledby": "calibration-title" });
  chart.append(svg("title", { id: "calibration-title" }, "Observed rate against predicted probability, per bin"));
  chart.append(svg("rect", { x: pad, y: pad, width: span, height: span, class: "frame" }));
  chart.append(svg("line", { x1: x(0), y1: y(0), x2: x(1), y2: y(1), class: "diagonal" }));
  const points = bins.map((b) => `${x(b.p_mean).toFixed(1)},${y(b.observed).toFixed(1)}`).join(" ");
  chart.append(svg("polyline", { points, class: "calibration-line" }));
  for (const b of bins) {
    const dot = svg("circle", { cx: x(b.p_mean), cy: y(b.observed), r: 3, class: "calibration-dot" });
    dot.append(svg("title", {}, `predicted ${fmtP(b.p_mean)}, observed ${fmtP(b.observed)}, ${b.n} answers`));
    chart.append(dot);
  }
  chart.append(svg("text", { x: size / 2, y: size - 6, class: "axis-label", "text-anchor": "middle" }, "predicted"));
  chart.append(svg("text", { x: 10, y: size / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 10 ${size / 2})` }, "observed"));
  box.append(chart);
}

// ---------------------------------------------------------------- learner picker
async function loadRecent() {
  let data;
  try {
    data = await api("GET", "/users?limit=12");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) handle(error, "the recent learners");
    $("recent-block").hidden = true; // a store that cannot tell (or is down) just has no list
    return;
  }
  const list = $("recent"), options = $("recent-learners");
  list.replaceChildren();
  options.replaceChildren();
  for (const user of data.users) {
    const button = el("button", { type: "button", "data-user": user.user_id, title: `last answer stored ${fmtTime(user.last_write_at)}` }, user.user_id);
    button.addEventListener("click", () => pick(user.user_id));
    list.append(el("li", {}, button));
    options.append(el("option", { value: user.user_id }));
  }
  $("recent-block").hidden = !data.supported || data.users.length === 0;
}

const USER_ID = /^[A-Za-z0-9._:@-]+$/; // the API's rule (service.config.USER_ID_PATTERN)

async function pick(userId) {
  const id = userId.trim();
  if (!id) return;
  if (!USER_ID.test(id)) {
    showBanner(`"${id}" is not a learner id: use letters, digits and . _ : @ - only.`);
    $("user-id").focus();
    return;
  }
  state.userId = id;
  $("user-id").value = id;
  history.replaceState(null, "", `#user=${encodeURIComponent(id)}`);
  clearBanner();
  $("learner-name").textContent = id;
  $("learner").hidden = false;
  await refreshLearner();
}

async function refreshLearner() {
  await loadHistory(); // the timeline's step depends on the history's length
  await Promise.all([loadMastery(), loadRecommendations()]);
}

// ---------------------------------------------------------------- history timeline
// Answers and lectures in time order (lectures before answers of the same moment), as the store
// orders them.
function eventsOf(data) {
  const answers = data.interactions.map((item) => ({ kind: "answer", ...item }));
  const lectures = (data.lectures || []).map((item) => ({ kind: "lecture", ...item }));
  return [...lectures, ...answers].sort((a, b) => a.timestamp - b.timestamp);
}

// Sessions (a new one after SESSION_GAP_MS without events) of steps: a bundle of answers given
// together, or one lecture.
function sessionsOf(events) {
  const sessions = [];
  let last = null;
  for (const event of events) {
    if (last === null || event.timestamp - last > SESSION_GAP_MS) sessions.push({ gap: last === null ? null : event.timestamp - last, steps: [] });
    const steps = sessions[sessions.length - 1].steps;
    const current = steps[steps.length - 1];
    if (event.kind === "lecture") steps.push({ timestamp: event.timestamp, lecture: event });
    else if (current && !current.lecture && current.timestamp === event.timestamp) current.items.push(event);
    else steps.push({ timestamp: event.timestamp, items: [event] });
    last = event.timestamp;
  }
  return sessions;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

async function loadHistory() {
  const userId = state.userId;
  let data;
  try {
    data = await api("GET", `/users/${encodeURIComponent(userId)}/history`);
  } catch (error) {
    handle(error, "the history");
    $("history-summary").textContent = "The history could not be loaded.";
    $("timeline").replaceChildren();
    return;
  }
  if (userId !== state.userId) return;
  const items = data.interactions;
  const lectures = data.lectures || [];
  state.historyLength = items.length;
  const timeline = $("timeline");
  timeline.replaceChildren();
  timeline.dataset.answers = String(items.length);
  if (!items.length && !lectures.length) {
    $("history-summary").textContent = `No answers stored for this learner yet. Record one below; predictions for a new learner come from the question alone.`;
    return;
  }
  const right = items.filter((i) => i.correct).length;
  const events = eventsOf(data);
  const sessions = sessionsOf(events);
  const share = items.length ? ` (${right} right, ${Math.round((100 * right) / items.length)}%)` : "";
  const watched = lectures.length ? ` and ${plural(lectures.length, "lecture")}` : "";
  $("history-summary").textContent = `${plural(items.length, "answer")}${share}${watched} in ${plural(sessions.length, "session")}, the last at ${fmtTime(events[events.length - 1].timestamp)}.`;
  sessions.forEach((session, index) => {
    if (session.gap !== null) timeline.append(el("li", { class: "gap" }, `gap of ${fmtGap(session.gap)}`));
    const answers = session.steps.reduce((n, step) => n + (step.items ? step.items.length : 0), 0);
    const steps = el("div", { class: "bundles" });
    for (const step of session.steps) {
      if (step.lecture) {
        const label = `lecture ${step.lecture.lecture_id} watched at ${fmtTime(step.timestamp)}`;
        steps.append(el("span", { class: "lecture", "data-lecture": String(step.lecture.lecture_id), "data-time": String(step.timestamp), role: "img", "aria-label": label, title: label }, "L"));
        continue;
      }
      const group = el("span", { class: "bundle", title: fmtTime(step.timestamp) });
      for (const item of step.items) {
        const label = `question ${item.question_id}: ${item.correct ? "right" : "wrong"}${item.had_explanation ? ", explanation seen" : ""}`;
        group.append(el("span", { class: `answer ${item.correct ? "correct" : "wrong"}`, "data-question": String(item.question_id), "data-time": String(item.timestamp), role: "img", "aria-label": label, title: label }));
      }
      steps.append(group);
    }
    const start = session.steps[0].timestamp;
    const lectureCount = session.steps.length - session.steps.filter((step) => step.items).length;
    const watchedHere = lectureCount ? ` · ${plural(lectureCount, "lecture")}` : "";
    timeline.append(el("li", { class: "session" }, el("p", { class: "session-head" }, `Session ${index + 1} · ${fmtTime(start)} · ${plural(answers, "answer")}${watchedHere}`), steps));
  });
}

// ---------------------------------------------------------------- mastery chart
function groupSeries(timeline, group) {
  const last = timeline.points[timeline.points.length - 1];
  let keys = last[group].map((g) => g.key);
  if (group === "tags") {
    keys = [...last.tags].sort((a, b) => b.answers - a.answers || a.key - b.key).slice(0, TAG_SERIES).map((g) => g.key);
  }
  return keys.map((key) => ({
    key,
    answers: (last[group].find((g) => g.key === key) || { answers: 0 }).answers,
    values: timeline.points.map((p) => ({ x: p.answers, y: (p[group].find((g) => g.key === key) || {}).mastery })),
  }));
}

function drawMastery() {
  const box = $("mastery-chart"), legend = $("mastery-legend");
  box.replaceChildren();
  legend.replaceChildren();
  const timeline = state.timeline;
  if (!timeline || !timeline.points.length) {
    box.append(el("p", { class: "help" }, "No answers yet: mastery over time appears after the first answer."));
    return;
  }
  const group = document.querySelector("input[name=mastery-group]:checked").value;
  const series = groupSeries(timeline, group);
  const width = 640, height = 260, left = 40, right = 12, top = 12, bottom = 34;
  const xs = timeline.points.map((p) => p.answers);
  const xMin = Math.min(...xs), xMax = Math.max(...xs);
  const x = (v) => left + (xMax === xMin ? 0.5 : (v - xMin) / (xMax - xMin)) * (width - left - right);
  const y = (v) => top + (1 - v) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "mastery-chart-title", "data-group": group });
  chart.append(svg("title", { id: "mastery-chart-title" }, `Mean P(correct) per ${group === "parts" ? "part" : "tag"} after each step of answers`));
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    chart.append(svg("line", { x1: left, x2: width - right, y1: y(tick), y2: y(tick), class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis-label" }, tick.toFixed(2)));
  }
  chart.append(svg("text", { x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle", class: "axis-label" }, "answers"));
  chart.append(svg("text", { x: left, y: height - 18, "text-anchor": "start", class: "axis-label" }, String(xMin)));
  chart.append(svg("text", { x: width - right, y: height - 18, "text-anchor": "end", class: "axis-label" }, String(xMax)));
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length];
    const name = `${group === "parts" ? "Part" : "Tag"} ${s.key}`;
    const g = svg("g", { class: "series", "data-key": s.key, stroke: color, fill: color });
    const pts = s.values.filter((v) => typeof v.y === "number");
    g.append(svg("title", {}, name));
    g.append(svg("polyline", { points: pts.map((v) => `${x(v.x).toFixed(1)},${y(v.y).toFixed(1)}`).join(" "), fill: "none", "stroke-width": 2 }));
    for (const v of pts) {
      const dot = svg("circle", { cx: x(v.x), cy: y(v.y), r: 2.5 });
      dot.append(svg("title", {}, `${name} after ${v.x} answers: ${fmtP(v.y)}`));
      g.append(dot);
    }
    chart.append(g);
    const last = pts[pts.length - 1];
    legend.append(el("li", {}, el("span", { class: `swatch swatch-${i % PALETTE.length}`, "aria-hidden": "true" }), `${name}: ${last ? fmtP(last.y) : "-"} now, ${s.answers} answers`));
  });
  box.append(chart);
}

async function loadMastery() {
  const userId = state.userId;
  try {
    const every = Math.max(1, Math.ceil(state.historyLength / TIMELINE_POINTS));
    const timeline = await api("GET", `/users/${encodeURIComponent(userId)}/mastery/timeline?every=${every}`);
    if (userId !== state.userId) return;
    state.timeline = timeline;
  } catch (error) {
    handle(error, "the mastery timeline");
    state.timeline = null;
  }
  drawMastery();
}

// ---------------------------------------------------------------- recommendations
async function loadRecommendations() {
  const userId = state.userId;
  const target = Number($("target-p").value);
  const seq = ++state.recommendSeq;
  const list = $("recommendations");
  list.setAttribute("aria-busy", "true");
  let data;
  try {
    data = await api("POST", "/recommend", { user_id: userId, target_p: target, k: RECOMMEND_K });
  } catch (error) {
    if (seq === state.recommendSeq) {
      list.replaceChildren();
      list.removeAttribute("aria-busy");
      handle(error, "the recommendations");
    }
    return;
  }
  if (seq !== state.recommendSeq || userId !== state.userId) return; // a newer request owns the list
  list.replaceChildren();
  if (!data.recommendations.length) list.append(el("li", { class: "help" }, "No question of the bank fits (all answered?)."));
  for (const r of data.recommendations) {
    const button = el("button", { type: "button", class: "link", title: "use this question in Try an answer" }, `Question ${r.question_id}`);
    button.addEventListener("click", () => {
      $("answer-question").value = String(r.question_id);
      $("answer-question").focus();
    });
    const detail = ` · part ${r.part}${r.tags.length ? ` · tags ${r.tags.join(", ")}` : ""} · `;
    const item = el("li", { "data-question": String(r.question_id), "data-p": String(r.p_correct) }, button, detail, el("strong", {}, `p = ${fmtP(r.p_correct)}`));
    if (r.cold_start) item.append(" ", el("span", { class: "badge" }, "cold start"));
    list.append(item);
  }
  list.dataset.target = target.toFixed(2);
  list.dataset.at = data.at === null ? "" : String(data.at);
  list.removeAttribute("aria-busy");
}

function onTargetInput() {
  $("target-value").textContent = Number($("target-p").value).toFixed(2);
  clearTimeout(state.recommendTimer);
  state.recommendTimer = setTimeout(loadRecommendations, 150);
}

// ---------------------------------------------------------------- try an answer
async function recordAnswer(event) {
  event.preventDefault();
  const status = $("answer-status");
  const question = Number($("answer-question").value);
  const correct = document.querySelector("input[name=answer-correct]:checked").value === "true";
  if (!Number.isInteger(question) || question < 0) {
    status.textContent = "Enter a question id (a whole number).";
    return;
  }
  const result = await record(status, { interactions: [{ question_id: question, correct }] }, "the answer");
  if (!result) return;
  status.textContent = `Recorded question ${question} (${correct ? "right" : "wrong"}); ${plural(result.history_length, "event")} stored for this learner.`;
  await Promise.all([refreshLearner(), loadRecent()]);
}

// POST /interactions for the current learner; null (with the reason in `status`) when refused.
async function record(status, body, what) {
  try {
    return await api("POST", "/interactions", { user_id: state.userId, ...body });
  } catch (error) {
    if (error instanceof ApiError && error.status === 422) {
      status.textContent = `Not recorded: ${error.message}`;
      return null;
    }
    status.textContent = "Not recorded.";
    handle(error, what);
    return null;
  }
}

async function recordLecture(event) {
  event.preventDefault();
  const status = $("lecture-status");
  const lecture = Number($("lecture-id").value);
  if (!Number.isInteger(lecture) || lecture < 0) {
    status.textContent = "Enter a lecture id (a whole number).";
    return;
  }
  if (!(await record(status, { lectures: [{ lecture_id: lecture }] }, "the lecture"))) return;
  status.textContent = `Recorded lecture ${lecture}: later predictions take it into account.`;
  await Promise.all([refreshLearner(), loadRecent()]);
}

// ---------------------------------------------------------------- start
function onKeySubmit(event) {
  event.preventDefault();
  const key = $("api-key").value;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  $("api-key").value = "";
  $("key-panel").hidden = true;
  $("key-toggle").setAttribute("aria-expanded", "false");
  clearBanner();
  start();
}

function start() {
  loadModel();
  loadRecent();
  if (state.userId) refreshLearner();
}

document.addEventListener("DOMContentLoaded", () => {
  $("picker").addEventListener("submit", (event) => {
    event.preventDefault();
    pick($("user-id").value);
  });
  $("key-form").addEventListener("submit", onKeySubmit);
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("key-message").textContent = "The key is forgotten.";
  });
  $("key-toggle").addEventListener("click", () => {
    const open = $("key-panel").hidden;
    $("key-panel").hidden = !open;
    $("key-toggle").setAttribute("aria-expanded", String(open));
    if (open) $("api-key").focus();
  });
  $("target-p").addEventListener("input", onTargetInput);
  for (const radio of document.querySelectorAll("input[name=mastery-group]")) radio.addEventListener("change", drawMastery);
  $("answer-form").addEventListener("submit", recordAnswer);
  $("lecture-form").addEventListener("submit", recordLecture);
  const match = /^#user=(.+)$/.exec(location.hash);
  start();
  if (match) pick(decodeURIComponent(match[1]));
});
