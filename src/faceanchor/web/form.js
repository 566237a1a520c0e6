// The generation controls, built from the API's own schema (GenerateBody in openapi.json): each
// field gets a control by its type, with the schema's minimum, maximum and default. LAYOUT only
// places fields in groups and names them; a field the schema has and LAYOUT does not lands in
// "advanced", so the page always holds every field the API documents.
import { readDataUri } from "./api.js";

const LAYOUT = {
  identity: ["face_index", "combine"],
  prompt: ["prompt", "negative_prompt"],
  size: ["width", "height"],
  sampling: ["num_inference_steps", "guidance_scale", "scheduler", "seed", "samples", "best_of"],
  control: ["identity_strength", "adapter_strength", "enhance_face_region", "pose_image", "controlnet_selection",
    "controlnet_conditioning_scale", "controlnet_scales", "control_guidance_start", "control_guidance_end", "face_detail", "s_scale", "lora_scale"],
};
// Handled by their own widgets (photo picker, style gallery, method select) or not a form field.
const OWN = new Set(["method", "face_image", "face_images", "style", "base64"]);
const LABELS = {
  face_index: "Face index (which face; click one in the photo)", num_inference_steps: "Steps", guidance_scale: "Guidance",
  identity_strength: "Identity strength (IdentityNet)", adapter_strength: "Adapter strength (IP-Adapter)",
  enhance_face_region: "Enhance the face region", controlnet_selection: "Extra ControlNets",
  controlnet_conditioning_scale: "Extra ControlNet strength (each one without its own below)",
  controlnet_scales: "Strength of each extra ControlNet (empty: the one above)",
  pose_image: "Pose image (keypoints and body pose from this photo)", face_detail: "Face detail (re-render small faces)",
  s_scale: "Structure scale (PlusV2)", lora_scale: "LoRA scale", best_of: "Best of (keep the best by identity score)",
  scheduler: "Scheduler (lcm: LCM-LoRA, few steps)",
  loras: "LoRAs (InfiniteYou), e.g. [{\"model\": \"realism\", \"weight\": 1}]",
};
const IMAGE_HINT = "data: URI";

function nonNull(prop) {
  if (prop.anyOf) {
    const options = prop.anyOf.filter((o) => o.type !== "null");
    return { ...options[0], nullable: options.length < prop.anyOf.length };
  }
  return { ...prop, nullable: false };
}

function labelOf(name, prop) {
  return LABELS[name] || prop.title || name.replace(/_/g, " ");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v; else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children);
  return e;
}

// One control (wrapped in its label) for field `name`; the element with data-field is the value holder.
function control(name, prop) {
  const t = nonNull(prop);
  const label = labelOf(name, prop);
  const help = prop.description || "";
  const id = `f-${name}`;
  const wrap = el("div", { class: "field", "data-for": name });
  const isImage = t.type === "string" && (t.description || "").includes(IMAGE_HINT);
  if (isImage) {
    wrap.append(el("label", { for: id, text: label }), el("input", { id, type: "file", accept: "image/jpeg,image/png,image/webp", "data-field": name, "data-kind": "image" }));
  } else if (t.type === "array" && t.items && t.items.enum) {
    const box = el("fieldset", { class: "inner", id, "data-field": name, "data-kind": "multi" }, el("legend", { text: label }));
    for (const v of t.items.enum) box.append(el("label", { class: "inline" }, el("input", { type: "checkbox", value: v }), ` ${v}`));
    wrap.append(box);
  } else if (t.type === "object" && t.propertyNames && t.propertyNames.enum) {  // {name: number}: one number per name
    const box = el("fieldset", { class: "inner", id, "data-field": name, "data-kind": "numbers" }, el("legend", { text: label }));
    const v = t.additionalProperties || {};
    for (const key of t.propertyNames.enum) {
      box.append(el("label", { class: "inline" }, `${key} `, el("input", { type: "number", "data-key": key, min: v.minimum, max: v.maximum, step: 0.05, placeholder: "shared" })));
    }
    wrap.append(box);
  } else if (t.enum) {
    const sel = el("select", { id, "data-field": name, "data-kind": "enum" });
    if (t.nullable || prop.default === undefined) sel.append(el("option", { value: "", text: "(server default)" }));
    for (const v of t.enum) sel.append(el("option", { value: v, text: v, selected: v === prop.default }));
    wrap.append(el("label", { for: id, text: label }), sel);
  } else if (t.type === "boolean") {
    wrap.append(el("label", { class: "inline" }, el("input", { id, type: "checkbox", "data-field": name, "data-kind": "bool", checked: prop.default === true }), ` ${label}`));
  } else if (t.type === "integer" || t.type === "number") {
    const step = t.type === "integer" ? 1 : (t.maximum != null && t.maximum - (t.minimum || 0) <= 3 ? 0.05 : 0.5);
    const bounded = t.minimum != null && t.maximum != null && t.maximum < 1e6;
    const number = el("input", { id, type: "number", "data-field": name, "data-kind": "number", min: t.minimum, max: t.maximum < 1e6 ? t.maximum : undefined,
      step, value: prop.default != null ? prop.default : undefined, placeholder: prop.default == null ? "server default" : undefined });
    const row = el("div", { class: "slider" });
    if (bounded) {
      const range = el("input", { type: "range", min: t.minimum, max: t.maximum, step, value: prop.default != null ? prop.default : t.minimum, "aria-label": `${label} slider`, tabindex: "-1" });
      range.addEventListener("input", () => { number.value = range.value; number.dispatchEvent(new Event("input", { bubbles: true })); });
      number.addEventListener("input", () => { if (number.value !== "") range.value = number.value; });
      row.append(range);
    }
    row.append(number);
    wrap.append(el("label", { for: id, text: label }), row);
  } else if (t.type === "string") {
    const long = name.includes("prompt");
    const input = long ? el("textarea", { id, rows: name === "prompt" ? 3 : 2, maxlength: t.maxLength, "data-field": name, "data-kind": "text" })
      : el("input", { id, type: "text", maxlength: t.maxLength, "data-field": name, "data-kind": t.nullable ? "text-or-null" : "text" });
    if (prop.default) input.value = prop.default;
    wrap.append(el("label", { for: id, text: label }), input);
  } else {  // vectors, keypoints, boxes, sizes: JSON
    wrap.append(el("label", { for: id, text: `${label} (JSON)` }), el("textarea", { id, rows: 2, "data-field": name, "data-kind": "json", placeholder: "empty: not sent" }));
  }
  if (help && !isImage) wrap.append(el("small", { class: "hint", text: help }));
  else if (help) wrap.append(el("small", { class: "hint", text: help.replace(/: URL, data: URI or base64\.?/, ".") }));
  return wrap;
}

export function buildForm(schema, form) {
  const placed = new Set(Object.values(LAYOUT).flat());
  const groups = Object.fromEntries([...form.querySelectorAll("[data-group]")].map((g) => [g.dataset.group, g]));
  for (const [group, names] of Object.entries(LAYOUT)) {
    for (const name of names) if (schema.properties[name]) groups[group].append(control(name, schema.properties[name]));
  }
  for (const [name, prop] of Object.entries(schema.properties)) {
    if (!placed.has(name) && !OWN.has(name)) groups.advanced.append(control(name, prop));
  }
}

// Show only the fields the method takes (GET v1/methods: fields); hidden ones are disabled, so not sent.
export function showFields(form, fields) {
  for (const wrap of form.querySelectorAll(".field[data-for]")) {
    const used = fields.has(wrap.dataset.for);
    wrap.hidden = !used;
    for (const e of wrap.querySelectorAll("input,select,textarea,fieldset")) e.disabled = !used;
  }
}

export function setField(form, name, value) {
  const e = form.querySelector(`[data-field="${name}"]`);
  if (!e) return;
  if (e.dataset.kind === "bool") e.checked = !!value;
  else e.value = value == null ? "" : String(value);
  e.dispatchEvent(new Event("input", { bubbles: true }));
}

// The request body from the enabled controls; `files` collects image fields as {field: File} for the code panel.
export async function formBody(form, files = {}) {
  const body = {};
  for (const e of form.querySelectorAll("[data-field]")) {
    if (e.disabled) continue;
    const name = e.dataset.field;
    const kind = e.dataset.kind;
    if (kind === "image") {
      if (e.files[0]) { body[name] = await readDataUri(e.files[0]); files[name] = e.files[0]; }
    } else if (kind === "multi") {
      const picked = [...e.querySelectorAll("input:checked")].map((c) => c.value);
      if (picked.length) body[name] = picked;
    } else if (kind === "numbers") {
      const picked = [...e.querySelectorAll("input[data-key]")].filter((i) => i.value.trim() !== "");
      if (picked.length) body[name] = Object.fromEntries(picked.map((i) => [i.dataset.key, Number(i.value)]));
    } else if (kind === "bool") {
      body[name] = e.checked;
    } else if (kind === "number") {
      if (e.value.trim() !== "") body[name] = Number(e.value);
    } else if (kind === "enum" || kind === "text-or-null") {
      if (e.value !== "") body[name] = e.value;
    } else if (kind === "json") {
      if (e.value.trim() !== "") {
        try { body[name] = JSON.parse(e.value); } catch (_) { throw new Error(`${name}: not valid JSON`); }
      }
    } else {
      body[name] = e.value;
    }
  }
  return body;
}
