// Pose-code strips: one row per slot (grouped by body part), one cell per latent frame,
// coloured by category. Hover shows the words; dragging along a row selects slot + range.

const LABEL_W = 215;
const ROW_H = 11;
const GAP = 1;
const HEADER_H = 17;

// Colours per slot kind: ordinal kinds get a ramp, nominal kinds a small palette.
const PALETTES = {
  relpos_x: ["#4fb3ff", "#596273", "#f2a33a"],
  relpos_y: ["#7c6cff", "#596273", "#5fd39a"],
  relpos_z: ["#ff6f91", "#596273", "#ffd166"],
  vertical: ["#5fd39a", "#2fa7a0", "#a46cff"],
  ground: ["#c98b4a", "#323843"],
};

function ramp(t, kind) {
  // angle: bent (warm) -> straight (cool); distance: touching (bright) -> far (dark).
  if (kind === "angle") return `hsl(${Math.round(20 + 190 * t)}, 75%, ${Math.round(58 - 10 * t)}%)`;
  return `hsl(${Math.round(48 - 18 * t)}, ${Math.round(85 - 35 * t)}%, ${Math.round(66 - 40 * t)}%)`;
}

export function categoryColor(slot, k) {
  const pal = PALETTES[slot.kind];
  if (pal) return pal[Math.min(k, pal.length - 1)];
  return ramp(slot.size > 1 ? k / (slot.size - 1) : 0, slot.kind);
}

export function shortName(slot) {
  const [kind, rest] = slot.name.split(":");
  const nice = rest.replaceAll("_", " ").replace("-", " · ");
  return `${kind.replace("relpos_", "pos ")} ${nice}`;
}

export class Strips {
  constructor(canvas, tooltip, info) {
    this.canvas = canvas;
    this.tooltip = tooltip;
    this.info = info;
    this.slots = info.slots;
    this.layout = [];        // {type: "header"|"slot", y, h, group|slot}
    let y = 0;
    for (const g of info.groups) {
      this.layout.push({ type: "header", y, h: HEADER_H, group: g });
      y += HEADER_H;
      for (const s of info.display_order) {
        if (this.slots[s].group !== g) continue;
        this.layout.push({ type: "slot", y, h: ROW_H, slot: s });
        y += ROW_H + GAP;
      }
    }
    this.height = y + 4;
    this.n = 0;
    this.cats = null;
    this.orig = null;
    this.playToken = -1;
    this.selection = null;   // {slot, a, b} token range inclusive
    this.onSelect = () => {};
    this._drag = null;
    canvas.addEventListener("mousedown", (e) => this._down(e));
    window.addEventListener("mousemove", (e) => this._move(e));
    window.addEventListener("mouseup", (e) => this._up(e));
    canvas.addEventListener("mouseleave", () => { this.tooltip.style.display = "none"; });
    new ResizeObserver(() => this.draw()).observe(canvas.parentElement);
  }

  set(cats, orig, n) { this.cats = cats; this.orig = orig; this.n = n; this.draw(); }

  setPlayhead(token) { if (token !== this.playToken) { this.playToken = token; this.draw(); } }

  _cellW() { return (this.canvas.clientWidth - LABEL_W) / Math.max(this.n, 1); }

  /** Row and token under client coordinates, or null. */
  hit(clientX, clientY, clampX = false) {
    const r = this.canvas.getBoundingClientRect();
    const x = clientX - r.left, y = clientY - r.top;
    const row = this.layout.find((l) => l.type === "slot" && y >= l.y && y < l.y + l.h + GAP);
    let tok = Math.floor((x - LABEL_W) / this._cellW());
    if (clampX) tok = Math.max(0, Math.min(this.n - 1, tok));
    if (!row || tok < 0 || tok >= this.n) return null;
    return { slot: row.slot, token: tok };
  }

  /** Scroll the strips so that a slot's row is visible. */
  reveal(slot) {
    const row = this.layout.find((l) => l.type === "slot" && l.slot === slot);
    const wrap = this.canvas.parentElement;
    if (row.y < wrap.scrollTop || row.y + ROW_H > wrap.scrollTop + wrap.clientHeight) {
      wrap.scrollTop = Math.max(0, row.y - wrap.clientHeight / 2);
    }
  }

  /** Client coordinates of the centre of a cell (used by tests and the keyboard). */
  cellCenter(slot, token) {
    const r = this.canvas.getBoundingClientRect();
    const row = this.layout.find((l) => l.type === "slot" && l.slot === slot);
    return { x: r.left + LABEL_W + (token + 0.5) * this._cellW(), y: r.top + row.y + ROW_H / 2 };
  }

  _down(e) {
    const h = this.hit(e.clientX, e.clientY);
    if (!h) return;
    e.preventDefault();
    this._drag = { slot: h.slot, a: h.token };
    this.selection = { slot: h.slot, a: h.token, b: h.token };
    this.draw();
  }

  _move(e) {
    if (this._drag) {
      const h = this.hit(e.clientX, this.cellCenter(this._drag.slot, 0).y, true);
      if (h) {
        this.selection = { slot: this._drag.slot, a: Math.min(this._drag.a, h.token), b: Math.max(this._drag.a, h.token) };
        this.draw();
      }
    }
    const h = this.hit(e.clientX, e.clientY);
    if (!h || !this.cats) { this.tooltip.style.display = "none"; return; }
    const s = this.slots[h.slot];
    const k = this.cats[h.token * 70 + h.slot];
    const k0 = this.orig[h.token * 70 + h.slot];
    const unit = this.info.frames_per_token;
    let text = `${s.phrases[k]}  ·  latent frame ${h.token} (frames ${h.token * unit}–${h.token * unit + unit - 1})`;
    if (k !== k0) text += `  ·  was: ${s.phrases[k0]}`;
    this.tooltip.textContent = text;
    const pane = this.tooltip.parentElement.getBoundingClientRect();
    this.tooltip.style.display = "block";
    const x = Math.min(e.clientX - pane.left + 14, pane.width - this.tooltip.offsetWidth - 6);
    this.tooltip.style.left = `${Math.max(4, x)}px`;
    this.tooltip.style.top = `${e.clientY - pane.top + 16}px`;
  }

  _up() {
    if (!this._drag) return;
    this._drag = null;
    this.onSelect(this.selection);
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.parentElement.clientWidth - 24;
    if (w <= 0) return;
    c.style.height = `${this.height}px`;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(this.height * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(this.height * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, this.height);
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    const cw = (w - LABEL_W) / Math.max(this.n, 1);
    for (const l of this.layout) {
      if (l.type === "header") {
        g.fillStyle = "#aab3c2";
        g.font = "600 11px system-ui, sans-serif";
        g.fillText(l.group.toUpperCase(), 2, l.y + HEADER_H / 2 + 2);
        g.font = "11px system-ui, sans-serif";
        continue;
      }
      const s = this.slots[l.slot];
      const sel = this.selection && this.selection.slot === l.slot;
      g.fillStyle = sel ? "#f2a33a" : "#8b93a1";
      g.font = "10.5px system-ui, sans-serif";
      g.fillText(shortName(s).slice(0, 40), 8, l.y + ROW_H / 2);
      if (!this.cats) continue;
      for (let t = 0; t < this.n; t++) {
        const k = this.cats[t * 70 + l.slot];
        g.fillStyle = categoryColor(s, k);
        g.fillRect(LABEL_W + t * cw, l.y, Math.max(cw - (cw > 4 ? 1 : 0), 1), ROW_H);
        if (k !== this.orig[t * 70 + l.slot]) {   // edited cell: white bar on top
          g.fillStyle = "#ffffff";
          g.fillRect(LABEL_W + t * cw, l.y, Math.max(cw - 1, 1), 2);
        }
      }
    }
    if (this.selection) {
      const l = this.layout.find((x) => x.type === "slot" && x.slot === this.selection.slot);
      g.strokeStyle = "#ffffff";
      g.lineWidth = 1.5;
      g.strokeRect(LABEL_W + this.selection.a * cw - 0.5, l.y - 1.5,
        (this.selection.b - this.selection.a + 1) * cw, ROW_H + 3);
    }
    if (this.playToken >= 0 && this.n) {
      g.fillStyle = "rgba(255,255,255,0.55)";
      g.fillRect(LABEL_W + (this.playToken + 0.5) * cw - 0.75, 0, 1.5, this.height);
    }
  }
}
