#!/usr/bin/env python3
"""Regenerate the DDIM parity fixtures in fixtures/diffusion/ from HF diffusers.

    /work/py/venv/bin/python scripts/make_diffusion_fixtures.py [out_dir]

diffusers hard-codes float32 for its betas; the Rust port keeps the schedule in f64, and
f32 rounding (amplified by 1/sqrt(1 - alpha_bar) near t = 0) would swamp a 1e-6 tolerance.
So diffusers' own DDIMScheduler code is run with its `torch.float32` redirected to float64:
the formulas are diffusers', only the precision changes.

diffusers has no sigmoid schedule; its betas come from an independent numpy implementation
of the LCM reference's formula (including the reference's float32 rounding of t and of
t / (1 - t)), fed to diffusers through `trained_betas` so stepping is still diffusers'.

The LCM reference's own "trailing"/"linspace" timesteps differ from diffusers' (torch
integer arange / linspace truncate instead of round); those are produced here by the same
torch calls with dtype=torch.long and stored as spacings "trailing_lcm"/"linspace_lcm".
"""

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
import diffusers.schedulers.scheduling_ddim as ddim_mod

T = 1000
SHAPE = (2, 8)
STEP_COUNTS = (40, 7)
TIMESTEP_COUNTS = (40, 7, 30, 3, 100, 61, 1)
PRED_TYPES = ("sample", "epsilon", "v_prediction")

torch.set_default_dtype(torch.float64)
_shim = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
_shim.float32 = torch.float64
ddim_mod.torch = _shim


def sigmoid_betas(n, delta, gamma, max_beta=0.999):
    f32 = np.float32

    def alpha_bar(t):
        # Mirrors the reference: torch.tensor(t) is float32, clamped to [1e-32, 1 - 1e-32]
        # (the upper bound rounds to 1.0), logit's ratio is a float32 op, the rest is
        # Python float math.
        x = min(max(f32(t), f32(1e-32)), f32(1.0))
        with np.errstate(divide="ignore"):
            ratio = float(f32(x) / (f32(1.0) - f32(x)))
        lg = math.log(ratio) if ratio != math.inf else math.inf
        z = gamma - delta * lg
        return 1.0 / (1.0 + math.exp(-z)) if z != -math.inf else 0.0

    return [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]


SCHEDULES = {
    "squaredcos_cap_v2": dict(kind="squaredcos_cap_v2"),
    "linear": dict(kind="linear", beta_start=1e-4, beta_end=0.02),
    "scaled_linear": dict(kind="scaled_linear", beta_start=0.00085, beta_end=0.012),
    "sigmoid": dict(kind="sigmoid", delta=1.5, gamma=0.0),
    "sigmoid_shifted": dict(kind="sigmoid", delta=1.5, gamma=-1.0),
}


def make_scheduler(sched, zsnr, pred="sample", spacing="trailing", clip=False, alpha_one=True):
    kw = dict(
        num_train_timesteps=T,
        clip_sample=clip,
        clip_sample_range=1.0,
        set_alpha_to_one=alpha_one,
        prediction_type=pred,
        timestep_spacing=spacing,
        rescale_betas_zero_snr=zsnr,
    )
    if sched["kind"] == "sigmoid":
        kw["trained_betas"] = sigmoid_betas(T, sched["delta"], sched["gamma"])
    else:
        kw["beta_schedule"] = sched["kind"]
        kw["beta_start"] = sched.get("beta_start", 1e-4)
        kw["beta_end"] = sched.get("beta_end", 0.02)
    return ddim_mod.DDIMScheduler(**kw)


def flat(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def lcm_timesteps(spacing, s):
    if spacing == "trailing_lcm":
        return (torch.arange(T, 0, -T / s, dtype=torch.long).round() - 1).tolist()
    return torch.flip(torch.linspace(0, T - 1, s, dtype=torch.long), dims=(0,)).tolist()


def timesteps_fixture():
    cases = []
    for s in TIMESTEP_COUNTS:
        for spacing in ("trailing", "leading", "linspace"):
            sch = make_scheduler(SCHEDULES["squaredcos_cap_v2"], False, spacing=spacing)
            sch.set_timesteps(s)
            cases.append(dict(spacing=spacing, num_inference_steps=s, timesteps=sch.timesteps.tolist()))
        for spacing in ("trailing_lcm", "linspace_lcm"):
            cases.append(dict(spacing=spacing, num_inference_steps=s, timesteps=lcm_timesteps(spacing, s)))
    return dict(num_train_timesteps=T, cases=cases)


def schedule_fixture(name, gen):
    sched = SCHEDULES[name]
    sample = torch.randn(SHAPE, generator=gen)
    model_output = torch.randn(SHAPE, generator=gen) * 1.3
    noise = torch.randn(SHAPE, generator=gen)
    x0 = torch.randn(SHAPE, generator=gen) * 0.8
    variants = []
    for zsnr in (False, True):
        base = make_scheduler(sched, zsnr)
        ac = base.alphas_cumprod
        idx = list(range(0, T, 37)) + [T - 1]
        noisy_t = [[0, 999], [500, 17]]
        add_noise = [
            dict(t=t, out=flat(base.add_noise(x0, noise, torch.tensor(t))),
                 velocity=flat(base.get_velocity(x0, noise, torch.tensor(t))))
            for t in noisy_t
        ]
        steps = []
        combos = [(p, s, False, True) for p in PRED_TYPES for s in STEP_COUNTS]
        if name == "squaredcos_cap_v2":
            combos += [("sample", 40, True, True), ("epsilon", 7, True, True),
                       ("sample", 40, False, False), ("epsilon", 40, True, False)]
        for pred, s, clip, alpha_one in combos:
            trailing = make_scheduler(sched, zsnr, pred, "trailing", clip, alpha_one)
            trailing.set_timesteps(s)
            ts = trailing.timesteps.tolist()
            picks = [(ts[0], 0.0), (ts[len(ts) // 2], 0.0), (ts[len(ts) // 2], 0.8), (ts[-1], 0.0), (0, 0.5)]
            for t, eta in picks:
                if zsnr and pred == "epsilon" and t == T - 1:
                    continue  # alpha_bar = 0: x0 from epsilon divides by zero
                out = trailing.step(model_output, t, sample, eta=eta,
                                    variance_noise=noise if eta > 0 else None)
                steps.append(dict(prediction_type=pred, num_inference_steps=s, t=t, eta=eta,
                                  clip_sample=clip, set_alpha_to_one=alpha_one,
                                  prev_sample=flat(out.prev_sample),
                                  pred_original_sample=flat(out.pred_original_sample)))
        variants.append(dict(
            rescale_betas_zero_snr=zsnr,
            alphas_cumprod_index=idx,
            alphas_cumprod=[float(ac[i]) for i in idx],
            final_alpha_cumprod_unset=float(ac[0]),
            add_noise=add_noise,
            steps=steps,
        ))
    return dict(
        schedule=sched,
        num_train_timesteps=T,
        shape=list(SHAPE),
        inputs=dict(sample=flat(sample), model_output=flat(model_output), noise=flat(noise), x0=flat(x0)),
        variants=variants,
    )


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "fixtures" / "diffusion"
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(20241208)
    (out / "timesteps.json").write_text(json.dumps(timesteps_fixture(), separators=(",", ":")) + "\n")
    for name in SCHEDULES:
        data = schedule_fixture(name, gen)
        (out / f"{name}.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    for p in sorted(out.glob("*.json")):
        print(f"{p.name}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
