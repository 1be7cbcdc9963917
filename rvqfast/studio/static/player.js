// three.js player: skeletons (edited + original), ground grid, root trail, follow camera.
import * as THREE from "./vendor/three.module.js";
import { OrbitControls } from "./vendor/OrbitControls.js";

const J = 22;
const HEAD = 15;
const UP = new THREE.Vector3(0, 1, 0);

class Skeleton {
  constructor(scene, parents, { color, opacity, jointColor, thickness = 1 }) {
    this.parents = parents;
    const transparent = opacity < 1;
    const mat = (c) => new THREE.MeshStandardMaterial({
      color: c, roughness: 0.55, metalness: 0.05, transparent, opacity, depthWrite: !transparent,
    });
    this.bones = new THREE.InstancedMesh(new THREE.CylinderGeometry(0.022 * thickness, 0.022 * thickness, 1, 10), mat(color), J - 1);
    this.joints = new THREE.InstancedMesh(new THREE.SphereGeometry(0.032 * thickness, 14, 10), mat(jointColor), J);
    this.head = new THREE.Mesh(new THREE.SphereGeometry(0.085 * thickness, 20, 14), mat(color));
    for (const m of [this.bones, this.joints, this.head]) { m.frustumCulled = false; scene.add(m); }
    this.group = [this.bones, this.joints, this.head];
    this._m = new THREE.Matrix4();
    this._q = new THREE.Quaternion();
    this._a = new THREE.Vector3();
    this._b = new THREE.Vector3();
    this._d = new THREE.Vector3();
    this._s = new THREE.Vector3();
  }

  set visible(v) { for (const m of this.group) m.visible = v; }

  /** Pose from joints (Float32Array T*22*3) at frame t, shifted by `offset` (Vector3). */
  pose(joints, t, offset) {
    const base = t * J * 3;
    const p = (j, v) => v.set(joints[base + 3 * j] + offset.x, joints[base + 3 * j + 1] + offset.y,
      joints[base + 3 * j + 2] + offset.z);
    for (let j = 0; j < J; j++) {
      p(j, this._a);
      this._m.makeTranslation(this._a.x, this._a.y, this._a.z);
      this.joints.setMatrixAt(j, this._m);
    }
    let k = 0;
    for (let j = 1; j < J; j++) {
      p(j, this._a); p(this.parents[j], this._b);
      this._d.subVectors(this._a, this._b);
      const len = this._d.length();
      this._q.setFromUnitVectors(UP, len > 1e-6 ? this._d.divideScalar(len) : UP);
      this._s.set(1, Math.max(len, 1e-4), 1);
      this._m.compose(this._b.lerp(this._a, 0.5), this._q, this._s);
      this.bones.setMatrixAt(k++, this._m);
    }
    // The head sphere sits a little beyond the head joint along the neck->head direction.
    p(HEAD, this._a); p(12, this._b);
    this._d.subVectors(this._a, this._b).normalize();
    this.head.position.copy(this._a).addScaledVector(this._d, 0.04);
    this.bones.instanceMatrix.needsUpdate = true;
    this.joints.instanceMatrix.needsUpdate = true;
  }
}

export class Player {
  constructor(canvas, parents) {
    this.canvas = canvas;
    const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer = renderer;
    const scene = new THREE.Scene();
    scene.background = new THREE.Color(0x1b1e24);
    scene.fog = new THREE.Fog(0x1b1e24, 9, 22);
    this.scene = scene;
    scene.add(new THREE.HemisphereLight(0xdfe8ff, 0x30281f, 1.6));
    const sun = new THREE.DirectionalLight(0xffffff, 1.6);
    sun.position.set(3, 6, 4);
    scene.add(sun);
    const ground = new THREE.Mesh(new THREE.PlaneGeometry(80, 80),
      new THREE.MeshStandardMaterial({ color: 0x23272e, roughness: 1 }));
    ground.rotation.x = -Math.PI / 2;
    ground.position.y = -0.002;
    scene.add(ground);
    const grid = new THREE.GridHelper(80, 80, 0x4a5262, 0x333a45);
    scene.add(grid);

    this.camera = new THREE.PerspectiveCamera(40, 1, 0.05, 100);
    this.camera.position.set(1.9, 1.55, 2.7);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.target.set(0, 0.9, 0);
    this.controls.enableDamping = true;
    this.controls.maxPolarAngle = Math.PI * 0.495;
    this.controls.update();

    this.edited = new Skeleton(scene, parents, { color: 0xf2a33a, jointColor: 0xfff1d6, opacity: 1 });
    this.original = new Skeleton(scene, parents, { color: 0x8fb8ff, jointColor: 0xc9dcff, opacity: 0.42, thickness: 0.75 });
    // Thinner than the edited skeleton: where the two agree the ghost stays inside it (hidden by
    // the depth test) and shows only where the edit moved the body.
    this.trail = new THREE.Line(new THREE.BufferGeometry(),
      new THREE.LineBasicMaterial({ color: 0xf2a33a, transparent: true, opacity: 0.8 }));
    this.trail.frustumCulled = false;
    scene.add(this.trail);
    this.origTrail = new THREE.Line(new THREE.BufferGeometry(),
      new THREE.LineBasicMaterial({ color: 0x8fb8ff, transparent: true, opacity: 0.45 }));
    this.origTrail.frustumCulled = false;
    scene.add(this.origTrail);
    this.marker = new THREE.Mesh(new THREE.RingGeometry(0.12, 0.16, 32),
      new THREE.MeshBasicMaterial({ color: 0xf2a33a, side: THREE.DoubleSide, transparent: true, opacity: 0.7 }));
    this.marker.rotation.x = -Math.PI / 2;
    scene.add(this.marker);

    this.motion = null;      // {joints, frames}
    this.ghost = null;       // {joints, frames}
    this.ghostMode = "ghost";
    this.frame = 0;
    this.playing = false;
    this.speed = 1;
    this.fps = 20;
    this._acc = 0;
    this._last = performance.now();
    this._follow = new THREE.Vector3(0, 0.9, 0);
    this.onFrame = () => {};
    this._resize();
    new ResizeObserver(() => this._resize()).observe(canvas.parentElement);
    renderer.setAnimationLoop(() => this._tick());
  }

  pause() { this.renderer.setAnimationLoop(null); }

  resume() { this._last = performance.now(); this.renderer.setAnimationLoop(() => this._tick()); }

  _resize() {
    const el = this.canvas.parentElement;
    const w = Math.max(el.clientWidth, 1), h = Math.max(el.clientHeight, 1);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  _ghostOffset() {
    if (this.ghostMode !== "beside") return new THREE.Vector3();
    // Beside: one metre to the side (the viewer's left), whatever way the camera looks.
    const right = new THREE.Vector3().subVectors(this.camera.position, this.controls.target);
    right.set(right.z, 0, -right.x).normalize().multiplyScalar(-1.0);
    return right;
  }

  _trail(line, m, offset) {
    const pts = new Float32Array(m.frames * 3);
    for (let t = 0; t < m.frames; t++) {
      pts[3 * t] = m.joints[t * J * 3] + offset.x;
      pts[3 * t + 1] = 0.004;
      pts[3 * t + 2] = m.joints[t * J * 3 + 2] + offset.z;
    }
    line.geometry.dispose();
    line.geometry = new THREE.BufferGeometry();
    line.geometry.setAttribute("position", new THREE.BufferAttribute(pts, 3));
  }

  /** Show `motion` (solid) and `ghost` (the original, or null); keeps the frame when possible. */
  setMotion(motion, ghost, { resetCamera = false } = {}) {
    this.motion = motion;
    this.ghost = ghost;
    this.frame = Math.min(this.frame, motion.frames - 1);
    if (resetCamera) {
      this.frame = 0;
      const r = new THREE.Vector3(motion.joints[0], 0.9, motion.joints[2]);
      const d = new THREE.Vector3().subVectors(this.camera.position, this.controls.target);
      this.controls.target.copy(r);
      this.camera.position.copy(r).add(d);
      this._follow.copy(r);
    }
    this._refreshTrails();
    this.render();
  }

  _refreshTrails() {
    if (!this.motion) return;
    this._trail(this.trail, this.motion, new THREE.Vector3());
    if (this.ghost && this.ghostMode !== "hidden") this._trail(this.origTrail, this.ghost, this._ghostOffset());
    this.origTrail.visible = !!this.ghost && this.ghostMode !== "hidden";
  }

  setGhostMode(mode) { this.ghostMode = mode; this._refreshTrails(); this.render(); }

  seek(frame) { if (this.motion) { this.frame = Math.max(0, Math.min(frame, this.motion.frames - 1)); this.render(); } }

  _tick() {
    const now = performance.now();
    const dt = Math.min((now - this._last) / 1000, 0.1);
    this._last = now;
    if (this.playing && this.motion) {
      this._acc += dt * this.fps * this.speed;
      const steps = Math.floor(this._acc);
      if (steps > 0) {
        this._acc -= steps;
        this.frame = (this.frame + steps) % this.motion.frames;
        this.onFrame(this.frame);
      }
    }
    this.render();
  }

  render() {
    if (this.motion) {
      const m = this.motion, t = Math.min(this.frame, m.frames - 1);
      const zero = new THREE.Vector3();
      this.edited.pose(m.joints, t, zero);
      const showGhost = this.ghost && this.ghostMode !== "hidden";
      this.original.visible = !!showGhost;
      if (showGhost) this.original.pose(this.ghost.joints, Math.min(t, this.ghost.frames - 1), this._ghostOffset());
      const rx = m.joints[t * J * 3], rz = m.joints[t * J * 3 + 2];
      this.marker.position.set(rx, 0.003, rz);
      // Follow the character: move target and camera together, smoothly.
      const goal = new THREE.Vector3(rx, 0.9, rz);
      if (showGhost && this.ghostMode === "beside") goal.addScaledVector(this._ghostOffset(), 0.5);
      const step = new THREE.Vector3().subVectors(goal, this._follow).multiplyScalar(0.15);
      this._follow.add(step);
      this.controls.target.add(step);
      this.camera.position.add(step);
    }
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
  }
}
