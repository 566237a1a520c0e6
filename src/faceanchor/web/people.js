// Two characters in one picture (POST queue/character/generate with "people"): the Generate tab's
// two-character mode. Person 1 goes on the left (layout "left-right", which needs width and
// height) or onto the pose photo's left face (pose_image); each person may have its own strengths.
// The result carries one identity score per person (identity_scores; identity_score is the lowest).
const $ = (id) => document.getElementById(id);
const PERSONS = [1, 2];

export function peopleOn() { return $("people-mode").checked; }

// Fill both person selects with the key's characters, keeping what was chosen where it still exists.
export function fillPeople(characters) {
  for (const n of PERSONS) {
    const sel = $(`person-${n}`);
    const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    for (const c of characters) { const o = document.createElement("option"); o.textContent = c.name; o.value = c.id; sel.append(o); }
    sel.value = characters.some((c) => c.id === keep) ? keep : "";
  }
}

// The character/generate body of `body` (the form's fields) with two people; throws a readable
// Error when a person or the size is missing.
export function peopleBody(body) {
  const out = { ...body };
  for (const k of ["face_index", "face_box", "more_identities", "character_id", "face_image", "face_images"]) delete out[k];
  const people = PERSONS.map((n) => {
    const id = $(`person-${n}`).value;
    if (!id) throw new Error(`Choose person ${n}'s character (Characters tab: create one first).`);
    const p = { character_id: id };
    for (const [field, input] of [["identity_strength", `person-${n}-identity`], ["adapter_strength", `person-${n}-adapter`]]) {
      const v = $(input).value.trim();
      if (v !== "") p[field] = Number(v);
    }
    return p;
  });
  out.people = people;
  if ($("people-layout").value === "left-right") {
    if (out.width === undefined || out.height === undefined) throw new Error("Side by side needs the output size: set width and height.");
    out.layout = "left-right";
    delete out.pose_image;
  } else if (!out.pose_image) {
    throw new Error("On the pose photo's faces: choose a pose image (Control) with two faces.");
  }
  return out;
}

// "person 1 0.412 · person 2 n/a" for a result with several people, else null.
export function peopleScores(image) {
  if (!Array.isArray(image.identity_scores)) return null;
  return image.identity_scores.map((s, i) => `person ${i + 1} ${s == null ? "n/a" : s.toFixed(3)}`).join(" · ");
}
