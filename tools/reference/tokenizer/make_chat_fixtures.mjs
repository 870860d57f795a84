// make_chat_fixtures.mjs writes the reference token ids of chat
// conversations rendered with SentencePiece-tokenizer chat templates, for the
// dataset package's chat tests. The rendered texts are those jinja2 produced
// (chattemplate/testdata/renders.json, from tools/reference/chattemplate);
// the ids are @huggingface/tokenizers' encode(text, add_special_tokens=false)
// with the real SentencePiece tokenizer asset (tokenizer-llama2, whose
// tokenizer.json is the Mistral 7B one: Prepend/Replace normalizers,
// byte_fallback, the Replace/ByteFallback/Fuse/Strip decoder).
//
// Setup (nothing is installed globally):
//
//	scripts/test-assets.sh
//	npm install --prefix .cache/node @huggingface/tokenizers@0.2.0
//	node tools/reference/tokenizer/make_chat_fixtures.mjs
//
// Output: dataset/testdata/chat_sentencepiece.json.
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

const asset = "tokenizer-llama2/package/models";
const base = path.join(root, ".cache/assets", asset);
const tok = new Tokenizer(
  JSON.parse(readFileSync(path.join(base, "tokenizer.json"), "utf8")),
  JSON.parse(readFileSync(path.join(base, "tokenizer_config.json"), "utf8")),
);

const renders = JSON.parse(readFileSync(path.join(root, "chattemplate/testdata/renders.json"), "utf8"));
const wanted = ["ollama:library/llama2:7b", "ollama:library/mistral:7b-instruct-fp16"];
const cases = [];
for (const t of renders.templates) {
  if (!wanted.includes(t.names[0])) continue;
  for (const c of t.cases) {
    if (c.output === undefined) continue;
    const conv = renders.conversations[c.conversation];
    const add = (name, n, gen, text) =>
      cases.push({
        template: t.names[0],
        conversation: name,
        messages: n,
        add_generation_prompt: gen,
        text,
        ids: tok.encode(text, { add_special_tokens: false }).ids,
      });
    add(c.conversation, conv.messages.length, conv.add_generation_prompt, c.output);
    // Both templates render each message on its own, so the render of the
    // messages through the last assistant turn (a training example) is the
    // prefix of the full render through that turn's "</s>" (and, for
    // Mistral, the space the template writes after it).
    const last = conv.messages.map((m) => m.role).lastIndexOf("assistant");
    if (last >= 0 && last < conv.messages.length - 1) {
      const eos = t.names[0].includes("mistral") ? "</s> " : "</s>";
      add(c.conversation, last + 1, false, c.output.slice(0, c.output.lastIndexOf(eos) + eos.length));
    }
  }
}
const body = cases.map((c) => "  " + JSON.stringify(c)).join(",\n");
writeFileSync(
  path.join(root, "dataset/testdata/chat_sentencepiece.json"),
  `{"reference": ${JSON.stringify(`${pkgName}@${pkg.version}`)}, "asset": ${JSON.stringify(asset)}, "cases": [\n${body}\n]}\n`,
);
console.log(`wrote ${cases.length} cases`);
