//! Next-concept prediction (`lcm_model::generate`): the teacher-forced pass over a whole
//! document must equal incremental KV-cached generation position by position, for every
//! variant, with the same initial noise; guidance batching must equal the plain two-branch
//! loop; sampling is reproducible under a seed.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::base_lcm::BaseLcm;
use lcm_model::diffusion::{DdimSampler, NoiseSchedule, NoiseScheduleConfig, SamplingOptions};
use lcm_model::generate::{DiffusionSampling, Lcm, row_cosines};
use lcm_model::one_tower::OneTowerLcm;
use lcm_model::presets;
use lcm_model::two_tower::TwoTowerLcm;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 16;

fn uniform(shape: &[usize], seed: u64, scale: f64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| (scale * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

/// Seeded random weights everywhere (including the zero-initialised AdaLN modulators, so
/// that the denoiser actually depends on its context).
fn reseed(varmap: &VarMap, seed: u64) {
    let mut named: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, v)) in named.iter().enumerate() {
        let scale = match v.dims() {
            [_, fan_in] if !name.contains("pos_embed") => 1.0 / (*fan_in as f64).sqrt(),
            _ => 0.3,
        };
        let mut t = uniform(v.dims(), seed + i as u64, scale);
        if name.contains("norm") && name.ends_with("weight") {
            t = (t + 1.0).unwrap();
        }
        v.set(&t).unwrap();
    }
}

fn schedule() -> NoiseSchedule {
    NoiseSchedule::new(NoiseScheduleConfig::default()).unwrap()
}

fn model(kind: &str) -> Lcm {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let lcm = match kind {
        "base" => Lcm::Base(BaseLcm::new(&presets::base_lcm_tiny(), vb).unwrap()),
        "two-tower" => Lcm::TwoTower(
            TwoTowerLcm::new(&presets::two_tower_tiny(), vb).unwrap(),
            schedule(),
        ),
        "one-tower" => Lcm::OneTower(
            OneTowerLcm::new(&presets::one_tower_tiny(), vb).unwrap(),
            schedule(),
        ),
        other => panic!("unknown {other}"),
    };
    reseed(&varmap, 7);
    lcm
}

fn sampling(steps: usize) -> DiffusionSampling {
    DiffusionSampling {
        steps,
        ..DiffusionSampling::default()
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Teacher-forced row `n` vs incremental generation after the prefix `x[..=n]` fed one
/// concept at a time, with the same initial noise for that position.
fn teacher_forced_matches_incremental(kind: &str, s: &DiffusionSampling) {
    let lcm = model(kind);
    let t = 6;
    let x = uniform(&[1, t, DIM], 1, 1.5);
    let randn = uniform(&[1, t, DIM], 2, 1.0);
    let forced = lcm
        .predict_teacher_forced_from_noise(&x, s, &randn)
        .unwrap();
    assert_eq!(forced.dims(), &[1, t - 1, DIM]);

    let mut state = lcm.new_state();
    for n in 0..t - 1 {
        lcm.extend(&mut state, &x.narrow(1, n, 1).unwrap()).unwrap();
        assert_eq!(state.len(), n + 1);
        let noise = randn.narrow(1, n + 1, 1).unwrap();
        let next = lcm.next_concept_from_noise(&state, s, &noise).unwrap();
        let diff = max_abs_diff(&next, &forced.narrow(1, n, 1).unwrap());
        assert!(diff < 2e-4, "{kind} position {}: diff {diff}", n + 1);
    }
}

#[test]
fn base_teacher_forced_equals_incremental() {
    teacher_forced_matches_incremental("base", &sampling(4));
}

#[test]
fn two_tower_teacher_forced_equals_incremental_guided() {
    teacher_forced_matches_incremental("two-tower", &sampling(6));
}

#[test]
fn two_tower_teacher_forced_equals_incremental_unguided() {
    let mut s = sampling(5);
    s.options = SamplingOptions::default();
    teacher_forced_matches_incremental("two-tower", &s);
}

#[test]
fn one_tower_teacher_forced_equals_incremental_guided() {
    teacher_forced_matches_incremental("one-tower", &sampling(6));
}

#[test]
fn one_tower_teacher_forced_equals_incremental_unguided() {
    let mut s = sampling(5);
    s.options = SamplingOptions::default();
    teacher_forced_matches_incremental("one-tower", &s);
}

/// A prefix fed in one call must give the same state as one fed concept by concept.
#[test]
fn prefill_in_one_call_equals_stepwise() {
    for kind in ["base", "two-tower", "one-tower"] {
        let lcm = model(kind);
        let x = uniform(&[1, 4, DIM], 3, 1.0);
        let noise = uniform(&[1, 1, DIM], 4, 1.0);
        let s = sampling(4);
        let mut whole = lcm.new_state();
        lcm.extend(&mut whole, &x).unwrap();
        let mut stepwise = lcm.new_state();
        for n in 0..4 {
            lcm.extend(&mut stepwise, &x.narrow(1, n, 1).unwrap())
                .unwrap();
        }
        let a = lcm.next_concept_from_noise(&whole, &s, &noise).unwrap();
        let b = lcm.next_concept_from_noise(&stepwise, &s, &noise).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-4, "{kind}");
    }
}

/// The Two-Tower guided step runs cond and uncond as one batch with zero keys standing in
/// for the unconditional branch; it must equal the two-call loop over `predict`.
#[test]
fn two_tower_batched_guidance_equals_two_branch_loop() {
    let Lcm::TwoTower(tt, sched) = model("two-tower") else {
        unreachable!()
    };
    let lcm = Lcm::TwoTower(tt.clone(), sched.clone());
    let x = uniform(&[2, 3, DIM], 5, 1.0);
    let randn = uniform(&[2, 1, DIM], 6, 1.0);
    let s = sampling(8);
    let mut state = lcm.new_state();
    lcm.extend(&mut state, &x).unwrap();
    let batched = lcm.next_concept_from_noise(&state, &s, &randn).unwrap();

    let context = tt.encode(&x, None).unwrap();
    let sampler = DdimSampler::new(sched, s.steps, s.spacing).unwrap();
    let latents = sampler.initial_latents(&randn, &s.options).unwrap();
    let manual = sampler
        .denoise_guided(latents, &s.options, |z, t| {
            Ok((tt.predict(z, t, Some(&context))?, tt.predict(z, t, None)?))
        })
        .unwrap();
    let diff = max_abs_diff(&batched, &manual);
    assert!(diff < 1e-4, "diff {diff}");
}

#[test]
fn one_tower_unconditional_all_positions_match_single() {
    let Lcm::OneTower(ot, _) = model("one-tower") else {
        unreachable!()
    };
    let z = uniform(&[2, 5, DIM], 8, 1.0);
    let all = ot.predict_unconditional_all(&z, 321).unwrap();
    for n in 0..5 {
        let one = ot
            .predict_unconditional(&z.narrow(1, n, 1).unwrap(), 321, n)
            .unwrap();
        let diff = max_abs_diff(&one, &all.narrow(1, n, 1).unwrap());
        assert!(diff < 1e-5, "position {n}: {diff}");
    }
}

/// Later concepts must not leak into earlier teacher-forced predictions.
#[test]
fn teacher_forcing_is_causal() {
    for kind in ["base", "two-tower", "one-tower"] {
        let lcm = model(kind);
        let x = uniform(&[1, 5, DIM], 9, 1.0);
        let changed = Tensor::cat(
            &[x.narrow(1, 0, 3).unwrap(), uniform(&[1, 2, DIM], 10, 1.0)],
            1,
        )
        .unwrap();
        let randn = uniform(&[1, 5, DIM], 11, 1.0);
        let s = sampling(3);
        let a = lcm
            .predict_teacher_forced_from_noise(&x, &s, &randn)
            .unwrap();
        let b = lcm
            .predict_teacher_forced_from_noise(&changed, &s, &randn)
            .unwrap();
        // Rows 0 and 1 predict positions 1 and 2 from x[..=0] and x[..=1]: unchanged.
        let diff = max_abs_diff(&a.narrow(1, 0, 2).unwrap(), &b.narrow(1, 0, 2).unwrap());
        assert!(diff < 1e-5, "{kind}: {diff}");
        // Row 3 sees a changed concept.
        let moved = max_abs_diff(&a.narrow(1, 3, 1).unwrap(), &b.narrow(1, 3, 1).unwrap());
        assert!(
            moved > 1e-3,
            "{kind}: prediction ignores its context ({moved})"
        );
    }
}

#[test]
fn sampling_is_reproducible_under_a_seed() {
    let lcm = model("two-tower");
    let x = uniform(&[1, 3, DIM], 12, 1.0);
    let mut state = lcm.new_state();
    lcm.extend(&mut state, &x).unwrap();
    let s = sampling(5);
    let draw = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        lcm.next_concept(&state, &s, 1, &mut rng).unwrap()
    };
    assert_eq!(max_abs_diff(&draw(1), &draw(1)), 0.0);
    assert!(max_abs_diff(&draw(1), &draw(2)) > 1e-4);
}

#[test]
fn errors_are_clear() {
    let base = model("base");
    let state = base.new_state();
    let noise = uniform(&[1, 1, DIM], 13, 1.0);
    let err = base
        .next_concept_from_noise(&state, &sampling(2), &noise)
        .unwrap_err();
    assert!(
        err.to_string().contains("at least one prompt concept"),
        "{err}"
    );

    let mut state = base.new_state();
    let too_long = uniform(&[1, base.max_seq_len() + 1, DIM], 14, 1.0);
    let err = base.extend(&mut state, &too_long).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the model's context"),
        "{err}"
    );

    let short = uniform(&[1, 1, DIM], 15, 1.0);
    assert!(
        base.predict_teacher_forced_from_noise(&short, &sampling(2), &short)
            .is_err()
    );
    let other = model("two-tower");
    let mut state = other.new_state();
    assert!(base.extend(&mut state, &short).is_err());
}

#[test]
fn row_cosines_match_definition() {
    let a = Tensor::new(&[[1f32, 0.0], [0.0, 2.0], [-3.0, 0.0]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[2f32, 0.0], &Device::Cpu).unwrap();
    let c = row_cosines(&a, &b).unwrap();
    assert_eq!(c.len(), 3);
    assert!((c[0] - 1.0).abs() < 1e-6 && c[1].abs() < 1e-6 && (c[2] + 1.0).abs() < 1e-6);
}
