// Every request of the studio goes through call(METHOD, `path`) with a path relative to the API
// root (one level above /web/, so it works behind a path prefix); the key travels in x-api-key
// and stays in this browser (localStorage). tests/web/test_page.py checks each call against the
// app's routes; tests/web/test_browser.py checks that no request leaves this origin.
export const API_ROOT = new URL("../", document.baseURI);
export const FINISHED = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export const key = {
  get: () => (document.getElementById("key").value || "").trim(),
};

export function call(method, path, { body, signal } = {}) {
  const headers = {};
  const k = key.get();
  if (k) headers["x-api-key"] = k;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(new URL(path, API_ROOT), { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
}

// {"error": {"type", "message"}} (or FastAPI's detail) as {message, type, status}.
export async function errorOf(resp) {
  let message = resp.statusText || "request failed";
  let type = "";
  try {
    const text = await resp.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) { message = body.error.message; type = body.error.type || ""; }
      else if (body && typeof body.detail === "string") message = body.detail;
      else if (body && Array.isArray(body.detail) && body.detail[0]) {
        const d = body.detail[0];
        message = `${(d.loc || []).slice(1).join(".")}: ${d.msg}`;
        type = "validation_error";
      }
    } catch (_) { if (text && text.length < 300) message = text; }
  } catch (_) { /* keep the status text */ }
  return { message, type, status: resp.status };
}

export function errorLine(e) {
  return `${e.message} (HTTP ${e.status}${e.type ? ", " + e.type : ""})`;
}

// A file the API serves behind the key (results, character photos) as an object URL.
const objectUrls = new Map();
export async function fileUrl(path) {
  if (objectUrls.has(path)) return objectUrls.get(path);
  const resp = await call("GET", path);
  if (!resp.ok) throw new Error(errorLine(await errorOf(resp)));
  const url = URL.createObjectURL(await resp.blob());
  objectUrls.set(path, url);
  return url;
}

// An absolute URL the API returned (…/files/ID, …/v1/characters/ID/files/FID) as a path under the API root.
export function apiPath(url) {
  const u = new URL(url, API_ROOT);
  const root = API_ROOT.pathname;
  return u.pathname.startsWith(root) ? u.pathname.slice(root.length) : u.pathname.replace(/^\//, "");
}

export function readDataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// Follow a queued job: the server-sent status stream read with fetch() (EventSource cannot send
// the key header); if the stream cannot be opened or breaks before the job ends, poll the status.
// `app` is the queue app: "instantid", "faceid", "character/generate", ...
export async function follow(app, id, onStatus, signal) {
  let last = null;
  try {
    const resp = await call("GET", `queue/${app}/requests/${id}/status/stream?logs=1`, { signal });
    if (resp.ok && resp.body) {
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
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
          if (data) { last = JSON.parse(data); onStatus(last, "stream"); }
        }
      }
    }
  } catch (err) {
    if (err.name === "AbortError") throw err;
  }
  while (!last || !FINISHED.has(last.status)) {
    await new Promise((r) => setTimeout(r, 700));
    const resp = await call("GET", `queue/${app}/requests/${id}/status`, { signal });
    if (!resp.ok) throw new Error(errorLine(await errorOf(resp)));
    last = await resp.json();
    onStatus(last, "poll");
  }
  return last;
}
