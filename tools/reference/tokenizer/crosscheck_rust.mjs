// crosscheck_rust.mjs compares the committed fixtures (made with the JS port
// @huggingface/tokenizers by make_fixtures.mjs) with the HF tokenizers Rust
// library itself, through its official Node bindings (npm "tokenizers",
// which ships the compiled library), and prints every disagreement. Texts
// given as arguments are also encoded and printed by both.
//
//	npm install --prefix .cache/node @huggingface/tokenizers@0.2.0 tokenizers@0.23.2
//	node tools/reference/tokenizer/crosscheck_rust.mjs ["text" ...]
//
// Exit status 1 when the two references disagree on a fixture.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const require = createRequire(path.join(root, ".cache/node/package.json"));
const rust = require("tokenizers");
const js = await import(path.join(root, ".cache/node/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs"));

const assets = {
  llama3: "tokenizer-llama3_1/package/models",
  llama2: "tokenizer-llama2/package/models",
};
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
let disagreements = 0;

for (const [name, dir] of Object.entries(assets)) {
  const base = path.join(root, ".cache/assets", dir);
  const rt = rust.Tokenizer.fromFile(path.join(base, "tokenizer.json"));
  const jt = new js.Tokenizer(
    JSON.parse(readFileSync(path.join(base, "tokenizer.json"), "utf8")),
    JSON.parse(readFileSync(path.join(base, "tokenizer_config.json"), "utf8")),
  );
  const encode = async (text, special) => (await rt.encode(text, null, { addSpecialTokens: special })).getIds();
  for (const suffix of ["", "_generated"]) {
    const file = path.join(root, `tokenizer/testdata/expected_${name}${suffix}.json`);
    const fixture = JSON.parse(readFileSync(file, "utf8"));
    for (const c of fixture.cases) {
      for (const [special, want] of [[false, c.ids], [true, c.ids_special]]) {
        const got = await encode(c.text, special);
        if (!same(got, want)) {
          disagreements++;
          console.log(`${name}: ${JSON.stringify(c.text)} special=${special}\n  rust ${JSON.stringify(got)}\n  js   ${JSON.stringify(want)}`);
        }
      }
      if (c.ids_special.length > 0) {
        for (const [skip, want] of [[false, c.decoded], [true, c.decoded_skip]]) {
          const got = await rt.decode(c.ids_special, skip);
          if (got !== want) {
            disagreements++;
            console.log(`${name}: decode ${JSON.stringify(c.ids_special)} skip=${skip}\n  rust ${JSON.stringify(got)}\n  js   ${JSON.stringify(want)}`);
          }
        }
      }
    }
  }
  for (const text of process.argv.slice(2)) {
    console.log(`${name} ${JSON.stringify(text)}: rust ${JSON.stringify(await encode(text, false))} js ${JSON.stringify(jt.encode(text, { add_special_tokens: false }).ids)}`);
  }
}
console.log(`${disagreements} disagreements`);
process.exitCode = disagreements > 0 ? 1 : 0;
