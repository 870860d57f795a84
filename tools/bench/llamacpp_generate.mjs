// The llama.cpp peer of `hone bench generate --peer llamacpp`: loads a GGUF
// file in the prebuilt llama.cpp of node-llama-cpp (build step off, CPU
// only), evaluates a token prompt, then decodes greedily, one stream, and
// times the new tokens after the first (the warm-up, as hone's bench does).
// Usage: node llamacpp_generate.mjs MODULE_DIR REQUEST.json
// REQUEST: {"model": PATH, "prompt": [ID], "new_tokens": N, "threads": T}
// Prints one JSON line: {"engine", "threads", "new_tokens", "tokens_per_s",
// "decode_seconds", "prefill_seconds", "token_ids"}.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, reqPath] = process.argv.slice(2);
const req = JSON.parse(readFileSync(reqPath, "utf8"));
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(join(modules, "node-llama-cpp", "dist", "index.js")).href);
const llama = await getLlama({
  gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, progressLogs: false,
  maxThreads: req.threads, logLevel: LlamaLogLevel.error,
});
const model = await llama.loadModel({ modelPath: req.model });
const context = await model.createContext({
  contextSize: req.prompt.length + req.new_tokens + 8, threads: req.threads, batchSize: Math.max(req.prompt.length, 1),
});
const seq = context.getSequence();
let start = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(req.prompt.slice(0, -1));
const prefill = (performance.now() - start) / 1000;
const ids = [];
let timed = 0;
// One warm-up token plus new_tokens timed ones; no end token stops it.
for await (const id of seq.evaluate(req.prompt.slice(-1), { temperature: 0, yieldEogToken: true })) {
  ids.push(id);
  if (ids.length === 1) start = performance.now();
  if (ids.length > req.new_tokens) {
    timed = (performance.now() - start) / 1000;
    break;
  }
}
console.log(JSON.stringify({
  engine: "llama.cpp (node-llama-cpp 3.21.1)", threads: req.threads, new_tokens: req.new_tokens,
  tokens_per_s: req.new_tokens / timed, decode_seconds: timed, prefill_seconds: prefill, token_ids: ids,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
