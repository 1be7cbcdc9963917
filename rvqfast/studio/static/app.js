// rvqfast studio: library, player, pose-code strips, editing, export.
import { Decoder, EditGraph, NUM_SLOTS } from "./decoder.js";
import { Player } from "./player.js";
import { Strips, categoryColor, shortName } from "./strips.js";

const $ = (id) => document.getElementById(id);
const MAX_LISTED = 400;

const S = {
  info: null, decoder: null, editGraph: null, player: null, strips: null,
  library: [], motion: null,
  cats: null, origCats: null, indices: null, origIndices: null, n: 0,
  stages: 0, edits: [], selection: null,
  edited: null, original: null,   // decode results {joints, features, frames, ms}
  decodeSeq: 0,
};

// Test hook: the browser tests read state and results through this object.
const hook = {
  ready: false, error: null, decodeCount: 0, lastDecodeMs: null, lastExport: null, uploads: 0,
  motionId: () => S.motion && S.motion.id,
  editedJoints: () => (S.edited ? Array.from(S.edited.joints) : null),
  originalJoints: () => (S.original ? Array.from(S.original.joints) : null),
  datasetJoints: () => (S.motion ? S.motion.joints : null),
  categories: () => (S.cats ? Array.from(S.cats) : null),
  indices: () => (S.indices ? Array.from(S.indices) : null),
  stages: () => S.stages,
  edits: () => S.edits.map((e) => ({ slot: e.slot, a: e.a, b: e.b, category: e.category, mode: e.mode })),
  hasEditGraph: () => !!S.editGraph,
  cellCenter: (slot, token) => { S.strips.reveal(slot); return S.strips.cellCenter(slot, token); },
  /** Decode arbitrary codes with the page's session: {joints, features, ms}. */
  decode: async (cats, idx, n, stages) => {
    const r = await S.decoder.decode(cats, idx, n, stages ?? S.info.num_quantizers);
    return { joints: Array.from(r.joints), features: Array.from(r.features), frames: r.frames, ms: r.ms };
  },
  /** Decode `n` tokens of random codes `reps` times; returns the per-run milliseconds. */
  benchmark: async (n, reps) => {
    const q = S.info.num_quantizers;
    const cats = new Int32Array(n * NUM_SLOTS), idx = new Int32Array(n * q);
    for (let t = 0; t < n; t++) {
      for (let s = 0; s < NUM_SLOTS; s++) cats[t * NUM_SLOTS + s] = (t * 7 + s * 3) % S.info.slots[s].size;
      for (let s = 0; s < q; s++) idx[t * q + s] = (t * 13 + s * 5) % S.info.codebook_size;
    }
    // Rendering is paused meanwhile: a frame drawn between the awaits would be timed too
    // (expensive with a software WebGL such as headless Chromium's SwiftShader).
    const times = [];
    S.player.pause();
    try {
      for (let r = 0; r < reps; r++) times.push((await S.decoder.decode(cats, idx, n, q)).ms);
    } finally {
      S.player.resume();
    }
    return times;
  },
  selectMotion: (id) => selectMotion(id),
};
window.__studio = hook;

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.style.color = isError ? "var(--error)" : "";
}

async function api(path, opts) {
  const res = await fetch(path, opts);
  const type = res.headers.get("Content-Type") || "";
  const body = type.includes("application/json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(body && body.error ? body.error : `${res.status} ${res.statusText}`);
  return { body, res };
}

// ----------------------------------------------------------------- library

function renderLibrary() {
  const q = $("search").value.trim().toLowerCase();
  const words = q.split(/\s+/).filter(Boolean);
  const list = $("library");
  list.textContent = "";
  let shown = 0, matched = 0;
  for (const m of S.library) {
    const hay = `${m.name} ${m.captions.join(" ")} ${m.source}`.toLowerCase();
    if (!words.every((w) => hay.includes(w))) continue;
    matched++;
    // A full HumanML3D has ~29k motions: list the first matches, the search finds the rest.
    if (shown >= MAX_LISTED && !(S.motion && S.motion.id === m.id)) continue;
    shown++;
    const li = document.createElement("li");
    li.dataset.id = m.id;
    if (S.motion && S.motion.id === m.id) li.classList.add("active");
    const cap = document.createElement("span");
    cap.className = "cap";
    cap.textContent = m.captions[0] || "(no caption)";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${m.id} · ${(m.frames / S.info.fps).toFixed(1)} s`;
    li.append(cap, name);
    li.title = m.captions.join("\n");
    li.addEventListener("click", () => selectMotion(m.id));
    list.append(li);
  }
  $("library-count").textContent = matched > shown
    ? `${matched} of ${S.library.length} motions match; showing ${shown}, refine the search`
    : `${matched} of ${S.library.length} motions`;
}

async function refreshLibrary() {
  const all = (await api("/api/library")).body;
  // Uploads first, newest on top, then the dataset in its order.
  S.library = [...all.filter((m) => m.source === "upload").reverse(), ...all.filter((m) => m.source !== "upload")];
  renderLibrary();
}

async function selectMotion(id) {
  status(`loading ${id}…`);
  const { body } = await api(`/api/motion?id=${encodeURIComponent(id)}`);
  S.motion = body;
  S.n = body.tokens;
  S.cats = Int32Array.from(body.categories);
  S.origCats = Int32Array.from(body.categories);
  S.indices = Int32Array.from(body.indices);
  S.origIndices = Int32Array.from(body.indices);
  S.edits = [];
  S.selection = null;
  S.strips.selection = null;
  S.original = null;
  $("caption").textContent = body.captions[0] || body.name;
  for (const li of $("library").children) li.classList.toggle("active", li.dataset.id === id);
  updateEditPanel();
  await redecode({ both: true, resetCamera: true });
  for (const b of ["export-bvh", "export-npy", "export-codes"]) $(b).disabled = false;
  status(`${body.name} — ${body.frames} frames, ${S.n} latent frames${body.note ? " (" + body.note + ")" : ""}`);
}

// ----------------------------------------------------------------- decoding

async function redecode({ both = false, resetCamera = false } = {}) {
  const seq = ++S.decodeSeq;
  const edited = await S.decoder.decode(S.cats, S.indices, S.n, S.stages);
  let original = S.original;
  if (both || !original) original = await S.decoder.decode(S.origCats, S.origIndices, S.n, S.stages);
  if (seq !== S.decodeSeq) return;   // a newer request has finished or will finish
  S.edited = edited;
  S.original = original;
  hook.decodeCount++;
  hook.lastDecodeMs = edited.ms;
  $("decode-time").textContent = `decoded ${edited.frames} frames in ${edited.ms.toFixed(1)} ms (wasm, 1 thread)`;
  S.player.setMotion(edited, ghostMotion(original), { resetCamera });
  S.strips.set(S.cats, S.origCats, S.n);
  $("scrub").max = String(edited.frames - 1);
  updateCounter(S.player.frame);
}

/** What the player compares the edited motion with: the unedited decode or the source motion. */
function ghostMotion(original) {
  if ($("ghost-source").value !== "dataset") return original;
  if (!S.sourceMotion || S.sourceMotion.id !== S.motion.id) {
    S.sourceMotion = { id: S.motion.id, joints: Float32Array.from(S.motion.joints), frames: S.motion.frames };
  }
  return S.sourceMotion;
}

function updateCounter(frame) {
  const total = S.edited ? S.edited.frames : 0;
  $("frame-counter").textContent = `${frame + 1} / ${total}`;
  $("scrub").value = String(frame);
  S.strips.setPlayhead(Math.floor(frame / S.info.frames_per_token));
}

// ----------------------------------------------------------------- editing

function updateEditPanel() {
  const sel = S.selection;
  const catSel = $("edit-category");
  if (!sel || !S.motion) {
    $("edit-slot").textContent = "—";
    $("edit-range").textContent = "—";
    catSel.textContent = "";
    catSel.disabled = true;
    $("apply-edit").disabled = true;
  } else {
    const slot = S.info.slots[sel.slot];
    const unit = S.info.frames_per_token;
    $("edit-slot").textContent = shortName(slot);
    $("edit-range").textContent = `latent ${sel.a}–${sel.b} (frames ${sel.a * unit}–${(sel.b + 1) * unit - 1})`;
    if (catSel.dataset.slot !== String(sel.slot)) {
      catSel.textContent = "";
      slot.phrases.forEach((p, k) => {
        const o = document.createElement("option");
        o.value = String(k);
        o.textContent = p.includes(": ") ? p.split(": ").slice(1).join(": ") : p;
        catSel.append(o);
      });
      catSel.dataset.slot = String(sel.slot);
      // Colour key of the slot's categories (the strips' colours); a click picks the category.
      const key = $("category-key");
      key.textContent = "";
      slot.phrases.forEach((p, k) => {
        const row = document.createElement("div");
        row.className = "key-row";
        row.dataset.k = String(k);
        const sw = document.createElement("span");
        sw.className = "key-swatch";
        sw.style.background = categoryColor(slot, k);
        row.append(sw, document.createTextNode(p.includes(": ") ? p.split(": ").slice(1).join(": ") : p));
        row.addEventListener("click", () => { catSel.value = String(k); markKey(); });
        key.append(row);
      });
    }
    catSel.value = String(S.cats[sel.a * NUM_SLOTS + sel.slot]);
    markKey();
    catSel.disabled = false;
    $("apply-edit").disabled = !S.info.uses_posecodes;
  }
  $("undo-edit").disabled = S.edits.length === 0;
  $("reset-edits").disabled = S.edits.length === 0;
  const list = $("edit-list");
  list.textContent = "";
  for (const e of S.edits) {
    const li = document.createElement("li");
    li.textContent = `${S.info.slots[e.slot].phrases[e.category]} @ ${e.a}–${e.b}`;
    list.append(li);
  }
}

function markKey() {
  const v = $("edit-category").value;
  for (const row of $("category-key").children) row.classList.toggle("on", row.dataset.k === v);
}

async function applyEdit() {
  const sel = S.selection;
  if (!sel) return;
  const category = Number($("edit-category").value);
  const before = { cats: Int32Array.from(S.cats), indices: Int32Array.from(S.indices) };
  const consistent = S.editGraph && $("consistent").checked;
  if (consistent) {
    // edit.onnx: the coupled slots follow the request, the residual is off on edited frames.
    const r = await S.editGraph.apply(S.cats, S.indices, S.n, S.info.num_quantizers, sel.slot, category, sel.a, sel.b);
    S.cats = r.categories;
    S.indices = r.indices;
    if (r.met.slice(sel.a, sel.b + 1).some((m) => m < 0.5)) {
      status("edit.onnx: no pose seen in training meets this request on some frames; nearest used");
    }
  } else {
    for (let t = sel.a; t <= sel.b; t++) S.cats[t * NUM_SLOTS + sel.slot] = category;
  }
  S.edits.push({ ...sel, category, before, mode: consistent ? "consistent" : "slot" });
  updateEditPanel();
  await redecode();
}

async function undoEdit() {
  const e = S.edits.pop();
  if (!e) return;
  S.cats = e.before.cats;
  S.indices = e.before.indices;
  updateEditPanel();
  await redecode();
}

async function resetEdits() {
  S.cats = Int32Array.from(S.origCats);
  S.indices = Int32Array.from(S.origIndices);
  S.edits = [];
  updateEditPanel();
  await redecode();
}

// ----------------------------------------------------------------- export

function download(name, data, type) {
  const url = URL.createObjectURL(new Blob([data], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function baseName() {
  const tag = S.edits.length ? "_edited" : "";
  return `${S.motion.name.replace(/[^A-Za-z0-9_-]/g, "_")}${tag}`;
}

/** A .npy (format 1.0) holding float32 `data` of `shape`, as numpy writes it. */
export function npyBytes(data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(", ")}${shape.length === 1 ? "," : ""}), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += " ".repeat(pad % 64) + "\n";
  const out = new Uint8Array(10 + header.length + data.length * 4);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  new Uint8Array(out.buffer, 10 + header.length).set(new Uint8Array(Float32Array.from(data).buffer));
  return out;
}

async function exportBvh() {
  const msg = $("export-message");
  msg.className = "small muted";
  try {
    const { body, res } = await api("/api/export/bvh", {
      method: "POST", headers: { "Content-Type": "application/json", "X-Studio": "1" },
      body: JSON.stringify({ joints: Array.from(S.edited.joints), fps: S.info.fps }),
    });
    const dev = Number(res.headers.get("X-Max-Deviation-M"));
    hook.lastExport = { kind: "bvh", text: body, deviation: dev };
    download(`${baseName()}.bvh`, body, "text/plain");
    msg.textContent = `BVH: ${S.edited.frames} frames, centimetres; rigid skeleton within ${(dev * 1000).toFixed(1)} mm of the decoded joints`;
  } catch (e) {
    msg.className = "small error";
    msg.textContent = `BVH export failed: ${e.message}`;
  }
}

function exportNpy() {
  const bytes = npyBytes(S.edited.features, [S.edited.frames, 263]);
  hook.lastExport = { kind: "npy", bytes: Array.from(bytes) };
  download(`${baseName()}.npy`, bytes, "application/octet-stream");
  $("export-message").textContent = `HumanML3D new_joint_vecs layout: (${S.edited.frames}, 263) float32`;
}

function exportCodes() {
  const q = S.info.num_quantizers;
  const rows = (arr, w) => Array.from({ length: S.n }, (_, t) => Array.from(arr.slice(t * w, (t + 1) * w)));
  const obj = {
    format: "rvqfast.studio-codes/1", run: S.info.run, model: S.info.model, motion: S.motion.id,
    caption: S.motion.captions[0] || "", frames_per_token: S.info.frames_per_token, tokens: S.n,
    residual_stages: S.stages, slots: S.info.slots.map((s) => s.name),
    categories: rows(S.cats, NUM_SLOTS),
    indices: rows(S.indices.map((v, i) => ((i % q) < S.stages ? v : -1)), q),
    edits: hook.edits(),
  };
  const text = JSON.stringify(obj);
  hook.lastExport = { kind: "codes", text };
  download(`${baseName()}_codes.json`, text, "application/json");
  $("export-message").textContent = `codes: ${S.n} × 70 categories, ${S.n} × ${q} indices (-1 = stage off)`;
}

// ----------------------------------------------------------------- upload

async function upload(file) {
  const msg = $("upload-message");
  msg.className = "small";
  if (file.size > S.info.max_upload_bytes) {
    msg.className = "small error";
    msg.textContent = `${file.name}: ${file.size} bytes; the limit is ${S.info.max_upload_bytes} bytes`;
    return;
  }
  msg.textContent = `importing ${file.name}…`;
  try {
    const { body } = await api(`/api/upload?name=${encodeURIComponent(file.name)}`, {
      method: "POST", body: await file.arrayBuffer(), headers: { "Content-Type": "application/octet-stream", "X-Studio": "1" },
    });
    hook.uploads++;
    msg.className = "small ok";
    msg.textContent = `imported ${file.name} (${body.frames} frames)${body.note ? "; " + body.note : ""}`;
    await refreshLibrary();
    await selectMotion(body.id);
  } catch (e) {
    msg.className = "small error";
    msg.textContent = e.message;
  }
}

// ----------------------------------------------------------------- start

async function main() {
  S.info = (await api("/api/info")).body;
  $("run-info").textContent = `run ${S.info.run} · ${S.info.model} · Q=${S.info.num_quantizers}`;
  status("loading decoder.onnx…");
  S.decoder = await Decoder.load(S.info.decoder, S.info);
  if (S.info.edit_graph) {
    S.editGraph = await EditGraph.load(S.info.edit_graph);
    $("consistent-row").hidden = false;
  }
  S.player = new Player($("scene"), S.info.parents);
  S.player.fps = S.info.fps;
  S.player.onFrame = (f) => updateCounter(f);
  S.strips = new Strips($("strips"), $("tooltip"), S.info);
  S.strips.onSelect = (sel) => { S.selection = sel; updateEditPanel(); };

  if (!S.info.uses_posecodes) {
    $("edit-help").textContent = `This run's decoder (model ${S.info.model}) does not read the pose codes: ` +
      "the strips show them, but editing them would change nothing.";
  }
  const stages = $("stages");
  stages.min = S.info.uses_posecodes ? "0" : "1";
  stages.max = String(S.info.num_quantizers);
  stages.value = stages.max;
  stages.disabled = !S.info.uses_rvq;
  S.stages = S.info.num_quantizers;
  $("stages-value").textContent = `${S.stages} / ${S.info.num_quantizers}`;
  stages.addEventListener("input", async () => {
    S.stages = Number(stages.value);
    $("stages-value").textContent = `${S.stages} / ${S.info.num_quantizers}`;
    if (S.motion) await redecode({ both: true });
  });

  $("play").addEventListener("click", () => {
    S.player.playing = !S.player.playing;
    $("play").textContent = S.player.playing ? "❚❚" : "▶";
  });
  window.addEventListener("keydown", (e) => {
    if (e.target !== document.body || !S.edited) return;
    if (e.code === "Space") { e.preventDefault(); $("play").click(); }
    if (e.code === "ArrowLeft" || e.code === "ArrowRight") {   // step one frame (shift: one second)
      e.preventDefault();
      const step = (e.shiftKey ? S.info.fps : 1) * (e.code === "ArrowLeft" ? -1 : 1);
      S.player.seek(S.player.frame + step);
      updateCounter(S.player.frame);
    }
  });
  $("scrub").addEventListener("input", () => { S.player.seek(Number($("scrub").value)); updateCounter(S.player.frame); });
  $("speed").addEventListener("change", () => { S.player.speed = Number($("speed").value); });
  $("ghost-mode").addEventListener("change", () => S.player.setGhostMode($("ghost-mode").value));
  $("ghost-source").addEventListener("change", () => {
    if (S.edited) S.player.setMotion(S.edited, ghostMotion(S.original));
    $("legend-original").textContent = $("ghost-source").value === "dataset" ? "source" : "original";
  });
  $("search").addEventListener("input", renderLibrary);
  $("apply-edit").addEventListener("click", applyEdit);
  $("edit-category").addEventListener("change", markKey);
  $("undo-edit").addEventListener("click", undoEdit);
  $("reset-edits").addEventListener("click", resetEdits);
  $("export-bvh").addEventListener("click", exportBvh);
  $("export-npy").addEventListener("click", exportNpy);
  $("export-codes").addEventListener("click", exportCodes);
  $("upload-input").addEventListener("change", (e) => {
    const f = e.target.files[0];
    e.target.value = "";
    if (f) upload(f);
  });

  await refreshLibrary();
  const first = S.library.find((m) => m.source !== "upload") || S.library[0];
  if (first) await selectMotion(first.id);
  else status("no motions: import a BVH file");
  hook.ready = true;
}

main().catch((e) => {
  hook.error = String(e && e.stack ? e.stack : e);
  status(`error: ${e.message || e}`, true);
  console.error(e);
});
