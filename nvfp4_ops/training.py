"""Linear layers for low-precision training: the NVFP4 and MXFP8 recipes (issue 14).

``y = x @ W^T (+ b)`` with its three GEMMs on quantized operands (docs/spec.md section 8):

=========  ==============================  =================================================
GEMM       NVFP4 recipe                    MXFP8 recipe
=========  ==============================  =================================================
forward    x rowwise (1-D blocks along K)  x rowwise along K
           W 2-D 16x16 blocks              W rowwise along K
dgrad      dy rowwise along N, stochastic  dy rowwise along N
dx=dy W    W columnwise along N, 2-D       W columnwise along N
           (the forward's values)
wgrad      dy^T columnwise along M,        dy columnwise along M
dW=dy^T x  stochastic + random Hadamard    x columnwise along M
           x^T columnwise along M + RHT
=========  ==============================  =================================================

Every part of the NVFP4 recipe is a field of :class:`NVFP4Recipe`, so one can be switched off
at a time (a GEMM whose ``quantize_*`` field is False runs on the unquantized operands).

The GEMMs are emulated: each operand is quantized and dequantized (into ``x``'s dtype, or
fp32 with ``gemm="reference"``) and multiplied with ``torch.matmul``. That is the numerics of
a block-scaled GEMM up to the accumulation order, and the path every GPU below sm_100 takes.
Blackwell's native block-scaled GEMM (``scaled_mm``) is not wired here yet.

Columnwise operands need the token count ``M`` to be a multiple of the block (16 / 32): the
tokens are padded with zero rows for the wgrad GEMM (zeros add nothing to ``dy^T x``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ops

__all__ = ["NVFP4Recipe", "MXFP8Recipe", "RecipeState", "recipe_linear", "TrainingLinear"]


GEMMS = ("dequant", "reference")


def _check_gemm(recipe) -> None:
    if recipe.gemm not in GEMMS:
        raise ValueError(f"{type(recipe).__name__}.gemm must be 'dequant' or 'reference', got "
                         f"{recipe.gemm!r}")


@dataclass(frozen=True)
class NVFP4Recipe:
    """The NVFP4 training recipe; each field switches one part of it.

    Attributes
    ----------
    quantize_forward, quantize_dgrad, quantize_wgrad : bool
        Quantize the operands of that GEMM at all.
    weight_2d : bool
        W in 16x16 blocks (forward and dgrad then see the same weight values).
    stochastic_rounding : bool
        dy rounded stochastically (dgrad and wgrad operands).
    hadamard : bool
        The 16x16 random Hadamard transform on both wgrad operands (along the tokens).
    gemm : {"dequant", "reference"}
        Dequantize into ``x``'s dtype and multiply there, or in fp32.
    """

    quantize_forward: bool = True
    quantize_dgrad: bool = True
    quantize_wgrad: bool = True
    weight_2d: bool = True
    stochastic_rounding: bool = True
    hadamard: bool = True
    gemm: str = "dequant"

    def __post_init__(self):
        _check_gemm(self)


@dataclass(frozen=True)
class MXFP8Recipe:
    """The MXFP8 training recipe: E4M3 elements, E8M0 scales per 32, rowwise forward and
    columnwise backward operands. Fields as in :class:`NVFP4Recipe`; ``rounding`` is the E8M0
    scale rounding of :func:`nvfp4_ops.mx_quantize`."""

    quantize_forward: bool = True
    quantize_dgrad: bool = True
    quantize_wgrad: bool = True
    rounding: str = "rceil"
    gemm: str = "dequant"

    def __post_init__(self):
        _check_gemm(self)
        if self.rounding not in ("rceil", "floor"):
            raise ValueError(f"MXFP8Recipe.rounding must be 'rceil' or 'floor', got "
                             f"{self.rounding!r}")


Recipe = Union[NVFP4Recipe, MXFP8Recipe]


class RecipeState:
    """The device state of a recipe: the stochastic-rounding seed and offset (int64 ``[1]``)
    and the Hadamard sign vector.

    Each backward rounds ``dy`` stochastically at the current offset, for dgrad (rowwise)
    and wgrad (columnwise) alike, so each element of ``dy`` draws one number, as
    :func:`nvfp4_ops.train_quantize_rowcol` does; then it advances the offset by
    ``sr_offset_increment(M_pad * N)`` (``M_pad``: the tokens padded to 16) in place
    (CUDA-graph safe: a replay draws new numbers), whichever GEMMs are quantized: switching
    one GEMM off does not change the numbers the other draws.
    """

    def __init__(self, seed: int = 0, device: Union[str, torch.device] = "cpu"):
        self.seed = torch.tensor([seed], dtype=torch.int64, device=device)
        self.offset = torch.zeros(1, dtype=torch.int64, device=device)
        self.signs = ops.random_hadamard_signs(self.seed)

    def to(self, device) -> "RecipeState":
        """Move the tensors to ``device`` (in place); returns self."""
        self.seed, self.offset, self.signs = (t.to(device) for t in
                                              (self.seed, self.offset, self.signs))
        return self


def _pad_rows(t: Tensor, multiple: int) -> Tensor:
    """``t [M, C]`` with zero rows appended up to a multiple of ``multiple``."""
    pad = -t.shape[0] % multiple
    return F.pad(t, (0, 0, 0, pad)) if pad else t


def _nvfp4(t: Tensor, dtype: torch.dtype, state: RecipeState, axis: int = -1,
           block_2d: bool = False, sr_offset: Optional[Tensor] = None,
           hadamard: bool = False) -> Tensor:
    """The NVFP4 operand of ``t`` (``t^T`` for ``axis=-2``), dequantized into ``dtype``;
    stochastic rounding at ``sr_offset`` where given."""
    kw = {}
    if sr_offset is not None:
        kw = dict(rounding="stochastic", seed=state.seed, offset=sr_offset)
    packed, scales, gs = ops.train_quantize(
        t, axis=axis, block_2d=block_2d, hadamard_signs=state.signs if hadamard else None, **kw)
    return ops.dequantize(packed, scales, gs, dtype)


def _mxfp8(t: Tensor, dtype: torch.dtype, recipe: MXFP8Recipe, axis: int = -1) -> Tensor:
    """The MXFP8 operand of ``t`` (``t^T`` for ``axis=-2``), dequantized into ``dtype``."""
    data, scales = ops.mx_quantize(t, "e4m3", rounding=recipe.rounding, axis=axis)
    return ops.mx_dequantize(data, scales, "e4m3", dtype)


def _operands(recipe: Recipe, state: RecipeState, gemm: str, a: Tensor, b: Tensor,
              dtype: torch.dtype, sr_offset: Optional[Tensor]):
    """The two operands of one GEMM, ``a @ b^T``, as the recipe prepares them.

    ``gemm`` is "forward" (a = x [M, K], b = W [N, K]), "dgrad" (a = dy [M, N], b = W^T
    from W [N, K], blocks along N) or "wgrad" (a = dy^T, b = x^T from dy [M, N], x [M, K],
    blocks along the tokens M). ``sr_offset``: the offset of the stochastic rounding of
    ``dy`` (backward GEMMs).
    """
    if not getattr(recipe, f"quantize_{gemm}"):
        if gemm == "forward":
            return a.to(dtype), b.to(dtype)
        if gemm == "dgrad":
            return a.to(dtype), b.t().to(dtype)
        return a.t().to(dtype), b.t().to(dtype)
    if isinstance(recipe, MXFP8Recipe):
        if gemm == "forward":
            return _mxfp8(a, dtype, recipe), _mxfp8(b, dtype, recipe)
        if gemm == "dgrad":
            return _mxfp8(a, dtype, recipe), _mxfp8(b, dtype, recipe, axis=-2)
        a, b = _pad_rows(a, 32), _pad_rows(b, 32)
        return _mxfp8(a, dtype, recipe, axis=-2), _mxfp8(b, dtype, recipe, axis=-2)
    w2d, rht = recipe.weight_2d, recipe.hadamard
    sr = sr_offset if recipe.stochastic_rounding else None
    if gemm == "forward":
        return _nvfp4(a, dtype, state), _nvfp4(b, dtype, state, block_2d=w2d)
    if gemm == "dgrad":
        return (_nvfp4(a, dtype, state, sr_offset=sr),
                _nvfp4(b, dtype, state, axis=-2, block_2d=w2d))
    a, b = _pad_rows(a, 16), _pad_rows(b, 16)
    return (_nvfp4(a, dtype, state, axis=-2, sr_offset=sr, hadamard=rht),
            _nvfp4(b, dtype, state, axis=-2, hadamard=rht))


def _gemm(recipe: Recipe, state: RecipeState, gemm: str, a: Tensor, b: Tensor,
          out_dtype: torch.dtype, sr_offset: Optional[Tensor] = None) -> Tensor:
    """``a' @ b'^T`` of the recipe's operands, in ``out_dtype``."""
    dtype = torch.float32 if recipe.gemm == "reference" else out_dtype
    qa, qb = _operands(recipe, state, gemm, a, b, dtype, sr_offset)
    return (qa @ qb.t()).to(out_dtype)


class _RecipeLinear(torch.autograd.Function):
    """``x [M, K] @ W^T`` with the recipe's three GEMMs (bias handled outside)."""

    @staticmethod
    def forward(ctx, x, weight, recipe, state):
        ctx.save_for_backward(x, weight)
        ctx.recipe, ctx.state = recipe, state
        return _gemm(recipe, state, "forward", x, weight, x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        recipe, state = ctx.recipe, ctx.state
        dy = dy.contiguous()
        base = state.offset.clone()
        state.offset.add_(ops.sr_offset_increment(_pad_rows(dy, 16).numel()))
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _gemm(recipe, state, "dgrad", dy, weight, x.dtype, base)
        if ctx.needs_input_grad[1]:
            dw = _gemm(recipe, state, "wgrad", dy, x, weight.dtype, base)
        return dx, dw, None, None


def recipe_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor], recipe: Recipe,
                  state: RecipeState) -> Tensor:
    """``F.linear(x, weight, bias)`` with the recipe's quantized GEMMs.

    Parameters
    ----------
    x : Tensor
        ``[..., K]``; the leading dims are the tokens ``M``.
    weight : Tensor
        ``[N, K]``; ``K`` and ``N`` multiples of 16 (NVFP4) or 32 (MXFP8).
    bias : Tensor, optional
        ``[N]``, added in ``x``'s dtype (its gradient is the exact sum of ``dy``).
    recipe : NVFP4Recipe or MXFP8Recipe
    state : RecipeState
        Seed, offset (advanced in place by each stochastic rounding) and Hadamard signs.
    """
    y = _RecipeLinear.apply(x.reshape(-1, x.shape[-1]), weight, recipe, state)
    y = y.reshape(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias


class TrainingLinear(nn.Linear):
    """``nn.Linear`` whose forward and backward GEMMs follow a training recipe.

    The parameters stay in high precision (the optimizer updates them); only the GEMM
    operands are quantized, afresh on every call.

    Parameters
    ----------
    in_features, out_features : int
        Multiples of 16 (NVFP4) or 32 (MXFP8).
    bias : bool
    recipe : NVFP4Recipe or MXFP8Recipe
    seed : int
        The stochastic-rounding and Hadamard seed of this layer.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 recipe: Recipe = NVFP4Recipe(), seed: int = 0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.recipe = recipe
        self.state = RecipeState(seed, self.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        if self.state.seed.device != x.device:
            self.state.to(x.device)
        return recipe_linear(x, self.weight, self.bias, self.recipe, self.state)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, recipe={self.recipe}"
