"""Helpers of the CLI tests: tiny checkpoints made in tmp_path, and the CLI run in-process.

Every run pins its device (``--device cpu`` unless the test names one), so that the tests
behave the same on a GPU machine.
"""

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nvfp4_ops.cli.main import main


def randn(*shape, seed=0, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x[..., 3] *= 8  # a few outliers, so that the scale search has something to do
    return x.to(dtype)


LINEARS = {
    "model.layers.0.self_attn.q_proj.weight": (64, 64),
    "model.layers.0.mlp.up_proj.weight": (64, 32),
    "model.layers.0.mlp.down_proj.weight": (32, 64),
}


def make_ckpt(folder: Path, dtype=torch.bfloat16, extra=None) -> dict:
    """A toy decoder checkpoint: 3 linear weights, a linear with K = 72 (not a multiple of
    16 or 32), an embedding, norms, a bias, lm_head and an int tensor."""
    folder.mkdir(parents=True, exist_ok=True)
    t = {name: randn(*shape, seed=i + 1, dtype=dtype)
         for i, (name, shape) in enumerate(LINEARS.items())}
    t.update({
        "model.embed_tokens.weight": randn(96, 64, seed=10, dtype=dtype),
        "model.layers.0.self_attn.q_proj.bias": randn(64, seed=11, dtype=dtype),
        "model.layers.0.input_layernorm.weight": torch.ones(64, dtype=dtype),
        "model.layers.0.odd_proj.weight": randn(32, 72, seed=12, dtype=dtype),
        "model.norm.weight": torch.ones(64, dtype=dtype),
        "lm_head.weight": randn(96, 64, seed=13, dtype=dtype),
        "model.step": torch.tensor([3], dtype=torch.int64),
    })
    t.update(extra or {})
    save_file(t, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "torch_dtype": "bfloat16",
                                                    "hidden_size": 64}))
    (folder / "tokenizer.json").write_text("{}")
    return t


def run(capsys, *argv):
    """``nvfp4-ops ARGV`` in this process (``quantize`` unless ARGV names the command), on
    the CPU unless ARGV names ``--device``; returns ``(exit status, stdout, stderr)``."""
    argv = list(argv) if argv[0] in ("quantize", "dequantize") else ["quantize", *argv]
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def tensors(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def leftovers(parent: Path) -> list:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


WORDS = ("the a dog cat man woman runs eats sleeps in on park house food today night "
         "is was very small big red green").split()


def make_encoder(folder: Path, max_positions: int = 64) -> Path:
    """A tiny random BERT sentence encoder (hidden 32, one layer, K = 32 / 64, a position
    table of ``max_positions``) saved with transformers, with a word-level tokenizer: the
    CLI calibrates it and checks it end to end."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "?", ","]
                               + WORDS) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=8 + len(WORDS), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=max_positions)
    BertModel(cfg).eval().save_pretrained(str(folder))
    return folder


def word_tokenizer(texts):
    """A word-level transformers tokenizer over the words of ``texts`` ([CLS] text [SEP],
    [PAD] = 0, [UNK] = 1): tiny models made here tokenise the built-in texts with it."""
    import tokenizers
    import transformers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    pre = tokenizers.pre_tokenizers.Whitespace()
    words = sorted({w for t in texts for w, _ in pre.pre_tokenize_str(t)})
    vocab = {w: i for i, w in enumerate(special + words)}
    tk = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre
    tk.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]")
