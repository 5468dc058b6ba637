"""Layer-by-layer calibration (nvfp4_ops.cli.capture) and the calibration text loaders.

Oracle: the same batches run through the whole model at once, with forward pre-hooks on
every nn.Linear keeping the rows of real tokens; the Hessian is ``hessian_blocks`` of
their concatenation. Tolerance: the layer-by-layer statistics must match to
``rtol=1e-5`` (fp32), relative to the largest entry (``atol = 1e-6 * max|H|``); the
streaming accumulator alone must equal ``hessian_blocks`` of the concatenation bit for bit.
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nvfp4_ops.cli import capture
from nvfp4_ops.cli.calib_texts import default_texts, load_texts
from nvfp4_ops.reference import hessian_blocks

from ._ckpt import word_tokenizer

tf = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXTS = default_texts(24)


@pytest.fixture(scope="module")
def tok():
    """A word-level tokenizer over the built-in texts ([CLS] text [SEP], [PAD] = 0)."""
    return word_tokenizer(default_texts())


def _save(model, tok, folder: Path) -> Path:
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _tiny(tmp_path_factory, tok, family: str, seed: int, **config) -> Path:
    """A random ``{family}`` model (hidden 64, 2 layers, 4 heads) saved with ``tok``."""
    cfg_cls = getattr(tf, f"{family}Config")
    arch = "BertModel" if family == "Bert" else f"{family}ForCausalLM"
    cfg = cfg_cls(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  vocab_size=len(tok), architectures=[arch], **config)
    torch.manual_seed(seed)
    return _save(getattr(tf, arch)(cfg), tok, tmp_path_factory.mktemp(family.lower()))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tok):
    return _tiny(tmp_path_factory, tok, "Llama", 0, intermediate_size=128, num_key_value_heads=2,
                 max_position_embeddings=256)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory, tok):
    return _tiny(tmp_path_factory, tok, "Bert", 1, intermediate_size=128,
                 max_position_embeddings=128)


@pytest.fixture(scope="module")
def mixtral_dir(tmp_path_factory, tok):
    return _tiny(tmp_path_factory, tok, "Mixtral", 2, intermediate_size=32, num_key_value_heads=2,
                 num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256)


@pytest.fixture(scope="module")
def gptoss_dir(tmp_path_factory, tok):
    return _tiny(tmp_path_factory, tok, "GptOss", 3, intermediate_size=32, num_key_value_heads=2,
                 head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                 max_position_embeddings=256,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


@pytest.fixture(scope="module")
def llama(llama_dir):
    return capture.load_model(llama_dir)[0]


@pytest.fixture(scope="module")
def bert(bert_dir):
    return capture.load_model(bert_dir)[0]


def _whole_model_stats(model, tok, texts, batch_size: int):
    """The oracle: one whole-model forward per batch, every linear hooked."""
    got, cur, handles = {}, {}, []

    def hook(name):
        def f(mod, args):
            x, m = args[0], cur["mask"]
            rows = x[m] if tuple(x.shape[:-1]) == tuple(m.shape) else x.reshape(-1, x.shape[-1])
            got.setdefault(name, []).append(rows.detach())
        return f
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_pre_hook(hook(n)))
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=512,
                      return_tensors="pt")
            cur["mask"] = enc["attention_mask"].bool()
            model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    for h in handles:
        h.remove()
    out = {}
    for n, parts in got.items():
        X = torch.cat(parts)
        out[n] = (hessian_blocks(X), X.abs().amax().float(), X.shape[0])
    return out


def _assert_matches(stats, oracle):
    assert set(stats) == set(oracle)
    for n, (H, amax, T) in oracle.items():
        s = stats[n]
        assert s.tokens == T, n
        torch.testing.assert_close(s.amax, amax, rtol=1e-5, atol=0, msg=n)
        torch.testing.assert_close(s.hessian, H, rtol=1e-5, atol=1e-6 * float(H.abs().max()),
                                   msg=n)


def test_llama_layer_by_layer_equals_whole_model(llama_dir, llama, tok):
    stats = capture.capture_linear_stats(llama_dir, TEXTS, device="cpu", batch_size=5)
    oracle = _whole_model_stats(llama, tok, TEXTS, 5)
    assert "model.layers.1.mlp.down_proj" in stats and "lm_head" in stats
    assert stats["model.layers.0.mlp.down_proj"].hessian.shape == (128 // 16, 16, 16)
    assert stats.notes == []
    assert stats.tokens == stats["lm_head"].tokens == sum(
        len(r) for r in tok(TEXTS, truncation=True, max_length=512)["input_ids"])
    _assert_matches(stats, oracle)


def test_bert_layer_by_layer_equals_whole_model(bert, tok):
    stats = capture.capture_linear_stats(bert, TEXTS, device="cpu", batch_size=7, tokenizer=tok)
    oracle = _whole_model_stats(bert, tok, TEXTS, 7)
    assert "encoder.layer.0.attention.self.query" in stats
    assert stats["pooler.dense"].tokens == len(TEXTS)  # one [CLS] row per text
    _assert_matches(stats, oracle)


def test_one_block_on_the_device_at_a_time(llama, tok, monkeypatch):
    """The protocol: block i is moved to the device, runs every batch, goes back, before
    block i+1 moves; recorded by wrapping the one function that moves modules."""
    model = llama
    blocks = list(model.model.layers)
    events = []
    orig = capture._move

    def move(module, device):
        if any(module is b for b in blocks):
            events.append(("move", blocks.index(module), str(device)))
        orig(module, device)
    monkeypatch.setattr(capture, "_move", move)
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: events.append(("forward", i)))
               for i, b in enumerate(blocks)]
    capture.capture_linear_stats(model, TEXTS[:9], device="cpu", batch_size=4, tokenizer=tok)
    for h in handles:
        h.remove()
    nb = 3  # ceil(9 / 4) batches
    expected = []
    for i in range(len(blocks)):
        expected += [("move", i, "cpu")] + [("forward", i)] * nb + [("move", i, "cpu")]
    assert events == expected


def test_layers_subset_and_no_hessian(llama, tok):
    kw = dict(device="cpu", tokenizer=tok)
    full = capture.capture_linear_stats(llama, TEXTS[:6], **kw)
    part = capture.capture_linear_stats(llama, TEXTS[:6], layers=[0], want_hessian=False, **kw)
    assert set(part) == {k for k in full if k.startswith("model.layers.0.")}
    for k, s in part.items():
        assert s.hessian is None and s.tokens == full[k].tokens
        assert torch.equal(s.amax, full[k].amax)
    with pytest.raises(ValueError, match=r"block indices in \[0, 2\), got \[2\]"):
        capture.capture_linear_stats(llama, TEXTS[:2], layers=[2], **kw)


def test_token_id_texts_and_bad_ids(llama, tok):
    ids = tok(TEXTS[:4])["input_ids"]
    a = capture.capture_linear_stats(llama, ids, device="cpu", batch_size=2)
    b = capture.capture_linear_stats(llama, TEXTS[:4], device="cpu", batch_size=2, tokenizer=tok)
    for k in b:
        assert torch.equal(a[k].hessian, b[k].hessian) and a[k].tokens == b[k].tokens
    with pytest.raises(ValueError, match=r"token id 999999 is outside the vocabulary"):
        capture.capture_linear_stats(llama, [[1, 999999]], device="cpu")


def test_folder_without_tokenizer(tmp_path, llama_dir):
    for f in llama_dir.iterdir():
        if f.name in ("config.json", "model.safetensors"):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    stats = capture.capture_linear_stats(tmp_path, [[2, 5, 6, 3], [2, 9, 3]], device="cpu")
    assert stats.tokens == 7 and stats["lm_head"].tokens == 7
    with pytest.raises(ValueError, match=r"texts need a tokenizer \(the model folder has none\)"):
        capture.capture_linear_stats(tmp_path, ["hello"], device="cpu")


def test_bad_arguments(tmp_path, llama):
    with pytest.raises(ValueError, match=r"not a transformers model folder \(expected config.json\)"):
        capture.capture_linear_stats(tmp_path, ["a"], device="cpu")
    with pytest.raises(ValueError, match=r"batch_size and max_tokens_per_text must be >= 1, got 0"):
        capture.capture_linear_stats(llama, [[1, 2]], device="cpu", batch_size=0)
    with pytest.raises(ValueError, match=r"no calibration texts \(expected at least 1, got 0\)"):
        capture.capture_linear_stats(llama, [], device="cpu")


def test_streaming_hessian_is_bitwise_hessian_blocks_of_the_concatenation():
    g = torch.Generator().manual_seed(3)
    parts = [torch.randn(n, 48, generator=g).to(torch.bfloat16) for n in (1000, 3500, 17, 4100, 900)]
    acc = capture._Acc(48, True, torch.device("cpu"))
    for p in parts:
        acc.add(p)
    s = acc.finish()
    X = torch.cat(parts)
    assert torch.equal(s.hessian, hessian_blocks(X))
    assert torch.equal(s.amax, X.abs().amax().float()) and s.tokens == X.shape[0]


def _fused_oracle(model, tok, texts):
    """Per-expert inputs of Mixtral's fused experts, recorded at the F.linear calls of the
    eager experts forward (one text per batch: no padding rows)."""
    ptrs = {}
    for n, m in model.named_modules():
        if capture._is_fused_experts(m):
            for e in range(m.gate_up_proj.shape[0]):
                ptrs[m.gate_up_proj[e].data_ptr()] = capture.expert_key(f"{n}.gate_up_proj", e)
                ptrs[m.down_proj[e].data_ptr()] = capture.expert_key(f"{n}.down_proj", e)
    got = {}
    lin = torch.nn.functional.linear

    def spy(x, w, b=None):
        k = ptrs.get(w.data_ptr())
        if k is not None:
            got.setdefault(k, []).append(x.detach())
        return lin(x, w, b)
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.nn.functional, "linear", spy)
        for t in texts:
            model(**tok([t], return_tensors="pt"))
    return {k: torch.cat(v) for k, v in got.items()}


def test_mixtral_fused_experts_per_expert(mixtral_dir, tok):
    texts = TEXTS[:6]
    model = tf.AutoModelForCausalLM.from_pretrained(str(mixtral_dir), experts_implementation="eager")
    stats = capture.capture_linear_stats(model, texts, device="cpu", batch_size=1, tokenizer=tok)
    oracle = _fused_oracle(model, tok, texts)
    keys = [k for k in stats if ".experts." in k]
    assert len(keys) == 2 * 2 * 4  # layers x (gate_up, down) x experts
    total = sum(len(r) for r in tok(texts)["input_ids"])
    ups = [k for k in keys if ".gate_up_proj." in k and k.startswith("model.layers.0.")]
    assert sum(stats[k].tokens for k in ups) == 2 * total  # top-2 routing
    for k in keys:
        X = oracle.get(k)
        if X is None:
            assert stats[k].tokens == 0 and stats[k].hessian is None
            continue
        assert stats[k].tokens == X.shape[0], k
        H = hessian_blocks(X)
        torch.testing.assert_close(stats[k].hessian, H, rtol=1e-5, atol=1e-6 * float(H.abs().max()))
        torch.testing.assert_close(stats[k].amax, X.abs().amax().float(), rtol=1e-5, atol=0)
    # padding in a batch: routed rows of padding tokens are excluded from the experts
    padded = capture.capture_linear_stats(model, texts, device="cpu", batch_size=3, tokenizer=tok)
    for k in keys:
        assert padded[k].tokens == stats[k].tokens, k


def test_gptoss_per_layer_masks_and_transposed_experts(gptoss_dir, tok):
    """GptOss: sliding-window and full-attention blocks get different masks (recorded per
    block), experts are transposed 3-D parameters with biases and a clamped SwiGLU."""
    texts = TEXTS[:6]
    assert max(len(r) for r in tok(texts)["input_ids"]) > 4 * 2  # longer than the window
    model = tf.AutoModelForCausalLM.from_pretrained(str(gptoss_dir), experts_implementation="eager")
    assert model.config.layer_types == ["sliding_attention", "full_attention"]
    stats = capture.capture_linear_stats(model, texts, device="cpu", batch_size=3, tokenizer=tok)
    _assert_matches({k: v for k, v in stats.items() if ".experts." not in k},
                    _whole_model_stats(model, tok, texts, 3))
    # experts, one text per batch (no padding): the sums over experts against the rows that
    # reach the router (each routed top-2) and the outputs of the experts' own _apply_gate
    stats = capture.capture_linear_stats(model, texts, device="cpu", batch_size=1, tokenizer=tok)
    seen = {}
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        hs = []
        for i, layer in enumerate(model.model.layers):
            ex = layer.mlp.experts
            mp.setattr(ex, "_apply_gate", lambda g, ex=ex, i=i: seen.setdefault(
                ("down", i), []).append(type(ex)._apply_gate(ex, g)) or seen[("down", i)][-1])
            hs.append(layer.mlp.router.register_forward_pre_hook(
                lambda m, a, i=i: seen.setdefault(("up", i), []).append(a[0].reshape(-1, 64))))
        for t in texts:
            model(**tok([t], return_tensors="pt"))
        for h in hs:
            h.remove()
    tokens = sum(len(r) for r in tok(texts)["input_ids"])
    for i in range(2):
        p = f"model.layers.{i}.mlp.experts."
        for what, mult in (("gate_up_proj", 2), ("down_proj", 1)):
            per = [stats[capture.expert_key(p + what, e)] for e in range(4)]
            want = mult * hessian_blocks(torch.cat(seen[("up" if mult == 2 else "down", i)]))
            got = sum(s.hessian for s in per if s.hessian is not None)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
            assert sum(s.tokens for s in per) == 2 * tokens
        assert per[0].hessian is None or per[0].hessian.shape == (32 // 16, 16, 16)


def test_encode_sentences_mean_pooling(bert_dir, bert, tok):
    texts = TEXTS[:5]
    emb = capture.encode_sentences(bert_dir, texts, "cpu", batch_size=4)
    model = bert
    with torch.no_grad():
        ref = torch.stack([model(**tok([t], return_tensors="pt")).last_hidden_state[0].mean(0)
                           for t in texts])
    ref = torch.nn.functional.normalize(ref, dim=1)
    assert emb.shape == (5, 64)
    torch.testing.assert_close(emb, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------
# Text loaders
# --------------------------------------------------------------------------------------


def test_default_texts():
    t = default_texts()
    assert 250 <= len(t) == len(set(t)) and all(isinstance(s, str) and s for s in t)
    assert any("def " in s for s in t) and any(any(c.isdigit() for c in s) for s in t)
    assert default_texts(7) == t[:7] and default_texts() == t
    with pytest.raises(ValueError, match=r"n must be in \[1, "):
        default_texts(0)


def test_load_texts_good(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n  two  \n")
    (tmp_path / "b.json").write_text(json.dumps(["x", "y"]))
    (tmp_path / "c.json").write_text(json.dumps([[1, 2], [3]]))
    (tmp_path / "d.jsonl").write_text('{"text": "p"}\n\n{"text": "q", "id": 2}\n')
    assert load_texts(tmp_path / "a.txt") == ["one", "two"]
    assert load_texts(tmp_path / "b.json") == ["x", "y"]
    assert load_texts(tmp_path / "c.json") == [[1, 2], [3]]
    assert load_texts(tmp_path / "d.jsonl") == ["p", "q"]


@pytest.mark.parametrize("name,content,msg", [
    ("e.txt", "\n  \n", "holds no calibration text"),
    ("e.json", "[]", "holds no calibration text"),
    ("e.json", "{\"a\": 1}", "expected a JSON list of strings or of token-id lists"),
    ("e.json", "[1, \"a\"]", "expected a JSON list of strings or of token-id lists"),
    ("e.json", "[", "not valid JSON"),
    ("e.jsonl", "{\"text\": \"a\"}\n{\"txt\": \"b\"}", "line 2 has no string \"text\" field"),
    ("e.jsonl", "nope", "line 1 is not valid JSON"),
    ("e.csv", "a,b", "unknown kind of calibration file '.csv'"),
    ("e.txt", b"\xff\xfe\xfa", "cannot read it as UTF-8 text"),
])
def test_load_texts_errors(tmp_path, name, content, msg):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as e:
        load_texts(p)
    assert str(p) in str(e.value) and msg in str(e.value) and "\n" not in str(e.value)


def test_load_texts_missing(tmp_path):
    with pytest.raises(ValueError, match="no such calibration file"):
        load_texts(tmp_path / "nothing.txt")


# --------------------------------------------------------------------------------------
# GPU: a larger random decoder (run by the lead on an H200)
# --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_larger_decoder_one_block_at_a_time(tmp_path, tok):
    """hidden 2048, 8 layers, bf16, 64 built-in texts: prints the time and the peak GPU
    memory, which must stay far below the model's size (one block at a time)."""
    L = int(os.environ.get("CALIB_GPU_LAYERS", "8"))
    cfg = tf.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=L,
                         num_attention_heads=16, num_key_value_heads=8, vocab_size=len(tok),
                         max_position_embeddings=1024, architectures=["LlamaForCausalLM"])
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).to(torch.bfloat16)
    block_bytes = sum(p.numel() * 2 for p in model.model.layers[0].parameters())
    other_bytes = sum(p.numel() * 2 for n, p in model.named_parameters() if ".layers." not in n)
    total_bytes = sum(p.numel() * 2 for p in model.parameters())
    folder = _save(model, tok, tmp_path / "big")
    del model
    texts = default_texts(64)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    stats = capture.capture_linear_stats(folder, texts, device="cuda", batch_size=16)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() - base
    print(f"\ncalibration: {L} layers x hidden 2048 (bf16, {total_bytes / 2**20:.0f} MiB), "
          f"{stats.texts} texts, {stats.tokens} tokens: {dt:.2f} s (load included), peak GPU "
          f"memory {peak / 2**20:.0f} MiB (one block {block_bytes / 2**20:.0f} MiB, "
          f"embeddings/head {other_bytes / 2**20:.0f} MiB)")
    assert len(stats) == 7 * L + 1
    assert all(s.hessian is not None and torch.isfinite(s.hessian).all() for s in stats.values())
    assert peak < other_bytes + 2 * block_bytes + 256 * 2**20 < total_bytes
