#!/usr/bin/env bash
# Installs what the PyTorch peers of hone bench need (tools/bench/torch_*.py):
# Debian's python3-torch, and OpenBLAS for its fp32 matrix products, which
# otherwise run on the reference BLAS (libblas3, about 5 GFLOP/s: fp32 peer
# figures would measure that library). Idempotent: packages already present
# are not reinstalled and apt is not updated.
set -euo pipefail
need=(python3-torch libopenblas0-pthread)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# Installing OpenBLAS points libblas.so.3 at it (update-alternatives, auto
# mode); an alternative set by hand to the reference BLAS stays, so set it.
for link in /etc/alternatives/libblas.so.3-*; do
  [[ -e $link ]] || continue
  alt=${link##*/}
  if [[ $(readlink -f "$link") == */blas/libblas.so* ]]; then
    $SUDO update-alternatives --set "$alt" "/usr/lib/${alt#libblas.so.3-}/openblas-pthread/libblas.so.3"
  fi
  echo "libblas.so.3 -> $(readlink -f "$link")"
done
