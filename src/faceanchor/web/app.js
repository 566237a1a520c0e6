// The faceanchor web page: submit to /queue/{app}, follow the SSE status stream, show results.
// The key stays in this browser (localStorage) and travels in the x-api-key header.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null;  // {app, id, source}

$("key").value = localStorage.getItem("faceanchor-key") || "";

$("face").addEventListener("change", () => {
  const file = $("face").files[0];
  if (!file) return;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
});

function readDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("could not read the file"));
    reader.readAsDataURL(file);
  });
}

function headers() {
  return { "x-api-key": $("key").value.trim(), "Content-Type": "application/json" };
}

function setStatus(text, isError) {
  $("status-box").hidden = false;
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function errorText(resp) {
  try { const body = await resp.json(); return body.error ? body.error.message : resp.statusText; }
  catch (_) { return resp.statusText; }
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  localStorage.setItem("faceanchor-key", $("key").value.trim());
  $("results").innerHTML = "";
  $("logs").textContent = "";
  $("bar").value = 0;
  const app = $("app").value;
  const body = {
    face_image: await readDataUri($("face").files[0]),
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    samples: Number($("samples").value),
    num_inference_steps: Number($("steps").value),
    seed: Number($("seed").value),
    identity_strength: Number($("identity").value),
    adapter_strength: Number($("adapter").value),
  };
  setStatus("submitting…");
  const resp = await fetch(`/queue/${app}`, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!resp.ok) { setStatus(`${resp.status}: ${await errorText(resp)}`, true); return; }
  const job = await resp.json();
  follow(app, job);
});

// EventSource cannot send headers, so the stream is read with fetch().
async function follow(app, job) {
  const controller = new AbortController();
  current = { app, id: job.request_id, controller };
  $("cancel").hidden = false;
  const resp = await fetch(`${job.status_url}/stream?logs=1`, { headers: headers(), signal: controller.signal });
  if (!resp.ok) { setStatus(`${resp.status}: ${await errorText(resp)}`, true); return; }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const chunk = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data) { last = JSON.parse(data); show(last); }
    }
  }
  $("cancel").hidden = true;
  if (last && last.status === "COMPLETED") await showResult(job.response_url);
}

function show(status) {
  if (status.status === "IN_QUEUE") setStatus(`in queue, position ${status.queue_position}`);
  else if (status.status === "IN_PROGRESS") {
    const p = status.progress;
    setStatus(p ? `${p.stage} ${p.total ? p.step + "/" + p.total : ""}` : "starting…");
    if (p && p.fraction != null) $("bar").value = p.fraction;
  } else if (status.status === "COMPLETED") { setStatus("done"); $("bar").value = 1; }
  else setStatus(`${status.status}: ${status.error ? status.error.message : ""}`, true);
  if (status.logs) $("logs").textContent = status.logs.map((l) => l.message).join("\n");
}

async function showResult(url) {
  const resp = await fetch(url, { headers: headers() });
  if (!resp.ok) { setStatus(`${resp.status}: ${await errorText(resp)}`, true); return; }
  const result = await resp.json();
  for (const image of result.images) {
    const blob = await (await fetch(image.url, { headers: headers() })).blob();
    const img = document.createElement("img");
    img.src = URL.createObjectURL(blob);
    const score = image.identity_score == null ? "n/a" : image.identity_score.toFixed(3);
    img.title = `seed ${image.seed}, identity ${score}`;
    const caption = document.createElement("p");
    caption.textContent = img.title;
    $("results").append(img, caption);
  }
}

$("cancel").addEventListener("click", async () => {
  if (!current) return;
  const resp = await fetch(`/queue/${current.app}/requests/${current.id}/cancel`, { method: "PUT", headers: headers() });
  const body = await resp.json();
  setStatus(resp.ok ? body.status : body.error.message, !resp.ok);
});
