#!/usr/bin/env python3
"""Training and generation speed of the Base-LCM and Two-Tower LCM in PyTorch (CPU, eager fp32):
the peer half of `bench/train_lcm.sh`, whose Rust half is `crates/workflows/examples/bench_lcm.rs`.

    target/bench-venv/bin/python bench/train_lcm.py [--models base,two_tower] [--preset small|tiny]
        [--batch 32] [--seq 128] [--input-dim 384] [--warmup 2] [--steps 5]
        [--gen-context 16] [--gen-steps 40] [--gen-warmup 2] [--gen-repeat 10]
        [--threads N] [--attention sdpa|naive] [--adamw default|foreach|fused] [--compile]
    python3 bench/train_lcm.py --report LCM.jsonl PYTORCH.jsonl     # table; needs no torch
    target/bench-venv/bin/python bench/train_lcm.py --check DIR [--preset P] # parity with `bench_lcm --dump DIR`

The models are ports of `crates/model` (same parameter names, shapes and counts; the `small`
presets are 3,618,688 and 7,271,040 parameters): RMSNorm without bias, interleaved-pair RoPE
(fairseq2's complex-number form), SwiGLU with biases and inner width round_up(int(8d/3), 256),
pre-norm causal decoder with final RMSNorm; the Two-Tower denoiser with a DiT timestep MLP,
AdaLN Linear(d, 9d) (zero-initialised) and [identity self-attention -> cross-attention to
[0, c_1..c_N] under the shifted-causal mask -> SwiGLU] layers. A training step is forward +
summed squared error / concepts + backward + clip_grad_norm_ + AdamW (0.9, 0.95, eps 1e-5,
weight decay 0.1 on matrices only), the same sequence as `lcm_workflows::train`. Generation is
one concept after a prefilled (KV-cached) prompt; for the Two-Tower model S guided DDIM steps
(cond + uncond denoiser call each, guidance 3.0, rescale 0.7, epsilon scaling 1.00045, initial
noise 0.6) and the contextualizer step that feeds the result back.

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

MASK_NEG = -1e9  # finite, as crates/model's MASK_NEG: a fully masked row stays finite
CFG_DROPOUT = 0.15


# ---------------------------------------------------------------- configs (crates/model/src/presets.rs)


def swiglu_inner_dim(d: int, multiple: int = 256) -> int:
    raw = 8 * d // 3
    return -(-raw // multiple) * multiple


def base_config(preset: str, input_dim: int | None) -> dict:
    if preset == "small":
        c = dict(input_dim=384, d=256, heads=4, layers=4, ffn=swiglu_inner_dim(256), max_seq=512)
    elif preset == "tiny":
        c = dict(input_dim=16, d=32, heads=4, layers=2, ffn=64, max_seq=64)
    else:
        raise SystemExit(f"unknown preset {preset!r} (small, tiny)")
    if input_dim:
        c["input_dim"] = input_dim
    return c


def two_tower_config(preset: str, input_dim: int | None) -> dict:
    if preset == "small":
        c = dict(input_dim=384, d=256, heads=4, ctx_layers=2, den_layers=3, ffn=swiglu_inner_dim(256),
                 max_seq=512, freq_dim=256)
    elif preset == "tiny":
        c = dict(input_dim=16, d=32, heads=4, ctx_layers=2, den_layers=2, ffn=64, max_seq=64, freq_dim=16)
    else:
        raise SystemExit(f"unknown preset {preset!r} (small, tiny)")
    if input_dim:
        c["input_dim"] = input_dim
    return c


# ---------------------------------------------------------------- blocks (crates/model/src/blocks)


class RMSNorm(Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        # fairseq2's formula (the LCM reference's norm), not a fused kernel.
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Rope:
    """Interleaved-pair RoPE: pair i = (x[2i], x[2i+1]) rotated by p * theta^(-2i/Dh)."""

    def __init__(self, head_dim: int, max_pos: int, theta: float = 1e4):
        half = head_dim // 2
        freqs = theta ** (-(torch.arange(half, dtype=torch.float64) * 2) / head_dim)
        angles = torch.arange(max_pos, dtype=torch.float64)[:, None] * freqs[None, :]
        # complex64 [max_pos, Dh/2]; angles in f64 as in crates/model/src/blocks/rope.rs.
        self.cis = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)

    def apply(self, x, offset: int):
        b, h, t, dh = x.shape
        xc = torch.view_as_complex(x.float().reshape(b, h, t, dh // 2, 2))
        return torch.view_as_real(xc * self.cis[offset:offset + t]).flatten(-2)


class KvCache:
    def __init__(self):
        self.k = None
        self.v = None

    def copy(self) -> "KvCache":
        c = KvCache()
        c.k, c.v = self.k, self.v  # tensors are never modified in place, only replaced
        return c

    def __len__(self):
        return 0 if self.k is None else self.k.shape[2]


class MultiHeadAttention(Module):
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

    def forward(self, xq, xkv, mask=None, causal=False, rope=None, cache=None):
        """`mask`: additive [Tq, Tk] or None; `causal`: lower-triangular with the queries at the
        end of the key sequence (Rust's AttentionMask::Causal)."""
        b, tq, d = xq.shape
        q, k, v = self._split(self.q_proj(xq)), self._split(self.k_proj(xkv)), self._split(self.v_proj(xkv))
        offset = len(cache) if cache is not None else 0
        if rope is not None:
            q, k = rope.apply(q, offset), rope.apply(k, offset)
        if cache is not None:
            if cache.k is not None:
                k, v = torch.cat([cache.k, k], 2), torch.cat([cache.v, v], 2)
            cache.k, cache.v = k, v
        tk = k.shape[2]
        is_causal = False
        if causal and tq > 1:
            if tq == tk and self.attention == "sdpa":
                is_causal = True  # SDPA's own causal path, no mask tensor
            else:
                mask = causal_mask(tq, tk, xq.device)
        # One query after a cached prefix sees every key: no mask at all.
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        else:
            if is_causal:
                mask = causal_mask(tq, tk, xq.device)
            scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
            if mask is not None:
                scores = scores + mask
            out = torch.softmax(scores, -1) @ v
        return self.output_proj(out.transpose(1, 2).reshape(b, tq, d))


_MASKS: dict = {}


def causal_mask(tq: int, tk: int, device):
    key = ("causal", tq, tk)
    if key not in _MASKS:
        i = torch.arange(tq)[:, None] + (tk - tq)
        j = torch.arange(tk)[None, :]
        _MASKS[key] = torch.where(j <= i, 0.0, MASK_NEG).to(device)
    return _MASKS[key]


class SwiGLU(Module):
    def __init__(self, d: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, inner)
        self.inner_proj = nn.Linear(d, inner)
        self.output_proj = nn.Linear(inner, d)

    def forward(self, x):
        return self.output_proj(F.silu(self.gate_proj(x)) * self.inner_proj(x))


class DecoderLayer(Module):
    def __init__(self, d, heads, ffn, attention):
        super().__init__()
        self.self_attn_layer_norm = RMSNorm(d)
        self.self_attn = MultiHeadAttention(d, heads, attention)
        self.ffn_layer_norm = RMSNorm(d)
        self.ffn = SwiGLU(d, ffn)

    def forward(self, x, rope, cache=None):
        h = self.self_attn_layer_norm(x)
        x = x + self.self_attn(h, h, causal=True, rope=rope, cache=cache)
        return x + self.ffn(self.ffn_layer_norm(x))


class Decoder(Module):
    def __init__(self, d, heads, layers, ffn, max_seq, attention):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ffn, attention) for _ in range(layers))
        self.layer_norm = RMSNorm(d)
        self.rope = Rope(d // heads, max_seq)

    def forward(self, x, caches=None):
        for i, layer in enumerate(self.layers):
            x = layer(x, self.rope, None if caches is None else caches[i])
        return self.layer_norm(x)


def summed_squared_error(pred, target, mask):
    """(sum over real positions of ||pred - target||^2, number of real positions)."""
    per = (pred - target).pow(2).sum(-1)
    return (per * mask).sum(), mask.sum()


# ---------------------------------------------------------------- Base-LCM (crates/model/src/base_lcm.rs)


class BaseLcm(Module):
    def __init__(self, c: dict, attention: str):
        super().__init__()
        self.c = c
        self.pre_linear = nn.Linear(c["input_dim"], c["d"])
        self.lcm = Decoder(c["d"], c["heads"], c["layers"], c["ffn"], c["max_seq"], attention)
        self.postnet = nn.Linear(c["d"], c["input_dim"])

    def new_cache(self):
        return [KvCache() for _ in range(self.c["layers"])]

    def forward(self, x, caches=None):
        return self.postnet(self.lcm(self.pre_linear(x), caches))

    def loss(self, x, mask):
        pred = self.forward(x[:, :-1])
        return summed_squared_error(pred, x[:, 1:], mask[:, 1:])


# ---------------------------------------------------------------- Two-Tower (crates/model/src/two_tower.rs)


def timestep_sinusoid(t, dim: int):
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    out = torch.cat([torch.cos(args), torch.sin(args)], -1)  # cos first, as the reference
    if dim % 2:
        out = F.pad(out, (0, 1))
    return out


class TimestepEmbedder(Module):
    def __init__(self, freq_dim, d):
        super().__init__()
        self.fc1 = nn.Linear(freq_dim, d)
        self.fc2 = nn.Linear(d, d)
        self.freq_dim = freq_dim

    def forward(self, t):
        return self.fc2(F.silu(self.fc1(timestep_sinusoid(t, self.freq_dim))))


class DenoiserLayer(Module):
    def __init__(self, d, heads, ffn, attention):
        super().__init__()
        self.self_attn_layer_norm = RMSNorm(d)
        self.self_attn = MultiHeadAttention(d, heads, attention)
        self.cross_attention_layer_norm = RMSNorm(d)
        self.cross_attention = MultiHeadAttention(d, heads, attention)
        self.ffn_layer_norm = RMSNorm(d)
        self.ffn = SwiGLU(d, ffn)
        self.modulator = nn.Linear(d, 9 * d)  # zero-initialised by init_weights

    def forward(self, x, t_emb, keys, cross_mask):
        m = self.modulator(F.silu(t_emb)).chunk(9, dim=-1)

        def modulated(x, norm, k, f):
            shift, scale, gate = m[3 * k], m[3 * k + 1], m[3 * k + 2]
            return x + gate * f(norm(x) * (1 + scale) + shift)

        # Identity self-attention: softmax over the one visible key is 1, so it is O(V(x)),
        # computed that way in Rust too (Q and K exist but get no gradient on either side).
        x = modulated(x, self.self_attn_layer_norm, 0,
                      lambda h: self.self_attn.output_proj(self.self_attn.v_proj(h)))
        x = modulated(x, self.cross_attention_layer_norm, 1,
                      lambda h: self.cross_attention(h, keys, mask=cross_mask))
        return modulated(x, self.ffn_layer_norm, 2, self.ffn)


class Denoiser(Module):
    def __init__(self, c, attention):
        super().__init__()
        d = c["d"]
        self.initial_proj = nn.Linear(c["input_dim"], d)
        self.embed_time = TimestepEmbedder(c["freq_dim"], d)
        self.layers = nn.ModuleList(DenoiserLayer(d, c["heads"], c["ffn"], attention)
                                    for _ in range(c["den_layers"]))
        self.layer_norm = RMSNorm(d)
        self.final_proj = nn.Linear(d, c["input_dim"])

    def forward(self, noisy, t, keys, cross_mask):
        b, tl, _ = noisy.shape
        t_emb = self.embed_time(t)
        t_emb = t_emb.view(1, 1, -1).expand(b, tl, -1) if t.numel() == 1 else t_emb.view(b, tl, -1)
        h = self.initial_proj(noisy)
        for layer in self.layers:
            h = layer(h, t_emb, keys, cross_mask)
        return self.final_proj(self.layer_norm(h))


class NoiseSchedule:
    """squaredcos_cap_v2 betas with zero-terminal-SNR rescaling, x0 prediction, 1000 steps
    (NoiseScheduleConfig::default), in float64 like crates/model/src/diffusion.rs."""

    def __init__(self, n: int = 1000):
        ab = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = [min(1 - ab((i + 1) / n) / ab(i / n), 0.999) for i in range(n)]
        acc, sq = 1.0, []
        for b in betas:
            acc *= 1 - b
            sq.append(math.sqrt(acc))
        first, last = sq[0], sq[-1]
        sq = [(v - last) * first / (first - last) for v in sq]
        self.alphas_cumprod = [v * v for v in sq]  # = the cumprod of the rescaled betas
        self.n = n
        ac = torch.tensor(self.alphas_cumprod, dtype=torch.float64)
        self.sqrt_ab = ac.sqrt()
        self.sqrt_1mab = (1 - ac).sqrt()


class TwoTowerLcm(Module):
    def __init__(self, c: dict, attention: str):
        super().__init__()
        self.c = c
        self.encoder_frontend = nn.Linear(c["input_dim"], c["d"])
        self.context_encoder = Decoder(c["d"], c["heads"], c["ctx_layers"], c["ffn"], c["max_seq"], attention)
        self.denoiser = Denoiser(c, attention)

    def encode(self, x, caches=None):
        return self.context_encoder(self.encoder_frontend(x), caches)

    def keys(self, context, b, like):
        zero = torch.zeros(b, 1, self.c["d"], dtype=like.dtype)
        return zero if context is None else torch.cat([zero, context], 1)

    def loss_sampled(self, x0, mask, schedule: NoiseSchedule, cfg_p: float, gen, fixed=None):
        """`fixed = (timesteps, noise, dropped rows)` replaces the random draws (parity check)."""
        b, t, dd = x0.shape
        if fixed is None:
            timesteps = torch.randint(0, schedule.n, (b * t,), generator=gen)
            noise = torch.randn(b, t, dd, generator=gen)
            n_drop = min(int(math.floor((t - 1) * cfg_p)), t - 1) if t >= 2 else 0
            dropped = torch.randperm(t - 1, generator=gen)[:n_drop] + 1
        else:
            timesteps, noise, dropped = fixed
        context = self.encode(x0)
        keys = self.keys(context, b, x0)
        sa = schedule.sqrt_ab[timesteps].float().view(b, t, 1)
        sb = schedule.sqrt_1mab[timesteps].float().view(b, t, 1)
        noisy = sa * x0 + sb * noise
        # Query i sees keys 0..=i (zero vector, c_1..c_i); dropped rows see key 0 only.
        i = torch.arange(t)[:, None]
        limit = i.clone()
        limit[dropped] = 0
        cmask = torch.where(torch.arange(t + 1)[None, :] <= limit, 0.0, MASK_NEG)
        out = self.denoiser(noisy, timesteps, keys, cmask)
        return summed_squared_error(out, x0, mask)  # x0 prediction: the target is x0

    def new_context_state(self):
        return {"caches": [KvCache() for _ in range(self.c["ctx_layers"])], "context": None}

    def extend_context(self, x, state):
        new = self.encode(x, state["caches"])
        state["context"] = new if state["context"] is None else torch.cat([state["context"], new], 1)

    def predict(self, noisy, t: int, context):
        keys = self.keys(context, noisy.shape[0], noisy)
        return self.denoiser(noisy, torch.tensor([t]), keys, None)


class DdimSampler:
    """DdimSampler with TimestepSpacing::Trailing, eta 0, guided loop as `denoise_guided`."""

    def __init__(self, schedule: NoiseSchedule, steps: int):
        n = schedule.n
        ratio = n / steps
        count = math.ceil(n / ratio)
        ts = [round(n - i * ratio) - 1 for i in range(count)]  # round() is ties-to-even
        self.timesteps = [t for t in ts if t >= 0]
        self.schedule, self.step_back = schedule, n // steps

    def denoise_guided(self, latents, model, scale=3.0, rescale=0.7, eps_scaling=1.00045, clip=100.0):
        ac, n = self.schedule.alphas_cumprod, self.schedule.n
        x0 = None
        for t in self.timesteps:
            cond, uncond = model(latents, t)
            a = ac[t]
            prev = t - self.step_back
            a_prev = ac[prev] if prev >= 0 else 1.0  # set_alpha_to_one
            sa, sb = math.sqrt(a), math.sqrt(1 - a)
            if t + 1 != n:  # guidance in epsilon space, except at the zero-SNR timestep
                eps_c = (latents - sa * cond) / sb
                eps_u = (latents - sa * uncond) / sb
                g = eps_u + scale * (eps_c - eps_u)
                factor = rescale * (eps_c.std(-1, keepdim=True) / g.std(-1, keepdim=True)) + (1 - rescale)
                eps = g * factor
                x0 = (latents - sb * eps) / sa
            else:
                x0 = cond
                eps = (latents - sa * x0) / sb
            eps = eps / eps_scaling
            latents = (math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps).clamp(-clip, clip)
        return x0


# ---------------------------------------------------------------- init, optimiser, timing


def init_weights(model, seed: int):
    """crates/train's policy: random tensors become N(0, 1/fan_in) (matrices) or N(0, 0.02^2)
    (vectors); constant ones (norm gains) stay; AdaLN modulators are zero."""
    for mod in model.modules():
        if isinstance(mod, DenoiserLayer):
            nn.init.zeros_(mod.modulator.weight)
            nn.init.zeros_(mod.modulator.bias)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            flat = p.reshape(-1)
            if flat.numel() == 0 or bool((flat == flat[0]).all()):
                continue
            std = 1 / math.sqrt(p.shape[1]) if p.dim() == 2 else 0.02
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def decays(name: str, p) -> bool:
    """lcm_train::default_decay_filter: matrices decay; biases and norm gains do not."""
    last = name.rsplit(".", 1)[-1]
    is_bias = last == "bias" or last.endswith("_bias")
    is_norm = any("norm" in s or s.startswith("ln") for s in name.split("."))
    return p.dim() >= 2 and not is_bias and not is_norm


def make_adamw(model, lr: float, impl: str):
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n, p)], "weight_decay": 0.1},
        {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0},
    ]
    kw = {"foreach": True} if impl == "foreach" else {"fused": True} if impl == "fused" else {}
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-5, **kw)


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def time_steps(warmup: int, steps: int, label: str, step):
    times, values = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        v = step()
        dt = time.perf_counter() - t0
        values.append(v)
        phase = "warm-up" if i < warmup else "timed"
        print(f"[pytorch] {label} {phase} {i + 1}: {dt * 1e3:.1f} ms (value {v:.4f})", file=sys.stderr)
        if i >= warmup:
            times.append(dt)
    return times, values


def common(args) -> dict:
    return {"framework": "pytorch", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "attention": args.attention, "adamw": args.adamw, "compile": args.compile}


def train(args, name, model, loss_fn):
    opt = make_adamw(model, args.lr, args.adamw)
    params = list(model.parameters())
    step_loss = torch.compile(loss_fn) if args.compile else loss_fn

    def step():
        opt.zero_grad(set_to_none=True)
        s, count = step_loss()
        mean = s / count.clamp(min=1.0)
        value = mean.item()  # the trainer reads the loss every step too
        if not math.isfinite(value):
            raise SystemExit(f"non-finite loss {value}")
        mean.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        return value

    times, losses = time_steps(args.warmup, args.steps, f"{name} train", step)
    med = statistics.median(times)
    concepts = args.batch * args.seq
    return {**common(args), "task": "train", "model": name, "params": num_parameters(model),
            "batch": args.batch, "seq": args.seq, "concepts_per_step": concepts, "warmup": args.warmup,
            "steps": len(times), "step_s": times, "median_step_s": med, "steps_per_s": 1 / med,
            "concepts_per_s": concepts / med, "first_loss": losses[0], "last_loss": losses[-1]}


def gen_report(args, name, model, times, extra):
    return {**common(args), "task": "generate", "model": name, "params": num_parameters(model),
            "context": args.gen_context, "warmup": args.gen_warmup, "repeat": len(times), "sentence_s": times,
            "median_ms_per_sentence": statistics.median(times) * 1e3, **extra}


def bench_base(args, emit):
    c = base_config(args.preset, args.input_dim)
    name = f"base_lcm_{args.preset}"
    model = BaseLcm(c, args.attention)
    init_weights(model, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    if args.train:
        x = torch.randn(args.batch, args.seq, c["input_dim"], generator=gen)
        mask = torch.ones(args.batch, args.seq)
        emit(train(args, name, model, lambda: model.loss(x, mask)))
    if args.generate:
        prompt = torch.randn(1, args.gen_context, c["input_dim"], generator=gen)
        with torch.no_grad():
            caches = model.new_cache()
            last = model(prompt, caches)[:, -1:]  # prefill, not timed

            def step():
                cs = [kc.copy() for kc in caches]  # same prefilled context every repetition
                return float(model(last, cs).pow(2).mean())

            times, _ = time_steps(args.gen_warmup, args.gen_repeat, f"{name} generate", step)
        emit(gen_report(args, name, model, times, {"what": "one KV-cached decoder step"}))


def bench_two_tower(args, emit):
    c = two_tower_config(args.preset, args.input_dim)
    name = f"two_tower_{args.preset}"
    model = TwoTowerLcm(c, args.attention)
    init_weights(model, args.seed)
    schedule = NoiseSchedule()
    gen = torch.Generator().manual_seed(args.seed + 1)
    if args.train:
        x = torch.randn(args.batch, args.seq, c["input_dim"], generator=gen)
        mask = torch.ones(args.batch, args.seq)
        rng = torch.Generator().manual_seed(args.seed + 2)
        emit(train(args, name, model, lambda: model.loss_sampled(x, mask, schedule, CFG_DROPOUT, rng)))
    if args.generate:
        sampler = DdimSampler(schedule, args.gen_steps)
        prompt = torch.randn(1, args.gen_context, c["input_dim"], generator=gen)
        rng = torch.Generator().manual_seed(args.seed + 3)
        calls = [0]
        with torch.no_grad():
            state = model.new_context_state()
            model.extend_context(prompt, state)  # prefill, not timed

            def step():
                randn = torch.randn(1, 1, c["input_dim"], generator=rng)
                st = {"caches": [kc.copy() for kc in state["caches"]], "context": state["context"]}
                latents = (randn * 0.6).clamp(-100.0, 100.0)
                calls[0] = 0

                def denoise(lat, t):
                    calls[0] += 2
                    return model.predict(lat, t, st["context"]), model.predict(lat, t, None)

                x0 = sampler.denoise_guided(latents, denoise)
                model.extend_context(x0, st)  # the generated concept joins the context
                return float(x0.pow(2).mean())

            times, _ = time_steps(args.gen_warmup, args.gen_repeat, f"{name} generate", step)
        emit(gen_report(args, name, model, times, {
            "what": "guided DDIM (cond + uncond per step) + contextualizer step",
            "ddim_steps": len(sampler.timesteps), "denoiser_calls": calls[0],
            "guidance_scale": 3.0, "guidance_rescale": 0.7}))


# ---------------------------------------------------------------- parity with the Rust model


def rust_to_torch_name(name: str) -> str:
    """crates/model parameter names -> this port's (the Rust side nests some Linears one level
    deeper, e.g. `postnet.fc.weight`, `denoiser.layers.0.modulator.fc.bias`)."""
    name = name.replace(".fc.", ".")
    for rust, ours in (("frontend.pre_linear.", "pre_linear."), ("encoder_frontend.pre_linear.", "encoder_frontend.")):
        if name.startswith(rust):
            name = ours + name[len(rust):]
    return name


def load_rust_weights(model, path):
    from safetensors.torch import load_file

    state = {rust_to_torch_name(k): v for k, v in load_file(path).items()}
    # strict: every parameter on both sides, same names and shapes, or this raises.
    model.load_state_dict(state, strict=True)


def check(args) -> int:
    from pathlib import Path

    from safetensors.torch import load_file

    d = Path(args.check)
    failures = []

    def compare(label, ours, theirs, rtol=1e-4):
        err = (ours - theirs).abs().max().item()
        scale = max(theirs.abs().max().item(), 1.0)
        ok = err <= rtol * scale
        print(f"  {label:<22} max|diff| {err:.2e} (scale {scale:.3g}) {'ok' if ok else 'MISMATCH'}", file=sys.stderr)
        if not ok:
            failures.append(label)

    torch.set_grad_enabled(False)
    for kind in sorted(args.model_set):
        name = f"{'base_lcm' if kind == 'base' else 'two_tower'}_{args.preset}"
        probe = load_file(d / f"{name}_probe.safetensors")
        print(f"[pytorch] parity {name}", file=sys.stderr)
        for attention in ("sdpa", "naive"):
            if kind == "base":
                m = BaseLcm(base_config(args.preset, args.input_dim), attention)
                load_rust_weights(m, d / f"{name}.safetensors")
                x = probe["x"]
                compare(f"{attention} forward", m(x), probe["forward"])
                s, _ = m.loss(x, torch.ones(x.shape[:2]))
                compare(f"{attention} loss_sum", s.reshape(1), probe["loss_sum"])
                caches = m.new_cache()
                m(x[:, :-1], caches)
                compare(f"{attention} incremental", m(x[:, -1:], caches), probe["incremental"])
                continue
            m = TwoTowerLcm(two_tower_config(args.preset, args.input_dim), attention)
            load_rust_weights(m, d / f"{name}.safetensors")
            x, noise = probe["x"], probe["noise"]
            b, t, _ = x.shape
            compare(f"{attention} context", m.encode(x), probe["context"])
            st = m.new_context_state()
            m.extend_context(x[:, :5], st)
            m.extend_context(x[:, 5:], st)
            compare(f"{attention} context (cached)", st["context"], probe["context_incremental"])
            schedule = NoiseSchedule()
            ts = probe["timesteps"].long()
            rows = probe["dropped"].long()
            # loss_sampled with the Rust side's timesteps, noise and CFG rows.
            s, _ = m.loss_sampled(x, torch.ones(b, t), schedule, 0.0, None, fixed=(ts, noise, rows))
            compare(f"{attention} loss_sum", s.reshape(1), probe["loss_sum"])
            ctx = m.encode(x)
            pt = int(probe["predict_t"].item())
            compare(f"{attention} predict cond", m.predict(noise[:, :1], pt, ctx), probe["predict_cond"])
            compare(f"{attention} predict uncond", m.predict(noise[:, :1], pt, None), probe["predict_uncond"])
            sampler = DdimSampler(schedule, int(probe["ddim_steps"].item()))
            lat = (probe["ddim_randn"] * 0.6).clamp(-100.0, 100.0)
            x0 = sampler.denoise_guided(lat, lambda la, step: (m.predict(la, step, ctx), m.predict(la, step, None)))
            # 40 chained steps amplify f32 rounding differences; a looser bound still catches
            # any mistake in the schedule, guidance or step formulas.
            compare(f"{attention} guided DDIM x0", x0, probe["ddim_x0"], rtol=1e-3)
    if failures:
        print(f"ERROR: PyTorch port differs from crates/model: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("[pytorch] parity ok: the PyTorch port computes the same functions as crates/model", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- report (no torch needed)


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def report(lcm_path, torch_path) -> int:
    # lcm rows are keyed by (task, model, engine): the Base-LCM trains on both engines.
    lcm = {(r["task"], r["model"], r.get("engine", "candle")): r for r in load(lcm_path)}
    pt = {(r["task"], r["model"]): r for r in load(torch_path)}
    bad = []
    for key in sorted(set(k[:2] for k in lcm) | set(pt)):
        a = next((r for k, r in lcm.items() if k[:2] == key), None)
        b = pt.get(key)
        if a is None or b is None:
            bad.append(f"{key}: measured by only one side")
        elif a["params"] != b["params"]:
            bad.append(f"{key[1]}: lcm has {a['params']:,} parameters, PyTorch {b['params']:,}")
    any_pt = next(iter(pt.values()), {})
    print(f"PyTorch {any_pt.get('torch', '?')}, eager fp32, {any_pt.get('threads', '?')} threads, attention "
          f"{any_pt.get('attention', '?')}, AdamW {any_pt.get('adamw', '?')}, "
          f"torch.compile {'on' if any_pt.get('compile') else 'off'}\n")
    def rss(r):
        return f"{r['peak_rss_mb']:,.0f}" if "peak_rss_mb" in r else "-"

    rows = [k for k in sorted(lcm) if k[:2] in pt and k[0] == "train"]
    if rows:
        r0 = lcm[rows[0]]
        print(f"Training: {r0['batch']} documents x {r0['seq']} concepts = {r0['concepts_per_step']:,} concepts/step, "
              f"median of {r0['steps']} steps after {r0['warmup']} warm-up; peak RSS of the process that "
              "trained (and then ran generation for) that model alone\n")
        print("| model | framework | parameters | steps/s | concepts/s | lcm / PyTorch | GFLOP/s | peak RSS MB |")
        print("|---|---|---|---|---|---|---|---|")
        for model in sorted({k[1] for k in rows}):
            b = pt[("train", model)]
            for k in [k for k in rows if k[1] == model]:
                a = lcm[k]
                ratio = a["concepts_per_s"] / b["concepts_per_s"]
                flops = a.get("flops_per_step")
                rate = f"{flops * a['steps_per_s'] / 1e9:.0f}" if flops else "-"
                print(f"| {model} | lcm ({k[2]}) | {a['params']:,} | {a['steps_per_s']:.3f} | "
                      f"{a['concepts_per_s']:,.0f} | **{ratio:.2f}x** | {rate} | {rss(a)} |")
            flops = next((lcm[k].get("flops_per_step") for k in rows if k[1] == model), None)
            rate = f"{flops * b['steps_per_s'] / 1e9:.0f}" if flops else "-"
            print(f"| {model} | PyTorch | {b['params']:,} | {b['steps_per_s']:.3f} | {b['concepts_per_s']:,.0f} "
                  f"| 1.00x | {rate} | {rss(b)} |")
        print("\nGFLOP/s: the step's nominal matrix-product FLOPs (forward, input and weight gradients; "
              "attention over the full square) over its time.\n")
    rows = [k for k in sorted(lcm) if k[:2] in pt and k[0] == "generate"]
    if rows:
        r0 = lcm[rows[0]]
        print(f"Generation: one concept after {r0['context']} prefilled prompt concepts, batch 1, "
              f"median of {r0['repeat']} after {r0['warmup']} warm-up\n")
        print("| model | what | framework | ms / sentence | lcm / PyTorch (speed) |")
        print("|---|---|---|---|---|")
        for k in rows:
            a, b = lcm[k], pt[k[:2]]
            what = a["what"] + (f", S = {a['ddim_steps']}, {a['denoiser_calls']} denoiser calls"
                                if "ddim_steps" in a else "")
            ratio = b["median_ms_per_sentence"] / a["median_ms_per_sentence"]
            print(f"| {k[1]} | {what} | lcm ({k[2]}) | {a['median_ms_per_sentence']:.2f} | **{ratio:.2f}x** |")
            print(f"| {k[1]} | | PyTorch | {b['median_ms_per_sentence']:.2f} | 1.00x |")
        print()
    for k in sorted(lcm):
        if k[0] == "train" and k[:2] in pt:
            print(f"sanity: {k[1]} first-step loss lcm ({k[2]}) {lcm[k]['first_loss']:.3f}, "
                  f"PyTorch {pt[k[:2]]['first_loss']:.3f} (same init policy and data distribution, "
                  "not the same numbers)")
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
                   help="replay the weights and probes `bench_lcm --dump DIR` wrote and compare outputs")
    p.add_argument("--models", default="base,two_tower")
    p.add_argument("--preset", default="small", choices=["small", "tiny"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--input-dim", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--gen-context", type=int, default=16)
    p.add_argument("--gen-steps", type=int, default=40)
    p.add_argument("--gen-warmup", type=int, default=2)
    p.add_argument("--gen-repeat", type=int, default=10)
    p.add_argument("--clip", type=float, default=25.0)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", dest="train", action="store_false")
    p.add_argument("--no-generate", dest="generate", action="store_false")
    p.add_argument("--engine", default=None, help="lcm's engine choice; accepted so both sides take the same flags (no effect here)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "naive"],
                   help="F.scaled_dot_product_attention (as fairseq2) or matmul + softmax")
    p.add_argument("--adamw", default="default", choices=["default", "foreach", "fused"],
                   help="torch.optim.AdamW implementation (default: PyTorch's choice for CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward + loss (off by default; generation stays eager; "
                        "compilation takes ~1 min and lands in the warm-up steps)")
    args = p.parse_args(argv)
    for flag in ("batch", "steps", "gen_context", "gen_steps", "gen_repeat"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if args.seq < 2:
        p.error("--seq must be at least 2")
    args.model_set = set()
    for m in args.models.split(","):
        if m.strip() not in ("base", "two_tower"):
            p.error(f"unknown model {m!r} (base, two_tower)")
        args.model_set.add(m.strip())
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        return report(*args.report)
    if torch is None:
        print(f"error: PyTorch is not importable from {sys.executable} ({_TORCH_IMPORT_ERROR}).\n"
              "Use the venv that has it, e.g. target/bench-venv/bin/python bench/train_lcm.py, or "
              "`pip install torch` into this interpreter's environment.", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.check:
        return check(args)
    torch.manual_seed(args.seed)
    print(f"[pytorch] torch {torch.__version__}, {torch.get_num_threads()} threads, attention {args.attention}, "
          f"AdamW {args.adamw}, compile {args.compile}", file=sys.stderr)

    def emit(r):
        # Peak resident memory of this process so far (Linux reports KiB).
        import resource
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(r), flush=True)

    if "base" in args.model_set:
        bench_base(args, emit)
    if "two_tower" in args.model_set:
        bench_two_tower(args, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
