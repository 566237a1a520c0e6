// The faceanchor studio: generate (controls from the API's schema), live progress (SSE, polling
// fallback, cancel), results and history (GET v1/jobs), characters (two in one picture: people.js),
// edit, a code panel, health.
// Plain ES modules, no build step; every request goes through call() in api.js.
import { API_ROOT, apiPath, call, errorLine, errorOf, fileUrl, follow, key, readDataUri } from "./api.js";
import { snippet } from "./code.js";
import { detectFaces, drawFaces, faceAt, qualityLine } from "./faces.js";
import { buildForm, formBody, setField, showFields } from "./form.js";
import { fillPeople, peopleBody, peopleOn, peopleScores } from "./people.js";

const $ = (id) => document.getElementById(id);
const STAGES = {
  face: "Finding the face", load: "Loading the models", controls: "Preparing the control images",
  prompt: "Encoding the prompt", denoise: "Denoising", decode: "Decoding the image", score: "Scoring the identity",
  view: "Rendering the ID-photo views",
};
// The Generate tab's fields an ID photo and an edit take too (the others are about the face photo, the size or several people).
const SHARED = ["method", "num_inference_steps", "guidance_scale", "seed", "negative_prompt", "scheduler", "identity_strength", "adapter_strength",
  "style", "combine", "enhance_face_region", "control_guidance_start", "control_guidance_end", "negative_embedding_noise", "s_scale", "lora_scale",
  "base", "model_name", "adapter_model", "identitynet_model", "prompt_weighting", "output_format"];
const SIZES = [["1:1", 1024, 1024], ["3:4", 896, 1152], ["4:3", 1152, 896], ["9:16", 768, 1344], ["16:9", 1344, 768], ["2:3 small", 512, 768], ["1:1 small", 512, 512]];
const state = { methods: {}, current: null, faces: null, characters: [], editTarget: null, lang: "curl" };

function text(tag, t, cls) { const e = document.createElement(tag); e.textContent = t; if (cls) e.className = cls; return e; }
function button(label, onClick, cls) { const b = text("button", label, cls); b.type = "button"; b.addEventListener("click", onClick); return b; }

// ------------------------------------------------------------------ banner: health, key, errors

function banner(message, kind = "error", command = null) {
  const b = $("banner");
  b.replaceChildren(text("span", message));
  if (command) {
    const code = text("code", command);
    b.append(" Run: ", code, " ", button("Copy", () => navigator.clipboard && navigator.clipboard.writeText(command)));
  }
  b.className = `banner ${kind}`;
  b.hidden = false;
}
function clearBanner() { $("banner").hidden = true; }

// The command an error message names (`faceanchor models pull NAME`), else the listing command.
function modelCommand(message) {
  const m = /`(faceanchor [^`]+)`/.exec(message || "");
  if (m) return m[1];
  return /model/i.test(message || "") ? "faceanchor models list" : null;
}

function explain(e) {  // e: {message, type, status}
  if (e.status === 401) return banner(`${e.message}. Create a key on the server and paste it above:`, "error", "faceanchor keys create --name studio");
  if (e.status === 403) return banner(`${e.message}. Create a new key:`, "error", "faceanchor keys create --name studio");
  if (e.status === 503 || /model .* is missing/.test(e.message)) return banner(`The server cannot run jobs: ${e.message}`, "error", modelCommand(e.message));
  return banner(`${e.message}${e.type ? ` (${e.type})` : ""}`, "error");
}

async function checkHealth() {
  try {
    const resp = await call("GET", "health");
    const h = await resp.json();
    $("health").textContent = `server: ${h.status}` + (h.queue_depth ? `, ${h.queue_depth} queued` : "");
    $("health").className = `pill ${h.status}`;
    if (h.status === "error") banner(`The model failed to load: ${h.error}`, "error", modelCommand(h.error));
    else if (h.status === "starting" || h.status === "loading") { banner("The server is loading its models…", "warn"); setTimeout(checkHealth, 2000); }
    else if (!key.get()) banner("No API key yet. Create one on the server, then paste it into the API key field:", "warn", "faceanchor keys create --name studio");
    else if ($("banner").classList.contains("warn")) clearBanner();
  } catch (_) {
    $("health").textContent = "server: unreachable";
    $("health").className = "pill error";
    banner("The server does not answer.", "error");
  }
}

// ------------------------------------------------------------------ tabs

const TABS = ["generate", "characters", "edit", "history"];
function selectTab(name) {
  for (const t of TABS) {
    const on = t === name;
    $(`tab-${t}`).setAttribute("aria-selected", String(on));
    $(`tab-${t}`).tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (name === "history") loadHistory();
  if (name === "characters") loadCharacters();
}
for (const t of TABS) {
  $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  $(`tab-${t}`).addEventListener("keydown", (ev) => {
    const i = TABS.indexOf(t);
    const j = ev.key === "ArrowRight" ? (i + 1) % TABS.length : ev.key === "ArrowLeft" ? (i + TABS.length - 1) % TABS.length : -1;
    if (j >= 0) { selectTab(TABS[j]); $(`tab-${TABS[j]}`).focus(); }
  });
}

// ------------------------------------------------------------------ methods, schema, styles

async function loadSetup() {
  const [methods, spec, styles] = await Promise.all([call("GET", "v1/methods"), call("GET", "openapi.json"), call("GET", "v1/styles")]);
  if (!methods.ok || !spec.ok || !styles.ok) throw new Error("could not read the server's methods, schema or styles");
  const m = await methods.json();
  const schema = (await spec.json()).components.schemas.GenerateBody;
  buildForm(schema, $("gen-form"));
  $("method").replaceChildren();
  for (const x of m.methods) {
    state.methods[x.name] = x;
    const o = text("option", x.label || x.name);
    o.value = x.name;
    $("method").append(o);
  }
  onMethod();
  const gallery = $("styles");
  for (const s of (await styles.json()).styles) {
    const id = `style-${s.name.replace(/\W+/g, "-")}`;
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "style", value: s.name, id, checked: s.name === "(No style)" });
    const label = document.createElement("label");
    label.htmlFor = id;
    label.className = "style";
    const desc = s.prompt.replace("{prompt}", "…");
    label.append(text("strong", s.name), text("small", desc.length > 90 ? desc.slice(0, 88) + "…" : desc));
    label.title = desc;
    gallery.append(input, label);
  }
  for (const [name, w, h] of SIZES) {
    $("size-presets").append(button(`${name} (${w}×${h})`, () => { setField($("gen-form"), "width", w); setField($("gen-form"), "height", h); }));
  }
  $("size-presets").append(button("from the photo", () => { setField($("gen-form"), "width", ""); setField($("gen-form"), "height", ""); }));
  updateCode();
}

function onMethod() {
  const m = state.methods[$("method").value];
  if (!m) return;
  $("method-help").textContent = `${m.description} (app /${m.app}, bases ${m.families.join(", ")}, up to ${m.max_references} reference photos)`;
  showFields($("gen-form"), new Set(m.fields));
  $("styles").hidden = !m.fields.includes("style");
  updateCode();
}
$("method").addEventListener("change", onMethod);

// ------------------------------------------------------------------ face photos

$("face").addEventListener("change", async () => {
  state.faces = null;
  setField($("gen-form"), "face_index", "");
  const file = $("face").files[0];
  $("faces").hidden = !file;
  if (!file) return;
  const uri = await readDataUri(file);
  const img = new Image();
  img.src = uri;
  await img.decode();
  $("face-report").textContent = "Looking for faces…";
  $("face-list").replaceChildren();
  try {
    const found = await detectFaces(uri, $("method").value);
    state.faces = { found, img };
    renderFaces(0);
  } catch (err) {
    $("face-report").textContent = `Could not look for faces: ${err.message}`;
  }
  updateCode();
});

function renderFaces(chosen) {
  const { found, img } = state.faces;
  const scale = drawFaces($("face-canvas"), img, found, chosen);
  state.faces.scale = scale;
  $("face-list").replaceChildren();
  if (!found.faces.length) {
    $("face-report").textContent = "No face found in this photo: a generation from it will fail. Try a sharper, frontal photo.";
    $("face-report").className = "hint error";
    return;
  }
  for (const f of found.faces) {
    const b = button(`Face ${f.index + 1}${f.index === 0 ? " (largest)" : ""}`, () => chooseFace(f.index));
    b.setAttribute("aria-pressed", String(f.index === chosen));
    $("face-list").append(b);
  }
  const lines = found.faces.map(qualityLine);
  $("face-report").textContent = `${found.faces.length} face${found.faces.length > 1 ? "s" : ""} found (${found.pack}); using face ${chosen + 1}. ${lines.join(" · ")}`;
  $("face-report").className = lines.some((l) => l.includes("warning")) ? "hint warn" : "hint";
}

function chooseFace(index) {
  setField($("gen-form"), "face_index", index === 0 ? "" : index);
  renderFaces(index);
  updateCode();
}

$("face-canvas").addEventListener("click", (ev) => {
  if (!state.faces) return;
  const rect = ev.target.getBoundingClientRect();
  const x = (ev.clientX - rect.left) * (ev.target.width / rect.width);
  const y = (ev.clientY - rect.top) * (ev.target.height / rect.height);
  const f = faceAt(state.faces.found, x, y, state.faces.scale.sx, state.faces.scale.sy);
  if (f) chooseFace(f.index);
});

// ------------------------------------------------------------------ the request

// {queue, body, files}: what Generate would send now (photo or character identity).
async function currentRequest() {
  const files = {};
  const body = await formBody($("gen-form"), files);
  body.method = $("method").value;
  const style = document.querySelector('input[name="style"]:checked');
  if (style && !$("styles").hidden) body.style = style.value;
  if (!$("seed-lock").checked && body.seed !== undefined && body.seed !== -1) body.seed = -1;
  if (peopleOn()) return { queue: "character/generate", body: peopleBody(body), files };
  const character = $("identity-source").value;
  if (character) {
    delete body.face_index;
    return { queue: "character/generate", body: { ...body, character_id: character, reference_set: $("char-refs").value }, files };
  }
  const photos = [...$("face").files];
  if (photos.length) {
    body.face_image = await readDataUri(photos[0]);
    files.face_image = photos[0];
    if (photos.length > 1) {
      body.face_images = await Promise.all(photos.slice(1).map(readDataUri));
      files.face_images = photos.slice(1);
    }
  }
  return { queue: state.methods[body.method].app, body, files };
}

let codeTimer = null;
function updateCode() {
  clearTimeout(codeTimer);
  codeTimer = setTimeout(async () => {
    try {
      const { queue, body, files } = await currentRequest();
      $("code").textContent = snippet(state.lang, API_ROOT.href, queue, body, files);
    } catch (err) { $("code").textContent = `// ${err.message}`; }
  }, 150);
}
$("gen-form").addEventListener("input", updateCode);
$("gen-form").addEventListener("change", updateCode);
// A character as the identity: no photo picker, its reference set instead (none of it in two-character mode).
function showIdentity() {
  const on = peopleOn();
  $("photo-box").hidden = on || !!$("identity-source").value;
  $("char-refs-box").hidden = on || !$("identity-source").value;
  $("edit-face-box").hidden = !!$("edit-identity").value;
  $("edit-refs-box").hidden = !$("edit-identity").value;
}
$("identity-source").addEventListener("change", () => { showIdentity(); updateCode(); });
$("people-mode").addEventListener("change", () => {
  const on = peopleOn();
  $("people-box").hidden = !on;
  $("identity-source").disabled = on;
  showIdentity();
  if (on) loadCharacters();
  updateCode();
});
for (const id of ["person-1", "person-2", "people-layout"]) $(id).addEventListener("change", updateCode);
for (const b of document.querySelectorAll("[data-lang]")) {
  b.addEventListener("click", () => {
    state.lang = b.dataset.lang;
    for (const o of document.querySelectorAll("[data-lang]")) o.setAttribute("aria-pressed", String(o === b));
    updateCode();
  });
}
$("code-copy").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText($("code").textContent));

// ------------------------------------------------------------------ jobs: submit, progress, cancel

function progressText(s) {
  if (s.status === "IN_QUEUE") {
    const ahead = s.queue_position;
    return ahead == null ? "In the queue…" : ahead === 0 ? "In the queue: next up" : `In the queue: ${ahead} ahead`;
  }
  if (s.status === "IN_PROGRESS") {
    const p = s.progress;
    if (!p) return "Starting…";
    if (p.total) return `${STAGES[p.stage] || p.stage}: step ${p.step}/${p.total}${p.sample ? ` (sample ${p.sample + 1})` : ""}`;
    return `${STAGES[p.stage] || p.message || p.stage}…`;
  }
  if (s.status === "COMPLETED") return "Done, fetching the images…";
  if (s.status === "CANCELLED") return "Cancelled.";
  const e = s.error || {};
  return `Failed: ${e.message || "the job failed"}${e.type ? ` (${e.type})` : ""}`;
}

function showStatus(s, via) {
  $("job").hidden = false;
  $("job-status").textContent = progressText(s);
  $("job-status").className = s.status === "FAILED" ? "error" : s.status === "CANCELLED" ? "warn" : s.status === "COMPLETED" ? "ok" : "";
  $("job").dataset.status = s.status;
  $("job").dataset.via = via || "";
  const p = s.progress;
  if (p && p.total) $("job-bar").value = p.fraction != null ? p.fraction : p.step / p.total;
  if (s.status === "COMPLETED") $("job-bar").value = 1;
  if (s.logs && s.logs.length) $("logs").textContent = s.logs.map((l) => `${new Date(l.timestamp * 1000).toLocaleTimeString()}  ${l.message}`).join("\n");
}

function setBusy(busy) {
  for (const id of ["submit", "edit-submit"]) $(id).disabled = busy;
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
}

// Submit to queue/{app}, follow it to the end, then show its result; returns the result or null.
async function runJob(queue, body, onResult) {
  if (state.current) return null;
  if (!key.get()) { banner("No API key yet. Create one on the server, then paste it into the API key field:", "warn", "faceanchor keys create --name studio"); return null; }
  localStorage.setItem("faceanchor-key", key.get());
  state.current = { queue, id: null, controller: new AbortController() };
  setBusy(true);
  $("job-bar").value = 0;
  $("logs").textContent = "";
  showStatus({ status: "IN_QUEUE" });
  $("job-status").textContent = "Submitting…";
  try {
    const resp = await call("POST", `queue/${queue}`, { body });
    if (!resp.ok) {
      const e = await errorOf(resp);
      $("job-status").textContent = `Not accepted: ${errorLine(e)}`;
      $("job-status").className = "error";
      $("job").dataset.status = "REFUSED";
      explain(e);
      return null;
    }
    const job = await resp.json();
    state.current.id = job.request_id;
    showStatus(job);
    const last = await follow(queue, job.request_id, showStatus, state.current.controller.signal);
    if (last.status === "FAILED" && last.error) explain({ message: last.error.message, type: last.error.type, status: 0 });
    if (last.status !== "COMPLETED") return null;
    const r = await call("GET", `queue/${queue}/requests/${job.request_id}`);
    if (!r.ok) { explain(await errorOf(r)); return null; }
    const result = await r.json();
    await showResult(result, queue);
    $("job-status").textContent = `Done: ${result.images.length} image${result.images.length === 1 ? "" : "s"}, seed ${result.seed}` +
      (last.finished_at && last.started_at ? ` in ${(last.finished_at - last.started_at).toFixed(1)} s` : "") +
      ((result.warnings || []).length ? `. Warnings: ${result.warnings.join("; ")}` : "");
    if (onResult) await onResult(result);
    return result;
  } catch (err) {
    if (err.name !== "AbortError") { $("job-status").textContent = `Something went wrong: ${err.message}`; $("job-status").className = "error"; }
    return null;
  } finally {
    state.current = null;
    setBusy(false);
  }
}

$("cancel").addEventListener("click", async () => {
  const c = state.current;
  if (!c || !c.id) return;
  $("cancel").disabled = true;
  const resp = await call("PUT", `queue/${c.queue}/requests/${c.id}/cancel`);
  if (!resp.ok) { $("job-status").textContent = `Could not cancel: ${errorLine(await errorOf(resp))}`; return; }
  const body = await resp.json();
  $("job-status").textContent = body.status === "ALREADY_COMPLETED" ? "Already finished." : "Cancelling…";
});

$("gen-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  let req;
  try { req = await currentRequest(); } catch (err) { banner(err.message); return; }
  if (!req.body.people && !req.body.face_image && !req.body.character_id && !req.body.face_embedding && !req.body.face_embeddings) {
    banner("Choose a face photo (or a character) first.", "warn");
    return;
  }
  clearBanner();
  await runJob(req.queue, req.body);
});

// ------------------------------------------------------------------ results

function scoreText(image) {
  const people = peopleScores(image);  // several people: one score each, identity_score the lowest
  if (people) return `identity per person: ${people} (lowest ${image.identity_score == null ? "n/a" : image.identity_score.toFixed(3)})`;
  if (image.identity_score == null) return `identity: none (${image.identity_reason || "not scored"})`;
  return `identity ${image.identity_score.toFixed(3)}`;
}

async function figureFor(image, params, { label } = {}) {
  const fig = document.createElement("figure");
  fig.className = "result";
  const cap = document.createElement("figcaption");
  try {
    const url = await fileUrl(apiPath(image.url));
    const img = document.createElement("img");
    img.src = url;
    img.alt = `${label || "generated image"}, seed ${image.seed}`;
    img.width = image.width;
    img.height = image.height;
    if (image.width < 256) img.classList.add("small");
    fig.append(img);
    const dl = document.createElement("a");
    dl.href = url;
    dl.download = `faceanchor_${image.seed}.${(image.content_type || "image/png").split("/")[1].replace("jpeg", "jpg")}`;
    dl.textContent = "download";
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(
      button("use this seed", () => { setField($("gen-form"), "seed", image.seed); $("seed-lock").checked = true; selectTab("generate"); updateCode(); }),
      button("send to edit", () => sendToEdit(url, image)),
      dl,
    );
    cap.append(text("span", `${label ? label + " · " : ""}seed ${image.seed} · ${scoreText(image)} · ${image.width}×${image.height}`, "score"), actions);
  } catch (err) {
    cap.append(text("span", `the image could not be loaded: ${err.message}`, "error"));
  }
  if (params) {
    const d = document.createElement("details");
    d.append(text("summary", "parameters"), text("pre", JSON.stringify(params, null, 1)));
    cap.append(d);
  }
  fig.append(cap);
  return fig;
}

async function showResult(result, queue) {
  const views = (result.params && result.params.id_photo && result.params.id_photo.views) || null;
  const box = $("results");
  const group = document.createElement("div");
  group.className = "result-group";
  group.dataset.requestId = result.request_id;
  group.append(text("h3", `${queue} · ${new Date().toLocaleTimeString()}`));
  for (const [i, image] of result.images.entries()) {
    const label = queue === "character/id-photo" ? (i === 0 ? "4-in-1 sheet" : (views && views[i - 1] && (views[i - 1].view || views[i - 1].name)) || `view ${i}`) : null;
    group.append(await figureFor(image, i === 0 ? result.params : null, { label }));
  }
  box.prepend(group);
}

// ------------------------------------------------------------------ history (the key's jobs)

async function loadHistory() {
  if (!key.get()) { $("history-note").textContent = "Paste your API key to see its history."; return; }
  const resp = await call("GET", "v1/jobs?limit=30");
  if (!resp.ok) { const e = await errorOf(resp); $("history-note").textContent = errorLine(e); explain(e); return; }
  const { jobs, total } = await resp.json();
  $("history-note").textContent = `${total} job${total === 1 ? "" : "s"} for this key, newest first.`;
  const items = [];
  for (const j of jobs) {
    const li = document.createElement("li");
    li.className = `job-${j.status.toLowerCase()}`;
    const p = j.params || {};
    const what = p.prompt ? `“${p.prompt.slice(0, 80)}”` : "";
    li.append(text("strong", `${j.app} · ${j.status}`), text("span", ` ${new Date(j.created_at * 1000).toLocaleString()} ${what}`));
    if (p.style && p.style !== "(No style)") li.append(text("span", ` · style ${p.style}`));
    if (j.error) li.append(text("p", `${j.error.message} (${j.error.type})`, "error"));
    if (j.images.length) {
      const fig = await figureFor(j.images[0], p, { label: j.app.startsWith("character/id-photo") ? "4-in-1 sheet" : null });
      li.append(fig);
    }
    items.push(li);
  }
  $("history").replaceChildren(...items);  // at once: a test (or a reader) never sees half a list
}
$("history-refresh").addEventListener("click", loadHistory);

// ------------------------------------------------------------------ characters

function warningsOf(ch) {
  return (ch.identities || []).flatMap((i) => ((i.quality || {}).warnings || []).map((w) => `${i.source}: ${w}`));
}

function qualityReport(ch) {
  const box = document.createElement("div");
  box.className = "report";
  box.append(text("h3", `Created “${ch.name}”`));
  const ul = document.createElement("ul");
  for (const i of ch.identities || []) {
    const q = i.quality || {};
    ul.append(text("li", `${i.source} (${i.space}, ${i.dim}-D): face ${Math.round(q.size_px || 0)} px, score ${(q.det_score || 0).toFixed(2)}, yaw ${(q.yaw_deg || 0).toFixed(0)}°, sharpness ${(q.blur || 0).toFixed(0)}`));
  }
  box.append(ul);
  const warnings = warningsOf(ch);
  box.append(text("p", warnings.length ? `Warnings: ${warnings.join("; ")}` : "No quality warnings.", warnings.length ? "warn" : "ok"));
  return box;
}

$("char-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("char-name").value.trim();
  const photos = [...$("char-photos").files];
  if (!name || !photos.length) { banner("A character needs a name and at least one photo.", "warn"); return; }
  const uris = await Promise.all(photos.map(readDataUri));
  $("char-create").disabled = true;
  $("char-report").replaceChildren(text("p", "Analysing the photos…"));
  try {
    const req = { name, images: { face: uris[0], faces: uris.slice(1) } };
    if ($("char-face-index").value !== "") req.face_index = Number($("char-face-index").value);
    const spaces = $("char-spaces").value.split(",").map((x) => x.trim()).filter(Boolean);
    if (spaces.length) req.spaces = spaces;
    if ($("char-allow-different").checked) req.allow_different_people = true;  // else a blend is refused (422 naming the pair)
    const resp = await call("POST", "v1/characters", { body: req });
    if (!resp.ok) {
      const e = await errorOf(resp);
      $("char-report").replaceChildren(text("p", `Not created: ${errorLine(e)}`, "error"));
      explain(e);
      return;
    }
    const ch = await resp.json();
    clearBanner();
    $("char-report").replaceChildren(qualityReport(ch));
    $("char-form").reset();
    await loadCharacters();
  } finally {
    $("char-create").disabled = false;
  }
});

async function loadCharacters() {
  if (!key.get()) return;
  const resp = await call("GET", "v1/characters");
  if (!resp.ok) { explain(await errorOf(resp)); return; }
  state.characters = (await resp.json()).characters;
  fillPeople(state.characters);
  for (const sel of [$("identity-source"), $("edit-identity")]) {
    const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const c of state.characters) { const o = text("option", `character: ${c.name}`); o.value = c.id; sel.append(o); }
    sel.value = state.characters.some((c) => c.id === keep) ? keep : "";
  }
  showIdentity();  // a deleted character is no longer the identity
  const list = $("char-list");
  list.replaceChildren();
  for (const c of state.characters) list.append(await characterCard(c));
}

async function characterCard(c) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.characterId = c.id;
  card.append(text("h3", c.name), text("p", `${c.photos.length} photo(s) · ${c.generations} generation(s) · ${c.spaces.join(", ")}`, "hint"));
  const warnings = warningsOf(c);
  if (warnings.length) card.append(text("p", `Warnings: ${warnings.join("; ")}`, "warn"));
  const thumbs = document.createElement("div");
  thumbs.className = "thumbs";
  for (const fid of c.photos.slice(0, 5)) {
    const img = document.createElement("img");
    img.alt = `reference photo of ${c.name}`;
    try { img.src = await fileUrl(apiPath(`${c.files_url}/${fid}`)); } catch (_) { /* shown without */ }
    thumbs.append(img);
  }
  card.append(thumbs);
  if (c.sheet_file) {
    const sheet = document.createElement("div");
    sheet.className = "idphoto";
    for (const v of c.views) {
      if (!v.file_id) continue;
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      img.alt = `${c.name}, ${v.view} view`;
      try { img.src = await fileUrl(apiPath(v.url)); } catch (_) { /* shown without */ }
      fig.append(img, text("figcaption", `${v.view}${v.identity_score != null ? ` · ${v.identity_score.toFixed(2)}` : ""}`));
      sheet.append(fig);
    }
    card.append(text("h4", "ID photo"), sheet);
  }
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(
    button("Make ID photo", async () => {
      const { body } = await currentRequest();
      const fields = pick(body, [...SHARED, "width", "height", "prompt"]);
      await runJob("character/id-photo", { ...fields, character_id: c.id }, () => loadCharacters());
    }),
    button("Generate with…", () => { $("identity-source").value = c.id; showIdentity(); selectTab("generate"); updateCode(); $("submit").focus(); }),
    button("Edit with…", () => { $("edit-identity").value = c.id; showIdentity(); selectTab("edit"); }),
    button("History", () => showCharacterHistory(c, card)),
    button("Delete", async () => {
      if (!window.confirm(`Delete ${c.name} and its files?`)) return;
      const resp = await call("DELETE", `v1/characters/${c.id}`);
      if (!resp.ok) { explain(await errorOf(resp)); return; }
      await loadCharacters();
    }, "danger"),
  );
  card.append(actions);
  return card;
}

function pick(o, names) { return Object.fromEntries(names.filter((n) => o[n] !== undefined).map((n) => [n, o[n]])); }

async function showCharacterHistory(c, card) {
  const resp = await call("GET", `v1/characters/${c.id}/history`);
  if (!resp.ok) { explain(await errorOf(resp)); return; }
  const { entries } = await resp.json();
  let box = card.querySelector(".char-history");
  if (!box) { box = document.createElement("div"); box.className = "char-history"; card.append(box); }
  box.replaceChildren(text("h4", `History (${entries.length})`));
  for (const e of entries) {
    const row = document.createElement("div");
    row.className = "thumbs";
    row.append(text("span", `${e.kind} · ${new Date(e.created_at * 1000).toLocaleTimeString()} `));
    for (const o of e.outputs.slice(0, 5)) {
      const img = document.createElement("img");
      img.alt = `${e.kind} output${o.view ? " " + o.view : ""}`;
      try { img.src = await fileUrl(apiPath(o.url)); } catch (_) { /* shown without */ }
      row.append(img);
    }
    box.append(row);
  }
}

// ------------------------------------------------------------------ edit

async function sendToEdit(url, image) {
  const blob = await (await fetch(url)).blob();  // a blob: URL of this page, not a network request
  state.editTarget = new File([blob], `faceanchor_${image.seed}.png`, { type: blob.type || "image/png" });
  $("edit-target-note").textContent = `Target: the result with seed ${image.seed} (or choose another picture).`;
  selectTab("edit");
}
$("edit-target").addEventListener("change", () => { state.editTarget = $("edit-target").files[0] || null; $("edit-target-note").textContent = ""; });
$("edit-identity").addEventListener("change", showIdentity);

$("edit-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!state.editTarget) { banner("Choose the picture to edit.", "warn"); return; }
  const { body } = await currentRequest();
  const fields = pick(body, SHARED);
  const target = await readDataUri(state.editTarget);
  const req = { ...fields, prompt: $("edit-prompt").value, mode: document.querySelector('input[name="edit-mode"]:checked').value,
    mask_source: $("edit-mask-source").value, images: { target } };
  if ($("edit-strength").value) req.strength = Number($("edit-strength").value);
  if ($("edit-identity").value) { req.character_id = $("edit-identity").value; req.reference_set = $("edit-refs").value; }
  else if ($("edit-face").files[0]) req.images.face = await readDataUri($("edit-face").files[0]);
  else { banner("Choose a face photo or a character for the edit.", "warn"); return; }
  clearBanner();
  await runJob("character/edit", req, async (result) => {
    $("edit-before").src = target;
    $("edit-after").src = await fileUrl(apiPath(result.images[0].url));
    $("edit-compare").hidden = false;
  });
});

// ------------------------------------------------------------------ start

$("key").value = localStorage.getItem("faceanchor-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("faceanchor-key", key.get()); checkHealth(); loadCharacters(); });
checkHealth();
loadSetup().catch((err) => banner(err.message)).then(() => loadCharacters());
