"""Validation loss of every committed Shakespeare text model, in nats per character.

    python bench/text_quality.py [--data-dir ../shared/data] [--pretrained models/pretrained]
                                 [--threads 1]

Loads each `shakespeare-*` artifact exactly as the service does (`load_artifact`), then
scores every character of the validation split (the last 10 % of tinyshakespeare):
- GPT: non-overlapping windows of its block size (`full_validation_loss`), full precision;
- LSTM / GRU: the whole split as one stream, state carried across, as a generation slot reads
  it; the 256-character-window figure (the GPT's measure) is printed beside it;
- n-gram: its own vectorised scorer, every character seeing its order - 1 predecessors.
The card's figure is printed beside each so a drifted artifact shows.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a plain script from anywhere

from models.artifacts import load_artifact  # noqa: E402
from models.data.builtin import load_shakespeare  # noqa: E402
from models.text.rnn import stream_validation_loss  # noqa: E402
from models.training.lm import full_validation_loss  # noqa: E402

EXPECTED = [
    "shakespeare-gpt",
    "shakespeare-bpe-gpt",
    "shakespeare-lstm",
    "shakespeare-ngram",
]


def validation_loss(lm, kind: str, val_text: str, device: torch.device) -> tuple[float, str]:
    """(nats/char over every validation character, how it was measured). Each model scores
    its own tokens; the total divided by the characters puts char and BPE models on one scale."""
    ids = torch.tensor(lm.tokenizer.encode(val_text), dtype=torch.long)
    per_char = len(ids) / len(val_text)  # tokens per character: 1 for char models
    if kind == "text-ngram":
        return lm.validation_loss(val_text) * per_char, f"order {lm.model.config.order}"
    if kind == "text-gpt":
        block = lm.model.config.block_size
        loss = full_validation_loss(lm.model, ids, block, device)
        return loss * per_char, f"windows of {block} tokens; {loss:.4f} nats/token"
    windows = full_validation_loss(lm.model, ids, 256, device) * per_char
    stream = stream_validation_loss(lm.model, ids, device, lm.start_id) * per_char
    return stream, f"one stream; windows of 256: {windows:.4f}"


def main() -> None:
    default_data = os.environ.get("GENSERVE_DATA_DIR", REPO_ROOT.parent / "shared" / "data")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--pretrained", type=Path, default=REPO_ROOT / "models" / "pretrained")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # 1 on a CPU busy with other jobs: no OpenMP spinning
    device = torch.device(args.device)

    _, val_text = load_shakespeare(args.data_dir)
    print(f"tinyshakespeare validation: {len(val_text):,} characters (last 10 %)\n")
    found = {
        p.name: p for p in args.pretrained.glob("shakespeare-*") if (p / "config.json").is_file()
    }
    for name in sorted(set(EXPECTED) | set(found)):
        if name not in found:
            print(f"{name:20s} skipped: not built yet in {args.pretrained}")
            continue
        t0 = time.perf_counter()
        config = json.loads((found[name] / "config.json").read_text())
        lm = load_artifact(found[name], device=args.device)
        loss, how = validation_loss(lm, config["kind"], val_text, device)
        metrics = config.get("metrics", {})
        card = metrics.get("val_nats_per_char", metrics.get("val_loss"))
        print(
            f"{name:20s} {config['kind']:11s} {loss:.4f} nats/char (card {card}; {how}; "
            f"{time.perf_counter() - t0:.1f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
