// The run's decoder.onnx in the page: onnxruntime-web, WebAssembly backend, one thread.
import * as ort from "./vendor/ort.wasm.min.mjs";

export const NUM_SLOTS = 70;

export class Decoder {
  /** Load the ONNX decoder; `info` is /api/info (num_quantizers, model flags). */
  static async load(url, info) {
    ort.env.wasm.numThreads = 1;          // no SharedArrayBuffer / cross-origin isolation needed
    ort.env.wasm.proxy = false;
    ort.env.wasm.wasmPaths = "/static/vendor/";
    ort.env.logLevel = "error";
    const session = await ort.InferenceSession.create(url, {
      executionProviders: ["wasm"], graphOptimizationLevel: "all",
    });
    return new Decoder(session, info);
  }

  constructor(session, info) {
    this.session = session;
    this.q = info.num_quantizers;
    this.unit = info.frames_per_token;
    this.usesPosecodes = info.uses_posecodes;
    this.usesRvq = info.uses_rvq;
    this.inputs = session.inputNames;
  }

  /**
   * Decode one motion. categories: N*70 ints, indices: N*Q ints (row-major); residual stages
   * >= `stages` are set to -1 (skipped). Returns {joints: Float32Array(T*22*3),
   * features: Float32Array(T*263), frames: T, ms}.
   */
  async decode(categories, indices, n, stages = this.q) {
    const feeds = {};
    if (this.inputs.includes("categories")) {
      const c = new BigInt64Array(n * NUM_SLOTS);
      for (let i = 0; i < c.length; i++) c[i] = BigInt(categories[i]);
      feeds.categories = new ort.Tensor("int64", c, [1, n, NUM_SLOTS]);
    }
    if (this.inputs.includes("indices")) {
      const q = this.q;
      const x = new BigInt64Array(n * q);
      for (let t = 0; t < n; t++) {
        for (let s = 0; s < q; s++) x[t * q + s] = BigInt(s < stages ? indices[t * q + s] : -1);
      }
      feeds.indices = new ort.Tensor("int64", x, [1, n, q]);
    }
    const t0 = performance.now();
    const out = await this.session.run(feeds);
    const ms = performance.now() - t0;
    const joints = out.joints.data;
    const features = out.features.data;
    return { joints, features, frames: out.joints.dims[1], ms };
  }
}

/** The run's edit.onnx (consistent pose-code edits), when the server exported one. */
export class EditGraph {
  static async load(url) {
    return new EditGraph(await ort.InferenceSession.create(url, { executionProviders: ["wasm"] }));
  }

  constructor(session) { this.session = session; }

  /**
   * Request `category` for `slot` on latent frames a..b; returns {categories, indices} (flat,
   * row-major) with the coupled slots completed and the residual switched off (-1) where edited.
   */
  async apply(categories, indices, n, q, slot, category, a, b) {
    const c = new BigInt64Array(n * NUM_SLOTS);
    for (let i = 0; i < c.length; i++) c[i] = BigInt(categories[i]);
    const x = new BigInt64Array(n * q);
    for (let i = 0; i < x.length; i++) x[i] = BigInt(indices[i]);
    const req = new BigInt64Array(NUM_SLOTS).fill(-1n);
    req[slot] = BigInt(category);
    const w = new Float32Array(n);
    for (let t = a; t <= b; t++) w[t] = 1;
    const out = await this.session.run({
      categories: new ort.Tensor("int64", c, [1, n, NUM_SLOTS]),
      indices: new ort.Tensor("int64", x, [1, n, q]),
      request: new ort.Tensor("int64", req, [NUM_SLOTS]),
      weight: new ort.Tensor("float32", w, [1, n]),
    });
    return {
      categories: Int32Array.from(out.categories_out.data, Number),
      indices: Int32Array.from(out.indices_out.data, Number),
      met: Array.from(out.met.data),
    };
  }
}
