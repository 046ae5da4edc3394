"""A text artifact's tokenizer as a Hugging Face tokenizer directory.

Evaluation tools that talk to genserve over the OpenAI completions API (lm-evaluation-harness'
`local-completions`, for one) tokenize on the client: they count the context's tokens to know
where the continuation starts, and send token ids. They load a tokenizer with
`transformers.AutoTokenizer.from_pretrained(<dir>)`, so this writes one whose ids are exactly
genserve's:

- `bpe`: the artifact already stores the `tokenizers` library's own JSON; it is written as is.
- `char`: a BPE model whose vocabulary is the characters (same ids) and which has no merges and
  no pre-tokenizer, so every character is one token; `Fuse` decodes by concatenation.

Only plain JSON is written (no code, no pickles), and nothing is downloaded. Usage:
`python -m models.text.hf_export models/pretrained/shakespeare-gpt /tmp/shakespeare-tokenizer`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from models.artifacts import CONFIG_FILE


def tokenizer_json(config: dict[str, Any]) -> str:
    """The `tokenizers` JSON for an artifact's `tokenizer` config (as in its config.json)."""
    kind = config.get("type", "char")
    if kind == "bpe":
        json.loads(config["json"])  # plain JSON: a parse error names the problem here
        return config["json"]
    if kind != "char":
        raise ValueError(f"unknown tokenizer type {kind!r}, expected 'char' or 'bpe'")
    from tokenizers import Tokenizer, decoders, models

    chars = sorted(set(config["chars"]))  # CharTokenizer's ids: the sorted characters
    vocab = {c: i for i, c in enumerate(chars)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.decoder = decoders.Fuse()
    return tokenizer.to_str()


def save_hf_tokenizer(
    config: dict[str, Any], directory: Path, model_max_length: int | None = None
) -> Path:
    """Writes tokenizer.json and tokenizer_config.json to `directory` (created if needed).

    `model_max_length` is the model's context (its block size), so clients that truncate do
    so where the model would."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(tokenizer_json(config), encoding="utf-8")
    settings: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    if model_max_length:
        settings["model_max_length"] = model_max_length
    (directory / "tokenizer_config.json").write_text(json.dumps(settings, indent=1) + "\n")
    return directory


def export_artifact_tokenizer(artifact: Path, directory: Path) -> Path:
    """The tokenizer of the text artifact in `artifact` (its config.json), as a Hugging Face
    tokenizer directory."""
    meta = json.loads((artifact / CONFIG_FILE).read_text(encoding="utf-8"))
    if "tokenizer" not in meta:
        raise ValueError(f"{artifact / CONFIG_FILE} has no tokenizer: not a text model")
    block_size = meta.get("model_args", {}).get("block_size")
    return save_hf_tokenizer(meta["tokenizer"], directory, block_size)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m models.text.hf_export ARTIFACT_DIR OUT_DIR", file=sys.stderr)
        return 2
    print(export_artifact_tokenizer(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
