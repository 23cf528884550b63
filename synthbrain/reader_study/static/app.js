// Reader study page. Talks only to this server's /api; writes text with textContent, never markup.
"use strict";

const VIEWS = ["axial", "coronal", "sagittal"];
const TARGET_PIXELS = 300; // the longest side of a slice on screen
const state = { caseId: null, views: null, index: {}, label: null, confidence: null, shownAt: 0, busy: false };

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
  $("stop").hidden = section !== "reading";
}

function setMessage(id, text, ok) {
  $(id).textContent = text || "";
  $(id).classList.toggle("ok", Boolean(ok));
}

function render(progress) {
  $("who").textContent = progress.reader ? "Reader: " + progress.reader : "";
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
  $("reading").dataset.case = item.id;
  $("reading").dataset.position = String(item.position);
  const longest = Math.max(...VIEWS.map((v) => Math.max(item.views[v].width, item.views[v].height)));
  const scale = TARGET_PIXELS / longest;
  for (const view of VIEWS) {
    const size = item.views[view];
    const img = $("img-" + view);
    img.width = Math.round(size.width * scale);
    img.height = Math.round(size.height * scale);
    img.parentElement.style.width = `${TARGET_PIXELS}px`; // equal frames: the sliders line up
    img.parentElement.style.height = `${TARGET_PIXELS}px`;
    const slider = $("slider-" + view);
    slider.max = String(size.slices - 1);
    setSlice(view, Math.floor(size.slices / 2));
  }
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

// A click on one view moves the other two to the clicked point (see server.orient_slice for the
// orientation: columns run from the patient's right (or anterior) to left (or posterior), rows top down).
function clickPoint(view, event) {
  const img = $("img-" + view);
  const rect = img.getBoundingClientRect();
  const size = state.views[view];
  const col = Math.floor(((event.clientX - rect.left) / rect.width) * size.width);
  const row = Math.floor(((event.clientY - rect.top) / rect.height) * size.height);
  const across = size.width - 1 - col;
  const up = size.height - 1 - row;
  if (view === "axial") { setSlice("sagittal", across); setSlice("coronal", up); }
  if (view === "coronal") { setSlice("sagittal", across); setSlice("axial", up); }
  if (view === "sagittal") { setSlice("coronal", across); setSlice("axial", up); }
}

function updateChoices() {
  for (const button of document.querySelectorAll(".choice")) button.classList.toggle("selected", button.dataset.label === state.label);
  const unsure = state.label === "unsure";
  for (const button of document.querySelectorAll(".level")) {
    button.disabled = unsure;
    button.classList.toggle("selected", !unsure && Number(button.dataset.confidence) === state.confidence);
  }
  $("submit").disabled = state.busy || !(state.label === "unsure" || (state.label && state.confidence));
}

function chooseLabel(label) { state.label = label; updateChoices(); }
function chooseConfidence(level) { if (state.label !== "unsure") { state.confidence = level; updateChoices(); } }

async function submitAnswer() {
  if ($("submit").disabled) return;
  state.busy = true;
  updateChoices();
  const seconds = Math.round((performance.now() - state.shownAt) / 100) / 10;
  const body = { case_id: state.caseId, label: state.label, confidence: state.label === "unsure" ? null : state.confidence, seconds };
  try {
    const { status, data } = await api("POST", "/api/answer", body);
    if (status === 201) {
      render(data);
    } else if (status === 401) {
      show("login");
      setMessage("login-message", data.error || "Please enter your name again.");
    } else if (status === 403) {
      show("closed");
    } else if (status === 409) {
      await refresh(); // answered already (e.g. in another tab): go to the reader's next case
    } else {
      setMessage("answer-message", data.error || `The answer was not saved (HTTP ${status}); please try again.`);
    }
  } catch (err) {
    setMessage("answer-message", "The server cannot be reached; your answer was not saved. Try again when it is back.");
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
  await api("POST", "/api/logout");
  $("who").textContent = "";
  $("progress").textContent = "";
  show("login");
  setMessage("login-message", "Your answers are saved. Enter the same name to continue where you stopped.", true);
}

function updateDisplay() {
  const filter = `brightness(${$("brightness").value / 100}) contrast(${$("contrast").value / 100})`;
  for (const view of VIEWS) $("img-" + view).style.filter = filter;
}

function setup() {
  $("login-form").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  $("answer-form").addEventListener("submit", (event) => { event.preventDefault(); submitAnswer(); });
  for (const button of document.querySelectorAll(".choice")) button.addEventListener("click", () => chooseLabel(button.dataset.label));
  for (const button of document.querySelectorAll(".level")) button.addEventListener("click", () => chooseConfidence(Number(button.dataset.confidence)));
  for (const view of VIEWS) {
    $("slider-" + view).addEventListener("input", (event) => setSlice(view, Number(event.target.value)));
    const frame = $("img-" + view).parentElement;
    frame.addEventListener("wheel", (event) => { event.preventDefault(); setSlice(view, state.index[view] + (event.deltaY > 0 ? -1 : 1)); }, { passive: false });
    $("img-" + view).addEventListener("click", (event) => clickPoint(view, event));
  }
  $("brightness").addEventListener("input", updateDisplay);
  $("contrast").addEventListener("input", updateDisplay);
  $("reset-display").addEventListener("click", () => { $("brightness").value = 100; $("contrast").value = 100; updateDisplay(); });
  document.addEventListener("keydown", (event) => {
    if ($("reading").hidden || event.target.tagName === "INPUT" && event.target.type !== "range") return;
    const key = event.key.toLowerCase();
    if (key === "r") chooseLabel("real");
    else if (key === "s") chooseLabel("synthetic");
    else if (key === "u") chooseLabel("unsure");
    else if (["1", "2", "3", "4", "5"].includes(key)) chooseConfidence(Number(key));
    else if (key === "enter") { event.preventDefault(); submitAnswer(); }
  });
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
