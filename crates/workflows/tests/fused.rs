//! The data-parallel fused engine ([`FusedLcm`]): splitting a batch's sequences over engine
//! replicas gives the same loss and gradient as one engine over the whole batch.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::builder::{ModelConfig, ModelKind, build_model};
use lcm_train::new_rng;
use lcm_train::run::seeded_init;
use lcm_workflows::fused::FusedLcm;

/// Loss and flat gradient of one padded batch with `replicas` engine replicas.
fn loss_and_gradient(kind: ModelKind, replicas: usize) -> (f64, Vec<f32>) {
    let config = ModelConfig::resolve(kind, "tiny", 16).unwrap();
    let varmap = VarMap::new();
    let net = build_model(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    seeded_init(&varmap, 5).unwrap();
    let mut fused = FusedLcm::with_replicas(&net, &config, &varmap, replicas)
        .unwrap()
        .unwrap();
    // Five sequences of 9 positions, unequal lengths (one of a single concept) so that the
    // shares hold different numbers of predictions.
    let (b, t, d) = (5, 9, 16);
    let lengths = vec![9, 4, 1, 9, 6];
    let mut rng = new_rng(3);
    let mut x: Vec<f32> = lcm_util::random::standard_normals(&mut rng, b * t * d)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    for (bi, &len) in lengths.iter().enumerate() {
        x[(bi * t + len) * d..(bi + 1) * t * d].fill(0.0);
    }
    let x = Tensor::from_vec(x, (b, t, d), &Device::Cpu).unwrap();
    let mut draws = new_rng(4);
    let loss = fused
        .loss_and_gradients(&x, &lengths, 0.3, &mut draws)
        .unwrap()
        .mean();
    (loss, fused.gradients().1.to_vec())
}

fn shares_agree_with_one_engine(kind: ModelKind) {
    let (loss, whole) = loss_and_gradient(kind, 1);
    let scale = whole.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for replicas in [2, 3] {
        let (shared_loss, shares) = loss_and_gradient(kind, replicas);
        assert!(
            ((shared_loss - loss) / loss).abs() < 1e-6,
            "{kind:?} × {replicas}: loss {shared_loss} vs {loss}"
        );
        let worst = whole
            .iter()
            .zip(&shares)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{kind:?} × {replicas}: gradients differ by {worst} (max |g| {scale})"
        );
    }
}

#[test]
fn base_lcm_shares_agree_with_one_engine() {
    shares_agree_with_one_engine(ModelKind::Base);
}

#[test]
fn two_tower_shares_agree_with_one_engine() {
    shares_agree_with_one_engine(ModelKind::TwoTower);
}

#[test]
fn one_tower_shares_agree_with_one_engine() {
    shares_agree_with_one_engine(ModelKind::OneTower);
}
