// The faceanchor web page: submit to the queue (POST queue/{app}), follow the status stream
// (server-sent events), then fetch the result and its images.
// The key stays in this browser (localStorage) and travels in the x-api-key header.
// Every request goes through call(METHOD, `path`) with a literal path relative to the API root:
// tests/web/test_page.py reads those calls and checks each one against the app's routes.
"use strict";
const $ = (id) => document.getElementById(id);
// The page is served at <root>/web/, so the API root is one level up (works behind a path prefix).
const API_ROOT = new URL("../", document.baseURI);
const FINISHED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);
const STAGES = {
  face: "Finding the face", load: "Loading the models", controls: "Preparing the control images",
  prompt: "Encoding the prompt", denoise: "Denoising", decode: "Decoding the image", score: "Scoring the identity",
};
let current = null;  // {app, id, controller}
let previewUrl = null;
const resultUrls = [];

function call(method, path, { body, signal } = {}) {
  const headers = { "x-api-key": $("key").value.trim() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(new URL(path, API_ROOT), { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
}

// A readable line from an error answer: {"error": {"type", "message"}} or whatever came back.
async function errorText(resp) {
  let message = resp.statusText || "request failed";
  let type = "";
  try {
    const text = await resp.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) { message = body.error.message; type = body.error.type || ""; }
      else if (body && typeof body.detail === "string") message = body.detail;
    } catch (_) { if (text && text.length < 300) message = text; }
  } catch (_) { /* keep the status text */ }
  return `${message} (HTTP ${resp.status}${type ? ", " + type : ""})`;
}

function setStatus(text, kind) {
  $("status-box").hidden = false;
  $("status").textContent = text;
  $("status").className = kind || "";
}

function setBusy(busy) {
  $("submit").disabled = busy;
  $("submit").textContent = busy ? "Working…" : "Generate";
  $("cancel").hidden = true;
  $("cancel").disabled = false;
}

function readDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// The request body from every control that names a field; blank optional numbers are left out.
async function requestBody() {
  const body = {};
  for (const el of document.querySelectorAll("[data-field]")) {
    const field = el.dataset.field;
    if (el.disabled) continue;  // a field the chosen method does not take
    if (el.type === "file") {
      if (el.files[0]) body[field] = await readDataUri(el.files[0]);
    } else if (el.type === "number") {
      if (el.value.trim() !== "") body[field] = Number(el.value);
    } else if (el.type === "checkbox") {
      body[field] = el.checked;
    } else {
      body[field] = el.value;
    }
  }
  return body;
}

async function checkHealth() {
  try {
    const resp = await call("GET", "health");
    const health = await resp.json();
    $("health").textContent = `server: ${health.status}`;
    $("health").className = `pill ${health.status}`;
    $("health").title = health.error || `${health.queue_depth} queued, ${health.busy_workers}/${health.workers} workers busy`;
    if (health.status === "starting" || health.status === "loading") setTimeout(checkHealth, 3000);
  } catch (_) {
    $("health").textContent = "server: unreachable";
    $("health").className = "pill error";
  }
}

function clearResults() {
  while (resultUrls.length) URL.revokeObjectURL(resultUrls.pop());
  $("results").replaceChildren();
}

$("key").value = localStorage.getItem("faceanchor-key") || "";

$("face").addEventListener("change", () => {
  const file = $("face").files[0];
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  $("preview").hidden = true;
  if (!file) return;
  previewUrl = URL.createObjectURL(file);
  $("preview").src = previewUrl;
  $("preview").hidden = false;
});
$("preview").addEventListener("error", () => { $("preview").hidden = true; });

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (current) return;
  const key = $("key").value.trim();
  localStorage.setItem("faceanchor-key", key);
  clearResults();
  $("logs").textContent = "";
  $("logs-box").hidden = true;
  $("bar").value = 0;
  $("bar").hidden = true;
  const app = $("method").selectedOptions[0].dataset.app;
  current = { app, id: null, controller: new AbortController() };
  setBusy(true);
  try {
    setStatus("Submitting…");
    const resp = await call("POST", `queue/${app}`, { body: await requestBody() });
    if (!resp.ok) { setStatus(`Not accepted: ${await errorText(resp)}`, "error"); return; }
    const job = await resp.json();
    current.id = job.request_id;
    $("bar").hidden = false;
    $("cancel").hidden = false;
    show(job);
    const last = await follow(app, job.request_id, current.controller.signal);
    if (last && last.status === "COMPLETED") await showResult(app, job.request_id, last);
  } catch (err) {
    if (err.name !== "AbortError") setStatus(`Something went wrong: ${err.message}`, "error");
  } finally {
    current = null;
    setBusy(false);
  }
});

// The status stream, read with fetch() because EventSource cannot send the key header.
// If the stream breaks before the job finishes, the status is polled instead.
async function follow(app, id, signal) {
  let last = null;
  try {
    const resp = await call("GET", `queue/${app}/requests/${id}/status/stream?logs=1`, { signal });
    if (!resp.ok) { setStatus(`Could not follow the job: ${await errorText(resp)}`, "error"); return null; }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const chunk = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = chunk.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) { last = JSON.parse(data); show(last); }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") throw err;
  }
  while (!last || !FINISHED.has(last.status)) {
    await new Promise((r) => setTimeout(r, 1000));
    const resp = await call("GET", `queue/${app}/requests/${id}/status?logs=1`, { signal });
    if (!resp.ok) { setStatus(`Could not follow the job: ${await errorText(resp)}`, "error"); return null; }
    last = await resp.json();
    show(last);
  }
  return last;
}

function progressText(p) {
  if (!p) return "Starting…";
  if (p.total) {
    const sample = p.sample ? ` (batch ${p.sample + 1})` : "";
    return `Denoising: step ${p.step}/${p.total}${sample}`;
  }
  return `${STAGES[p.stage] || p.message || p.stage}…`;
}

function show(status) {
  if (status.status === "IN_QUEUE") {
    const ahead = status.queue_position;
    setStatus(ahead == null ? "In the queue…" : ahead === 0 ? "In the queue: next up" : `In the queue: ${ahead} ahead`);
  } else if (status.status === "IN_PROGRESS") {
    const p = status.progress;
    setStatus(progressText(p));
    if (p && p.total) $("bar").value = p.fraction != null ? p.fraction : p.step / p.total;
  } else if (status.status === "COMPLETED") {
    setStatus("Done, fetching the images…");
    $("bar").value = 1;
  } else if (status.status === "CANCELLED") {
    setStatus("Cancelled.", "warn");
  } else if (status.status === "FAILED") {
    const e = status.error || {};
    setStatus(`Failed: ${e.message || "the job failed"}${e.type ? ` (${e.type})` : ""}`, "error");
  }
  if (status.logs && status.logs.length) {
    $("logs-box").hidden = false;
    $("logs").textContent = status.logs.map((l) => `${new Date(l.timestamp * 1000).toLocaleTimeString()}  ${l.message}`).join("\n");
  }
}

async function showResult(app, id, status) {
  const resp = await call("GET", `queue/${app}/requests/${id}`);
  if (!resp.ok) { setStatus(`Could not fetch the result: ${await errorText(resp)}`, "error"); return; }
  const result = await resp.json();
  for (const image of result.images) {
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    const score = image.identity_score == null
      ? `identity n/a${image.identity_reason ? ` (${image.identity_reason})` : ""}`
      : `identity ${image.identity_score.toFixed(3)}`;
    caption.textContent = `seed ${image.seed} · ${score} · ${image.width}×${image.height}`;
    const fileResp = await call("GET", `files/${image.file_id}`);
    if (fileResp.ok) {
      const url = URL.createObjectURL(await fileResp.blob());
      resultUrls.push(url);
      const img = document.createElement("img");
      img.src = url;
      img.alt = `generated image, seed ${image.seed}`;
      img.width = image.width;
      img.height = image.height;
      if (image.width < 256) img.classList.add("small");  // tiny test outputs: show them enlarged, pixelated
      figure.style.width = `min(100%, calc(${Math.max(image.width, 256)}px + 1.2rem))`;  // the caption wraps under the image
      const link = document.createElement("a");
      link.href = url;
      link.download = `faceanchor_${image.seed}.${(image.content_type.split("/")[1] || "png").replace("jpeg", "jpg")}`;
      link.textContent = "download";
      caption.append(" · ", link);
      figure.append(img, caption);
    } else {
      caption.textContent += ` · the image could not be loaded: ${await errorText(fileResp)}`;
      caption.className = "error";
      figure.append(caption);
    }
    $("results").append(figure);
  }
  const total = status.finished_at != null && status.started_at != null ? status.finished_at - status.started_at : null;
  const warnings = (result.warnings || []).join("; ");
  setStatus(`Done: ${result.images.length} image${result.images.length === 1 ? "" : "s"}, seed ${result.seed}` +
    (total != null ? ` in ${total.toFixed(1)} s` : "") + (warnings ? `. Warnings: ${warnings}` : ""),
  warnings ? "warn" : "ok");
}

$("cancel").addEventListener("click", async () => {
  if (!current || !current.id) return;
  $("cancel").disabled = true;
  try {
    const resp = await call("PUT", `queue/${current.app}/requests/${current.id}/cancel`);
    if (!resp.ok) { setStatus(`Could not cancel: ${await errorText(resp)}`, "error"); return; }
    const body = await resp.json();
    setStatus(body.status === "ALREADY_COMPLETED" ? "Already finished." : "Cancelling…");
  } catch (err) {
    setStatus(`Could not cancel: ${err.message}`, "error");
  }
});

// The methods come from the server's registry: each option knows its app and the fields it takes;
// controls of fields the chosen method does not take are hidden (and not sent).
let methodFields = {};
async function loadMethods() {
  try {
    const resp = await call("GET", "v1/methods");
    if (!resp.ok) { setStatus(`Could not list the methods: ${await errorText(resp)}`, "error"); return; }
    const body = await resp.json();
    $("method").replaceChildren();
    for (const m of body.methods) {
      const option = document.createElement("option");
      option.value = m.name;
      option.dataset.app = m.app;
      option.textContent = m.label || m.name;
      option.title = m.description || "";
      $("method").append(option);
      methodFields[m.name] = new Set(m.fields);
    }
    showFieldsOf($("method").value);
  } catch (err) {
    setStatus(`Could not list the methods: ${err.message}`, "error");
  }
}

function showFieldsOf(name) {
  const fields = methodFields[name];
  if (!fields) return;
  for (const el of document.querySelectorAll("[data-field]")) {
    const used = fields.has(el.dataset.field);
    el.disabled = !used;
    const holder = el.closest("label") || el;
    holder.hidden = !used;
  }
}
$("method").addEventListener("change", () => showFieldsOf($("method").value));

loadMethods();
checkHealth();
