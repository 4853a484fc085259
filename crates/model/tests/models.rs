//! Base-LCM and Two-Tower LCM: shapes, losses, caching, causality, CFG dropout, gradient
//! flow, finite-difference gradients and parameter counts (tiny configs, CPU).

use candle_core::{D, DType, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::base_lcm::{BaseLcm, padding_mask_from_lengths};
use lcm_model::blocks::AttentionMask;
use lcm_model::diffusion::{
    DdimSampler, NoiseSchedule, NoiseScheduleConfig, SamplingOptions, TimestepSpacing,
};
use lcm_model::presets;
use lcm_model::two_tower::{
    TwoTowerLcm, cfg_dropped_rows, cross_attention_mask, standard_normal, timestep_sinusoid,
};
mod common;

use common::{
    assert_matches_central_differences, count_vars, cpu, max_abs_diff, named_vars, uniform, values,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Seeded re-initialisation (candle's own init is unseeded). Modulators keep their zero
/// init unless `modulators` is set.
fn reseed(varmap: &VarMap, seed: u64, scale: f64, modulators: bool) {
    for (i, (name, v)) in named_vars(varmap).iter().enumerate() {
        if name.contains("modulator") && !modulators {
            continue;
        }
        let fan_in = if v.dims().len() == 2 { v.dims()[1] } else { 1 };
        let s = if v.dims().len() == 2 {
            scale / (fan_in as f64).sqrt()
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

fn base_model(dtype: DType, seed: u64) -> (VarMap, BaseLcm) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &cpu());
    let model = BaseLcm::new(&presets::base_lcm_tiny(), vb).unwrap();
    reseed(&varmap, seed, 1.0, true);
    (varmap, model)
}

fn two_tower_model(dtype: DType, seed: u64, modulators: bool) -> (VarMap, TwoTowerLcm) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &cpu());
    let model = TwoTowerLcm::new(&presets::two_tower_tiny(), vb).unwrap();
    reseed(&varmap, seed, 1.0, modulators);
    (varmap, model)
}

fn schedule(t: usize) -> NoiseSchedule {
    NoiseSchedule::new(NoiseScheduleConfig {
        num_train_timesteps: t,
        ..Default::default()
    })
    .unwrap()
}

// ---------------------------------------------------------------- Base-LCM

#[test]
fn base_lcm_shapes_and_parameter_count() {
    let (varmap, model) = base_model(DType::F32, 1);
    let cfg = presets::base_lcm_tiny();
    assert_eq!(count_vars(&varmap), cfg.num_parameters());
    let x = uniform(&[2, 5, 16], 7, 1.0, DType::F32);
    let y = model.forward(&x, None).unwrap();
    assert_eq!(y.dims(), &[2, 5, 16]);
}

#[test]
fn base_lcm_loss_matches_hand_computation_and_ignores_padding() {
    let (_vm, model) = base_model(DType::F64, 2);
    let (b, t, dd) = (2, 5, 16);
    let x = uniform(&[b, t, dd], 11, 1.0, DType::F64);
    let lengths = [5usize, 3];
    let mask = padding_mask_from_lengths(&lengths, t, DType::F64, &cpu()).unwrap();
    let loss = model.loss(&x, Some(&mask)).unwrap();

    // By hand: full causal forward, then Σ_b Σ_{i < len_b − 1} ‖pred[b, i] − x[b, i + 1]‖².
    let pred = model.forward(&x, None).unwrap();
    let p = pred.to_vec3::<f64>().unwrap();
    let xv = x.to_vec3::<f64>().unwrap();
    let mut want = 0.0;
    let mut n = 0.0;
    for (bi, &len) in lengths.iter().enumerate() {
        for i in 0..len - 1 {
            want += (0..dd)
                .map(|k| (p[bi][i][k] - xv[bi][i + 1][k]).powi(2))
                .sum::<f64>();
            n += 1.0;
        }
    }
    let got = loss.sum.to_scalar::<f64>().unwrap();
    assert!(
        (got - want).abs() < 1e-10 * want.max(1.0),
        "{got} vs {want}"
    );
    assert_eq!(loss.count, n);
    assert_eq!(loss.count, 6.0);
    let mean = loss.mean().unwrap().to_scalar::<f64>().unwrap();
    assert!((mean - want / n).abs() < 1e-10 * want);

    // Changing padded positions (row 1, positions 3..) does not change the loss.
    let noise = uniform(&[1, 2, dd], 99, 5.0, DType::F64);
    let row1 = Tensor::cat(&[&x.i((1..2, 0..3)).unwrap(), &noise], 1).unwrap();
    let x2 = Tensor::cat(&[&x.i(0..1).unwrap(), &row1], 0).unwrap();
    let loss2 = model.loss(&x2, Some(&mask)).unwrap();
    let got2 = loss2.sum.to_scalar::<f64>().unwrap();
    assert!((got - got2).abs() < 1e-12 * got.max(1.0));

    // Without a mask every shifted pair counts.
    let full = model.loss(&x, None).unwrap();
    assert_eq!(full.count, (b * (t - 1)) as f64);
}

#[test]
fn base_lcm_kv_cached_forward_equals_full_forward() {
    let (_vm, model) = base_model(DType::F32, 3);
    let x = uniform(&[2, 6, 16], 13, 1.0, DType::F32);
    let full = model.forward(&x, None).unwrap();
    let mut cache = model.new_cache();
    let mut outs = Vec::new();
    // One position, then a chunk of two, then one at a time.
    for (start, len) in [(0, 1), (1, 2), (3, 1), (4, 1), (5, 1)] {
        outs.push(
            model
                .forward(&x.narrow(1, start, len).unwrap(), Some(&mut cache))
                .unwrap(),
        );
    }
    let inc = Tensor::cat(&outs, 1).unwrap();
    let diff = max_abs_diff(&full, &inc);
    assert!(diff <= 1e-5, "cached vs full: {diff}");
}

// ---------------------------------------------------------------- Two-Tower

#[test]
fn two_tower_shapes_and_parameter_count() {
    let (varmap, model) = two_tower_model(DType::F32, 4, true);
    let cfg = presets::two_tower_tiny();
    assert_eq!(count_vars(&varmap), cfg.num_parameters());
    assert_eq!(
        cfg.num_parameters(),
        cfg.contextualizer_parameters() + cfg.denoiser_parameters()
    );
    let x = uniform(&[3, 5, 16], 5, 1.0, DType::F32);
    let ctx = model.encode(&x, None).unwrap();
    assert_eq!(ctx.dims(), &[3, 5, 32]);
    let noisy = uniform(&[3, 1, 16], 6, 1.0, DType::F32);
    let out = model.predict(&noisy, 10, Some(&ctx)).unwrap();
    assert_eq!(out.dims(), &[3, 1, 16]);
    let out_u = model.predict(&noisy, 10, None).unwrap();
    assert_eq!(out_u.dims(), &[3, 1, 16]);
    let sch = schedule(100);
    let mut rng = StdRng::seed_from_u64(0);
    let loss = model.loss_sampled(&x, None, &sch, 0.15, &mut rng).unwrap();
    assert_eq!(loss.count, 15.0);
    assert!(loss.sum.to_scalar::<f32>().unwrap().is_finite());
}

#[test]
fn timestep_sinusoid_is_cos_then_sin() {
    let s = timestep_sinusoid(&[0, 3], 8, DType::F64, &cpu()).unwrap();
    let v = s.to_vec2::<f64>().unwrap();
    assert_eq!(v[0], vec![1., 1., 1., 1., 0., 0., 0., 0.]);
    for i in 0..4 {
        let f = (-(10_000f64.ln()) * i as f64 / 4.0).exp();
        assert!((v[1][i] - (3.0 * f).cos()).abs() < 1e-12);
        assert!((v[1][4 + i] - (3.0 * f).sin()).abs() < 1e-12);
    }
    let odd = timestep_sinusoid(&[5], 7, DType::F64, &cpu()).unwrap();
    assert_eq!(odd.dims(), &[1, 7]);
    assert_eq!(odd.to_vec2::<f64>().unwrap()[0][6], 0.0);
}

/// Zero-initialised modulators give gate = 0 in every sub-block, so each denoiser layer
/// is exactly the identity on the residual stream: the denoiser reduces to
/// `final_proj(RMSNorm(initial_proj(x_t)))`, independent of the timestep and the context.
#[test]
fn two_tower_zero_init_modulation_makes_denoiser_blocks_identity() {
    let (_vm, model) = two_tower_model(DType::F64, 8, false);
    let x = uniform(&[2, 4, 16], 21, 1.0, DType::F64);
    let ctx = model.encode(&x, None).unwrap();
    let keys = model.keys(Some(&ctx), 2, &x).unwrap();
    let h = uniform(&[2, 4, 32], 22, 1.0, DType::F64);
    let temb = uniform(&[2, 4, 32], 23, 1.0, DType::F64);
    let mask =
        AttentionMask::Additive(cross_attention_mask(4, 5, &[], DType::F64, &cpu()).unwrap());
    for layer in &model.denoiser.layers {
        let out = layer.forward(&h, &temb, &keys, &mask).unwrap();
        assert_eq!(max_abs_diff(&out, &h), 0.0);
    }

    let noisy = uniform(&[2, 1, 16], 24, 1.0, DType::F64);
    let d = &model.denoiser;
    let expected = {
        use candle_core::Module;
        let h = d.initial_proj.forward(&noisy).unwrap();
        d.final_proj
            .forward(&d.final_norm.forward(&h).unwrap())
            .unwrap()
    };
    for (t, c) in [(0, Some(&ctx)), (57, Some(&ctx)), (99, None)] {
        let out = model.predict(&noisy, t, c).unwrap();
        assert!(max_abs_diff(&out, &expected) < 1e-12);
    }
}

/// The denoiser's output at position `i` depends on clean concepts `x_0..x_{i−1}` only:
/// perturbing the context at positions `≥ i` leaves outputs `0..=i` unchanged (and does
/// change later ones).
#[test]
fn two_tower_context_is_causal() {
    let (_vm, model) = two_tower_model(DType::F64, 9, true);
    let (b, t) = (2, 6);
    let x = uniform(&[b, t, 16], 31, 1.0, DType::F64);
    let noisy = uniform(&[b, t, 16], 32, 1.0, DType::F64);
    let ts: Vec<usize> = (0..b * t).map(|k| (k * 7) % 100).collect();
    let mask =
        AttentionMask::Additive(cross_attention_mask(t, t + 1, &[], DType::F64, &cpu()).unwrap());
    let run = |x: &Tensor| {
        let ctx = model.encode(x, None).unwrap();
        let keys = model.keys(Some(&ctx), b, x).unwrap();
        model.denoiser.forward(&noisy, &ts, &keys, &mask).unwrap()
    };
    let base = run(&x);
    for i in 0..t {
        let pert = uniform(&[b, t - i, 16], 40 + i as u64, 3.0, DType::F64);
        let x2 = if i == 0 {
            pert
        } else {
            Tensor::cat(&[&x.narrow(1, 0, i).unwrap(), &pert], 1).unwrap()
        };
        let out = run(&x2);
        let same = max_abs_diff(
            &out.narrow(1, 0, i + 1).unwrap(),
            &base.narrow(1, 0, i + 1).unwrap(),
        );
        assert!(same < 1e-12, "position ≤ {i} changed by {same}");
        if i + 1 < t {
            let later = max_abs_diff(
                &out.narrow(1, i + 1, t - i - 1).unwrap(),
                &base.narrow(1, i + 1, t - i - 1).unwrap(),
            );
            assert!(later > 1e-6, "positions > {i} did not react to context");
        }
    }
}

/// Row 0 is never dropped; the others are dropped at rate p (exactly floor((T−1)p) rows per
/// draw, as in the reference), and a dropped row behaves as the unconditional prediction.
#[test]
fn two_tower_cfg_dropout_never_drops_row_zero_and_drops_fifteen_percent() {
    let t = 21;
    let draws = 4000;
    let mut rng = StdRng::seed_from_u64(1234);
    let mut hits = vec![0usize; t];
    for _ in 0..draws {
        let rows = cfg_dropped_rows(t, 0.15, &mut rng);
        assert_eq!(rows.len(), 3);
        for r in rows {
            hits[r] += 1;
        }
    }
    assert_eq!(hits[0], 0);
    for (r, &h) in hits.iter().enumerate().skip(1) {
        let rate = h as f64 / draws as f64;
        assert!((rate - 0.15).abs() < 0.03, "row {r}: rate {rate}");
    }
    let total: usize = hits.iter().sum();
    assert!((total as f64 / (draws * (t - 1)) as f64 - 0.15).abs() < 1e-12);
    assert!(cfg_dropped_rows(1, 0.15, &mut rng).is_empty());

    // Mask layout: dropped rows see key 0 only; others shifted-causal.
    let m = cross_attention_mask(4, 5, &[2], DType::F64, &cpu()).unwrap();
    let allowed: Vec<Vec<bool>> = m
        .to_vec2::<f64>()
        .unwrap()
        .iter()
        .map(|r| r.iter().map(|&v| v == 0.0).collect())
        .collect();
    assert_eq!(allowed[0], [true, false, false, false, false]);
    assert_eq!(allowed[1], [true, true, false, false, false]);
    assert_eq!(allowed[2], [true, false, false, false, false]);
    assert_eq!(allowed[3], [true, true, true, true, false]);

    // A dropped row equals the unconditional prediction at that position.
    let (_vm, model) = two_tower_model(DType::F64, 10, true);
    let x = uniform(&[1, 4, 16], 51, 1.0, DType::F64);
    let noisy = uniform(&[1, 4, 16], 52, 1.0, DType::F64);
    let ctx = model.encode(&x, None).unwrap();
    let keys = model.keys(Some(&ctx), 1, &x).unwrap();
    let out = model
        .denoiser
        .forward(&noisy, &[30], &keys, &AttentionMask::Additive(m))
        .unwrap();
    let uncond = model
        .predict(&noisy.narrow(1, 2, 1).unwrap(), 30, None)
        .unwrap();
    assert!(max_abs_diff(&out.narrow(1, 2, 1).unwrap(), &uncond) < 1e-12);
}

/// After one backward pass every parameter has a non-zero gradient — except the denoiser's
/// self-attention Q/K projections: under the identity mask the softmax is over a single key,
/// so those projections cannot influence the output (as in the reference).
#[test]
fn two_tower_gradient_reaches_every_parameter() {
    let (varmap, model) = two_tower_model(DType::F32, 11, true);
    let x = uniform(&[2, 6, 16], 61, 1.0, DType::F32);
    let sch = schedule(100);
    let mut rng = StdRng::seed_from_u64(5);
    let loss = model.loss_sampled(&x, None, &sch, 0.15, &mut rng).unwrap();
    let grads = loss.mean().unwrap().backward().unwrap();
    let mut checked = 0;
    for (name, var) in named_vars(&varmap) {
        let dead = name.starts_with("denoiser.")
            && (name.contains("self_attn.q_proj") || name.contains("self_attn.k_proj"));
        let norm = grads
            .get(var.as_tensor())
            .map(|g| {
                g.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .unwrap_or(0.0);
        if dead {
            assert_eq!(norm, 0.0, "{name} should get no gradient");
        } else {
            assert!(norm > 0.0 && norm.is_finite(), "{name}: grad norm {norm}");
            checked += 1;
        }
    }
    assert!(checked > 40);
    for must in [
        "denoiser.layers.0.cross_attention.q_proj.weight",
        "denoiser.layers.1.cross_attention.k_proj.weight",
        "context_encoder.layers.0.self_attn.q_proj.weight",
        "encoder_frontend.pre_linear.weight",
        "denoiser.embed_time.fc1.weight",
    ] {
        assert!(named_vars(&varmap).iter().any(|(n, _)| n == must), "{must}");
    }
}

/// Central differences of the Two-Tower loss (fixed timesteps, noise and CFG rows) against
/// candle's backward, in f64.
#[test]
fn two_tower_loss_gradient_matches_finite_differences() {
    let (varmap, model) = two_tower_model(DType::F64, 12, true);
    let (b, t) = (2, 5);
    let x = uniform(&[b, t, 16], 71, 1.0, DType::F64);
    let sch = schedule(100);
    let mut rng = StdRng::seed_from_u64(77);
    let ts = sch.sample_timesteps(b * t, &mut rng);
    let noise = standard_normal(&[b, t, 16], &mut rng, DType::F64, &cpu()).unwrap();
    let dropped = [2usize];
    let mask = padding_mask_from_lengths(&[5, 4], t, DType::F64, &cpu()).unwrap();
    let loss_val = || -> f64 {
        model
            .loss(&x, Some(&mask), &sch, &ts, &noise, &dropped)
            .unwrap()
            .sum
            .to_scalar::<f64>()
            .unwrap()
    };
    let loss = model
        .loss(&x, Some(&mask), &sch, &ts, &noise, &dropped)
        .unwrap();
    let grads = loss.sum.backward().unwrap();
    let vars = named_vars(&varmap);
    let targets = [
        "denoiser.layers.0.cross_attention.q_proj.weight",
        "denoiser.layers.1.cross_attention.k_proj.weight",
        "denoiser.layers.0.modulator.fc.weight",
        "denoiser.embed_time.fc1.weight",
        "context_encoder.layers.1.self_attn.k_proj.weight",
        "encoder_frontend.pre_linear.bias",
        "denoiser.layers.1.ffn.gate_proj.weight",
        "denoiser.final_proj.fc.bias",
    ];
    let h = 1e-5;
    let mut pick = StdRng::seed_from_u64(3);
    for name in targets {
        let var = &vars.iter().find(|(n, _)| n == name).expect(name).1;
        let g = values(grads.get(var.as_tensor()).expect(name));
        let range = var.elem_count();
        assert_matches_central_differences(name, var, &g, range, 4, h, &mut pick, &loss_val);
    }
}

/// KV-cached incremental context encoding equals the full causal encoding, and the model
/// plugs into `DdimSampler` with and without guidance.
#[test]
fn two_tower_incremental_context_and_ddim_sampling() {
    let (_vm, model) = two_tower_model(DType::F32, 13, true);
    let x = uniform(&[2, 5, 16], 81, 1.0, DType::F32);
    let full = model.encode(&x, None).unwrap();
    let mut state = model.new_context_state();
    model
        .extend_context(&x.narrow(1, 0, 2).unwrap(), &mut state)
        .unwrap();
    for i in 2..5 {
        model
            .extend_context(&x.narrow(1, i, 1).unwrap(), &mut state)
            .unwrap();
    }
    let ctx = state.context.clone().unwrap();
    assert!(max_abs_diff(&full, &ctx) <= 1e-5);

    let sampler = DdimSampler::new(schedule(100), 10, TimestepSpacing::TrailingLcm).unwrap();
    let randn = uniform(&[2, 1, 16], 82, 1.0, DType::F32);
    let opts = SamplingOptions::paper_two_tower_1_6b();
    let latents = sampler.initial_latents(&randn, &opts).unwrap();
    let guided = sampler
        .denoise_guided(latents.clone(), &opts, |l, t| {
            Ok((model.predict(l, t, Some(&ctx))?, model.predict(l, t, None)?))
        })
        .unwrap();
    assert_eq!(guided.dims(), &[2, 1, 16]);
    let plain = sampler
        .denoise(latents, &SamplingOptions::default(), |l, t| {
            Ok(model.predict(l, t, None)?)
        })
        .unwrap();
    assert_eq!(plain.dims(), &[2, 1, 16]);
    assert!(
        values(&guided)
            .iter()
            .chain(values(&plain).iter())
            .all(|v| v.is_finite())
    );
    let _ = guided.sum(D::Minus1).unwrap();
}

// ---------------------------------------------------------------- parameter counts

#[test]
fn paper_parameter_counts() {
    assert_eq!(presets::two_tower_7b().num_parameters(), 6_930_781_696);
    assert_eq!(presets::two_tower_1_6b().num_parameters(), 1_645_538_304);
    assert_eq!(presets::base_lcm_1_6b().num_parameters(), 1_649_185_792);
    assert_eq!(presets::two_tower_7b().ffn_inner_dim, 11_008);
    assert_eq!(presets::two_tower_1_6b().ffn_inner_dim, 5_632);
    assert_eq!(presets::reference_ffn_dim(4096), 11_008);
}

#[test]
fn small_presets_build_and_count() {
    let cfg = presets::base_lcm_small();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    BaseLcm::new(&cfg, vb).unwrap();
    assert_eq!(count_vars(&varmap), cfg.num_parameters());
    println!("base_lcm_small: {}", cfg.num_parameters());

    let cfg = presets::two_tower_small();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    TwoTowerLcm::new(&cfg, vb).unwrap();
    assert_eq!(count_vars(&varmap), cfg.num_parameters());
    println!("two_tower_small: {}", cfg.num_parameters());
}
