#!/usr/bin/env bash
# Installs the system packages hone needs to build and test. Idempotent:
# packages already present are not reinstalled and apt is not updated.
set -euo pipefail
# python3: the Python client (python/) is tested with Debian's interpreter.
# chromium: the web UI's browser tests drive it headless (no browser download);
# `install-deps.sh build` leaves it out (the main job needs no browser).
need=(libdnnl-dev gcc pkg-config curl unzip nodejs npm python3)
[[ ${1:-} == build ]] || need+=(chromium)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from outside Debian; only ask apt for it when absent.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done; missing=("${tmp[@]}")
fi
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
