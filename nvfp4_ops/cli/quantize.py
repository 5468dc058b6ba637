"""``nvfp4-ops quantize``: the streaming loop over the input's tensors, and the
quantization of one weight (in row chunks) into the chosen layout's tensors."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .calib_texts import calibration_and_eval_texts
from .calibration import BUILTIN, calibration_texts, from_model, is_captured, load_captured
from .common import LAYOUTS, CliError, fmt_bytes, pick_device
from .discover import TensorInfo, discover
from .experts import (ExpertParam, find_expert_params, gpt_oss_tensors, per_expert_modules,
                      quantize_experts, require_experts, to_nk)
from .groups import find_groups, group_global_scales, group_input_scales, parse_groups
from .hf_config import quantization_config
from .io import AtomicOutput, ShardWriter, atomic_output, copy_side_files, free_bytes
from .ranks import AgreedError, Ranks, owners
from .report import load_hint, make_report, print_report
from .select import Decision, check_patterns, classify, module_of


@dataclass
class LayerResult:
    """One quantized weight: the layout's tensors, errors and times per method."""

    outputs: Dict[str, Tensor]           # local names (weight_packed, ...) -> tensors
    rel_err: Dict[str, float]
    out_err: Dict[str, float]
    time_s: Dict[str, float]
    deq: Dict[str, Tensor]               # method -> fp32 dequantized weight (when asked)
    amax: float = 0.0                    # the weight's largest magnitude
    note: str = ""


def _sync(device: torch.device) -> None:
    """Wait for ``device`` (so that the timings measure the kernels)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quantize_tensor(w: Tensor, fmt: str, method: str, layout: str, device: torch.device,
                    stats: Optional[Dict[str, Tensor]], keep_deq: bool,
                    chunk_elems: int, global_scale: Optional[Tensor] = None,
                    input_global_scale: Optional[Tensor] = None) -> LayerResult:
    """Quantize one 2-D weight with ``method`` (and with ``amax`` for the comparison), in
    row chunks (rows are independent; the global scale is the whole tensor's, or the
    ``global_scale`` of its fused group when given), so that the working memory stays near
    the size of the weight. ``input_global_scale`` (NVFP4 W4A4: the static activation
    scale, ENCODE) is written as the layout names it. Returns the layout's tensors (the
    gpt-oss layout's experts go through :func:`_quantize_expert_param`)."""
    import nvfp4_ops
    from .. import formats

    M, K = w.shape
    rows = max(1, chunk_elems // K)
    methods = [method] if method == "amax" else [method, "amax"]
    hessian = stats.get("hessian") if (stats and method == "hessian") else None
    gram = stats.get("gram") if stats else None

    gs = None
    if fmt == "nvfp4":
        amaxes = []
        for r0 in range(0, M, rows):
            x = w[r0:r0 + rows].to(device)
            if not bool(torch.isfinite(x).all()):
                raise _Skip("holds NaN or inf")
            amaxes.append(x.abs().amax().float().reshape(1))
        gs = (nvfp4_ops.global_scale(torch.cat(amaxes)) if global_scale is None
              else global_scale.to(device))
    elif not all(bool(torch.isfinite(w[r0:r0 + rows]).all()) for r0 in range(0, M, rows)):
        raise _Skip("holds NaN or inf")

    if fmt == "nvfp4":
        data = torch.empty((M, K // 2), dtype=torch.uint8, device=device)
        scales = torch.empty((M, K // 16), dtype=torch.float8_e4m3fn, device=device)
    elif fmt == "mxfp8":
        data = torch.empty((M, K), dtype=torch.float8_e4m3fn, device=device)
        scales = torch.empty((M, K // 32), dtype=torch.uint8, device=device)
    else:
        data = torch.empty((M, K // 2), dtype=torch.uint8, device=device)
        scales = torch.empty((M, K // 32), dtype=torch.uint8, device=device)
    elem = "e4m3" if fmt == "mxfp8" else "e2m1"

    sse = {m: 0.0 for m in methods}
    oe = {m: 0.0 for m in methods}
    tm = {m: 0.0 for m in methods}
    wsq = 0.0
    wmax = 0.0
    wg = 0.0
    deq = {m: torch.empty((M, K), dtype=torch.float32) for m in methods} if keep_deq else {}
    for r0 in range(0, M, rows):
        x = w[r0:r0 + rows].to(device)
        if x.dtype == torch.float64:
            x = x.float()
        xf = x.float()
        wsq += float(xf.double().square().sum())
        wmax = max(wmax, float(xf.abs().amax()))
        if gram is not None:
            wg += float(((xf @ gram) * xf).double().sum())
        for m in methods:
            _sync(device)
            t0 = time.perf_counter()
            if fmt == "nvfp4":
                q, s = nvfp4_ops.quantize(x, gs, scale_method=m,
                                          hessian=hessian if m == "hessian" else None)
                _sync(device)
                tm[m] += time.perf_counter() - t0
                d = nvfp4_ops.dequantize(q, s, gs, torch.float32)
            else:
                q, s = nvfp4_ops.mx_quantize(x, elem, scale_method=m)
                _sync(device)
                tm[m] += time.perf_counter() - t0
                d = nvfp4_ops.mx_dequantize(q, s, elem, torch.float32)
            if m == method:
                data[r0:r0 + rows] = q
                scales[r0:r0 + rows] = s
            e = xf - d
            sse[m] += float(e.double().square().sum())
            if gram is not None:
                oe[m] += float(((e @ gram) * e).double().sum())
            if keep_deq:
                deq[m][r0:r0 + rows] = d.cpu()
    den = math.sqrt(wsq) if wsq > 0 else 1.0
    rel = {m: math.sqrt(sse[m]) / den for m in methods}
    out = ({m: math.sqrt(max(oe[m], 0.0) / wg) for m in methods}
           if gram is not None and wg > 0 else {})
    rel["_norm"] = math.sqrt(wsq)

    if fmt == "nvfp4":
        if layout == "modelopt":
            outputs = formats.to_modelopt(data, scales, gs, input_global_scale)
        else:
            outputs = formats.to_compressed_tensors(data, scales, gs, input_global_scale)
    elif fmt == "mxfp8":
        outputs = {"weight": data, "weight_scale": scales}
    else:
        outputs = {"weight_packed": data, "weight_scale": scales}
    return LayerResult(outputs, rel, out, tm, deq, amax=wmax)


#: a weight quantized with a relative error at least this large is reported as tiny-valued
TINY_REL_ERR = 0.5


def _tiny_warning(name: str, fmt: str, rel_err: float, amax: float) -> str:
    """A warning when ``name`` lost most of itself to quantization (its values are too small
    for ``fmt``'s scales, so most blocks quantize to zero); "" otherwise."""
    if rel_err < TINY_REL_ERR:  # also False for NaN: warned about as well
        return ""
    return (f"{name}: relative error {rel_err:.3f}: its values are too small for {fmt} "
            f"(largest magnitude {amax:.3g}), most of it quantizes to zero; keep it in float "
            f"with --exclude {module_of(name)}")


class _Skip(Exception):
    """This weight cannot be quantized (the message says why): it is kept as it is."""


def _estimate_out_bytes(t: TensorInfo, d: Decision, fmt: str,
                        expert: Optional[ExpertParam] = None) -> int:
    """Bytes the output of ``t`` takes (for the free-space check)."""
    if d.action != "quantize":
        return t.nbytes
    M, K = t.shape if expert is None else (expert.nk[0] * expert.nk[1], expert.nk[2])
    return {"nvfp4": M * K // 2 + M * K // 16 + 8, "mxfp8": M * K + M * K // 32,
            "mxfp4": M * K // 2 + M * K // 32}[fmt]


#: how to get transformers, in the one line said when it is missing
INSTALL_HINT = "pip install transformers (or the project's cli extra: pip install 'nvfp4_ops[cli]')"
#: the Gram matrices (the report's output error) are kept when all of them fit in this
GRAM_BUDGET_BYTES = 1 << 30


def _load_model(src, needed: bool):
    """``(model, tokenizer)`` of the input folder loaded with transformers on the CPU
    (:func:`nvfp4_ops.cli.capture.load_model`), for calibration and the end-to-end check.
    When it cannot be loaded: a :class:`CliError` if ``needed`` (calibration asked for),
    else one note line and None."""
    from .capture import load_model

    try:
        import transformers
    except ImportError:
        msg = ("running the model (calibration on text, the end-to-end check) needs "
               f"transformers, which is not installed: {INSTALL_HINT}")
    else:
        verbosity = transformers.logging.get_verbosity()
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.logging.set_verbosity_error()  # no load report, no "Loading weights" bar
        transformers.utils.logging.disable_progress_bar()
        try:
            return load_model(src.folder)
        except Exception as e:  # not fatal unless calibration needs it
            msg = f"cannot run {src.label} with transformers ({type(e).__name__}: {e})"
        finally:
            transformers.logging.set_verbosity(verbosity)
            if bars:
                transformers.utils.logging.enable_progress_bar()
    if needed:
        raise CliError(msg)
    print(f"note: {msg}; quantizing without calibration and end-to-end check", file=sys.stderr)
    return None


def _calibrate(args, src, method: str, w4a4: bool, todo: List[TensorInfo],
               device: torch.device, ranks: Optional[Ranks] = None):
    """``(calibration or None, model or None, tokenizer)``: calibration runs for
    ``--scales hessian``, ``--scheme w4a4`` or a given ``--calib`` (``builtin`` texts when
    none is given and the model can run), and always for an encoder (the report's output
    error); the model is returned for the end-to-end check of an encoder. With several
    ``ranks`` the texts are split among them (data parallel) and the statistics summed
    (:meth:`Ranks.combine_capture`)."""
    path = args.calib
    kind = src.model_kind
    if is_captured(path):
        return load_captured(path), None, None
    need = method == "hessian" or w4a4 or path is not None
    if kind is None:
        if path is not None:
            calibration_texts(path)  # a bad file is reported first
            raise CliError(f"--calib {path}: texts need a model folder this tool can run with "
                           "transformers (config.json of a causal LM, or a BERT-like encoder, "
                           "and its tokenizer); for other models pass captured inputs "
                           "(.safetensors of [T, K] per linear layer, named like the layer)")
        if need:
            what = "--scales hessian" if method == "hessian" else "--scheme w4a4"
            raise CliError(f"{what} needs calibration inputs: pass --calib FILE (texts for a "
                           "transformers causal LM or encoder folder, or a .safetensors of "
                           "captured [T, K] inputs per linear layer)")
        return None, None, None
    n_eval = args.eval_sentences if kind == "encoder" else 0
    if not need and kind != "encoder":
        return None, None, None
    texts, describe = calibration_texts(path or BUILTIN, n_eval)
    loaded = _load_model(src, needed=need)
    if loaded is None:
        return None, None, None
    model, tok = loaded
    gram_bytes = sum(t.shape[-1] ** 2 * 4 for t in todo)
    want_gram = gram_bytes <= GRAM_BUDGET_BYTES
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # made at the first block: an error before it prints no bar
            bar = tqdm(total=total, desc=f"calibrate ({describe})", unit="block",
                       disable=args.quiet, file=sys.stderr, dynamic_ncols=True,
                       mininterval=0.25)
        bar.update(done - bar.n)
    combine = None
    if ranks is not None and len(texts) >= ranks.world:
        texts, combine = ranks.texts_share(texts), ranks.combine_capture
    try:
        calib = from_model(model, tok, texts, describe, device, method == "hessian", want_gram,
                           progress, combine)
    finally:
        if bar is not None:
            bar.close()
    if not want_gram:
        calib.notes.append(f"no output-error column: the layers' Gram matrices would take "
                           f"{fmt_bytes(gram_bytes)} (more than {fmt_bytes(GRAM_BUDGET_BYTES)})")
    return calib, (model if kind == "encoder" else None), tok


def _classify_all(src, fmt: str, layout: str, include, exclude,
                  experts: Dict[str, ExpertParam]) -> Dict[str, Decision]:
    """Every tensor's :class:`Decision`. With ``--layout gpt-oss`` only the 3-D expert
    parameters are quantized (by the same rules, as if they were ``[E*N, K]`` weights); in
    the other layouts they stay in float, with the reason."""
    out = {}
    for t in src.tensors:
        p = experts.get(t.name)
        if p is None:
            d = classify(t, fmt, include, exclude)
            if layout == "gpt-oss" and d.action == "quantize":
                d = Decision("keep", "the gpt-oss layout holds only the MoE experts in MXFP4")
        elif layout == "gpt-oss":
            E, N, K = p.nk
            d = classify(TensorInfo(t.name + ".weight", t.file, (E * N, K), t.dtype),
                         fmt, include, exclude)
        else:
            d = Decision("keep", "3-D MoE expert parameter: only --format mxfp4 --layout "
                                 "gpt-oss holds it")
        out[t.name] = d
    return out


def _quantize_expert_param(w: Tensor, p: ExpertParam, fmt: str, method: str,
                           device: torch.device, chunk: int) -> LayerResult:
    """A 3-D expert parameter in the gpt-oss layout: each expert ``[N, K]`` quantized by
    :func:`quantize_tensor`; errors over all experts, times summed."""
    results: List[LayerResult] = []

    def one(x: Tensor) -> Dict[str, Tensor]:
        r = quantize_tensor(x, fmt, method, "compressed-tensors", device, None, False, chunk)
        results.append(r)
        return {"data": r.outputs["weight_packed"], "scales": r.outputs["weight_scale"]}

    q = quantize_experts(to_nk(w, p.k_first), fmt, method, quantize_2d=one)
    norms = [r.rel_err.pop("_norm") for r in results]
    den = math.sqrt(sum(n * n for n in norms))
    rel = {m: math.sqrt(sum((r.rel_err[m] * n) ** 2 for r, n in zip(results, norms))) /
           (den or 1.0) for m in results[0].rel_err}
    rel["_norm"] = den
    tm = {m: sum(r.time_s[m] for r in results) for m in results[0].time_s}
    return LayerResult(gpt_oss_tensors("", q["data"], q["scales"]), rel, {}, tm, {},
                       amax=max(r.amax for r in results))


@dataclass
class _Job:
    """What quantizing one weight needs besides the weight (the same on every rank)."""

    fmt: str
    method: str
    layout: str
    device: torch.device
    calib: object                        # a Calibration, or None
    w4a4: bool
    shared_gs: Dict[str, Tensor]
    shared_igs: Dict[str, Tensor]
    experts: Dict[str, ExpertParam]
    keep_deq: bool
    chunk: int


@dataclass
class _Outcome:
    """One weight to quantize, done: its result, or why it is kept as it is (``skip``)."""

    result: Optional[LayerResult]
    skip: str = ""
    m_used: str = ""
    note: str = ""
    no_calib: bool = False               # calibration ran but did not reach this layer


def _quantize_one(info: TensorInfo, w: Tensor, job: _Job) -> _Outcome:
    """Quantize the weight ``info`` (read as ``w``): its calibration statistics, the W4A4
    input scale, the Hessian fallback to mse, and the 2-D or gpt-oss expert quantization."""
    mod = module_of(info.name)
    stats = None
    m_used, note = job.method, ""
    if job.calib is not None:
        stats = job.calib.stats(info.name, info.shape[1], job.device, job.method == "hessian")
    igs = None
    if stats is not None and job.w4a4:
        igs = job.shared_igs.get(info.name, stats["input_global_scale"])
    if job.w4a4 and igs is None:
        raise CliError(f"--scheme w4a4: {info.name} has no calibration inputs, so no input "
                       "scale (the calibration did not reach it); keep it in float with "
                       f"--exclude {mod}")
    if job.method == "hessian" and (stats is None or "hessian" not in stats):
        m_used, note = "mse", "no calibration inputs for this layer: mse"
    no_calib = stats is None and job.calib is not None
    try:
        if info.name in job.experts:
            r = _quantize_expert_param(w, job.experts[info.name], job.fmt, m_used, job.device,
                                       job.chunk)
        else:
            r = quantize_tensor(w, job.fmt, m_used, job.layout, job.device, stats, job.keep_deq,
                                job.chunk, job.shared_gs.get(info.name), igs)
    except _Skip as s:
        return _Outcome(None, str(s), no_calib=no_calib)
    return _Outcome(r, "", m_used, note, no_calib)


def _read(h, f: Path, name: str) -> Tensor:
    """Tensor ``name`` of the open safetensors file ``f``; a :class:`CliError` when it
    cannot be read."""
    try:
        return h.get_tensor(name)
    except Exception as e:
        raise CliError(f"{f}: cannot read tensor {name} ({e})") from e


def _open(f: Path):
    """The safetensors file ``f`` opened for reading; a :class:`CliError` when it is not one."""
    from safetensors import safe_open

    try:
        return safe_open(str(f), framework="pt")
    except Exception as e:
        raise CliError(f"{f}: not a valid safetensors file ({e})") from e


def _cpu_copy(t: Tensor) -> Tensor:
    """``t`` on the CPU in its own storage (so that saving it saves only its elements)."""
    t = t.detach()
    return t.cpu() if t.device.type != "cpu" else t.clone()


def _save_outcome(o: _Outcome, folder: Path, k: int) -> None:
    """Write ``o`` (the ``k``-th weight in the output order) for rank 0 to pick up."""
    d = {"skip": o.skip, "m_used": o.m_used, "note": o.note, "no_calib": o.no_calib}
    if o.result is not None:
        r = dict(vars(o.result))
        r["outputs"] = {n: _cpu_copy(t) for n, t in r["outputs"].items()}
        r["deq"] = {n: _cpu_copy(t) for n, t in r["deq"].items()}
        d["result"] = r
    tmp = folder / f".{k}.pt.tmp"
    torch.save(d, tmp)
    tmp.rename(folder / f"{k}.pt")


def _load_outcome(folder: Path, k: int) -> _Outcome:
    """The outcome :func:`_save_outcome` wrote for the ``k``-th weight (the file is removed)."""
    path = folder / f"{k}.pt"
    d = torch.load(path, map_location="cpu", weights_only=True)
    path.unlink()
    r = d.pop("result", None)
    return _Outcome(None if r is None else LayerResult(**r), **d)


def _quantize_share(ranks: Ranks, src, todo: List[TensorInfo], order: Dict[str, int],
                    job: _Job, folder: Path, quiet: bool) -> None:
    """This rank's share of ``todo`` (:func:`owners`, by bytes), quantized into ``folder``
    (``order[name].pt``); errors are agreed on by all ranks (:meth:`Ranks.agree`), so that
    every rank raises the one of the lowest tensor index. A progress bar unless ``quiet``."""
    from tqdm import tqdm

    own = owners([t.nbytes for t in todo], ranks.world)
    mine = {t.name for t, o in zip(todo, own) if o == ranks.rank}
    err, at = None, -1
    bar = tqdm(total=len(mine), unit="tensor", disable=quiet, file=sys.stderr,
               desc=f"quantize {job.fmt}/{job.method}: rank {ranks.rank}'s share of "
                    f"{ranks.world}", dynamic_ncols=True, mininterval=0.25)
    try:
        if not folder.is_dir():
            raise CliError(f"rank {ranks.rank} cannot see rank 0's output folder {folder}: "
                           "the ranks must share a file system (launch on one machine)")
        for f in src.files:
            share = [t for t in src.tensors if t.file == f and t.name in mine]
            if not share:
                continue
            at = order[share[0].name]
            h = _open(f)
            for info in share:
                at = order[info.name]
                _save_outcome(_quantize_one(info, _read(h, f, info.name), job), folder, at)
                bar.update(1)
    except (Exception, KeyboardInterrupt) as e:
        err = e
    finally:
        bar.close()
    ranks.agree(err, at)


def _config_dtype(config: dict, layout: str, notes: List[str]) -> Optional[str]:
    """Make the default transformers load run: compressed-tensors decompresses every weight
    to bfloat16 (its unpacking returns bf16; ``compressors/nvfp4``, ``mxfp4``, ``mxfp8``), so a
    float32 or float16 model whose config keeps its dtype crashes at the first matmul (``self
    and mat2 must have the same dtype``). The config then says ``bfloat16``, the dtype the
    loaded model has; the source dtype goes into the shards' metadata, and ``dequantize``
    restores it. Returns the source dtype when it was changed."""
    if layout != "compressed-tensors":
        return None
    orig = config.get("dtype", config.get("torch_dtype"))
    if orig == "bfloat16":
        return None
    config["dtype"] = "bfloat16"
    if "torch_dtype" in config:
        config["torch_dtype"] = "bfloat16"
    notes.append(f"config.json dtype {orig} -> bfloat16: compressed-tensors decompresses the "
                 "weights to bfloat16, so transformers loads the whole model in bfloat16 (pass "
                 "dtype=... to from_pretrained for another; `nvfp4-ops dequantize` restores "
                 f"{orig})")
    return "" if orig is None else str(orig)


def run_quantize(args: argparse.Namespace) -> int:
    """Run ``nvfp4-ops quantize`` with parsed ``args``; the exit status. Launched by torchrun
    with several ranks (``WORLD_SIZE`` > 1), the ranks share the work (:mod:`.ranks`): an
    error on any rank is raised on all of them, and printed by rank 0 only."""
    ranks = Ranks.from_env()
    if ranks is None:
        return _run_quantize(args, None)
    if not ranks.lead:
        args.quiet = True
    with ranks:
        try:
            return _run_quantize(args, ranks)
        except AgreedError as e:
            if ranks.lead:
                raise
            return e.code
        except BaseException as e:
            if ranks.pending:  # the others wait at a collective: tell them
                ranks.pending = False
                try:
                    ranks.agree(e)
                except AgreedError as a:
                    if ranks.lead:
                        raise a from None
                    return a.code
                except Exception:  # noqa: BLE001 - the others are gone (torchrun stopped
                    pass           # them): this rank's own error stands
            if not ranks.lead and isinstance(e, CliError):
                return e.code
            if not ranks.lead and isinstance(e, KeyboardInterrupt):
                return 130
            raise


def _run_quantize(args: argparse.Namespace, ranks: Optional[Ranks]) -> int:
    """:func:`run_quantize` on this rank (``ranks`` None: the one-process run)."""
    from .. import _library

    from tqdm import tqdm

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    fmt, method = args.format, args.scales
    if method is None:  # MXFP8: the search rarely beats amax and costs ~100x (issue 11)
        method = "amax" if fmt == "mxfp8" else "mse"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    layout = args.layout or LAYOUTS[fmt][0]
    if layout not in LAYOUTS[fmt]:
        raise CliError(f"--layout {layout} does not hold {fmt}; for {fmt} choose "
                       f"{' or '.join(LAYOUTS[fmt])}")
    if method == "hessian" and fmt != "nvfp4":
        raise CliError(f"--scales hessian is for --format nvfp4 only (the {fmt} search minimises "
                       "the squared error: use --scales mse)")
    if method == "4over6" and fmt != "nvfp4":
        raise CliError(f"--scales 4over6 is for --format nvfp4 only (its two candidate scales "
                       f"map the block max to the E2M1 values 6 and 4; for {fmt} use --scales "
                       "mse)")
    scheme = getattr(args, "scheme", "w4a16")
    w4a4 = scheme == "w4a4"
    if w4a4 and fmt != "nvfp4":
        raise CliError(f"--scheme w4a4 quantizes activations to NVFP4: --format nvfp4 only "
                       f"(got --format {fmt})")
    try:
        calibration_and_eval_texts(args.eval_sentences)
    except ValueError as e:
        raise CliError(f"--eval-sentences {args.eval_sentences}: {e}") from None
    device = pick_device(args.device)
    if ranks is not None:
        ranks.use_device(device)
    backend, why = _library.op_implementation("quantize" if fmt == "nvfp4" else "mx_quantize", device)

    include, exclude = args.include or [], args.exclude or []
    check_patterns("--include", include)
    check_patterns("--exclude", exclude)
    src = discover(args.input)
    try:
        rules = parse_groups(getattr(args, "fused_groups", None))
    except ValueError as e:
        raise CliError(f"--fused-groups: {e}") from e
    experts = {p.name: p for p in find_expert_params(
        ((t.name, t.shape, t.dtype) for t in src.tensors), src.config)}
    if layout == "gpt-oss":
        try:
            require_experts(list(experts.values()), src.label)
        except ValueError as e:
            raise CliError(str(e)) from e
    decisions = _classify_all(src, fmt, layout, include, exclude, experts)
    todo = [t for t in src.tensors if decisions[t.name].action == "quantize"]
    if not todo:
        raise CliError(f"nothing to quantize in {src.label}: no 2-D linear weight is left after "
                       "the name rules and --include/--exclude (see --help)")

    out = Path(args.out)
    inputs = src.files + ([src.folder] if src.folder and src.is_folder else [])
    AtomicOutput.check(out, args.force, inputs)
    est = sum(_estimate_out_bytes(t, decisions[t.name], fmt, experts.get(t.name))
              for t in src.tensors)
    shard_bytes = args.max_shard_size
    free = free_bytes(out.absolute().parent)
    need = est + min(est, shard_bytes) + (est if ranks is not None else 0)  # + ranks' files
    if free < need:
        raise CliError(f"not enough disk space next to {out}: the output needs about "
                       f"{fmt_bytes(need)}, {fmt_bytes(free)} is free", 1)

    # a model this tool can run (transformers, layer by layer): calibration (hessian, output
    # error, input scales) and, for an encoder, the end-to-end check
    if ranks is not None:
        ranks.agree(None)  # every rank got through the checks
    t_cal = time.perf_counter()
    calib, model, tokenizer = _calibrate(args, src, method, w4a4, todo, device, ranks)
    if calib is not None:
        calib.precompute(device, method == "hessian")
    t_cal = time.perf_counter() - t_cal

    # fused groups: one NVFP4 global scale per group (an extra read of each member's amax)
    shared_gs: Dict[str, Tensor] = {}
    shared_igs: Dict[str, Tensor] = {}
    fused_rows: List[dict] = []
    if fmt == "nvfp4":
        from safetensors import safe_open

        by_name = {t.name: t for t in todo}

        def amax_of(name: str) -> Tensor:
            with safe_open(str(by_name[name].file), framework="pt") as fh:
                return fh.get_tensor(name).to(device).abs().amax().float()

        fused = find_groups([t.name for t in todo], rules)
        if ranks is not None:  # each member's amax read by one rank, then shared (exact)
            members = [m for g in fused for m in g.members]
            own = owners([by_name[m].nbytes for m in members], ranks.world)
            mine, err = {}, None
            try:
                for m, o in zip(members, own):
                    if o == ranks.rank:
                        mine[m] = amax_of(m).cpu()
            except Exception as e:
                err = e
            amaxes = {}
            for part in ranks.agree(err, payload=mine):
                amaxes.update(part)
            amax_of = lambda name: amaxes[name].to(device)  # noqa: E731
        shared_gs, fused_rows = group_global_scales(fused, amax_of)
        if calib is not None:  # static W4A4 activation scales: one per group too
            def input_scale_of(name: str) -> Optional[Tensor]:
                st = calib.stats(name, by_name[name].shape[1], device, False)
                return None if st is None else st["input_global_scale"]

            shared_igs = group_input_scales(fused, input_scale_of)
    keep_deq = model is not None and args.eval_sentences > 0
    chunk = (1 << 26) if device.type == "cuda" else (1 << 22)
    job = _Job(fmt, method, layout, device, calib, w4a4, shared_gs, shared_igs, experts,
               keep_deq, chunk)
    # the output order of the tensors (file by file); a rank's error names the first one
    order = {t.name: i for i, t in enumerate(t for f in src.files for t in src.tensors
                                             if t.file == f)}
    share: Optional[Path] = None  # with ranks: the folder of their quantized weights
    if ranks is not None and not ranks.lead:
        folder = ranks.agree(None)[0]
        _quantize_share(ranks, src, todo, order, job, folder, True)
        ranks.pending = False
        return 0
    layers: List[dict] = []
    skipped: List[dict] = []
    kept: List[dict] = []
    notes: List[str] = []
    deq_all: Dict[str, Dict[str, Tensor]] = {}
    no_calib: List[str] = []
    bytes_in = 0
    src_dtypes = {}
    with atomic_output(out, args.force, inputs,
                        f"interrupted; removed the partial output, {out} untouched") as atomic:
        if ranks is not None:
            share = atomic.tmp / ".ranks"
            share.mkdir()
            t_share = time.perf_counter()
            ranks.agree(None, payload=share)
            _quantize_share(ranks, src, todo, order, job, share, args.quiet)
            ranks.pending = False  # the others are done: the rest is rank 0's
            t_share = time.perf_counter() - t_share
        meta = {"format": "pt", "producer": "nvfp4_ops quantize"}
        writer = ShardWriter(atomic.tmp, shard_bytes, meta)
        t_loop = time.perf_counter()
        # the bar is closed (its line ended) before an error or the table is printed;
        # warnings during the loop go above it (tqdm.write)
        with tqdm(total=len(src.tensors), unit="tensor", desc=f"quantize {fmt}/{method}",
                  disable=args.quiet, file=sys.stderr, dynamic_ncols=True,
                  mininterval=0.25) as bar:
            for f in src.files:
                h = _open(f)
                for info in [t for t in src.tensors if t.file == f]:
                    d = decisions[info.name]
                    w = None
                    if share is None or d.action != "quantize":
                        w = _read(h, f, info.name)
                    bytes_in += info.nbytes
                    if d.action == "quantize":
                        mod = module_of(info.name)
                        o = (_quantize_one(info, w, job) if share is None
                             else _load_outcome(share, order[info.name]))
                        if o.no_calib:
                            no_calib.append(info.name)
                        if o.skip:
                            d = decisions[info.name] = Decision("skip", o.skip)
                            if w is None:
                                w = _read(h, f, info.name)
                        else:
                            r, m_used, note = o.result, o.m_used, o.note
                            for k, v in r.outputs.items():
                                writer.add(f"{mod}.{k}" if k[0] != "_" else mod + k, v)
                            src_dtypes[info.name] = info.dtype
                            norm = r.rel_err.pop("_norm")
                            if m_used != method:  # a fallback: listed under the requested method
                                for dct in (r.rel_err, r.out_err, r.time_s):
                                    if m_used in dct:
                                        dct[method] = dct.pop(m_used)
                            row = {"name": info.name, "shape": list(info.shape), "dtype": info.dtype,
                                   "method": m_used, "rel_err": r.rel_err, "time_s": r.time_s,
                                   "norm": norm}
                            if r.out_err:
                                row["out_err"] = r.out_err
                            if note:
                                row["note"] = note
                            warning = _tiny_warning(info.name, fmt, r.rel_err[method], r.amax)
                            if warning:
                                row["warning"] = warning
                                notes.append(warning)
                                tqdm.write(f"warning: {warning}", file=sys.stderr)
                            layers.append(row)
                            if keep_deq and r.deq:  # the layer's amax and chosen-method weights
                                deq_all[info.name] = {"amax": r.deq["amax"], method: r.deq[m_used]}
                    if d.action != "quantize":
                        writer.add(info.name, w)
                        entry = {"name": info.name, "shape": list(info.shape), "action": d.action,
                                 "reason": d.reason}
                        (skipped if d.action == "skip" else kept).append(entry)
                    del w
                    bar.update(1)
                    el = max(time.perf_counter() - t_loop, 1e-9)
                    bar.set_postfix_str(f"{fmt_bytes(bytes_in / el)}/s", refresh=False)
        t_loop = time.perf_counter() - t_loop
        if share is not None:
            share.rmdir()
            t_loop += t_share
        writer.metadata["nvfp4_ops.source_dtypes"] = json.dumps(src_dtypes, separators=(",", ":"))
        config = dict(src.config or {})
        orig_dtype = _config_dtype(config, layout, notes)
        moe = per_expert_modules(l["name"] for l in layers)
        if moe:
            notes.append(f"{len(moe)} per-expert MoE weights quantized (e.g. {moe[0]}): vLLM and "
                         "SGLang read them; transformers 5 (checked with 5.24) fuses per-expert "
                         "modules into 3-D parameters, which its compressed-tensors loading does "
                         "not decompress: such a MoE checkpoint does not load correctly there")
        if orig_dtype is not None:
            writer.metadata["nvfp4_ops.config_dtype"] = orig_dtype
        shards = writer.close()

        # config.json (+ hf_quant_config.json) and the other files of the input folder
        ignore = sorted(module_of(e["name"]) for e in kept + skipped
                        if decisions[e["name"]].action in ("exclude", "skip"))
        qc, hf = quantization_config(fmt, layout, ignore, w4a4)
        if calib is not None:
            notes.extend(f"calibration: {n}" for n in calib.notes)
        if layout == "modelopt" and not w4a4:
            notes.append("--scheme w4a16: no input_scale, vLLM serves this ModelOpt NVFP4 "
                         "checkpoint as W4A16 (NVFP4 weights, 16-bit activations); --scheme "
                         "w4a4 writes calibrated input scales")
        config["quantization_config"] = qc
        copied = copy_side_files(src.folder, atomic.tmp, ["config.json", "hf_quant_config.json",
                                                            "report.json"], src.is_folder)
        (atomic.tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if hf is not None:
            (atomic.tmp / "hf_quant_config.json").write_text(json.dumps(hf, indent=2) + "\n")

        # end-to-end: embeddings of the float and the quantized model
        e2e = None
        t_eval = time.perf_counter()
        if model is not None and deq_all and args.eval_sentences > 0:
            from .capture import encode_sentences, swap_linear_weights

            _, eval_sents = calibration_and_eval_texts(args.eval_sentences)
            ref = encode_sentences(model, eval_sents, device, tokenizer=tokenizer)
            methods = [method] if method == "amax" else ["amax", method]
            e2e = {"sentences": len(eval_sents),
                   "what": "cosine similarity between the float model's and the quantized "
                           "model's sentence embeddings on the built-in evaluation texts "
                           "(disjoint from the built-in calibration ones); weights quantized, "
                           "activations in the model's dtype",
                   "cosine": {}}
            for m in methods:
                with swap_linear_weights(model, {n: dq[m] for n, dq in deq_all.items()}):
                    emb = encode_sentences(model, eval_sents, device, tokenizer=tokenizer)
                cos = (emb * ref).sum(1)
                e2e["cosine"][m] = {"mean": float(cos.mean()), "min": float(cos.min())}
            deq_all.clear()
        t_eval = time.perf_counter() - t_eval

        total_time = time.perf_counter() - t_start
        report = make_report(args, src, fmt, layout, method, device, backend, why, calib,
                              layers, skipped, kept, notes, e2e, shards, copied, bytes_in,
                              writer.total, t_loop, total_time, len(src.tensors))
        report["fused_groups"] = fused_rows
        report["scheme"] = scheme
        report["totals"]["calibration_time_s"] = t_cal
        report["totals"]["cpu_time_s"] = time.process_time() - cpu_start
        report["totals"]["eval_time_s"] = t_eval
        (atomic.tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        atomic.commit()
    if not args.quiet:
        print_report(report)
        if fused_rows:
            print(f"fused groups sharing one global scale: {len(fused_rows)} (e.g. "
                  f"{fused_rows[0]['group']}; report.json: fused_groups)")
    print(f"wrote {out} ({', '.join(shards)}, config.json, report.json)")
    for line in load_hint(layout, out, src.config):
        print(line)
    return 0
