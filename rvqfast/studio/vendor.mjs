// Copy the built front-end files the studio needs from node_modules into static/vendor/,
// gzip-compressed (the server sends them with Content-Encoding: gzip, or inflates them for a
// client that does not accept gzip). Run with `npm run vendor` after `npm ci`.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const nm = join(here, "node_modules");
const out = join(here, "static", "vendor");

// [source in node_modules, name in vendor/]. ort: the wasm-only ES module and its one wasm
// build (SIMD; runs single-threaded when numThreads = 1, no cross-origin isolation needed).
const FILES = [
  ["three/build/three.module.js", "three.module.js"],
  ["three/build/three.core.js", "three.core.js"],
  ["three/examples/jsm/controls/OrbitControls.js", "OrbitControls.js"],
  ["three/LICENSE", "three.LICENSE.txt"],
  ["onnxruntime-web/dist/ort.wasm.min.mjs", "ort.wasm.min.mjs"],
  ["onnxruntime-web/dist/ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.mjs"],
  ["onnxruntime-web/dist/ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.wasm"],
];

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const versions = {};
for (const pkg of ["three", "onnxruntime-web"]) {
  const meta = JSON.parse(readFileSync(join(nm, pkg, "package.json"), "utf8"));
  versions[pkg] = { version: meta.version, license: meta.license };
}
const files = {};
let total = 0;
for (const [src, name] of FILES) {
  let data = readFileSync(join(nm, src));
  if (name === "OrbitControls.js") {
    // The example imports the bare specifier 'three'; point it at the vendored build so the
    // page needs no import map (an inline script the Content-Security-Policy would refuse).
    data = Buffer.from(data.toString("utf8").replace(/from\s+['"]three['"]/g, "from './three.module.js'"));
  }
  // mtime 0 in the gzip header keeps the output byte-identical between refreshes.
  const gz = gzipSync(data, { level: 9 });
  gz.writeUInt32LE(0, 4);
  writeFileSync(join(out, name + ".gz"), gz);
  files[name] = { bytes: data.length, gzip_bytes: gz.length, sha256: createHash("sha256").update(data).digest("hex") };
  total += gz.length;
}
writeFileSync(join(out, "VERSIONS.json"), JSON.stringify({ versions, files }, null, 2) + "\n");
console.log(`vendored ${readdirSync(out).length - 1} files, ${(total / 1e6).toFixed(2)} MB gzip`, versions);
