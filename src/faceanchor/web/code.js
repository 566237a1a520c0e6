// "Copy as cURL / Python / JavaScript" for the request the form would send now. The key is never
// written out (it is read from FACEANCHOR_KEY); images are shown as the file names they came from.
const KEY_NOTE = "FACEANCHOR_KEY";

function elideImages(body, files) {
  const out = {};
  for (const [k, v] of Object.entries(body)) {
    if (typeof v === "string" && v.startsWith("data:")) out[k] = files[k] ? files[k].name : "photo.jpg";
    else if (Array.isArray(v) && v.length && typeof v[0] === "string" && v[0].startsWith("data:")) out[k] = v.map((_, i) => (files[k] && files[k][i] ? files[k][i].name : `photo${i + 1}.jpg`));
    else out[k] = v;
  }
  return out;
}

function pyValue(v, indent = 4) {
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (Array.isArray(v)) return "[" + v.map((x) => pyValue(x, indent)).join(", ") + "]";
  if (typeof v === "object") {
    const pad = " ".repeat(indent + 4);
    return "{\n" + Object.entries(v).map(([k, x]) => `${pad}${JSON.stringify(k)}: ${pyValue(x, indent + 4)},`).join("\n") + "\n" + " ".repeat(indent) + "}";
  }
  return JSON.stringify(v);
}

// queue: the queue app ("instantid", "character/generate", ...); body: the JSON body; files: {field: File | File[]}.
export function snippet(lang, base, queue, body, files) {
  const shown = elideImages(body, files);
  const base0 = base.replace(/\/$/, "");
  const imageFields = Object.keys(body).filter((k) => shown[k] !== body[k]);
  if (lang === "curl") {
    const note = imageFields.length ? `# ${imageFields.join(", ")}: a URL, a data: URI or base64 (here the file names stand in)\n` : "";
    return `${note}curl -X POST "${base0}/queue/${queue}" \\\n  -H "x-api-key: $${KEY_NOTE}" \\\n  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(shown, null, 2).replace(/'/g, "'\\''")}'`;
  }
  if (lang === "python") {
    const op = queue.startsWith("character/") ? `fa.subscribe(${JSON.stringify(queue)}, request)` : `fa.subscribe(${JSON.stringify(queue)}, request, on_queue_update=lambda s: print(s.status, s.progress))`;
    return `import os\n\nfrom faceanchor.client import Client\n\n# image fields take local paths, URLs or base64\nrequest = ${pyValue(shown, 0)}\nwith Client(${JSON.stringify(base0)}, key=os.environ[${JSON.stringify(KEY_NOTE)}]) as fa:\n    out = ${op}\n    for i, image in enumerate(out.images):\n        open(f"out_{i}.png", "wb").write(fa.file(image))`;
  }
  return `// ${imageFields.length ? imageFields.join(", ") + ": a URL, a data: URI or base64; " : ""}the key comes from your own config, never from code\nconst resp = await fetch(${JSON.stringify(base0 + "/queue/" + queue)}, {\n  method: "POST",\n  headers: { "x-api-key": process.env.${KEY_NOTE}, "Content-Type": "application/json" },\n  body: JSON.stringify(${JSON.stringify(shown, null, 2)}),\n});\nconst { request_id, status_url, response_url } = await resp.json();`;
}
