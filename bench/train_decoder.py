#!/usr/bin/env python3
"""Training speed of the concept decoder in PyTorch (CPU, eager fp32): the peer half of
`bench/train_decoder.sh`, whose Rust half is `crates/decoder/examples/bench_decoder.rs`.

    target/bench-venv/bin/python bench/train_decoder.py [--layers 4] [--dim 384] [--heads 6]
        [--ffn 1536] [--vocab 8192] [--max-seq-len 128] [--batch 64] [--seq 32] [--min-len 28]
        [--lr 1e-3] [--clip 1] [--weight-decay 0.01] [--label-smoothing 0.1]
        [--warmup 2] [--steps 5] [--seed 0] [--threads N] [--attention sdpa|naive]
        [--adamw default|foreach|fused] [--compile]
    target/bench-venv/bin/python bench/train_decoder.py --check DIR   # parity with `bench_decoder --dump-weights DIR`
    python3 bench/train_decoder.py --report LCM.jsonl PYTORCH.jsonl   # table; needs no torch

The model is a port of `lcm_sonar::model::SonarDecoder` as `lcm train-decoder` trains it (same
parameter names, shapes and count): fairseq1 frontend sqrt(d)*E[ids] + sinusoidal positions
(offset pad_idx + 1, sines then cosines), pre-LayerNorm layers (eps 1e-5, with biases) of causal
self-attention, cross-attention to ONE memory key (the concept, so softmax = 1 and the output is
W_o(W_v c + b_v) + b_o; its q/k projections and layer norm exist but get no gradient, as in
lcm) and a ReLU FFN, a final LayerNorm and the output projection tied to the embedding. The loss
is label-smoothed cross-entropy over the non-pad targets (F.cross_entropy with ignore_index=0,
label_smoothing), one training step is forward + loss + loss.item() + backward +
clip_grad_norm_ + torch.optim.AdamW (0.9, 0.95, eps 1e-5, weight decay on matrices only), the
sequence of the trainer's step. The batch follows the same rule as the Rust side: row i's
decoder input is `seq - round(i * (seq - min_len) / (batch - 1))` tokens ([</s>] + pieces),
right-padded with 0, its target the pieces then </s>; concepts are random unit vectors.

Prints one JSON object per measurement on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
    from torch import nn

    Module = nn.Module
except ImportError as _e:  # --report works without torch; everything else stops in main().
    torch = None
    _TORCH_IMPORT_ERROR = _e
    Module = object

PAD, EOS = 0, 3  # SONAR's special ids (lcm_sonar::SpecialIds::SONAR); the prompt is [</s>]
SPECIAL_IDS = 4
LAYER_NORM_EPS = 1e-5
MASK_NEG = -1e9  # finite, as crates/sonar's MASK_NEG


# ---------------------------------------------------------------- model (crates/sonar/src/model.rs)


def sinusoidal_positions(max_seq_len: int, dim: int, pad_idx: int):
    """fairseq2's table, computed as model.rs does: frequencies and step * frequency in float32,
    sin/cos of that float32 angle in float64, rounded to float32. Row p uses step p + pad_idx + 1."""
    num_sin = dim // 2
    denom = float(max(num_sin, 2) - 1)
    neg_log = torch.tensor(-math.log(10000.0), dtype=torch.float32)
    freqs = torch.exp(torch.arange(num_sin, dtype=torch.float32) * neg_log / denom)
    steps = torch.arange(max_seq_len, dtype=torch.float32)[:, None] + float(pad_idx + 1)
    angles = (steps * freqs[None, :]).double()
    table = torch.zeros(max_seq_len, dim, dtype=torch.float64)
    table[:, :num_sin] = torch.sin(angles)
    table[:, num_sin:2 * num_sin] = torch.cos(angles)[:, :dim - num_sin]
    return table.float()


class Attention(Module):
    def __init__(self, d: int, heads: int, attention: str):
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.output_proj = nn.Linear(d, d)
        self.heads, self.head_dim, self.attention = heads, d // heads, attention

    def _split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def causal(self, x):
        b, t, d = x.shape
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-1, -2)
            scores = scores + causal_mask(t, x.device)
            out = torch.softmax(scores, -1) @ v
        return self.output_proj(out.transpose(1, 2).reshape(b, t, d))

    def single_key(self, memory):
        """Attention over one key: softmax is 1, so `W_o(W_v m + b_v) + b_o`: [B, D] -> [B, 1, D]."""
        return self.output_proj(self.v_proj(memory)).unsqueeze(1)


_MASKS: dict = {}


def causal_mask(t: int, device):
    if t not in _MASKS:
        i = torch.arange(t)[:, None]
        j = torch.arange(t)[None, :]
        _MASKS[t] = torch.where(j <= i, 0.0, MASK_NEG).to(device)
    return _MASKS[t]


class FeedForward(Module):
    def __init__(self, d: int, inner: int):
        super().__init__()
        self.inner_proj = nn.Linear(d, inner)
        self.output_proj = nn.Linear(inner, d)

    def forward(self, x):
        return self.output_proj(F.relu(self.inner_proj(x)))


class DecoderLayer(Module):
    def __init__(self, d, heads, ffn, attention):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.self_attn = Attention(d, heads, attention)
        # Parameters of every SONAR checkpoint that cannot change a softmax over one key: kept
        # (same names, shapes and count as lcm), never used, so they get no gradient (as in lcm).
        self.encoder_decoder_attn_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.encoder_decoder_attn = Attention(d, heads, attention)
        self.ffn_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.ffn = FeedForward(d, ffn)

    def forward(self, x, cross):
        x = x + self.self_attn.causal(self.self_attn_layer_norm(x))
        x = x + cross
        return x + self.ffn(self.ffn_layer_norm(x))


class Decoder(Module):
    """Parameter names as the fairseq2 keys lcm saves: `decoder_frontend.embed.weight`,
    `decoder.layers.N.…`, `decoder.layer_norm.*`."""

    def __init__(self, c: dict, attention: str):
        super().__init__()
        d = c["dim"]
        self.decoder_frontend = nn.Module()
        self.decoder_frontend.embed = nn.Embedding(c["vocab"], d)
        self.decoder = nn.Module()
        self.decoder.layers = nn.ModuleList(
            DecoderLayer(d, c["heads"], c["ffn"], attention) for _ in range(c["layers"]))
        self.decoder.layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.register_buffer("positions", sinusoidal_positions(c["max_seq_len"], d, PAD), persistent=False)
        self.scale = math.sqrt(d)

    def forward(self, conditioning, ids):
        """conditioning [N, D], ids [N, T] -> logits [N, T, V]."""
        t = ids.shape[1]
        embed = self.decoder_frontend.embed.weight
        x = F.embedding(ids, embed) * self.scale + self.positions[:t]
        for layer in self.decoder.layers:
            x = layer(x, layer.encoder_decoder_attn.single_key(conditioning))
        return self.decoder.layer_norm(x) @ embed.t()


def token_loss(logits, target, smoothing: float):
    """batch.rs's token_loss: mean over non-pad targets of (1 - e) * nll + e * mean_v(-log p_v)."""
    v = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, v), target.reshape(-1), ignore_index=PAD, label_smoothing=smoothing)


def token_loss_explicit(logits, target, smoothing: float):
    """The same objective written as batch.rs writes it (index_select rows, log_softmax, gather):
    used by --check to show F.cross_entropy computes exactly that; also returns the summed nll."""
    v = logits.shape[-1]
    flat = target.reshape(-1)
    keep = (flat != PAD).nonzero().squeeze(1)
    lsm = torch.log_softmax(logits.reshape(-1, v).index_select(0, keep), -1)
    nll = -lsm.gather(1, flat[keep].unsqueeze(1)).squeeze(1)
    obj = (1 - smoothing) * nll + smoothing * (-lsm.mean(1)) if smoothing > 0 else nll
    return obj.mean(), nll.sum(), keep.numel()


# ---------------------------------------------------------------- training (crates/decoder/src/train.rs)


def config(args) -> dict:
    return dict(layers=args.layers, dim=args.dim, heads=args.heads, ffn=args.ffn, vocab=args.vocab,
                max_seq_len=args.max_seq_len)


def init_weights(model, seed: int):
    """train.rs's init_weights: matrices and the embedding N(0, 1/fan_in), norm gains 1, biases 0
    (same distribution as lcm, not the same numbers)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def decays(name: str, p) -> bool:
    """lcm_train::default_decay_filter: matrices decay; biases and norm gains do not."""
    last = name.rsplit(".", 1)[-1]
    is_bias = last == "bias" or last.endswith("_bias")
    is_norm = any("norm" in s or s.startswith("ln") for s in name.split("."))
    return p.dim() >= 2 and not is_bias and not is_norm


def make_adamw(model, args):
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": args.weight_decay},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    kw = {"foreach": True} if args.adamw == "foreach" else {"fused": True} if args.adamw == "fused" else {}
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-5, **kw)


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def min_len(args) -> int:
    return args.min_len if args.min_len is not None else args.seq - args.seq // 8


def row_len(args, i: int) -> int:
    """bench_decoder.rs's Args::row_len: evenly spread from seq (row 0) to min_len (last row)."""
    if args.batch == 1:
        return args.seq
    span = args.seq - min_len(args)
    return args.seq - (i * span + (args.batch - 1) // 2) // (args.batch - 1)


def random_data(args):
    gen = torch.Generator().manual_seed(args.seed + 1)
    pieces = [torch.randint(SPECIAL_IDS, args.vocab, (row_len(args, i) - 1,), generator=gen).tolist()
              for i in range(args.batch)]
    vectors = torch.randn(args.batch, args.dim, generator=gen)
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return pieces, vectors


def make_batch(pieces, vectors):
    """batch.rs's make_batch: input [</s>, pieces...], target [pieces..., </s>], right-padded with 0."""
    t = max(len(p) + 1 for p in pieces)
    n = len(pieces)
    inp = torch.zeros(n, t, dtype=torch.long)
    tgt = torch.zeros(n, t, dtype=torch.long)
    for i, p in enumerate(pieces):
        seq = [EOS] + p + [EOS]
        inp[i, :len(seq) - 1] = torch.tensor(seq[:-1])
        tgt[i, :len(seq) - 1] = torch.tensor(seq[1:])
    tokens = sum(len(p) + 1 for p in pieces)
    return vectors, inp, tgt, tokens


def time_steps(warmup: int, steps: int, label: str, step):
    times, values = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        v = step()
        dt = time.perf_counter() - t0
        values.append(v)
        phase = "warm-up" if i < warmup else "timed"
        print(f"[pytorch] {label} {phase} {i + 1}: {dt * 1e3:.1f} ms (loss {v[0]:.4f}, grad norm {v[1]:.3f})",
              file=sys.stderr)
        if i >= warmup:
            times.append(dt)
    return times, values


def bench(args):
    c = config(args)
    model = Decoder(c, args.attention)
    init_weights(model, args.seed)
    opt = make_adamw(model, args)
    params = [p for p in model.parameters()]
    pieces, vectors = random_data(args)
    loss_fn = torch.compile(token_loss_of(model)) if args.compile else token_loss_of(model)
    tokens = [0]

    def step():
        opt.zero_grad(set_to_none=True)
        cond, inp, tgt, tokens[0] = make_batch(pieces, vectors)
        loss = loss_fn(cond, inp, tgt, args.label_smoothing)
        value = loss.item()  # the trainer reads (and checks) the loss every step
        if not math.isfinite(value):
            raise SystemExit(f"non-finite loss {value}")
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        return value, float(norm)

    print(f"[pytorch] torch {torch.__version__}, {torch.get_num_threads()} threads, decoder {args.layers} layers, "
          f"d {args.dim}, {num_parameters(model):,} parameters; batch {args.batch} x {args.seq} "
          f"(inputs {min_len(args)}..={args.seq}); attention {args.attention}, AdamW {args.adamw}, "
          f"compile {args.compile}", file=sys.stderr)
    times, values = time_steps(args.warmup, args.steps, "train", step)
    med = statistics.median(times)
    return {"framework": "pytorch", "task": "train", "model": "sonar_decoder", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "attention": args.attention, "adamw": args.adamw,
            "compile": args.compile, "params": num_parameters(model), **c, "batch": args.batch, "seq": args.seq,
            "min_len": min_len(args), "tokens_per_step": tokens[0], "padded_positions": args.batch * args.seq,
            "warmup": args.warmup, "steps": len(times), "step_s": times, "median_step_s": med,
            "steps_per_s": 1 / med, "tokens_per_s": tokens[0] / med, "first_loss": values[0][0],
            "last_loss": values[-1][0], "first_grad_norm": values[0][1]}


def token_loss_of(model):
    def f(cond, inp, tgt, smoothing):
        return token_loss(model(cond, inp), tgt, smoothing)
    return f


# ---------------------------------------------------------------- parity with the Rust model


def check(args) -> int:
    from pathlib import Path

    from safetensors.torch import load_file

    d = Path(args.check)
    probe = load_file(d / "probe.safetensors")
    weights = load_file(d / "weights.safetensors")
    failures = []

    def compare(label, ours, theirs, rtol=1e-4, quiet=False, atol=0.0):
        ours, theirs = ours.double(), theirs.double()
        err = (ours - theirs).abs().max().item()
        scale = theirs.abs().max().item()
        ok = err <= rtol * scale + atol
        if not ok or not quiet:
            print(f"  {label:<52} max|diff| {err:.2e} (max|lcm| {scale:.3g}, rtol {rtol:g}"
                  f"{f', atol {atol:.1e}' if atol else ''}) {'ok' if ok else 'MISMATCH'}", file=sys.stderr)
        if not ok:
            failures.append(label)
        return err / scale if scale > 0 else 0.0

    def scalar(key):
        return float(probe[key].item())

    embed = weights["decoder_frontend.embed.weight"]
    layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("decoder.layers."))
    c = dict(layers=layers, dim=embed.shape[1], heads=int(scalar("config.heads")),
             ffn=int(scalar("config.ffn")), vocab=embed.shape[0], max_seq_len=int(scalar("config.max_seq_len")))
    smoothing, lr, clip = scalar("config.label_smoothing"), scalar("config.lr"), scalar("config.clip")
    cond, inp, tgt = probe["conditioning"], probe["input"].long(), probe["target"].long()
    print(f"[pytorch] parity: decoder {c}, batch {tuple(inp.shape)}, {int(scalar('count'))} target tokens",
          file=sys.stderr)
    for attention in ("sdpa", "naive"):
        print(f"[pytorch] attention {attention}", file=sys.stderr)
        m = Decoder(c, attention)
        # strict: every parameter on both sides, same names and shapes, or this raises.
        m.load_state_dict(weights, strict=True)
        if num_parameters(m) != sum(w.numel() for w in weights.values()):
            failures.append("parameter count")
        # f32 frequencies times steps up to max_seq_len: a 1-ulp difference of exp() grows a little.
        compare("position table", m.positions, probe["positions"], rtol=1e-5)
        logits = m(cond, inp)
        shown = probe["logits_head"].shape[0]
        compare(f"logits (first {shown} rows)", logits[:shown].detach(), probe["logits_head"])
        loss = token_loss(logits, tgt, smoothing)
        explicit, nll_sum, count = token_loss_explicit(logits, tgt, smoothing)
        if count != int(scalar("count")):
            failures.append(f"target count {count} vs {int(scalar('count'))}")
        compare("loss (F.cross_entropy)", loss.detach().reshape(1), probe["loss"])
        compare("loss (batch.rs's formula)", explicit.detach().reshape(1), probe["loss"])
        compare("summed nll", nll_sum.detach().reshape(1), probe["nll_sum"])
        loss.backward()
        named = dict(m.named_parameters())
        with_grad = {n for n, p in named.items() if p.grad is not None}
        rust_grad = {k[len("grad."):] for k in probe if k.startswith("grad.")}
        if with_grad != rust_grad:
            failures.append("parameters with a gradient")
            print(f"  MISMATCH parameters with a gradient: only lcm {sorted(rust_grad - with_grad)}, "
                  f"only PyTorch {sorted(with_grad - rust_grad)}", file=sys.stderr)
        # Per parameter: the gradient's norm to 2e-4, and the whole gradient to 2e-3 in relative
        # Frobenius norm |g_pt - g_lcm| / |g_lcm|. Not entry by entry: an FFN unit whose ReLU input
        # is within float32 rounding of 0 (|x| ~ 1e-7 happens at batch 64) switches on one side and
        # off on the other, which moves that unit's row, and through backprop earlier layers', by
        # up to ~1e-3 of the tensor's largest entry; an error in the port moves gradients by O(1).
        # The self-attention key biases are skipped there: their gradient is exactly zero in exact
        # arithmetic (a shift of every key score by q.b_k leaves the softmax unchanged), so both
        # sides hold only rounding noise (~1e-9), checked against a floor of 1e-6 of the largest
        # gradient entry.
        floor = 1e-6 * max(probe[f"grad.{n}"].abs().max().item() for n in rust_grad)
        worst_norm, worst_fro, worst_entry, before = ("", 0.0), ("", 0.0), ("", 0.0), len(failures)
        for n in sorted(with_grad & rust_grad):
            if n.endswith("self_attn.k_proj.bias"):
                continue
            ours, theirs = named[n].grad.double(), probe[f"grad.{n}"].double()
            ref = theirs.norm().item()
            rel_norm = abs(ours.norm().item() - ref) / ref
            rel_fro = (ours - theirs).norm().item() / ref
            rel_entry = (ours - theirs).abs().max().item() / theirs.abs().max().item()
            worst_norm = max(worst_norm, (n, rel_norm), key=lambda x: x[1])
            worst_fro = max(worst_fro, (n, rel_fro), key=lambda x: x[1])
            worst_entry = max(worst_entry, (n, rel_entry), key=lambda x: x[1])
            if rel_norm > 2e-4 or rel_fro > 2e-3:
                print(f"  grad {n}: norm differs by {rel_norm:.1e}, |diff|/|lcm| {rel_fro:.1e} MISMATCH",
                      file=sys.stderr)
                failures.append(f"grad {n}")
        print(f"  gradients of {len(with_grad & rust_grad)} parameters ({len(named) - len(with_grad)} get none, "
              f"as in lcm){', all ok' if len(failures) == before else ''}:\n"
              f"    worst norm difference {worst_norm[1]:.1e} ({worst_norm[0]})\n"
              f"    worst |diff|/|lcm|    {worst_fro[1]:.1e} ({worst_fro[0]})\n"
              f"    worst max|diff|/max|lcm| entry {worst_entry[1]:.1e} ({worst_entry[0]}; not checked)",
              file=sys.stderr)
        for n in sorted(x for x in with_grad & rust_grad if x.endswith("self_attn.k_proj.bias")):
            compare(f"grad {n} (0 in exact arithmetic)", named[n].grad, probe[f"grad.{n}"], atol=floor)
        params = list(m.parameters())
        exact = torch.stack([(p.grad.double() ** 2).sum() for p in params if p.grad is not None]).sum().sqrt()
        compare("grad norm before clipping (f64 sum)", exact.reshape(1), probe["grad_norm"])
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        # clip_grad_norm_ reduces each gradient in float32 (lcm sums squares in float64): on the
        # 3M-entry embedding gradient that alone is off by a few 1e-4, so a looser bound here.
        compare("grad norm of clip_grad_norm_ (f32 sums)", norm.reshape(1), probe["grad_norm"], rtol=2e-3)
        args.lr, args.weight_decay = lr, scalar("config.weight_decay")
        opt = make_adamw(m, args)
        opt.step()
        with torch.no_grad():
            after = token_loss(m(cond, inp), tgt, smoothing)
        compare("loss after one clipped AdamW step", after.reshape(1), probe["loss_after_step"])
    if failures:
        print(f"ERROR: the PyTorch port differs from lcm's decoder: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("[pytorch] parity ok: the PyTorch port computes the same logits, loss, gradients and AdamW step "
          "as lcm's SonarDecoder trainer", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- report (no torch needed)


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def lcm_label(a):
    """`lcm (fused, 2 replicas)` / `lcm (candle)`: the engine and, for the fused one, its replicas."""
    replicas = a.get("replicas")
    return f"lcm ({a['engine']}, {replicas} replicas)" if replicas else f"lcm ({a['engine']})"


def report(lcm_path, torch_path) -> int:
    lcm, pt = load(lcm_path), load(torch_path)
    bad = []
    if not lcm or not pt:
        print("ERROR: a side measured nothing", file=sys.stderr)
        return 1
    b = pt[0]
    for a in lcm:
        for key in ("params", "batch", "seq", "tokens_per_step", "vocab", "layers", "dim", "ffn"):
            if a[key] != b[key]:
                bad.append(f"{lcm_label(a)} {key} = {a[key]}, PyTorch {b[key]}")
    a0 = lcm[0]
    print(f"PyTorch {b['torch']}, eager fp32, {b['threads']} threads (lcm: {a0['threads']}), attention "
          f"{b['attention']}, AdamW {b['adamw']}, torch.compile {'on' if b['compile'] else 'off'}\n")
    print(f"Decoder {a0['layers']} layers, d {a0['dim']}, {a0['heads']} heads, FFN {a0['ffn']}, vocab {a0['vocab']}; "
          f"batch {a0['batch']} sentences padded to {a0['seq']} tokens (inputs {a0['min_len']}..{a0['seq']}), "
          f"{a0['tokens_per_step']:,} target tokens/step; median of {a0['steps']} steps after {a0['warmup']} "
          "warm-up; peak RSS of each side's own process\n")

    def rss(r):
        return f"{r['peak_rss_mb']:,.0f}" if r.get("peak_rss_mb") is not None else "-"

    flops = a0.get("flops_per_step")
    print("| framework | parameters | steps/s | tokens/s | lcm / PyTorch | GFLOP/s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for a in lcm:
        ratio = a["tokens_per_s"] / b["tokens_per_s"]
        rate = f"{flops * a['steps_per_s'] / 1e9:.0f}" if flops else "-"
        print(f"| {lcm_label(a)} | {a['params']:,} | {a['steps_per_s']:.3f} | {a['tokens_per_s']:,.0f} | "
              f"**{ratio:.2f}x** | {rate} | {rss(a)} |")
    rate = f"{flops * b['steps_per_s'] / 1e9:.0f}" if flops else "-"
    print(f"| PyTorch | {b['params']:,} | {b['steps_per_s']:.3f} | {b['tokens_per_s']:,.0f} | 1.00x | {rate} "
          f"| {rss(b)} |")
    print("\nGFLOP/s: the step's nominal matrix-product FLOPs (forward, input and weight gradients over all "
          "padded positions; attention over the full square; the tied output projection) over its time.")
    for a in lcm:
        print(f"sanity: first-step loss {lcm_label(a)} {a['first_loss']:.3f}, PyTorch {b['first_loss']:.3f} "
              "(same init policy and data distribution, not the same numbers)")
    for msg in bad:
        print(f"ERROR: {msg}", file=sys.stderr)
    return 1 if bad else 0


# ---------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", nargs=2, metavar=("LCM_JSONL", "PYTORCH_JSONL"),
                   help="print the comparison table of two result files and exit (no torch needed)")
    p.add_argument("--check", metavar="DIR",
                   help="replay the weights and probe `bench_decoder --dump-weights DIR` wrote and compare")
    # Defaults: DecoderTrainConfig::default() (and `lcm train-decoder`'s flags), dim = MiniLM's 384.
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--ffn", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=32, help="padded width of the decoder input (longest row)")
    p.add_argument("--min-len", type=int, default=None, help="shortest decoder input (default: seq - seq/8)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", default=None, help="lcm's engine choice; accepted so both sides take the same flags (no effect here)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "naive"],
                   help="F.scaled_dot_product_attention(is_causal=True) (as fairseq2) or matmul + mask + softmax")
    p.add_argument("--adamw", default="default", choices=["default", "foreach", "fused"],
                   help="torch.optim.AdamW implementation (default: PyTorch's choice for CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the forward + loss (off by default; compilation lands in the warm-up steps)")
    args = p.parse_args(argv)
    for flag in ("layers", "dim", "heads", "ffn", "batch", "steps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag} must be positive")
    if not 2 <= args.seq <= args.max_seq_len:
        p.error(f"--seq must be in 2..={args.max_seq_len} (--max-seq-len)")
    if not 2 <= min_len(args) <= args.seq:
        p.error("--min-len must be in 2..=--seq")
    if args.vocab <= SPECIAL_IDS:
        p.error(f"--vocab must exceed the {SPECIAL_IDS} special ids")
    if args.dim % args.heads:
        p.error(f"--dim {args.dim} is not divisible by {args.heads} heads")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(*args.report)
    if torch is None:
        print(f"error: PyTorch is not importable from {sys.executable} ({_TORCH_IMPORT_ERROR}).\n"
              "Use the venv that has it, e.g. target/bench-venv/bin/python bench/train_decoder.py, or "
              "`pip install torch` into this interpreter's environment.", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.check:
        return check(args)
    torch.manual_seed(args.seed)
    r = bench(args)
    # Peak resident memory of this process so far (Linux reports KiB).
    import resource
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
