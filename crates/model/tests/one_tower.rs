//! One-Tower LCM: shapes, parameter counts, the interleaved visibility mask, CFG row
//! dropout, cached/uncached inference, gradient flow, finite-difference gradients and DDIM
//! sampling (tiny config, CPU).

use candle_core::{DType, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::base_lcm::padding_mask_from_lengths;
use lcm_model::blocks::MASK_NEG;
use lcm_model::diffusion::{
    DdimSampler, NoiseSchedule, NoiseScheduleConfig, SamplingOptions, TimestepSpacing,
};
use lcm_model::one_tower::{OneTowerLcm, cfg_dropped_rows, one_tower_mask};
use lcm_model::presets;
use lcm_model::two_tower::standard_normal;
mod common;

use common::{
    assert_matches_central_differences, count_vars, cpu, max_abs_diff, named_vars, uniform, values,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

const DIM: usize = 16;

/// Seeded re-initialisation (candle's own init is unseeded).
fn reseed(varmap: &VarMap, seed: u64) {
    for (i, (name, v)) in named_vars(varmap).iter().enumerate() {
        let s = if name.contains("pos_embed") {
            0.5
        } else if v.dims().len() == 2 {
            1.0 / (v.dims()[1] as f64).sqrt()
        } else {
            0.2
        };
        let mut t = uniform(v.dims(), seed + i as u64, s, v.dtype());
        if name.ends_with("layer_norm.weight") {
            t = (t + 1.0).unwrap();
        }
        v.set(&t).unwrap();
    }
}

fn model(dtype: DType, seed: u64) -> (VarMap, OneTowerLcm) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &cpu());
    let model = OneTowerLcm::new(&presets::one_tower_tiny(), vb).unwrap();
    reseed(&varmap, seed);
    (varmap, model)
}

fn schedule(t: usize) -> NoiseSchedule {
    NoiseSchedule::new(NoiseScheduleConfig {
        num_train_timesteps: t,
        ..Default::default()
    })
    .unwrap()
}

/// Row `n` of `[B, T, D]` as `[B, 1, D]`.
fn at(x: &Tensor, n: usize) -> Tensor {
    x.narrow(1, n, 1).unwrap()
}

/// `x` with positions `range` of every row replaced by fresh values.
fn perturb(x: &Tensor, range: std::ops::Range<usize>, seed: u64) -> Tensor {
    let (b, t, d) = x.dims3().unwrap();
    let mut parts = Vec::new();
    if range.start > 0 {
        parts.push(x.narrow(1, 0, range.start).unwrap());
    }
    parts.push(uniform(&[b, range.len(), d], seed, 1.0, x.dtype()));
    if range.end < t {
        parts.push(x.narrow(1, range.end, t - range.end).unwrap());
    }
    Tensor::cat(&parts, 1).unwrap()
}

#[test]
fn shapes_and_parameter_count() {
    let (varmap, m) = model(DType::F32, 1);
    let cfg = presets::one_tower_tiny();
    assert_eq!(count_vars(&varmap), cfg.num_parameters());
    let x = uniform(&[2, 5, DIM], 2, 1.0, DType::F32);
    let noisy = uniform(&[2, 5, DIM], 3, 1.0, DType::F32);
    let ts: Vec<usize> = (0..10).map(|i| i * 9).collect();
    let out = m.forward(&x, &noisy, &ts, &[]).unwrap();
    assert_eq!(out.dims(), &[2, 5, DIM]);
    assert!(values(&out).iter().all(|v| v.is_finite()));
    let sch = schedule(100);
    let mut rng = StdRng::seed_from_u64(4);
    let loss = m.loss_sampled(&x, None, &sch, 0.15, &mut rng).unwrap();
    assert_eq!(loss.count, 10.0);
    assert!(loss.sum.to_scalar::<f32>().unwrap().is_finite());
    let one = at(&noisy, 0);
    assert_eq!(m.predict(&one, 7, Some(&x)).unwrap().dims(), &[2, 1, DIM]);
    assert_eq!(m.predict(&one, 7, None).unwrap().dims(), &[2, 1, DIM]);
    assert!(m.predict(&noisy, 7, None).is_err());
    // Positions beyond the table are rejected.
    let long = uniform(&[1, 65, DIM], 5, 1.0, DType::F32);
    assert!(m.forward(&long, &long, &[3], &[]).is_err());
}

#[test]
fn presets_build_and_count() {
    for cfg in [presets::one_tower_tiny(), presets::one_tower_small()] {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
        OneTowerLcm::new(&cfg, vb).unwrap();
        assert_eq!(count_vars(&varmap), cfg.num_parameters());
    }
    // Hand count (see the test's derivation): timestep MLP 256·d + d + d² + d, input
    // (1024 + d)·d + d, 4096 positions, 32 × (attention 4d² + 4d, SwiGLU 3·d·5632 + 2·5632
    // + d, two norms 2d) + final norm d, output d·1024 + 1024.
    assert_eq!(presets::one_tower_small().num_parameters(), 3_881_344);
    let big = presets::one_tower_1_6b();
    assert_eq!(
        (big.n_layers, big.d_model, big.n_heads, big.ffn_inner_dim),
        (32, 2048, 16, 5632)
    );
    assert_eq!(big.num_parameters(), 1_666_491_392);
}

#[test]
fn mask_matches_the_visibility_rule() {
    let t = 4;
    let m = one_tower_mask(1, t, &[], DType::F64, &cpu()).unwrap();
    let m = m.to_vec2::<f64>().unwrap();
    assert_eq!(m.len(), 2 * t);
    for (i, row) in m.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let (n, k) = (i / 2, j / 2);
            let allowed = match (i % 2 == 0, j % 2 == 0) {
                (true, true) => i == j,   // noisy → noisy: itself only
                (true, false) => k < n,   // noisy → clean x_{<n}
                (false, true) => false,   // clean → noisy: never
                (false, false) => k <= n, // clean → clean: causal
            };
            assert_eq!(v, if allowed { 0.0 } else { MASK_NEG }, "({i}, {j})");
            // A subset of the causal mask in interleaved order.
            if allowed {
                assert!(j <= i);
            }
        }
    }
    let d = one_tower_mask(2, t, &[(1, 2)], DType::F64, &cpu()).unwrap();
    assert_eq!(d.dims(), &[2, 1, 8, 8]);
    let row = |b: usize, i: usize| values(&d.i((b, 0, i)).unwrap());
    // Sequence 1, noisy x̃_2 (index 4) sees only itself; sequence 0 is untouched.
    let expect: Vec<f64> = (0..8)
        .map(|j| if j == 4 { 0.0 } else { MASK_NEG })
        .collect();
    assert_eq!(row(1, 4), expect);
    assert_eq!(row(0, 4), m[4]);
    assert!(one_tower_mask(2, t, &[(2, 1)], DType::F64, &cpu()).is_err());
}

/// Perturbing clean `x_{≥n}` or other noisy tokens leaves output `n` unchanged; perturbing
/// clean `x_{<n}` changes it.
#[test]
fn prediction_at_n_depends_only_on_clean_prefix_and_itself() {
    let (_vm, m) = model(DType::F64, 2);
    let (b, t) = (2, 6);
    let x = uniform(&[b, t, DIM], 21, 1.0, DType::F64);
    let noisy = uniform(&[b, t, DIM], 22, 1.0, DType::F64);
    let ts: Vec<usize> = (0..b * t).map(|i| (i * 7) % 100).collect();
    let base = m.forward(&x, &noisy, &ts, &[]).unwrap();
    for n in 0..t {
        let o = |x: &Tensor, noisy: &Tensor| at(&m.forward(x, noisy, &ts, &[]).unwrap(), n);
        let here = at(&base, n);
        // Clean x_{≥n}.
        assert!(max_abs_diff(&o(&perturb(&x, n..t, 30 + n as u64), &noisy), &here) < 1e-12);
        // Every other noisy token.
        if n > 0 {
            let p = perturb(&noisy, 0..n, 40 + n as u64);
            assert!(max_abs_diff(&o(&x, &p), &here) < 1e-12);
        }
        if n + 1 < t {
            let p = perturb(&noisy, n + 1..t, 50 + n as u64);
            assert!(max_abs_diff(&o(&x, &p), &here) < 1e-12);
        }
        // Clean x_{<n}: each earlier concept matters.
        for k in 0..n {
            let p = perturb(&x, k..k + 1, 60 + (n * t + k) as u64);
            assert!(max_abs_diff(&o(&p, &noisy), &here) > 1e-6, "n={n} k={k}");
        }
        // Its own noisy input matters.
        let p = perturb(&noisy, n..n + 1, 70 + n as u64);
        assert!(max_abs_diff(&o(&x, &p), &here) > 1e-6);
    }
}

/// Training output `n` equals the one-pass prediction with context `x_{<n}` and the KV-cached
/// prediction; a CFG-dropped row equals the unconditional prediction at its position.
#[test]
fn inference_paths_and_cfg_dropped_rows_match_training() {
    let (_vm, m) = model(DType::F64, 3);
    let (b, t, step) = (2, 5, 37);
    let x = uniform(&[b, t, DIM], 31, 1.0, DType::F64);
    let noisy = uniform(&[b, t, DIM], 32, 1.0, DType::F64);
    let ts = vec![step; b * t];
    let full = m.forward(&x, &noisy, &ts, &[]).unwrap();
    let mut state = m.new_state();
    for n in 0..t {
        let want = at(&full, n);
        let ctx = if n == 0 {
            None
        } else {
            Some(x.narrow(1, 0, n).unwrap())
        };
        let one = m.predict(&at(&noisy, n), step, ctx.as_ref()).unwrap();
        assert!(max_abs_diff(&one, &want) < 1e-10, "predict n={n}");
        let cached = m.predict_cached(&at(&noisy, n), step, &state).unwrap();
        assert!(max_abs_diff(&cached, &want) < 1e-10, "cached n={n}");
        assert_eq!(state.len(), n);
        m.extend_context(&at(&x, n), &mut state).unwrap();
    }

    // Dropped rows: (0, 3) and (1, 1), (1, 4).
    let dropped = [(0, 3), (1, 1), (1, 4)];
    let out = m.forward(&x, &noisy, &ts, &dropped).unwrap();
    for bi in 0..b {
        for n in 0..t {
            let got = out.i((bi, n)).unwrap();
            if dropped.contains(&(bi, n)) {
                let one = noisy.i((bi..bi + 1, n..n + 1)).unwrap();
                let u = m.predict_unconditional(&one, step, n).unwrap();
                assert!(max_abs_diff(&got, &u.i((0, 0)).unwrap()) < 1e-10);
                assert!(max_abs_diff(&got, &full.i((bi, n)).unwrap()) > 1e-6);
            } else {
                // Other rows (including the clean tokens they read) are unaffected.
                assert!(max_abs_diff(&got, &full.i((bi, n)).unwrap()) < 1e-12);
            }
        }
    }
    // Row 0 is already unconditional.
    let u0 = m.predict_unconditional(&at(&noisy, 0), step, 0).unwrap();
    assert!(max_abs_diff(&u0, &at(&full, 0)) < 1e-10);
    // The CFG helpers agree with the pieces.
    let ctx = x.narrow(1, 0, 3).unwrap();
    let (c, u) = m.predict_cfg(&at(&noisy, 3), step, &ctx).unwrap();
    assert!(max_abs_diff(&c, &at(&full, 3)) < 1e-10);
    let u3 = m.predict_unconditional(&at(&noisy, 3), step, 3).unwrap();
    assert!(max_abs_diff(&u, &u3) < 1e-12);
}

#[test]
fn cfg_dropout_rate_and_seeding() {
    let mut rng = StdRng::seed_from_u64(9);
    let rows = cfg_dropped_rows(64, 101, 0.15, &mut rng);
    assert!(rows.iter().all(|&(b, n)| b < 64 && (1..101).contains(&n)));
    let rate = rows.len() as f64 / (64.0 * 100.0);
    assert!((rate - 0.15).abs() < 0.02, "rate {rate}");
    let again = cfg_dropped_rows(64, 101, 0.15, &mut StdRng::seed_from_u64(9));
    assert_eq!(rows, again);
    assert!(cfg_dropped_rows(4, 10, 0.0, &mut rng).is_empty());
    assert!(cfg_dropped_rows(4, 1, 1.0, &mut rng).is_empty());
    assert_eq!(cfg_dropped_rows(2, 3, 1.0, &mut rng).len(), 4);
}

#[test]
fn gradient_reaches_every_parameter() {
    let (varmap, m) = model(DType::F32, 4);
    let x = uniform(&[2, 6, DIM], 41, 1.0, DType::F32);
    let sch = schedule(100);
    let mut rng = StdRng::seed_from_u64(5);
    let loss = m.loss_sampled(&x, None, &sch, 0.15, &mut rng).unwrap();
    let grads = loss.mean().unwrap().backward().unwrap();
    let vars = named_vars(&varmap);
    for (name, var) in &vars {
        let g = grads.get(var.as_tensor()).expect(name);
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(norm > 0.0 && norm.is_finite(), "{name}: grad norm {norm}");
    }
    // Per layer: 4 attention + 3 SwiGLU projections (weight, bias) + 2 norms.
    assert_eq!(vars.len(), 2 * 16 + 1 + 4 + 2 + 1 + 2);
    for must in [
        "pos_embed.weight",
        "input_proj.fc.weight",
        "embed_time.fc1.weight",
        "decoder.layers.1.self_attn.q_proj.weight",
        "decoder.layer_norm.weight",
        "final_proj.fc.bias",
    ] {
        assert!(vars.iter().any(|(n, _)| n == must), "{must}");
    }
}

/// Central differences of the loss (fixed timesteps, noise, dropped rows, padding) against
/// candle's backward, in f64.
#[test]
fn loss_gradient_matches_finite_differences() {
    let (varmap, m) = model(DType::F64, 5);
    let (b, t) = (2, 5);
    let x = uniform(&[b, t, DIM], 51, 1.0, DType::F64);
    let sch = schedule(100);
    let mut rng = StdRng::seed_from_u64(57);
    let ts = sch.sample_timesteps(b * t, &mut rng);
    let noise = standard_normal(&[b, t, DIM], &mut rng, DType::F64, &cpu()).unwrap();
    let dropped = [(0, 2), (1, 3)];
    let mask = padding_mask_from_lengths(&[5, 4], t, DType::F64, &cpu()).unwrap();
    let loss_val = || -> f64 {
        m.loss(&x, Some(&mask), &sch, &ts, &noise, &dropped)
            .unwrap()
            .sum
            .to_scalar::<f64>()
            .unwrap()
    };
    let loss = m
        .loss(&x, Some(&mask), &sch, &ts, &noise, &dropped)
        .unwrap();
    assert_eq!(loss.count, 9.0);
    let grads = loss.sum.backward().unwrap();
    let vars = named_vars(&varmap);
    let targets = [
        "pos_embed.weight",
        "input_proj.fc.weight",
        "embed_time.fc1.weight",
        "embed_time.fc2.bias",
        "decoder.layers.0.self_attn.q_proj.weight",
        "decoder.layers.1.self_attn.k_proj.weight",
        "decoder.layers.1.ffn.gate_proj.weight",
        "decoder.layer_norm.weight",
        "final_proj.fc.bias",
    ];
    let h = 1e-5;
    let mut pick = StdRng::seed_from_u64(3);
    for name in targets {
        let var = &vars.iter().find(|(n, _)| n == name).expect(name).1;
        let g = values(grads.get(var.as_tensor()).expect(name));
        // pos_embed: only rows 0..t are used; pick among them.
        let range = if name == "pos_embed.weight" {
            t * var.dims()[1]
        } else {
            var.elem_count()
        };
        assert_matches_central_differences(name, var, &g, range, 4, h, &mut pick, &loss_val);
    }
}

/// The model plugs into `DdimSampler`, guided (cached prefix) and unguided.
#[test]
fn ddim_sampling_end_to_end() {
    let (_vm, m) = model(DType::F32, 6);
    let x = uniform(&[2, 4, DIM], 61, 1.0, DType::F32);
    let mut state = m.new_state();
    m.extend_context(&x, &mut state).unwrap();
    let sampler = DdimSampler::new(schedule(100), 10, TimestepSpacing::TrailingLcm).unwrap();
    let randn = uniform(&[2, 1, DIM], 62, 1.0, DType::F32);
    let opts = SamplingOptions::paper_two_tower_1_6b();
    let latents = sampler.initial_latents(&randn, &opts).unwrap();
    let guided = sampler
        .denoise_guided(latents.clone(), &opts, |l, t| {
            Ok(m.predict_cfg_cached(l, t, &state)?)
        })
        .unwrap();
    assert_eq!(guided.dims(), &[2, 1, DIM]);
    let uncached = sampler
        .denoise_guided(latents.clone(), &opts, |l, t| Ok(m.predict_cfg(l, t, &x)?))
        .unwrap();
    assert!(max_abs_diff(&guided, &uncached) < 1e-4);
    let plain = sampler
        .denoise(latents, &SamplingOptions::default(), |l, t| {
            Ok(m.predict(l, t, None)?)
        })
        .unwrap();
    assert_eq!(plain.dims(), &[2, 1, DIM]);
    assert!(
        values(&guided)
            .iter()
            .chain(values(&plain).iter())
            .all(|v| v.is_finite())
    );
    // The state was not modified by sampling.
    assert_eq!(state.len(), 4);
}
