// Loads a GGUF file in llama.cpp (the prebuilt binaries of node-llama-cpp,
// which scripts/test-assets.sh fetches with its build step off), tokenizes
// texts and greedily continues token prompts.
// Usage: node llamacpp.mjs MODULE_DIR REQUEST.json
// REQUEST: {"model": PATH, "texts": [STRING], "prompts": [[ID]], "max_tokens": N}
// Prints {"tokens": [[ID]], "continuations": [[ID]]}: tokens as llama.cpp
// tokenizes each text (special-token text parsed, BOS added as the model
// says), continuations the greedy tokens after each prompt (an end token
// included, as it is sampled).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, reqPath] = process.argv.slice(2);
const req = JSON.parse(readFileSync(reqPath, "utf8"));
const { getLlama } = await import(pathToFileURL(join(modules, "node-llama-cpp", "dist", "index.js")).href);
const llama = await getLlama({ gpu: false, build: "never", usePrebuiltBinaries: true, progressLogs: false, logLevel: "error" });
const model = await llama.loadModel({ modelPath: req.model });
const out = { tokens: [], continuations: [] };
for (const text of req.texts ?? []) {
  const ids = model.tokenize(text, true);
  if (model.tokens.shouldPrependBosToken && model.tokens.bos != null) ids.unshift(model.tokens.bos);
  out.tokens.push(Array.from(ids));
}
const context = await model.createContext({ contextSize: 256, threads: 1 });
for (const prompt of req.prompts ?? []) {
  const seq = context.getSequence();
  const got = [];
  for await (const id of seq.evaluate(prompt, { temperature: 0 })) {
    got.push(id);
    if (got.length >= req.max_tokens || model.isEogToken(id)) break;
  }
  out.continuations.push(got);
  seq.dispose();
}
console.log(JSON.stringify(out));
await context.dispose();
await model.dispose();
await llama.dispose();
