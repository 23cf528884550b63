// Reader study page. Talks only to this server's /api; writes text with textContent, never markup.
"use strict";

const VIEWS = ["axial", "coronal", "sagittal"];
const ZOOMS = [1, 1.5, 2, 3, 4]; // magnification inside the frames, around the point last clicked
const state = {
  reader: null, caseId: null, views: null, index: {}, label: null, confidence: null, shownAt: 0, busy: false,
  refused: false, zoom: 0, cursor: {},
};

const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data = {};
  try { data = await response.json(); } catch (err) { data = {}; }
  return { status: response.status, data };
}

function show(section) {
  for (const id of ["login", "reading", "done", "closed"]) $(id).hidden = id !== section;
  $("stop").hidden = section === "login"; // whoever is logged in can always stop or hand over to another reader
  if (section === "login") {
    state.reader = null;
    $("who").textContent = "";
    $("progress").textContent = "";
  }
}

function setMessage(id, text, ok) {
  $(id).textContent = text || "";
  $(id).classList.toggle("ok", Boolean(ok));
}

// An answer the server refused: said plainly, and the page stays on the case (nothing advances as if saved).
function refuse(text) {
  state.refused = true;
  $("refusal-text").textContent = text;
  $("refusal").hidden = false;
  setMessage("answer-message", "");
  updateChoices();
}

function render(progress) {
  state.reader = progress.reader;
  $("who").textContent = progress.reader ? "Reader: " + progress.reader : "";
  $("done-who").textContent = progress.reader || "";
  $("progress").textContent = progress.total ? `${Math.min(progress.answered + 1, progress.total)} of ${progress.total}` : "";
  if (progress.done) {
    $("progress").textContent = `${progress.answered} of ${progress.total} answered`;
    show("done");
    return;
  }
  if (progress.closed) { show("closed"); return; }
  openCase(progress.case);
  show("reading");
}

function openCase(item) {
  state.caseId = item.id;
  state.views = item.views;
  state.label = null;
  state.confidence = null;
  state.refused = false;
  $("refusal").hidden = true;
  $("reading").dataset.case = item.id;
  $("reading").dataset.position = String(item.position);
  // Every frame is the same square, sized by the style sheet from the window; a slice fills it along
  // the grid's longest side, so one voxel has the same size on screen in every view.
  const longest = Math.max(...VIEWS.map((v) => Math.max(item.views[v].width, item.views[v].height)));
  for (const view of VIEWS) {
    const size = item.views[view];
    const img = $("img-" + view);
    img.style.width = `${(100 * size.width) / longest}%`;
    img.style.aspectRatio = `${size.width} / ${size.height}`;
    const slider = $("slider-" + view);
    slider.max = String(size.slices - 1);
    setSlice(view, Math.floor(size.slices / 2));
  }
  state.cursor = { ...state.index };
  applyZoom();
  updateChoices();
  setMessage("answer-message", "");
  state.shownAt = performance.now();
}

function setSlice(view, index) {
  const slices = state.views[view].slices;
  index = Math.max(0, Math.min(slices - 1, Math.round(index)));
  state.index[view] = index;
  $("slider-" + view).value = String(index);
  $("idx-" + view).textContent = `${index + 1} / ${slices}`;
  $("img-" + view).src = `/api/case/${encodeURIComponent(state.caseId)}/${view}/${index}`;
}

// Where the point last clicked (the cursor) lies in a view, in pixels of its slice: the inverse of clickPoint.
function cursorIn(view) {
  const size = state.views[view];
  const across = { axial: "sagittal", coronal: "sagittal", sagittal: "coronal" }[view];
  const up = view === "axial" ? "coronal" : "axial";
  return { col: size.width - 1 - state.cursor[across], row: size.height - 1 - state.cursor[up] };
}

function applyZoom() {
  const zoom = ZOOMS[state.zoom];
  $("zoom-level").textContent = `${zoom}×`;
  $("zoom-out").disabled = state.zoom === 0;
  $("zoom-in").disabled = state.zoom === ZOOMS.length - 1;
  $("reading").dataset.zoom = String(zoom);
  if (!state.views) return;
  for (const view of VIEWS) {
    const img = $("img-" + view);
    const size = state.views[view];
    const { col, row } = cursorIn(view);
    img.style.transformOrigin = `${(100 * (col + 0.5)) / size.width}% ${(100 * (row + 0.5)) / size.height}%`;
    img.style.transform = zoom === 1 ? "" : `scale(${zoom})`;
  }
}

function setZoom(step) {
  state.zoom = Math.max(0, Math.min(ZOOMS.length - 1, step));
  applyZoom();
}

// A click on one view moves the other two to the clicked point (see server.orient_slice for the
// orientation: columns run from the patient's right (or anterior) to left (or posterior), rows top down).
// The image's on-screen box includes the zoom, so the mapping holds at any magnification.
function clickPoint(view, event) {
  const img = $("img-" + view);
  const rect = img.getBoundingClientRect();
  const size = state.views[view];
  const col = Math.max(0, Math.min(size.width - 1, Math.floor(((event.clientX - rect.left) / rect.width) * size.width)));
  const row = Math.max(0, Math.min(size.height - 1, Math.floor(((event.clientY - rect.top) / rect.height) * size.height)));
  const across = size.width - 1 - col;
  const up = size.height - 1 - row;
  if (view === "axial") { setSlice("sagittal", across); setSlice("coronal", up); }
  if (view === "coronal") { setSlice("sagittal", across); setSlice("axial", up); }
  if (view === "sagittal") { setSlice("coronal", across); setSlice("axial", up); }
  state.cursor = { ...state.index };
  applyZoom();
}

function updateChoices() {
  const closed = state.refused;
  for (const button of document.querySelectorAll(".choice")) {
    button.classList.toggle("selected", button.dataset.label === state.label);
    button.disabled = closed;
  }
  const unsure = state.label === "unsure";
  for (const button of document.querySelectorAll(".level")) {
    button.disabled = unsure || closed;
    button.classList.toggle("selected", !unsure && Number(button.dataset.confidence) === state.confidence);
  }
  $("submit").disabled = closed || state.busy || !(state.label === "unsure" || (state.label && state.confidence));
}

function chooseLabel(label) { if (!state.refused) { state.label = label; updateChoices(); } }
function chooseConfidence(level) { if (!state.refused && state.label !== "unsure") { state.confidence = level; updateChoices(); } }

async function submitAnswer() {
  if ($("submit").disabled) return;
  state.busy = true;
  updateChoices();
  const seconds = Math.round((performance.now() - state.shownAt) / 100) / 10;
  const body = {
    case_id: state.caseId, label: state.label, confidence: state.label === "unsure" ? null : state.confidence, seconds, reader: state.reader,
  };
  const position = $("reading").dataset.position;
  try {
    const { status, data } = await api("POST", "/api/answer", body);
    const why = data.error || `HTTP ${status}`;
    if (status === 201) {
      render(data);
    } else if (status === 401) {
      show("login");
      setMessage("login-message", `Your answer to case ${position} was NOT saved: ${why}`);
    } else if (status === 403 && /closed/.test(why)) {
      show("closed");
      setMessage("closed-message", `Your answer to case ${position} was NOT saved: ${why}`);
    } else if (status === 409) {
      refuse(`Your answer to case ${position} was NOT saved: ${why}.`); // e.g. answered or logged out in another tab
    } else {
      setMessage("answer-message", `The answer was NOT saved (${why}); please try again.`);
    }
  } catch (err) {
    setMessage("answer-message", "The server cannot be reached; your answer was NOT saved. Try again when it is back.");
  } finally {
    state.busy = false;
    updateChoices();
  }
}

async function refresh() {
  const { status, data } = await api("GET", "/api/progress");
  if (status === 200) render(data); else show("login");
}

async function start(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!name) { setMessage("login-message", "Enter your name."); return; }
  const { status, data } = await api("POST", "/api/session", { name });
  if (status === 200) {
    setMessage("login-message", "");
    render(data);
    if (data.answered > 0 && !data.done) setMessage("answer-message", `Welcome back: continuing at case ${data.answered + 1}.`, true);
  } else {
    setMessage("login-message", data.error || `Could not start (HTTP ${status}).`);
  }
}

async function stop() {
  const finished = !$("done").hidden;
  await api("POST", "/api/logout");
  show("login");
  $("name").value = "";
  setMessage(
    "login-message",
    finished
      ? "Logged out. The next reader enters their own name."
      : "Your answers are saved. Enter the same name to continue where you stopped; another reader enters their own name.",
    true,
  );
  $("name").focus();
}

function updateDisplay() {
  const filter = `brightness(${$("brightness").value / 100}) contrast(${$("contrast").value / 100})`;
  for (const view of VIEWS) $("img-" + view).style.filter = filter;
}

function onKey(event) {
  // Single-key shortcuts only: with Ctrl, Alt or Meta held the key belongs to the browser (Ctrl+S, Ctrl+R, ...).
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if ($("reading").hidden || (event.target.tagName === "INPUT" && event.target.type !== "range")) return;
  const key = event.key.toLowerCase();
  if (key === "enter") {
    // a focused button (Reset, zoom, a choice reached with Tab) does its own thing; Enter submits from anywhere else
    if (event.target.tagName === "BUTTON" && event.target.id !== "submit") return;
    event.preventDefault();
    submitAnswer();
  } else if (key === "r") chooseLabel("real");
  else if (key === "s") chooseLabel("synthetic");
  else if (key === "u") chooseLabel("unsure");
  else if (["1", "2", "3", "4", "5"].includes(key)) chooseConfidence(Number(key));
  else if (key === "+" || key === "=") setZoom(state.zoom + 1);
  else if (key === "-") setZoom(state.zoom - 1);
  else if (key === "0") setZoom(0);
}

function setup() {
  $("login-form").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  $("next-reader").addEventListener("click", stop);
  $("answer-form").addEventListener("submit", (event) => { event.preventDefault(); submitAnswer(); });
  $("resync").addEventListener("click", refresh);
  for (const button of document.querySelectorAll(".choice")) button.addEventListener("click", () => chooseLabel(button.dataset.label));
  for (const button of document.querySelectorAll(".level")) button.addEventListener("click", () => chooseConfidence(Number(button.dataset.confidence)));
  // A mouse click leaves the focus where it was, so Enter still submits; Tab still reaches every button.
  for (const button of document.querySelectorAll("#reading button:not([type=submit])")) button.addEventListener("mousedown", (event) => event.preventDefault());
  for (const view of VIEWS) {
    $("slider-" + view).addEventListener("input", (event) => setSlice(view, Number(event.target.value)));
    const frame = $("img-" + view).parentElement;
    frame.addEventListener("wheel", (event) => {
      if (event.ctrlKey) return; // the browser's own zoom
      event.preventDefault();
      setSlice(view, state.index[view] + (event.deltaY > 0 ? -1 : 1));
    }, { passive: false });
    $("img-" + view).addEventListener("click", (event) => clickPoint(view, event));
  }
  $("brightness").addEventListener("input", updateDisplay);
  $("contrast").addEventListener("input", updateDisplay);
  $("reset-display").addEventListener("click", () => { $("brightness").value = 100; $("contrast").value = 100; updateDisplay(); });
  $("zoom-in").addEventListener("click", () => setZoom(state.zoom + 1));
  $("zoom-out").addEventListener("click", () => setZoom(state.zoom - 1));
  document.addEventListener("keydown", onKey);
  applyZoom();
}

async function main() {
  setup();
  const about = await api("GET", "/api/study");
  if (about.status === 200) {
    $("title").textContent = about.data.title;
    document.title = about.data.title;
  }
  if (about.status === 200 && about.data.reader) await refresh(); // a session from before (same browser)
  else show("login");
  document.body.dataset.ready = "true";
}

main();
