//! Two-Tower generation with the fused denoiser against candle (`Lcm::next_concept`): from
//! the same noise, a 40-step guided DDIM run gives the same concept to 1e-4 (max-abs
//! difference over max-abs value), over a prefix of several rows, unguided, with an empty
//! prefix, and along a continuation that feeds each concept back.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::diffusion::{NoiseSchedule, NoiseScheduleConfig};
use lcm_model::generate::{DiffusionSampling, Lcm};
use lcm_model::presets::{two_tower_small, two_tower_tiny};
use lcm_model::two_tower::{TwoTowerConfig, TwoTowerLcm, standard_normal};
use lcm_workflows::fused_generate::Generator;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Every parameter seeded-random, the zero-initialised modulators included.
fn random_lcm(cfg: &TwoTowerConfig, seed: u64) -> Lcm {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = TwoTowerLcm::new(cfg, vb).expect("model");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut named: Vec<_> = varmap
        .data()
        .lock()
        .expect("varmap")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in named {
        let fan_in = *var.dims().last().unwrap_or(&1) as f32;
        let a = 1.0 / fan_in.sqrt();
        let mut values: Vec<f32> = (0..var.elem_count())
            .map(|_| rng.random_range(-a..a))
            .collect();
        if name.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v += 1.0);
        }
        let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).expect("tensor");
        var.set(&t).expect("set");
    }
    let schedule = NoiseSchedule::new(NoiseScheduleConfig::default()).expect("schedule");
    Lcm::TwoTower(model, schedule)
}

fn relative_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale.max(1e-30)
}

/// Both paths from one prefix of `prefix` concepts per row and the same noise.
fn compare(cfg: &TwoTowerConfig, rows: usize, prefix: usize, sampling: &DiffusionSampling) -> f32 {
    let lcm = random_lcm(cfg, 11);
    let mut rng = StdRng::seed_from_u64(12);
    let dd = cfg.input_dim;
    let mut state = lcm.new_state();
    if prefix > 0 {
        let x = standard_normal(&[rows, prefix, dd], &mut rng, DType::F32, &Device::Cpu).unwrap();
        lcm.extend(&mut state, &x).unwrap();
    }
    let noise = standard_normal(&[rows, 1, dd], &mut rng, DType::F32, &Device::Cpu).unwrap();
    let mut fused = Generator::new(&lcm);
    assert!(fused.is_fused());
    let got = fused
        .next_concept_from_noise(&state, sampling, &noise)
        .unwrap();
    let want = lcm
        .next_concept_from_noise(&state, sampling, &noise)
        .unwrap();
    let rel = relative_difference(&got, &want);
    eprintln!("rows {rows}, prefix {prefix}: relative difference {rel:e}");
    assert!(rel <= 1e-4, "fused vs candle: relative difference {rel:e}");
    rel
}

#[test]
fn guided_40_steps_match_candle_on_tiny() {
    let s = DiffusionSampling::default();
    assert_eq!(s.steps, 40);
    assert!(s.guided());
    compare(&two_tower_tiny(), 1, 5, &s);
}

#[test]
fn guided_40_steps_match_candle_on_small() {
    compare(&two_tower_small(), 1, 16, &DiffusionSampling::default());
}

#[test]
fn several_rows_match_candle() {
    compare(&two_tower_tiny(), 3, 4, &DiffusionSampling::default());
}

#[test]
fn unguided_and_empty_prefix_match_candle() {
    let mut s = DiffusionSampling::default();
    s.options.guidance_scale = 1.0;
    s.options.guidance_rescale = 0.0;
    assert!(!s.guided());
    compare(&two_tower_tiny(), 2, 3, &s);
    compare(&two_tower_tiny(), 1, 0, &DiffusionSampling::default());
}

#[test]
fn a_continuation_matches_candle_concept_by_concept() {
    let cfg = two_tower_tiny();
    let lcm = random_lcm(&cfg, 13);
    let s = DiffusionSampling::default();
    let prompt = standard_normal(
        &[1, 3, cfg.input_dim],
        &mut StdRng::seed_from_u64(14),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let mut fused = Generator::new(&lcm);
    let mut candle = Generator::candle(&lcm);
    assert!(!candle.is_fused());
    let (mut fs, mut cs) = (lcm.new_state(), lcm.new_state());
    lcm.extend(&mut fs, &prompt).unwrap();
    lcm.extend(&mut cs, &prompt).unwrap();
    let (mut frng, mut crng) = (StdRng::seed_from_u64(15), StdRng::seed_from_u64(15));
    for step in 0..4 {
        let a = fused.next_concept(&fs, &s, 1, &mut frng).unwrap();
        let b = candle.next_concept(&cs, &s, 1, &mut crng).unwrap();
        let rel = relative_difference(&a, &b);
        assert!(rel <= 1e-4, "concept {step}: relative difference {rel:e}");
        lcm.extend(&mut fs, &a).unwrap();
        lcm.extend(&mut cs, &b).unwrap();
    }
}
