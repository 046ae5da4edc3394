"""A text artifact's tokenizer as a Hugging Face tokenizer directory, and a text-gpt artifact
as a Hugging Face GPT-2 checkpoint (for peers such as vLLM that serve that format).

Evaluation tools that talk to genserve over the OpenAI completions API (lm-evaluation-harness'
`local-completions`, for one) tokenize on the client: they count the context's tokens to know
where the continuation starts, and send token ids. They load a tokenizer with
`transformers.AutoTokenizer.from_pretrained(<dir>)`, so this writes one whose ids are exactly
genserve's:

- `bpe`: the artifact already stores the `tokenizers` library's own JSON; it is written as is.
- `char`: a BPE model whose vocabulary is the characters (same ids) and which has no merges and
  no pre-tokenizer, so every character is one token; `Fuse` decodes by concatenation.

The GPT is nanoGPT's layout, which is GPT-2's but for biases (none here: written as zeros),
the exact GELU (GPT-2's `activation_function: "gelu"`, not its tanh approximation) and
Linear weights stored (out, in) where GPT-2's Conv1D stores (in, out).

Only plain JSON and safetensors are written (no code, no pickles), and nothing is downloaded:
`python -m models.text.hf_export models/pretrained/shakespeare-gpt /tmp/shakespeare-tokenizer`
`python -m models.text.hf_export --gpt2 models/pretrained/shakespeare-gpt /tmp/shakespeare-gpt2`
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


def gpt2_state_dict(model: Any) -> dict[str, Any]:
    """GPT-2's parameter names and layouts for a models.text.gpt.GPT."""
    import torch

    def zeros(n: int) -> torch.Tensor:
        return torch.zeros(n)

    c = model.config.n_embd
    out = {
        "transformer.wte.weight": model.wte.weight,
        "transformer.wpe.weight": model.wpe.weight,
        "transformer.ln_f.weight": model.ln_f.weight,
        "transformer.ln_f.bias": zeros(c),
    }
    for i, block in enumerate(model.blocks):
        h = f"transformer.h.{i}."
        layers = {
            "ln_1": (block.ln_1, False),
            "ln_2": (block.ln_2, False),
            "attn.c_attn": (block.attn.c_attn, True),
            "attn.c_proj": (block.attn.c_proj, True),
            "mlp.c_fc": (block.mlp.c_fc, True),
            "mlp.c_proj": (block.mlp.c_proj, True),
        }
        for name, (layer, conv1d) in layers.items():
            weight = layer.weight.t() if conv1d else layer.weight
            out[f"{h}{name}.weight"] = weight
            bias = layer.bias if layer.bias is not None else zeros(weight.shape[-1])
            out[f"{h}{name}.bias"] = bias
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def export_gpt2(artifact: Path, directory: Path) -> Path:
    """A text-gpt artifact as a GPT2LMHeadModel directory: config.json, model.safetensors (the
    tied lm_head is GPT-2's default) and the tokenizer."""
    from safetensors.torch import save_file

    from models.artifacts import load_artifact

    lm = load_artifact(artifact, task="text-generation")
    meta = json.loads((artifact / CONFIG_FILE).read_text(encoding="utf-8"))
    if meta.get("kind") != "text-gpt":
        raise ValueError(f"{meta.get('name')!r} is a {meta.get('kind')}, not a text-gpt")
    config = lm.model.config
    directory.mkdir(parents=True, exist_ok=True)
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": 4 * config.n_embd,
        "activation_function": "gelu",
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": lm.tokenizer.start_id,
        "eos_token_id": lm.tokenizer.start_id,
        "torch_dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(hf_config, indent=1) + "\n")
    save_file(gpt2_state_dict(lm.model), directory / "model.safetensors", {"format": "pt"})
    save_hf_tokenizer(meta["tokenizer"], directory, config.block_size)
    return directory


def main(argv: list[str]) -> int:
    gpt2 = argv[:1] == ["--gpt2"]
    argv = argv[1:] if gpt2 else argv
    if len(argv) != 2:
        usage = "usage: python -m models.text.hf_export [--gpt2] ARTIFACT_DIR OUT_DIR"
        print(usage, file=sys.stderr)
        return 2
    export = export_gpt2 if gpt2 else export_artifact_tokenizer
    print(export(Path(argv[0]), Path(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
