//! Parity of the DDIM port with HF diffusers (fixtures from
//! `scripts/make_diffusion_fixtures.py`) plus algebraic properties of the schedule, the
//! sampler and classifier-free guidance.

use candle_core::{DType, Device, Tensor};
use lcm_model::diffusion::{
    BetaSchedule, DdimSampler, NoiseSchedule, NoiseScheduleConfig, PredictionType, SamplingOptions,
    StepOptions, TimestepSpacing, guidance_applies, guide, inference_timesteps,
};
use rand::SeedableRng;
use serde_json::Value;
use std::path::PathBuf;

const TOL: f64 = 1e-6;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/diffusion")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn tensor(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn beta_schedule(v: &Value) -> BetaSchedule {
    let num = |k: &str| v[k].as_f64().unwrap();
    match v["kind"].as_str().unwrap() {
        "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
        "linear" => BetaSchedule::Linear {
            beta_start: num("beta_start"),
            beta_end: num("beta_end"),
        },
        "scaled_linear" => BetaSchedule::ScaledLinear {
            beta_start: num("beta_start"),
            beta_end: num("beta_end"),
            exponent: 2.0,
        },
        "sigmoid" => BetaSchedule::Sigmoid {
            delta: num("delta"),
            gamma: num("gamma"),
        },
        other => panic!("unknown schedule {other}"),
    }
}

fn prediction_type(s: &str) -> PredictionType {
    match s {
        "sample" => PredictionType::X0,
        "epsilon" => PredictionType::Epsilon,
        "v_prediction" => PredictionType::VPrediction,
        other => panic!("unknown prediction type {other}"),
    }
}

#[test]
fn timesteps_match_diffusers_and_reference() {
    let fx = fixture("timesteps.json");
    let big_t = fx["num_train_timesteps"].as_u64().unwrap() as usize;
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let s = case["num_inference_steps"].as_u64().unwrap() as usize;
        let name = case["spacing"].as_str().unwrap();
        let spacing = match name {
            "trailing" => TimestepSpacing::Trailing,
            "leading" => TimestepSpacing::Leading,
            "linspace" => TimestepSpacing::Linspace,
            "trailing_lcm" => TimestepSpacing::TrailingLcm,
            "linspace_lcm" => TimestepSpacing::LinspaceLcm,
            other => panic!("unknown spacing {other}"),
        };
        let mut expected: Vec<i64> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        if spacing == TimestepSpacing::Trailing {
            // diffusers' spurious trailing "-1" (see TimestepSpacing::Trailing).
            expected.retain(|&t| t >= 0);
        }
        let got: Vec<i64> = inference_timesteps(big_t, s, spacing)
            .unwrap()
            .into_iter()
            .map(|t| t as i64)
            .collect();
        assert_eq!(got, expected, "{name} S={s}");
    }
}

#[test]
fn trailing_quirks_are_reproduced() {
    // S = 61: diffusers produces 62 values ending in -1; the reference runs 62 real steps.
    assert_eq!(
        inference_timesteps(1000, 61, TimestepSpacing::Trailing)
            .unwrap()
            .len(),
        61
    );
    let lcm = inference_timesteps(1000, 61, TimestepSpacing::TrailingLcm).unwrap();
    assert_eq!(lcm.len(), 62);
    assert_eq!(*lcm.last().unwrap(), 999 - 61 * 16);
    assert!(inference_timesteps(1000, 0, TimestepSpacing::Leading).is_err());
    assert!(inference_timesteps(1000, 1001, TimestepSpacing::Leading).is_err());
}

/// Checks every schedule file; returns the maximum abs errors (alphas, add_noise, step).
fn check_schedule_file(name: &str) -> [f64; 3] {
    let fx = fixture(name);
    let big_t = fx["num_train_timesteps"].as_u64().unwrap() as usize;
    let shape = usizes(&fx["shape"]);
    let input = |k: &str| tensor(&f64s(&fx["inputs"][k]), &shape);
    let (sample, model_output, noise, x0) = (
        input("sample"),
        input("model_output"),
        input("noise"),
        input("x0"),
    );
    let beta = beta_schedule(&fx["schedule"]);
    let mut worst = [0.0f64; 3];
    for variant in fx["variants"].as_array().unwrap() {
        let zsnr = variant["rescale_betas_zero_snr"].as_bool().unwrap();
        let config = |pred: PredictionType, clip: bool, alpha_one: bool| NoiseScheduleConfig {
            num_train_timesteps: big_t,
            beta_schedule: beta,
            rescale_betas_zero_snr: zsnr,
            prediction_type: pred,
            clip_sample: clip.then_some(1.0),
            set_alpha_to_one: alpha_one,
        };
        let schedule = NoiseSchedule::new(config(PredictionType::X0, false, true)).unwrap();
        let idx = usizes(&variant["alphas_cumprod_index"]);
        let got: Vec<f64> = idx.iter().map(|&i| schedule.alphas_cumprod()[i]).collect();
        let err = max_abs_diff(&got, &f64s(&variant["alphas_cumprod"]));
        worst[0] = worst[0].max(err);
        assert!(err <= TOL, "{name} zsnr={zsnr}: alphas_cumprod err {err}");
        if zsnr {
            assert_eq!(schedule.alphas_cumprod()[big_t - 1], 0.0);
        }
        let unset = NoiseSchedule::new(config(PredictionType::X0, false, false)).unwrap();
        let expect = variant["final_alpha_cumprod_unset"].as_f64().unwrap();
        assert!((unset.final_alpha_cumprod() - expect).abs() <= TOL);
        assert_eq!(schedule.final_alpha_cumprod(), 1.0);

        for case in variant["add_noise"].as_array().unwrap() {
            let t = usizes(&case["t"]);
            let noisy = schedule.add_noise(&x0, &noise, &t).unwrap();
            let vel = schedule.get_velocity(&x0, &noise, &t).unwrap();
            let err = max_abs_diff(&values(&noisy), &f64s(&case["out"]))
                .max(max_abs_diff(&values(&vel), &f64s(&case["velocity"])));
            worst[1] = worst[1].max(err);
            assert!(
                err <= TOL,
                "{name} zsnr={zsnr} t={t:?}: add_noise err {err}"
            );
        }

        let steps = variant["steps"].as_array().unwrap();
        assert!(!steps.is_empty());
        for case in steps {
            let pred = prediction_type(case["prediction_type"].as_str().unwrap());
            let clip = case["clip_sample"].as_bool().unwrap();
            let alpha_one = case["set_alpha_to_one"].as_bool().unwrap();
            let s = case["num_inference_steps"].as_u64().unwrap() as usize;
            let t = case["t"].as_u64().unwrap() as usize;
            let eta = case["eta"].as_f64().unwrap();
            let schedule = NoiseSchedule::new(config(pred, clip, alpha_one)).unwrap();
            let sampler = DdimSampler::new(schedule, s, TimestepSpacing::Trailing).unwrap();
            let out = sampler
                .step(
                    &model_output,
                    t,
                    &sample,
                    StepOptions {
                        eta,
                        variance_noise: Some(&noise),
                        ..Default::default()
                    },
                )
                .unwrap();
            let err = max_abs_diff(&values(&out.prev_sample), &f64s(&case["prev_sample"])).max(
                max_abs_diff(
                    &values(&out.pred_original_sample),
                    &f64s(&case["pred_original_sample"]),
                ),
            );
            worst[2] = worst[2].max(err);
            assert!(
                err <= TOL,
                "{name} zsnr={zsnr} {pred:?} S={s} t={t} eta={eta} clip={clip} \
                 alpha_one={alpha_one}: step err {err}"
            );
        }
    }
    println!(
        "{name}: max abs err alphas_cumprod {:.2e}, add_noise/velocity {:.2e}, step {:.2e}",
        worst[0], worst[1], worst[2]
    );
    worst
}

#[test]
fn cosine_schedule_matches_diffusers() {
    check_schedule_file("squaredcos_cap_v2.json");
}

#[test]
fn linear_schedule_matches_diffusers() {
    check_schedule_file("linear.json");
}

#[test]
fn scaled_linear_schedule_matches_diffusers() {
    check_schedule_file("scaled_linear.json");
}

#[test]
fn sigmoid_schedule_matches_reference_formula() {
    check_schedule_file("sigmoid.json");
    check_schedule_file("sigmoid_shifted.json");
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A tiny deterministic LCG + Box-Muller keeps the tests independent of candle's RNG.
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    tensor(&v, shape)
}

#[test]
fn add_noise_round_trips_through_conversions() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig {
        rescale_betas_zero_snr: false,
        ..Default::default()
    })
    .unwrap();
    let x0 = randn(&[4, 16], 1);
    let eps = randn(&[4, 16], 2);
    let t = [0, 250, 731, 999];
    let xt = schedule.add_noise(&x0, &eps, &t).unwrap();
    let v = schedule.get_velocity(&x0, &eps, &t).unwrap();
    use PredictionType::*;
    let targets = [(X0, &x0), (Epsilon, &eps), (VPrediction, &v)];
    for (from, src) in targets {
        for (to, dst) in targets {
            let got = schedule.convert(src, from, to, &xt, &t).unwrap();
            let err = max_abs_diff(&values(&got), &values(dst));
            assert!(err < 1e-9, "{from:?} -> {to:?}: {err}");
        }
    }
    // A single timestep broadcasts over all rows.
    let one = schedule.add_noise(&x0, &eps, &[500]).unwrap();
    let many = schedule.add_noise(&x0, &eps, &[500; 4]).unwrap();
    assert!(max_abs_diff(&values(&one), &values(&many)) < 1e-15);
    assert!(schedule.add_noise(&x0, &eps, &[1, 2]).is_err());
    assert!(schedule.add_noise(&x0, &eps, &[1000]).is_err());
}

#[test]
fn add_noise_works_in_f32() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default()).unwrap();
    let x0 = randn(&[2, 8], 3).to_dtype(DType::F32).unwrap();
    let eps = randn(&[2, 8], 4).to_dtype(DType::F32).unwrap();
    let out = schedule.add_noise(&x0, &eps, &[10, 900]).unwrap();
    assert_eq!(out.dtype(), DType::F32);
    let reference = schedule
        .add_noise(
            &x0.to_dtype(DType::F64).unwrap(),
            &eps.to_dtype(DType::F64).unwrap(),
            &[10, 900],
        )
        .unwrap();
    assert!(max_abs_diff(&values(&out), &values(&reference)) < 1e-6);
}

/// Runs the DDIM loop step by step with an oracle model and returns the final sample.
fn oracle_loop(sampler: &DdimSampler, x0: &Tensor, noise: &Tensor) -> Tensor {
    let schedule = sampler.schedule();
    let kind = schedule.config().prediction_type;
    let t0 = sampler.timesteps()[0];
    let mut latents = schedule.add_noise(x0, noise, &[t0]).unwrap();
    for &t in sampler.timesteps() {
        let x0_true = schedule
            .split_prediction(x0, PredictionType::X0, &latents, &[t])
            .unwrap();
        let out = match kind {
            PredictionType::X0 => x0.clone(),
            PredictionType::Epsilon => x0_true.1,
            PredictionType::VPrediction => schedule.get_velocity(x0, &x0_true.1, &[t]).unwrap(),
        };
        latents = sampler
            .step(&out, t, &latents, StepOptions::default())
            .unwrap()
            .prev_sample;
    }
    latents
}

#[test]
fn ddim_loop_with_oracle_recovers_x0() {
    let x0 = randn(&[3, 32], 5);
    let noise = randn(&[3, 32], 6);
    for (kind, zsnr) in [
        (PredictionType::X0, true),
        (PredictionType::X0, false),
        (PredictionType::VPrediction, true),
        (PredictionType::Epsilon, false),
    ] {
        for (steps, spacing) in [
            (40, TimestepSpacing::TrailingLcm),
            (40, TimestepSpacing::Trailing),
            (7, TimestepSpacing::Leading),
            (10, TimestepSpacing::Linspace),
        ] {
            let schedule = NoiseSchedule::new(NoiseScheduleConfig {
                prediction_type: kind,
                rescale_betas_zero_snr: zsnr,
                ..Default::default()
            })
            .unwrap();
            let sampler = DdimSampler::new(schedule, steps, spacing).unwrap();
            let last = *sampler.timesteps().last().unwrap();
            let out = oracle_loop(&sampler, &x0, &noise);
            let err = max_abs_diff(&values(&out), &values(&x0));
            // Exact recovery needs the final step to land on alpha_bar = 1 (prev_t < 0).
            assert!(sampler.prev_timestep(last) < 0);
            assert!(err < 1e-5, "{kind:?} zsnr={zsnr} {spacing:?}: {err}");
        }
    }
}

#[test]
fn unguided_and_guided_loops_return_the_oracle_x0() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default()).unwrap();
    let sampler = DdimSampler::new(schedule, 40, TimestepSpacing::TrailingLcm).unwrap();
    let x0 = randn(&[2, 16], 7);
    let opts = SamplingOptions::paper_two_tower_1_6b();
    let latents = sampler.initial_latents(&randn(&[2, 16], 8), &opts).unwrap();
    let mut seen = Vec::new();
    let plain = sampler
        .denoise(latents.clone(), &opts, |_, t| {
            seen.push(t);
            Ok(x0.clone())
        })
        .unwrap();
    assert_eq!(seen, sampler.timesteps());
    assert!(max_abs_diff(&values(&plain), &values(&x0)) < 1e-12);
    // cond == uncond: guidance must not change anything, and the t = T-1 step (alpha_bar
    // = 0 under zero-SNR, where the x0 -> eps -> x0 round trip would divide by zero) is
    // skipped.
    let guided = sampler
        .denoise_guided(latents, &opts, |_, _| Ok((x0.clone(), x0.clone())))
        .unwrap();
    assert!(max_abs_diff(&values(&guided), &values(&x0)) < 1e-5);
}

#[test]
fn initial_latents_scale_and_clip() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default()).unwrap();
    let sampler = DdimSampler::new(schedule, 40, TimestepSpacing::TrailingLcm).unwrap();
    let opts = SamplingOptions {
        initial_noise_scale: 0.5,
        clip_noise: 1.0,
        ..Default::default()
    };
    let out = sampler
        .initial_latents(&tensor(&[-4.0, -1.0, 0.4, 3.0], &[1, 4]), &opts)
        .unwrap();
    assert_eq!(values(&out), vec![-1.0, -0.5, 0.2, 1.0]);
}

#[test]
fn epsilon_scaling_only_rescales_the_direction() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default()).unwrap();
    let sampler = DdimSampler::new(schedule, 40, TimestepSpacing::TrailingLcm).unwrap();
    let sample = randn(&[2, 8], 9);
    let output = randn(&[2, 8], 10);
    let t = 499;
    let step = |s: Option<f64>| {
        sampler
            .step(
                &output,
                t,
                &sample,
                StepOptions {
                    epsilon_scaling: s,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let base = step(None);
    let one = step(Some(1.0));
    let scaled = step(Some(1.00045));
    assert_eq!(values(&base.prev_sample), values(&one.prev_sample));
    assert_eq!(
        values(&base.pred_original_sample),
        values(&scaled.pred_original_sample)
    );
    let schedule = sampler.schedule();
    let (_, eps) = schedule
        .split_prediction(&output, PredictionType::X0, &sample, &[t])
        .unwrap();
    let a_prev = schedule.alphas_cumprod()[sampler.prev_timestep(t) as usize];
    let expect = (base.prev_sample.clone()
        + eps
            .affine((1.0 - a_prev).sqrt() * (1.0 / 1.00045 - 1.0), 0.0)
            .unwrap())
    .unwrap();
    assert!(max_abs_diff(&values(&scaled.prev_sample), &values(&expect)) < 1e-12);
}

#[test]
fn guidance_scale_one_is_cond() {
    let cond = randn(&[3, 8], 11);
    let uncond = randn(&[3, 8], 12);
    for rescale in [0.0, 0.7, 1.0] {
        let g = guide(&cond, &uncond, 1.0, rescale).unwrap();
        assert!(max_abs_diff(&values(&g), &values(&cond)) < 1e-12);
    }
}

#[test]
fn guidance_rescale_zero_is_plain_cfg() {
    let cond = randn(&[3, 8], 13);
    let uncond = randn(&[3, 8], 14);
    let g = guide(&cond, &uncond, 3.0, 0.0).unwrap();
    let c = values(&cond);
    let u = values(&uncond);
    let expect: Vec<f64> = c.iter().zip(&u).map(|(c, u)| u + 3.0 * (c - u)).collect();
    assert!(max_abs_diff(&values(&g), &expect) < 1e-12);
}

#[test]
fn guidance_rescale_is_per_row() {
    let cond = tensor(&[1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 2.0, 2.0], &[2, 4]);
    let uncond = tensor(&[0.0, 0.0, 0.0, 0.0, 1.0, -1.0, 1.0, -1.0], &[2, 4]);
    let (scale, r) = (2.0, 0.7);
    let got = values(&guide(&cond, &uncond, scale, r).unwrap());
    let std = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    let c = values(&cond);
    let u = values(&uncond);
    for row in 0..2 {
        let cr = &c[row * 4..row * 4 + 4];
        let ur = &u[row * 4..row * 4 + 4];
        let g: Vec<f64> = cr
            .iter()
            .zip(ur)
            .map(|(c, u)| u + scale * (c - u))
            .collect();
        let f = r * std(cr) / std(&g) + (1.0 - r);
        let expect: Vec<f64> = g.iter().map(|x| x * f).collect();
        assert!(max_abs_diff(&got[row * 4..row * 4 + 4], &expect) < 1e-12);
    }
}

#[test]
fn guidance_is_skipped_only_at_the_last_training_step() {
    assert!(!guidance_applies(999, 1000));
    assert!(guidance_applies(998, 1000));
    assert!(guidance_applies(0, 1000));
}

#[test]
fn sampled_timesteps_are_uniform_in_range() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig {
        num_train_timesteps: 10,
        ..Default::default()
    })
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let ts = schedule.sample_timesteps(10_000, &mut rng);
    let mut counts = [0usize; 10];
    for t in ts {
        counts[t] += 1;
    }
    assert!(
        counts.iter().all(|&c| (850..1150).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn clamped_snr_scales_are_normalised() {
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default()).unwrap();
    let t = [0, 100, 500, 999];
    let w = schedule.clamped_snr_loss_scales(&t, 0.0, 5.0);
    assert!((w.iter().sum::<f64>() - 4.0).abs() < 1e-12);
    // snr(0) is huge and clamps to 5; zero-SNR's last step weighs nothing.
    assert!(w[0] > w[2] && w[3] == 0.0);
}

#[test]
fn config_round_trips_through_json() {
    let config = NoiseScheduleConfig {
        beta_schedule: BetaSchedule::Sigmoid {
            delta: 1.5,
            gamma: -1.0,
        },
        prediction_type: PredictionType::VPrediction,
        ..Default::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    let back: NoiseScheduleConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
    let sample: PredictionType = serde_json::from_str("\"sample\"").unwrap();
    assert_eq!(sample, PredictionType::X0);
    let partial: NoiseScheduleConfig = serde_json::from_str(
        r#"{"beta_schedule":{"kind":"linear","beta_start":0.0001,"beta_end":0.02}}"#,
    )
    .unwrap();
    assert!(partial.rescale_betas_zero_snr);
}
