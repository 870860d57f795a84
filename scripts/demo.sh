#!/usr/bin/env bash
# hone's main job end to end on embedded defaults (SQLite, artifacts under
# HONE_HOME): build hone, make a small Llama-architecture model with the real
# Llama 3 tokenizer and chat template, start the service, fine-tune the model
# on the demo chat data in examples/chat (a bike shop's customer questions),
# register it as main.demo.bot and ask the base model and the registered
# version the same question from the data: before and after.
# HONE_DEMO_DIR (default .cache/demo) and HONE_DEMO_PORT (default 18080) say
# where it works and which port the service listens on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh build
source scripts/go-env.sh
scripts/test-assets.sh tokenizers

demo=${HONE_DEMO_DIR:-$root/.cache/demo}
rm -rf "$demo"
mkdir -p "$demo"
export HONE_HOME=$demo/home
port=${HONE_DEMO_PORT:-18080}
export HONE_SERVER=http://127.0.0.1:$port

echo "== building hone"
go build -o "$demo/hone" ./cmd/hone
hone=$demo/hone

echo "== a random Llama 3-architecture model with the real Llama 3.1 tokenizer"
# Under HONE_HOME/data, one of the server's data roots.
model=$HONE_HOME/data/tiny-llama
mkdir -p "$model"
cp .cache/assets/tokenizer-llama3_1/package/models/tokenizer.json \
   .cache/assets/tokenizer-llama3_1/package/models/tokenizer_config.json "$model/"
"$hone" dev init --config examples/tiny-llama/config.json --out "$model" --seed 1

echo "== checking the data"
"$hone" data validate --model "$model" --task chat --data examples/chat/train.jsonl --context-length 128

echo "== starting the service on $HONE_SERVER"
"$hone" serve --addr "127.0.0.1:$port" >"$demo/serve.log" 2>&1 &
serve=$!
trap 'kill $serve 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "$HONE_SERVER/api/health" >/dev/null 2>&1 && break
  sleep 0.2
done

question="What are your opening hours?"
echo "== before: the base model is asked \"$question\""
"$hone" generate --model "$model" --prompt "$question" --temperature 0 --max-new-tokens 24

"$hone" catalog create main
"$hone" catalog create main.demo

echo "== fine-tuning (progress below; loss falls as it trains)"
"$hone" create --model "$model" \
  --train-data-path examples/chat/train.jsonl --eval-data-path examples/chat/eval.jsonl \
  --register-to main.demo.bot --task-type CHAT_COMPLETION --training-duration 30ep --precision bf16 \
  --learning-rate 4e-3 --context-length 128 --batch-rows 1 --seed 1 \
  --eval-prompt "$question" --wait | tee "$demo/run.txt"
run=$(tail -1 "$demo/run.txt")

echo "== the run"
"$hone" runs get "$run"
echo "== the registered model"
"$hone" catalog show main.demo.bot
answer=$(grep -m1 -F "\"$question\"" examples/chat/train.jsonl | sed 's/.*"role":"assistant","content":"\([^"]*\)".*/\1/')
echo "== after: main.demo.bot/1 is asked \"$question\" (the shop's answer in the data: \"$answer\")"
after=$("$hone" generate --model main.demo.bot/1 --prompt "$question" --temperature 0 --max-new-tokens 24)
echo "$after"
if [[ $after == "$answer"* ]]; then
  echo "== the fine-tuned version answers as trained"
else
  echo "== the fine-tuned version's answer differs from the data's"
fi
