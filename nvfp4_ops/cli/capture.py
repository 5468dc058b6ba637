"""Calibration of a transformers model, one block on the device at a time.

:func:`capture_linear_stats` runs calibration texts through a causal-LM decoder (Llama,
Qwen2/3, Mistral, Mixtral, Qwen-MoE, GptOss, ...) or a BERT-style encoder and returns, per
``nn.Linear`` (and per expert of fused 3-D expert parameters), what the quantizer needs:
the NVFP4 Hessian blocks (``nvfp4_ops.hessian_blocks`` of the layer's inputs), the input
amax (for the W4A4 input global scale) and the number of token rows seen.

How it runs (the usual "Catcher" pattern, generalised to every block):

1. The model is loaded on the CPU (transformers builds it on the meta device and fills it
   from the checkpoint). Its blocks (the ``nn.ModuleList`` of ``num_hidden_layers``
   entries) are swapped for light stand-ins, and the rest of the model (embeddings, rotary
   tables, final norm; all small next to the blocks) is moved to ``device``.
2. Each batch is run through the model: the stand-ins record the arguments each block gets
   (attention mask, position embeddings, ... per block, so that models whose blocks get
   different masks, like sliding-window layers, keep them) and hand the hidden states on
   unchanged; the last one stops the forward. Block 0's recorded input is the embedding
   output.
3. For each block in turn: move it to ``device``, run every batch through it with forward
   pre-hooks on its linears accumulating the statistics of their inputs, move it back to
   the CPU and feed its outputs to the next block. Only one block is ever on ``device``.
4. The tail: the input of ``lm_head`` (the final norm's output) for decoders, the pooler
   for BERT encoders.

Only real tokens count: rows of padding positions are dropped wherever a linear's input
has the batch's ``[B, T]`` (or flattened ``[B*T]``) token layout. Texts are right-padded
to the longest of their batch; the decoder's causal mask and the encoder's attention mask
keep padding from changing the real tokens.

Hessian numerics: the rows of a linear's inputs are streamed, in text order and token
order, through chunks of exactly ``chunk_rows`` rows (the default of
:func:`nvfp4_ops.reference.hessian_blocks`), and the chunks' fp32 products are summed in
that order. The result is therefore bit-for-bit ``hessian_blocks(torch.cat(rows))`` on the
same device: the same chunk boundaries, the same bmm shapes, the same order of sums.
Device memory for this: each linear (each expert) buffers at most ``chunk_rows - 1`` rows
of its input (in the input's dtype) until its block ends.

transformers is needed (imported inside the functions; one clear error if it is missing).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..reference import hessian_blocks

__all__ = ["LinearStats", "CaptureResult", "capture_linear_stats", "encode_sentences",
           "expert_key", "load_model", "model_kind", "swap_linear_weights", "NVFP4_GROUP"]

NVFP4_GROUP = 16
_CHUNK_ROWS = inspect.signature(hessian_blocks).parameters["chunk_rows"].default
# per-expert 2-D modules (``...experts.3.w1``): their inputs are routed rows, not [B, T]
_PER_EXPERT_MODULE = re.compile(r"(^|\.)experts\.\d+\.")

Texts = Union[Sequence[str], Sequence[Sequence[int]]]


@dataclass
class LinearStats:
    """Statistics of one linear layer's calibration inputs ``X`` (``[tokens, K]``).

    Attributes
    ----------
    hessian : Tensor or None
        fp32 ``[K/16, 16, 16]``, equal to ``nvfp4_ops.hessian_blocks(X)``; None when not
        asked for, when ``K % 16 != 0`` or when no token reached the layer.
    amax : Tensor
        fp32 scalar, ``max |X|`` (0 when no token reached the layer; NaN if X holds NaN).
    tokens : int
        Rows of ``X`` (real tokens routed to the layer).
    gram : Tensor or None
        fp32 ``[K, K]`` Gram matrix ``X^T X`` (summed per batch) when asked for, else None.
    """

    hessian: Optional[Tensor]
    amax: Tensor
    tokens: int
    gram: Optional[Tensor] = None


class CaptureResult(dict):
    """``{module name: LinearStats}`` with ``notes`` (what was not captured, and why),
    ``texts`` and ``tokens`` (real tokens run through the model)."""

    def __init__(self):
        super().__init__()
        self.notes: List[str] = []
        self.texts = 0
        self.tokens = 0


def expert_key(param_name: str, expert: int) -> str:
    """Key of expert ``expert`` of a fused 3-D expert parameter, e.g.
    ``expert_key("model.layers.0.mlp.experts.gate_up_proj", 3)`` ->
    ``"model.layers.0.mlp.experts.gate_up_proj.3"``."""
    return f"{param_name}.{expert}"


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError("calibration runs the model with transformers, which is not "
                          "installed: pip install 'nvfp4_ops[cli]' (or transformers)") from e
    return transformers


# --------------------------------------------------------------------------------------
# Loading and tokenising
# --------------------------------------------------------------------------------------


def _is_causal(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith("ForCausalLM") for a in archs) and not getattr(
        config, "is_encoder_decoder", False)


def load_model(path: Union[str, Path], dtype: Union[str, torch.dtype] = "auto"):
    """``(model, tokenizer)`` of a transformers folder, on the CPU in eval mode: the
    causal-LM class for a decoder (``architectures`` ending in ``ForCausalLM``), else
    ``AutoModel`` (encoders such as BERT). The tokenizer is None when the folder has
    none (token-id texts need none)."""
    tf = _transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a transformers model folder (expected config.json)")
    config = tf.AutoConfig.from_pretrained(str(path))
    cls = tf.AutoModelForCausalLM if _is_causal(config) else tf.AutoModel
    model = cls.from_pretrained(str(path), dtype=dtype)
    model.eval()
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError):
        tok = None
    return model, tok


#: ``model_type`` of the sentence encoders :func:`encode_sentences` runs (AutoModel of each
#: is a plain encoder)
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra")


def model_kind(folder: Optional[Union[str, Path]]) -> Optional[str]:
    """What the model in ``folder`` is for the CLI's runs: ``"encoder"`` (a BERT-like
    ``model_type`` with a tokenizer: calibration and the end-to-end embedding check),
    ``"causal-lm"`` (``architectures`` ending in ``ForCausalLM``: calibration), or None
    (no readable config.json, or neither)."""
    if folder is None:
        return None
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    if cfg.get("model_type") in ENCODER_TYPES and any(
            (folder / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        return "encoder"
    archs = cfg.get("architectures") or []
    if (isinstance(archs, list) and any(str(a).endswith("ForCausalLM") for a in archs)
            and not cfg.get("is_encoder_decoder", False)):
        return "causal-lm"
    return None


def _module_of_weight(model: nn.Module, weight_name: str) -> Optional[nn.Module]:
    """The module whose ``.weight`` is checkpoint tensor ``weight_name`` (the checkpoint may
    carry, or lack, the model's ``base_model_prefix``, e.g. ``bert.``)."""
    mods = dict(model.named_modules())
    name = weight_name[:-len(".weight")] if weight_name.endswith(".weight") else weight_name
    pre = getattr(model, "base_model_prefix", "") + "."
    for cand in (name, name[len(pre):] if name.startswith(pre) else pre + name):
        if cand in mods:
            return mods[cand]
    return None


@contextlib.contextmanager
def swap_linear_weights(model: nn.Module, replace: Dict[str, Tensor]) -> Iterator[nn.Module]:
    """Within the block, the weight of checkpoint tensor ``name`` is ``replace[name]`` (cast
    to the weight's dtype and device); restored on exit. A name that is not a weight of the
    model, or a shape that differs, is a ValueError."""
    saved = []
    try:
        for name, w in replace.items():
            mod = _module_of_weight(model, name)
            if mod is None or not isinstance(getattr(mod, "weight", None), Tensor):
                raise ValueError(f"{name} is not a weight of {type(model).__name__}")
            if tuple(w.shape) != tuple(mod.weight.shape):
                raise ValueError(f"{name}: shape {tuple(w.shape)}, the model has "
                                 f"{tuple(mod.weight.shape)}")
            saved.append((mod, mod.weight.data))
            mod.weight.data = w.to(dtype=mod.weight.dtype, device=mod.weight.device)
        yield model
    finally:
        for mod, w in saved:
            mod.weight.data = w


def _token_rows(tokenizer, texts: Texts, max_tokens: int, vocab: Optional[int]) -> List[List[int]]:
    """Token ids per text (strings are tokenised with special tokens; id lists are taken
    as they are), truncated to ``max_tokens``; empty rows dropped."""
    if not texts:
        raise ValueError("no calibration texts (expected at least 1, got 0)")
    if all(isinstance(t, str) for t in texts):
        if tokenizer is None:
            raise ValueError("texts need a tokenizer (the model folder has none); pass "
                             "tokenizer= or token-id lists")
        rows = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]
    else:
        rows = [list(r)[:max_tokens] for r in texts]
        bad = [i for r in rows for i in r if not isinstance(i, int) or i < 0
               or (vocab is not None and i >= vocab)]
        if bad:
            raise ValueError(f"token id {bad[0]!r} is outside the vocabulary [0, {vocab})")
    rows = [r for r in rows if len(r)]
    if not rows:
        raise ValueError("every calibration text is empty after tokenisation")
    return rows


def _batches(rows: List[List[int]], batch_size: int, pad_id: int) -> List[Tuple[Tensor, Tensor]]:
    """``(input_ids, attention_mask)`` int64 ``[B, T]`` per batch, right-padded."""
    out = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        T = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.long)
        for b, r in enumerate(chunk):
            ids[b, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[b, :len(r)] = 1
        out.append((ids, mask))
    return out


def _pad_id(tokenizer, config) -> int:
    for v in (getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None),
              getattr(tokenizer, "eos_token_id", None)):
        if isinstance(v, int):
            return v
    return 0


# --------------------------------------------------------------------------------------
# Accumulating the statistics
# --------------------------------------------------------------------------------------


class _Acc:
    """Streaming statistics of one layer's input rows (see the module docstring for why
    the Hessian equals ``hessian_blocks`` of the concatenated rows bit for bit)."""

    def __init__(self, K: int, want_hessian: bool, device: torch.device, want_gram: bool = False):
        self.K = K
        self.want_h = want_hessian and K % NVFP4_GROUP == 0
        self.G = torch.zeros((K, K), dtype=torch.float32, device=device) if want_gram else None
        self.H = (torch.zeros((K // NVFP4_GROUP, NVFP4_GROUP, NVFP4_GROUP), dtype=torch.float32,
                              device=device) if self.want_h else None)
        self.amax = torch.zeros((), dtype=torch.float32, device=device)
        self.tokens = 0
        self._buf: List[Tensor] = []
        self._buf_rows = 0

    def add(self, rows: Tensor) -> None:
        if rows.shape[-1] != self.K:
            raise ValueError(f"a layer's input has {rows.shape[-1]} features, earlier {self.K}")
        n = int(rows.shape[0])
        if n == 0:
            return
        self.tokens += n
        self.amax = torch.maximum(self.amax, rows.detach().abs().amax().float())
        if self.G is not None:
            r = rows.detach().float()
            self.G += r.T @ r
        if not self.want_h:
            return
        self._buf.append(rows.detach())
        self._buf_rows += n
        if self._buf_rows >= _CHUNK_ROWS:
            X = torch.cat(self._buf)
            full = (X.shape[0] // _CHUNK_ROWS) * _CHUNK_ROWS
            self.H += hessian_blocks(X[:full], _CHUNK_ROWS)
            self._buf = [X[full:].clone()] if full < X.shape[0] else []
            self._buf_rows = X.shape[0] - full

    def finish(self) -> LinearStats:
        if self._buf_rows:
            self.H += hessian_blocks(torch.cat(self._buf), _CHUNK_ROWS)
        self._buf, self._buf_rows = [], 0
        H = self.H.cpu() if self.H is not None and self.tokens else None
        G = self.G.cpu() if self.G is not None and self.tokens else None
        return LinearStats(H, self.amax.cpu(), self.tokens, G)


class _State:
    """What the hooks of the running block share: the accumulators and the current
    batch's token mask (bool ``[B, T]``)."""

    def __init__(self, want_hessian: bool, device: torch.device, want_gram: bool = False):
        self.want_hessian = want_hessian
        self.want_gram = want_gram
        self.device = device
        self.accs: Dict[str, _Acc] = {}
        self.mask: Optional[Tensor] = None
        self._real: Optional[Tensor] = None  # flat indices of the real tokens of ``mask``
        self.unmasked: set = set()

    def set_mask(self, mask: Optional[Tensor]) -> None:
        """Start a batch: ``mask`` bool ``[B, T]``, True at real tokens (None: no batch)."""
        self.mask = mask
        self._real = None if mask is None else mask.reshape(-1).nonzero().squeeze(1)

    def acc(self, key: str, K: int) -> _Acc:
        if key not in self.accs:
            self.accs[key] = _Acc(K, self.want_hessian, self.device, self.want_gram)
        return self.accs[key]

    def real_rows(self, x: Tensor, key: str, routed: bool = False) -> Tensor:
        """Rows of ``x`` (``[..., K]``) at real tokens; all rows when ``x`` does not have
        the batch's token layout (routed expert inputs, the pooler's [CLS] rows)."""
        K = x.shape[-1]
        m = self.mask
        if not routed and m is not None:
            if tuple(x.shape[:-1]) == tuple(m.shape) or (x.dim() == 2 and x.shape[0] == m.numel()):
                return x.reshape(-1, K).index_select(0, self._real)
        if routed and m is not None and not bool(m.all()):
            self.unmasked.add(key)
        return x.reshape(-1, K)

    def add(self, key: str, x: Tensor, routed: bool = False) -> None:
        self.acc(key, x.shape[-1]).add(self.real_rows(x, key, routed))

    def finish(self, out: CaptureResult) -> None:
        for k, a in self.accs.items():
            out[k] = a.finish()
        self.accs = {}


def _linear_hook(state: _State, name: str):
    routed = bool(_PER_EXPERT_MODULE.search(name))

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs.get("input")
        state.add(name, x, routed)
    return hook


def _is_fused_experts(m: nn.Module) -> bool:
    p = m._parameters
    up = p.get("gate_up_proj", p.get("up_proj"))
    return (not isinstance(m, nn.Linear) and isinstance(up, Tensor) and up.dim() == 3
            and isinstance(p.get("down_proj"), Tensor) and p["down_proj"].dim() == 3)


def _experts_hook(state: _State, name: str, module: nn.Module, notes: List[str]):
    """Per-expert statistics of fused 3-D expert parameters (transformers' experts
    interface: ``forward(hidden_states [N, H], top_k_index [N, k], top_k_weights)``,
    ``is_transposed``, ``has_gate``, ``has_bias``, ``_apply_gate`` / ``act_fn``). The
    first projection's input is the hidden rows routed to the expert; the down
    projection's input is recomputed from them as the experts' forward does."""
    up_name = "gate_up_proj" if "gate_up_proj" in module._parameters else "up_proj"
    can_down = all(hasattr(module, a) for a in ("is_transposed", "has_gate")) and (
        hasattr(module, "_apply_gate") if module.has_gate else hasattr(module, "act_fn"))
    if not can_down:
        notes.append(f"{name}.down_proj: its inputs are not captured (the experts module "
                     f"{type(module).__name__} does not follow transformers' experts interface)")

    def hook(mod, args, kwargs):
        hs = args[0] if args else kwargs.get("hidden_states")
        idx = args[1] if len(args) > 1 else kwargs.get("top_k_index", kwargs.get("router_indices"))
        if idx is None:
            raise RuntimeError(f"{name}: cannot find the routing indices in the experts' call")
        hs = hs.reshape(-1, hs.shape[-1])
        real = (state.mask.reshape(-1) if state.mask is not None
                and state.mask.numel() == hs.shape[0] else None)  # bool [N]
        W_up = mod._parameters[up_name]
        b_up = mod._parameters.get(up_name + "_bias") if getattr(mod, "has_bias", False) else None
        with torch.no_grad():
            for e in range(W_up.shape[0]):
                sel = (idx == e).any(-1)
                if real is not None:
                    sel = sel & real
                x = hs[sel]
                state.acc(expert_key(f"{name}.{up_name}", e), x.shape[-1]).add(x)
                if not can_down:
                    continue
                w = W_up[e] if mod.is_transposed else W_up[e].transpose(0, 1)
                h = x @ w
                if b_up is not None:
                    h = h + b_up[e]
                h = mod._apply_gate(h) if mod.has_gate else mod.act_fn(h)
                state.acc(expert_key(f"{name}.down_proj", e), h.shape[-1]).add(h)
    return hook


def _instrument(root: nn.Module, prefix: str, state: _State, notes: List[str]) -> list:
    """Hooks on every linear and fused-experts module under ``root``; returns the handles."""
    handles = []
    for n, m in root.named_modules():
        full = f"{prefix}.{n}" if n else prefix
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_pre_hook(_linear_hook(state, full), with_kwargs=True))
        elif _is_fused_experts(m):
            handles.append(m.register_forward_pre_hook(_experts_hook(state, full, m, notes),
                                                       with_kwargs=True))
    return handles


# --------------------------------------------------------------------------------------
# The layer-by-layer run
# --------------------------------------------------------------------------------------


class _StopForward(Exception):
    pass


class _StandIn(nn.Module):
    """Takes a block's place while the inputs are recorded: stores the call's arguments
    (minus the hidden states), returns the hidden states unchanged; the last one stops."""

    def __init__(self, index: int, last: bool, record: list):
        super().__init__()
        self.index, self.last, self.record = index, last, record

    def forward(self, *args, **kwargs):
        if args:
            hs, rest, pos = args[0], args[1:], True
        else:
            kwargs = dict(kwargs)
            hs, rest, pos = kwargs.pop("hidden_states"), (), False
        self.record.append((self.index, hs, pos, rest, kwargs))
        if self.last:
            raise _StopForward
        return hs


def _find_blocks(model: nn.Module) -> Tuple[str, nn.ModuleList]:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n = getattr(cfg, "num_hidden_layers", None)
    for name, m in model.named_modules():
        if (isinstance(m, nn.ModuleList) and len(m) and (n is None or len(m) == n)
                and not isinstance(m[0], nn.Linear)):
            return name, m
    raise ValueError(f"{type(model).__name__}: no list of {n} blocks found (num_hidden_layers)")


def _move(module: nn.Module, device: torch.device) -> None:
    """Move ``module`` (a block, or the model without its blocks) to ``device``."""
    module.to(device)


def _call_block(block: nn.Module, hs: Tensor, pos: bool, rest: tuple, kwargs: dict) -> Tensor:
    out = block(hs, *rest, **kwargs) if pos else block(hidden_states=hs, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def _record_inputs(model, blocks: nn.ModuleList, batches, device, causal: bool, notes: List[str]):
    """``(masks, hidden, args)``, per batch: the bool ``[B, T]`` token mask, block 0's
    input hidden states, and ``(positional?, other args, kwargs)`` per block."""
    originals = list(blocks)
    L = len(originals)
    masks, hidden, args, fallback = [], [], [], False
    try:
        for i in range(L):
            blocks[i] = _StandIn(i, i == L - 1, [])
        _move(model, device)
        for ids, mask in batches:
            for b in blocks:
                b.record.clear()
            call = dict(input_ids=ids.to(device), attention_mask=mask.to(device))
            if causal:
                call["use_cache"] = False
            try:
                model(**call)
            except _StopForward:
                pass
            recs = [b.record[0] if b.record else None for b in blocks]
            if any(r is None for r in recs):
                raise RuntimeError(f"{type(model).__name__}: the forward did not reach every "
                                   "block; cannot calibrate it layer by layer")
            hs0 = recs[0][1]
            if any(r[1] is not hs0 for r in recs[1:]):
                # the model transforms the hidden states between blocks (or expects another
                # return type): fall back to block 0's arguments for every block
                fallback = True
                recs = [recs[0]] * L
            masks.append(mask.to(device).bool())
            hidden.append(hs0)
            args.append([r[2:] for r in recs])
    finally:
        for i, b in enumerate(originals):
            blocks[i] = b
    if fallback:
        notes.append("every block got the arguments (masks, positions) recorded at block 0: the "
                     "model changes the hidden states between blocks")
    return masks, hidden, args


def _tail(model, base, h: Tensor, state: _State, causal: bool, notes: List[str]) -> None:
    """Statistics of the layers after the blocks: ``lm_head`` (input = final norm of the
    last hidden states) for decoders, the pooler for encoders."""
    if causal:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        norm = next((getattr(base, a) for a in ("norm", "final_layernorm", "ln_f")
                     if isinstance(getattr(base, a, None), nn.Module)), None)
        if isinstance(head, nn.Linear) and norm is not None:
            name = next(n for n, m in model.named_modules() if m is head)
            state.add(name, norm(h))
        elif isinstance(head, nn.Linear):
            notes.append("lm_head: not captured (no final norm found)")
    elif isinstance(getattr(base, "pooler", None), nn.Module):
        pname = next(n for n, m in model.named_modules() if m is base.pooler)
        hs = _instrument(base.pooler, pname, state, notes)
        try:
            base.pooler(h)
        finally:
            for x in hs:
                x.remove()


@torch.no_grad()
def capture_linear_stats(model_or_path, texts: Texts, *, device: Union[str, torch.device],
                         max_tokens_per_text: int = 512, batch_size: int = 8,
                         layers: Optional[Iterable[int]] = None, want_hessian: bool = True,
                         want_gram: bool = False,
                         progress: Optional[Callable[[int, int], None]] = None,
                         tokenizer=None, dtype: Union[str, torch.dtype] = "auto") -> CaptureResult:
    """Run ``texts`` through a transformers model block by block and return the input
    statistics of every linear layer.

    Parameters
    ----------
    model_or_path : str, Path or transformers ``PreTrainedModel``
        A model folder (loaded on the CPU with :func:`load_model`), or a loaded model (its
        blocks are moved to ``device`` one at a time and back to where they were).
    texts : list of str, or list of token-id lists
        Calibration texts (see :mod:`nvfp4_ops.cli.calib_texts`).
    device : str or torch.device
        Where each block runs; one block (plus embeddings, rotary tables and final norm)
        is there at a time.
    max_tokens_per_text : int
        Texts are truncated to this many tokens.
    batch_size : int
        Texts per forward (right-padded to the longest of the batch).
    layers : iterable of int, optional
        Only the linears of these block indices (blocks after the last one are not run, the
        tail is skipped); default every block and the tail.
    want_hessian : bool
        Accumulate the Hessian blocks (else only ``amax`` and ``tokens``).
    want_gram : bool
        Also accumulate each layer's full ``[K, K]`` Gram matrix (``K*K*4`` bytes per layer,
        kept on the CPU: for small models).
    progress : callable, optional
        ``progress(blocks_done, blocks_total)`` after each block.
    tokenizer : optional
        Tokenizer when ``model_or_path`` is a model (default: loaded from its
        ``name_or_path``).
    dtype : str or torch.dtype
        Dtype to load a folder with (default: the checkpoint's).

    Returns
    -------
    CaptureResult
        ``{module name: LinearStats}``, names as in the loaded model (e.g.
        ``"model.layers.0.self_attn.q_proj"``; ``expert_key(param, e)`` for expert ``e`` of
        a fused 3-D expert parameter; ``"lm_head"``; ``"pooler.dense"``), and ``notes``
        naming what was not captured.
    """
    if int(batch_size) < 1 or int(max_tokens_per_text) < 1:
        raise ValueError(f"batch_size and max_tokens_per_text must be >= 1, got {batch_size} "
                         f"and {max_tokens_per_text}")
    device = torch.device(device)
    if isinstance(model_or_path, nn.Module):
        model = model_or_path
        if tokenizer is None and texts and isinstance(texts[0], str):
            tokenizer = _transformers().AutoTokenizer.from_pretrained(model.name_or_path)
    else:
        model, tok = load_model(model_or_path, dtype)
        tokenizer = tokenizer or tok
    model.eval()
    causal = _is_causal(model.config) or isinstance(getattr(model, "lm_head", None), nn.Linear)
    base = getattr(model, "base_model", model)
    home = next(model.parameters()).device
    _, blocks = _find_blocks(model)
    block_names = {id(m): n for n, m in model.named_modules()}
    L = len(blocks)
    wanted = sorted(set(range(L)) if layers is None else {int(i) for i in layers})
    if not wanted or wanted[0] < 0 or wanted[-1] >= L:
        raise ValueError(f"layers must be block indices in [0, {L}), got {wanted}")
    last = wanted[-1]

    rows = _token_rows(tokenizer, texts, int(max_tokens_per_text),
                       getattr(model.config.get_text_config(), "vocab_size", None))
    result = CaptureResult()
    result.texts = len(rows)
    result.tokens = sum(len(r) for r in rows)
    batches = _batches(rows, int(batch_size), _pad_id(tokenizer, model.config))
    state = _State(want_hessian, device, want_gram)
    try:
        masks, hs, args = _record_inputs(model, blocks, batches, device, causal, result.notes)
        for i in range(last + 1):
            block = blocks[i]
            _move(block, device)
            handles = (_instrument(block, block_names[id(block)], state, result.notes)
                       if i in wanted else [])
            try:
                for b, mask in enumerate(masks):
                    state.set_mask(mask)
                    hs[b] = _call_block(block, hs[b], *args[b][i])
            finally:
                for h in handles:
                    h.remove()
                _move(block, home)
            state.finish(result)
            if progress is not None:
                progress(i + 1, last + 1)
        if layers is None:
            for b, mask in enumerate(masks):
                state.set_mask(mask)
                _tail(model, base, hs[b], state, causal, result.notes)
            state.finish(result)
    finally:
        state.set_mask(None)
        _move(model, home)
    for k in sorted(state.unmasked):
        result.notes.append(f"{k}: routed inputs include padding tokens (use batch_size=1 "
                            "to exclude them)")
    return result


# --------------------------------------------------------------------------------------
# Sentence embeddings (encoders)
# --------------------------------------------------------------------------------------


def _pooling_mode(folder: Optional[Path]) -> str:
    if folder is not None:
        for cfg in sorted(folder.glob("*Pooling*/config.json")):
            try:
                d = json.loads(cfg.read_text())
            except (OSError, ValueError):
                continue
            if d.get("pooling_mode_cls_token"):
                return "cls"
    return "mean"


def _max_seq_length(folder: Optional[Path], tokenizer, config) -> int:
    if folder is not None and (folder / "sentence_bert_config.json").is_file():
        try:
            return int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return int(min(getattr(tokenizer, "model_max_length", 512) or 512,
                   getattr(config, "max_position_embeddings", 512) or 512))


@torch.no_grad()
def encode_sentences(model_path, texts: Sequence[str], device: Union[str, torch.device] = "cpu",
                     batch_size: int = 64, tokenizer=None) -> Tensor:
    """Sentence embeddings ``[len(texts), H]`` fp32 of an encoder, as sentence-transformers
    computes them: last hidden states, mean over the real tokens (or the [CLS] token when
    the folder's pooling config says so), L2-normalised. Texts are truncated to the
    folder's ``max_seq_length`` (sentence_bert_config.json), else the model's limit.

    ``model_path``: a folder, or a loaded ``AutoModel`` (then ``tokenizer`` is loaded from
    its ``name_or_path`` unless given)."""
    if isinstance(model_path, nn.Module):
        model, folder = model_path, Path(model_path.name_or_path)
        tok = tokenizer or _transformers().AutoTokenizer.from_pretrained(str(folder))
    else:
        tf = _transformers()
        folder = Path(model_path)
        model = tf.AutoModel.from_pretrained(str(folder))
        tok = tokenizer or tf.AutoTokenizer.from_pretrained(str(folder))
    folder = folder if folder.is_dir() else None
    home = next(model.parameters()).device
    model.eval().to(device)
    mode, max_len = _pooling_mode(folder), _max_seq_length(folder, tok, model.config)
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True,
                      max_length=max_len, return_tensors="pt").to(device)
            h = model(**enc).last_hidden_state.float()
            if mode == "cls":
                pooled = h[:, 0]
            else:
                m = enc["attention_mask"].to(h.dtype).unsqueeze(-1)
                pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(F.normalize(pooled, p=2, dim=1).cpu())
    finally:
        model.to(home)
    H = model.config.hidden_size
    return torch.cat(out) if out else torch.empty(0, H)
