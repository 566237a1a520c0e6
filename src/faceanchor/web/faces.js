// The face photo with the detected faces drawn (POST v1/faces): boxes, the 5 keypoints, the index
// of each face (largest first, the order face_index counts in); a click on a face, or its button,
// chooses it.
import { call, errorLine, errorOf } from "./api.js";

export async function detectFaces(dataUri, method) {
  const resp = await call("POST", "v1/faces", { body: { image: dataUri, method } });
  if (!resp.ok) throw new Error(errorLine(await errorOf(resp)));
  return resp.json();
}

export function drawFaces(canvas, img, found, chosen) {
  const scale = Math.min(1, 480 / Math.max(img.naturalWidth, img.naturalHeight));
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  const sx = canvas.width / found.width;
  const sy = canvas.height / found.height;
  for (const f of found.faces) {
    const [x1, y1, x2, y2] = f.bbox;
    const on = f.index === chosen;
    ctx.lineWidth = on ? 4 : 2;
    ctx.strokeStyle = on ? "#ffd400" : "#00c0ff";
    ctx.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
    ctx.fillStyle = "#ff2d55";
    for (const [x, y] of f.kps) { ctx.beginPath(); ctx.arc(x * sx, y * sy, 3, 0, 2 * Math.PI); ctx.fill(); }
    ctx.fillStyle = on ? "#ffd400" : "#00c0ff";
    ctx.font = "bold 16px system-ui, sans-serif";
    ctx.fillText(String(f.index + 1), x1 * sx + 4, y1 * sy + 18);
  }
  return { sx, sy };
}

// The face under a click at canvas pixel (x, y), or null.
export function faceAt(found, x, y, sx, sy) {
  const hits = found.faces.filter((f) => x >= f.bbox[0] * sx && x <= f.bbox[2] * sx && y >= f.bbox[1] * sy && y <= f.bbox[3] * sy);
  return hits.length ? hits[hits.length - 1] : null;
}

export function qualityLine(f) {
  const q = f.quality || {};
  const parts = [`face ${f.index + 1}: ${Math.round(q.size_px || 0)} px`, `score ${f.det_score.toFixed(2)}`];
  if (q.yaw_deg != null) parts.push(`yaw ${q.yaw_deg.toFixed(0)}°`);
  if (q.blur != null) parts.push(`sharpness ${q.blur.toFixed(0)}`);
  const warn = (q.warnings || []).join("; ");
  return parts.join(", ") + (warn ? ` — warning: ${warn}` : "");
}
