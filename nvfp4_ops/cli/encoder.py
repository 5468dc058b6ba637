"""Sentence encoders run through transformers, for calibration and the end-to-end check.

A folder holding a transformers encoder (``config.json`` of a BERT-like ``model_type`` and
a tokenizer) is loaded with ``AutoModel`` + ``AutoTokenizer`` and given
sentence-transformers' head: mean pooling over the real (non-padding) tokens, then L2
normalisation (what all-MiniLM-L6-v2, the embedded default, uses). :class:`Encoder`
captures the input of every linear layer (calibration) and swaps weights for their
quantized-dequantized version (the end-to-end check).

transformers is imported only here, and only when a model runs: it is an optional
dependency of the CLI (never of the core ops); its absence is one clear line.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import CliError

#: ``model_type`` of the encoders run here (the AutoModel of each is a plain encoder)
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra")
#: how to get transformers, in the one line said when it is missing
INSTALL_HINT = "pip install transformers (or the project's cli extra: pip install 'nvfp4_ops[cli]')"


def import_transformers():
    """The ``transformers`` module, or a :class:`CliError` (exit 2) saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise CliError(f"running the model (calibration on text, the end-to-end check) needs "
                       f"transformers, which is not installed: {INSTALL_HINT}") from None
    return transformers


def is_encoder_folder(folder: Optional[Path]) -> bool:
    """True when ``folder`` holds an encoder :class:`Encoder` can run (config + tokenizer)."""
    if folder is None:
        return False
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(cfg, dict) and cfg.get("model_type") in ENCODER_TYPES
            and any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt")))


class Encoder:
    """A transformers encoder + mean pooling + L2 normalisation (fp32, CPU).

    Parameters
    ----------
    folder : path
        A folder ``AutoModel`` and ``AutoTokenizer`` read (safetensors weights, config,
        tokenizer); ``sentence_bert_config.json``'s ``max_seq_length`` is used when present
        (else 256).
    """

    def __init__(self, folder: Path):
        transformers = import_transformers()
        folder = Path(folder)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # no "weights not initialized" chatter
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
            self.model = transformers.AutoModel.from_pretrained(
                str(folder), dtype=torch.float32).eval()
        finally:
            transformers.logging.set_verbosity(verbosity)
        self.config = self.model.config
        max_len = 256
        try:
            st = json.loads((folder / "sentence_bert_config.json").read_text())
            max_len = int(st.get("max_seq_length", 256))
        except (OSError, ValueError):
            pass
        self.max_seq_length = min(max_len, int(getattr(self.config, "max_position_embeddings",
                                                       512)))
        self.hidden = int(self.config.hidden_size)
        self.linears = self._checkpoint_names(folder)
        self._mask: Optional[Tensor] = None

    def _checkpoint_names(self, folder: Path) -> Dict[str, torch.nn.Linear]:
        """``{checkpoint weight name: nn.Linear}``: the model's module names, with the
        checkpoint's ``bert.``-style prefix when it was saved from a head model."""
        from safetensors import safe_open

        names = set()
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as h:
                names.update(h.keys())
        prefixes = ["", self.model.base_model_prefix + "."]
        out = {}
        for mod_name, mod in self.model.named_modules():
            if isinstance(mod, torch.nn.Linear):
                for p in prefixes:
                    if f"{p}{mod_name}.weight" in names:
                        out[f"{p}{mod_name}.weight"] = mod
                        break
        return out

    def _batches(self, sentences: Optional[Sequence[str]],
                 token_ids: Optional[Sequence[Sequence[int]]],
                 batch_size: int) -> Iterator[Dict[str, Tensor]]:
        """Model inputs, ``batch_size`` texts (or token-id lists) at a time."""
        if sentences is not None:
            for i in range(0, len(sentences), batch_size):
                yield self.tokenizer(list(sentences[i:i + batch_size]), padding=True,
                                     truncation=True, max_length=self.max_seq_length,
                                     return_tensors="pt")
        if token_ids is not None:
            pad = int(getattr(self.config, "pad_token_id", 0) or 0)
            for i in range(0, len(token_ids), batch_size):
                rows = [list(r)[:self.max_seq_length] for r in token_ids[i:i + batch_size]]
                T = max(len(r) for r in rows)
                ids = torch.full((len(rows), T), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), T), dtype=torch.long)
                for j, r in enumerate(rows):
                    ids[j, :len(r)] = torch.tensor(r, dtype=torch.long)
                    mask[j, :len(r)] = 1
                yield {"input_ids": ids, "attention_mask": mask}

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> Tensor:
        """Unit-norm sentence embeddings ``[len(sentences), H]`` (fp32)."""
        out = []
        for enc in self._batches(sentences, None, batch_size):
            h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(F.normalize(pooled, p=2, dim=1))
        return torch.cat(out) if out else torch.empty(0, self.hidden)

    @contextlib.contextmanager
    def weights(self, replace: Dict[str, Tensor]) -> Iterator["Encoder"]:
        """Within the block, the linear weight ``name`` is ``replace[name]``."""
        saved = {}
        try:
            for name, w in replace.items():
                lin = self.linears.get(name)
                if lin is None:
                    raise KeyError(f"{name} is not a linear weight of this model")
                if tuple(w.shape) != tuple(lin.weight.shape):
                    raise ValueError(f"{name}: shape {tuple(w.shape)}, the model has "
                                     f"{tuple(lin.weight.shape)}")
                saved[name] = lin.weight.data
                lin.weight.data = w.to(lin.weight.dtype)
            yield self
        finally:
            for name, w in saved.items():
                self.linears[name].weight.data = w

    @torch.no_grad()
    def capture_linear_inputs(self, sentences: Optional[Sequence[str]] = None,
                              token_ids: Optional[Sequence[Sequence[int]]] = None,
                              batch_size: int = 64) -> Dict[str, Tensor]:
        """Run the model and return each linear layer's input activations.

        Returns ``{weight name: [T, K] fp32}``, one row per real (non-padding) token (a
        2-D input such as the pooler's: one row per sentence). Layers that read the same
        input (query, key, value) share one tensor.
        """
        got: Dict[str, List[Tensor]] = {}
        last: List[Optional[Tensor]] = [None, None]  # (input seen last, its rows)

        def hook(name: str):
            def pre(module, args):
                x = args[0]
                if x is not last[0]:
                    last[0] = x
                    last[1] = (x[self._mask] if x.dim() == 3 else x).float().clone()
                got.setdefault(name, []).append(last[1])
            return pre

        handles = [lin.register_forward_pre_hook(hook(n)) for n, lin in self.linears.items()]
        try:
            for enc in self._batches(sentences, token_ids, batch_size):
                self._mask = enc["attention_mask"].bool()
                self.model(**enc)
                last[0] = None
        finally:
            for h in handles:
                h.remove()
            self._mask = None
        cache: Dict[tuple, Tensor] = {}
        out = {}
        for name, parts in got.items():
            key = tuple(id(p) for p in parts)  # the parts stay alive in `got`: ids are unique
            if key not in cache:
                cache[key] = torch.cat(parts)
            out[name] = cache[key]
        return out


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
