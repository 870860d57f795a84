// make_gpt4style_fixtures.mjs writes tokenizer/testdata/expected_gpt4style.json:
// the ids @huggingface/tokenizers 0.2.0 gives for the constructed GPT-4-style
// (DBRX layout) tokenizer in tokenizer/testdata/gpt4style (see
// make_gpt4style.py), on tokenizer/testdata/texts.json and on seeded random
// texts that stress the cl100k pre-tokenizer and DBRX's special tokens.
//
//	npm install --prefix .cache/node @huggingface/tokenizers@0.2.0
//	node tools/reference/tokenizer/make_gpt4style_fixtures.mjs
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const pkgName = "@huggingface/tokenizers";
const pkgDir = path.join(root, ".cache/node/node_modules", pkgName);
const pkg = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8"));
if (pkg.version !== "0.2.0") {
  throw new Error(`${pkgName} ${pkg.version} found in ${pkgDir}; the fixtures are made with 0.2.0`);
}
const { Tokenizer } = await import(path.join(pkgDir, "dist/tokenizers.mjs"));

function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const fragments = [
  " ", "  ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "a", "the", " the", "Hello", "WORLD", "é", "中文",
  "1", "23", "4567", "12345", "'s", "'RE", "'ll", "!", "?!", "...", ",", "\"", "😀", "<|im_start|>", "<|im_end|>",
  "<|endoftext|>", "<|pad|>", "<|", "|>", "user", "assistant", "\u0301", "don't",
];
const rand = mulberry32(20261130);
const texts = JSON.parse(readFileSync(path.join(root, "tokenizer/testdata/texts.json"), "utf8"));
for (let i = 0; i < 300; i++) {
  const n = 1 + Math.floor(rand() * 12);
  let s = "";
  for (let j = 0; j < n; j++) s += fragments[Math.floor(rand() * fragments.length)];
  texts.push(s);
}

const dir = path.join(root, "tokenizer/testdata/gpt4style");
const tok = new Tokenizer(
  JSON.parse(readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
  JSON.parse(readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
);
const decode = (ids, skip) =>
  ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
const cases = texts.map((text) => {
  const special = tok.encode(text, { add_special_tokens: true }).ids;
  return {
    text,
    ids: tok.encode(text, { add_special_tokens: false }).ids,
    ids_special: special,
    decoded: decode(special, false),
    decoded_skip: decode(special, true),
  };
});
const body = cases.map((c) => "  " + JSON.stringify(c)).join(",\n");
const file = path.join(root, "tokenizer/testdata/expected_gpt4style.json");
writeFileSync(file, `{"reference": ${JSON.stringify(`${pkgName}@${pkg.version}`)}, "asset": "gpt4style", "cases": [\n${body}\n]}\n`);
console.log(`wrote ${file}: ${cases.length} cases`);
