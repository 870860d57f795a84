// Compares GGUF files in llama.cpp (node-llama-cpp's prebuilt binaries):
// greedy continuations of token prompts with an F32 KV cache, and, for
// each file after the first, the KL divergence of its next-token
// distribution from the first file's at every position of a token text.
// Usage: node llamacpp_quant.mjs MODULE_DIR REQUEST.json
// REQUEST: {"models": [PATH], "prompts": [[ID]], "max_tokens": N, "text": [ID], "lora": PATH (optional,
// a GGUF LoRA adapter applied to every model)}
// Prints {"continuations": [[[ID]]] (per model, per prompt),
//         "kl": [{"mean", "max", "top1_agree", "positions"}] (per model; the first is zero)}
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, reqPath] = process.argv.slice(2);
const req = JSON.parse(readFileSync(reqPath, "utf8"));
const { getLlama } = await import(pathToFileURL(join(modules, "node-llama-cpp", "dist", "index.js")).href);
const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false, logLevel: "error" });
const text = req.text ?? [];
const ctxOpts = { contextSize: Math.max(256, text.length + 8, ...(req.prompts ?? []).map((p) => p.length + req.max_tokens + 8)),
  threads: 1, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32", batchSize: 512 };

async function run(path) {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext(req.lora ? { ...ctxOpts, lora: req.lora } : ctxOpts);
  const continuations = [];
  for (const prompt of req.prompts ?? []) {
    const seq = context.getSequence();
    const got = [];
    for await (const id of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      got.push(id);
      if (got.length >= req.max_tokens) break;
    }
    continuations.push(got);
    seq.dispose();
  }
  let dists = [];
  if (text.length > 0) {
    const seq = context.getSequence();
    const res = await seq.controlledEvaluate(text.map((t) => [t, { generateNext: { probabilities: true } }]));
    dists = res.map((r) => r.next.probabilities);
    seq.dispose();
  }
  await context.dispose();
  await model.dispose();
  return { continuations, dists };
}

const out = { continuations: [], kl: [] };
let ref;
for (const path of req.models) {
  const r = await run(path);
  out.continuations.push(r.continuations);
  if (!ref) { ref = r; out.kl.push({ mean: 0, max: 0, top1_agree: 1, positions: r.dists.length }); continue; }
  let sum = 0, mx = 0, agree = 0;
  for (let i = 0; i < ref.dists.length; i++) {
    const p = ref.dists[i], q = r.dists[i];
    let kl = 0;
    for (const [tok, pp] of p) {
      if (pp <= 0) continue;
      kl += pp * Math.log(pp / Math.max(q.get(tok) ?? 0, 1e-30));
    }
    sum += kl; mx = Math.max(mx, kl);
    if (p.keys().next().value === q.keys().next().value) agree++;
  }
  const n = ref.dists.length;
  out.kl.push({ mean: n ? sum / n : 0, max: mx, top1_agree: n ? agree / n : 1, positions: n });
}
console.log(JSON.stringify(out));
await llama.dispose();
