// make_fixtures.mjs writes the reference token ids that the Go tokenizer
// tests compare against, using @huggingface/tokenizers (the JS port of the
// HF tokenizers library; it yields the ids HF tokenizers yields).
//
// Setup (nothing is installed globally):
//
//	scripts/test-assets.sh
//	npm install --prefix .cache/node @huggingface/tokenizers@0.2.0
//	node tools/reference/tokenizer/make_fixtures.mjs
//
// It reads tokenizer/testdata/texts.json (a JSON array of strings) and writes
// tokenizer/testdata/expected_llama3.json and expected_llama2.json, and
// expected_{llama3,llama2}_generated.json for seeded random texts, plus
// expected_llama3_pretok.json (pre-tokenizer words). Each case
// holds the ids without and with special tokens (add_special_tokens), and the
// decoded text of the special ids with and without skip_special_tokens.
// Decoding passes clean_up_tokenization_spaces=false: that clean-up is a
// transformers-level option (Llama 3 sets it to true in tokenizer_config), not
// part of the tokenizers library decode, and it breaks round trips.
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

const texts = JSON.parse(readFileSync(path.join(root, "tokenizer/testdata/texts.json"), "utf8"));

// Generated texts: random concatenations of fragments chosen to stress the
// pre-tokenizer (whitespace runs of every kind before letters, digits and
// punctuation; contractions; added-token look-alikes). The generator is
// seeded, so the output is reproducible.
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const fragments = [
  " ", " ", " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n", "\u3000", "\u00a0",
  "\u0085", "\u2028", "\u000b", "\f", "a", "Ab", "word", "HELLO", "é", "e\u0301", "中文", "كلمة", "हि",
  "ДА", "1", "23", "4567", "١٢", "'", "'s", "'RE", "'ll", "'D", "'ſ", "!", "?!", "...", "-", ",", "\"",
  "😀", "👩‍💻", "👍🏽", "<|eot_id|>", "<|begin_of_text|>", "<|", "|>", "<s>", "</s>", "▁", "_", "\u200d",
  "\ufeff", "x\u0300", "\u0301",
];
const rand = mulberry32(20240601);
const generated = [];
for (let i = 0; i < 300; i++) {
  const n = 1 + Math.floor(rand() * 12);
  let s = "";
  for (let j = 0; j < n; j++) s += fragments[Math.floor(rand() * fragments.length)];
  generated.push(s);
}

// Whitespace torture texts for the Llama 3 Split regex alone: the words the
// pre-tokenizer produces are written to expected_llama3_pretok.json, so the
// Go scanner is checked even where BPE would hide a different split. (U+017F
// is left out: see the note on it in tokenizer_test.go.)
const wsFragments = [" ", "\t", "\n", "\r", "\u3000", "\u00a0", "\u0085", "\u2028", "\u000b", "a", "1", "!", "'", "é", "\u0301", "😀", "'s", "x"];
const wsTexts = [];
for (let i = 0; i < 600; i++) {
  const n = 1 + Math.floor(rand() * 10);
  let s = "";
  for (let j = 0; j < n; j++) s += wsFragments[Math.floor(rand() * wsFragments.length)];
  wsTexts.push(s);
}

const assets = {
  llama3: "tokenizer-llama3_1/package/models",
  llama2: "tokenizer-llama2/package/models",
};

for (const [name, dir] of Object.entries(assets)) {
  const base = path.join(root, ".cache/assets", dir);
  const tj = JSON.parse(readFileSync(path.join(base, "tokenizer.json"), "utf8"));
  const tc = JSON.parse(readFileSync(path.join(base, "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(tj, tc);
  const decode = (ids, skip) =>
    ids.length === 0
      ? ""
      : tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
  const makeCase = (text) => {
    const ids = tok.encode(text, { add_special_tokens: false }).ids;
    const special = tok.encode(text, { add_special_tokens: true }).ids;
    return {
      text,
      ids,
      ids_special: special,
      decoded: decode(special, false),
      decoded_skip: decode(special, true),
    };
  };
  if (name === "llama3") {
    const cases = wsTexts.map((text) => ({ text, words: tok.pre_tokenizer(text) }));
    const body = cases.map((c) => "  " + JSON.stringify(c)).join(",\n");
    const file = path.join(root, "tokenizer/testdata/expected_llama3_pretok.json");
    writeFileSync(file, `{"reference": ${JSON.stringify(`${pkgName}@${pkg.version}`)}, "cases": [\n${body}\n]}\n`);
    console.log(`wrote ${file}: ${cases.length} cases`);
  }
  for (const [suffix, list] of [["", texts], ["_generated", generated]]) {
    const cases = list.map(makeCase);
    // One case per line keeps the committed fixture diffable.
    const body = cases.map((c) => "  " + JSON.stringify(c)).join(",\n");
    const text =
      `{"reference": ${JSON.stringify(`${pkgName}@${pkg.version}`)}, "asset": ${JSON.stringify(dir)}, "cases": [\n` +
      body +
      "\n]}\n";
    const file = path.join(root, `tokenizer/testdata/expected_${name}${suffix}.json`);
    writeFileSync(file, text);
    console.log(`wrote ${file}: ${cases.length} cases`);
  }
}
