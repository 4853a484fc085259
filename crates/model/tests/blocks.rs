//! Gradient, mask, cache and RoPE checks for `lcm_model::blocks`.
//!
//! Gradient tests run in f64 on the CPU: scalar loss `sum(out ⊙ R)` with a fixed random
//! `R`, candle's `backward()` against central differences on a sample of coordinates.

use candle_core::{D, DType, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use lcm_model::blocks::{
    AttentionMask, DecoderCache, DecoderConfig, KvCache, MASK_NEG, MultiHeadAttention, RmsNorm,
    RotaryEmbedding, SwiGlu, TransformerDecoder, TransformerDecoderLayer,
    softmax_last_dim_differentiable, swiglu_inner_dim,
};
mod common;

use common::{cpu, uniform, values};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const H: f64 = 1e-5;
const REL_TOL: f64 = 1e-4;
const SAMPLES_PER_VAR: usize = 12;

fn var(shape: &[usize], seed: u64) -> Var {
    Var::from_tensor(&uniform(shape, seed, 1.0, DType::F64)).unwrap()
}

/// Replaces candle's unseeded initialisation with seeded values so that every run checks
/// the same point, and so that norm weights and biases are not trivially 1 or 0.
fn reseed(varmap: &VarMap, seed: u64, scale: f64) -> Vec<(String, Var)> {
    let data = varmap.data().lock().unwrap();
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (_, v)) in named.iter().enumerate() {
        let t = uniform(v.dims(), seed + i as u64, scale, v.dtype());
        v.set(&t).unwrap();
    }
    named
}

fn f64_varmap() -> (VarMap, VarBuilder<'static>) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &cpu());
    (varmap, vb)
}

/// Largest absolute analytic gradient per checked variable, after asserting every sampled
/// coordinate matches finite differences.
fn grad_check(
    label: &str,
    vars: &[(String, Var)],
    out_fn: &dyn Fn() -> Result<Tensor>,
) -> Vec<(String, f64)> {
    let out = out_fn().unwrap();
    let r = uniform(out.dims(), 4242, 1.0, DType::F64);
    let loss_of = |o: &Tensor| -> f64 { (o * &r).unwrap().sum_all().unwrap().to_scalar().unwrap() };
    let loss = (&out * &r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();

    let mut rng = StdRng::seed_from_u64(7);
    let mut summary = Vec::new();
    for (name, v) in vars {
        let base = values(v.as_tensor());
        let analytic = match grads.get(v.as_tensor()) {
            Some(g) => values(g),
            None => vec![0.0; base.len()],
        };
        let max_grad = analytic.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        let n = base.len();
        let coords: Vec<usize> = if n <= SAMPLES_PER_VAR {
            (0..n).collect()
        } else {
            (0..SAMPLES_PER_VAR)
                .map(|_| rng.random_range(0..n))
                .collect()
        };
        let loss = || loss_of(&out_fn().unwrap());
        lcm_gradcheck::assert_matches_central_differences(
            &format!("{label}: d/d{name}"),
            v,
            &analytic,
            coords,
            H,
            |fd, g| REL_TOL * g.abs().max(fd.abs()) + 1e-9,
            &loss,
        );
        summary.push((name.clone(), max_grad));
    }
    summary
}

fn assert_nonzero(summary: &[(String, f64)], names: &[&str]) {
    for want in names {
        let (_, g) = summary
            .iter()
            .find(|(n, _)| n == want || n.ends_with(&format!(".{want}")))
            .unwrap_or_else(|| panic!("no gradient summary for {want}"));
        assert!(*g > 1e-6, "gradient of {want} is (near) zero: {g:e}");
    }
}

// ---------------------------------------------------------------------------------------
// Finite-difference gradient checks
// ---------------------------------------------------------------------------------------

#[test]
fn rms_norm_gradients_match_finite_differences() {
    let (varmap, vb) = f64_varmap();
    let norm = RmsNorm::new(6, 1e-5, vb.pp("norm")).unwrap();
    let mut vars = reseed(&varmap, 1, 1.0);
    let x = var(&[2, 3, 6], 2);
    vars.push(("x".into(), x.clone()));
    let s = grad_check("rms_norm", &vars, &|| norm.forward(x.as_tensor()));
    assert_nonzero(&s, &["norm.weight", "x"]);
}

#[test]
fn rope_gradient_matches_finite_differences() {
    let rope = RotaryEmbedding::new(8, 16, 1e4, DType::F64, &cpu()).unwrap();
    let x = var(&[2, 2, 5, 8], 3);
    let vars = vec![("x".to_string(), x.clone())];
    let s = grad_check("rope", &vars, &|| rope.apply(x.as_tensor(), 3));
    assert_nonzero(&s, &["x"]);
}

#[test]
fn swiglu_gradients_match_finite_differences() {
    let (varmap, vb) = f64_varmap();
    let ffn = SwiGlu::new(6, 10, true, vb.pp("ffn")).unwrap();
    let mut vars = reseed(&varmap, 10, 0.5);
    let x = var(&[2, 3, 6], 4);
    vars.push(("x".into(), x.clone()));
    let s = grad_check("swiglu", &vars, &|| ffn.forward(x.as_tensor()));
    assert_eq!(vars.len(), 7, "three weights, three biases, the input");
    assert_nonzero(
        &s,
        &[
            "gate_proj.weight",
            "gate_proj.bias",
            "inner_proj.weight",
            "inner_proj.bias",
            "output_proj.weight",
            "output_proj.bias",
            "x",
        ],
    );
}

#[test]
fn composed_softmax_gradient_matches_finite_differences() {
    let x = var(&[3, 4, 7], 5);
    let vars = vec![("x".to_string(), x.clone())];
    let s = grad_check("softmax", &vars, &|| {
        softmax_last_dim_differentiable(&(x.as_tensor() * 3.0)?)
    });
    assert_nonzero(&s, &["x"]);
}

/// Why the composed softmax exists: candle 0.11.1's fused `softmax_last_dim` is registered
/// with `apply_op1_no_bwd`, so nothing upstream of it receives a gradient. In attention
/// that zeroes the Q and K gradients while V still gets one, which is easy to miss.
#[test]
fn fused_softmax_passes_no_gradient() {
    let x = var(&[2, 5], 6);
    let fused = candle_nn::ops::softmax_last_dim(x.as_tensor()).unwrap();
    let composed = softmax_last_dim_differentiable(x.as_tensor()).unwrap();
    let diff = (&fused - &composed)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "forwards agree");

    let r = uniform(&[2, 5], 1, 1.0, DType::F64);
    let grads = (&fused * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        grads.get(x.as_tensor()).is_none(),
        "fused softmax passed a gradient"
    );

    // Attention-shaped: out = softmax(q kᵀ) v.
    let q = var(&[1, 4, 3], 7);
    let k = var(&[1, 4, 3], 8);
    let v = var(&[1, 4, 3], 9);
    let scores = q.as_tensor().matmul(&k.as_tensor().t().unwrap()).unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    let out = probs.matmul(v.as_tensor()).unwrap();
    let r = uniform(out.dims(), 2, 1.0, DType::F64);
    let grads = (&out * &r).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(q.as_tensor()).is_none());
    assert!(grads.get(k.as_tensor()).is_none());
    assert!(
        grads.get(v.as_tensor()).is_some(),
        "V is downstream of the softmax"
    );
}

struct AttnFixture {
    attn: MultiHeadAttention,
    rope: RotaryEmbedding,
    vars: Vec<(String, Var)>,
}

fn attn_fixture(bias: bool) -> AttnFixture {
    let (varmap, vb) = f64_varmap();
    let attn = MultiHeadAttention::new(8, 2, bias, vb.pp("attn")).unwrap();
    let vars = reseed(&varmap, 20, 0.6);
    let rope = RotaryEmbedding::new(4, 32, 1e4, DType::F64, &cpu()).unwrap();
    AttnFixture { attn, rope, vars }
}

/// `k_proj.bias` is left out: without RoPE it adds `q_i·b_k` to every score of row `i`,
/// which softmax cancels, so its true gradient is zero (FD still checks it).
const QKVO: [&str; 7] = [
    "q_proj.weight",
    "k_proj.weight",
    "v_proj.weight",
    "output_proj.weight",
    "q_proj.bias",
    "v_proj.bias",
    "output_proj.bias",
];

#[test]
fn attention_no_mask_gradients_match_finite_differences() {
    let f = attn_fixture(true);
    let mut vars = f.vars.clone();
    let xq = var(&[2, 4, 8], 30);
    let xkv = var(&[2, 6, 8], 31);
    vars.push(("x_q".into(), xq.clone()));
    vars.push(("x_kv".into(), xkv.clone()));
    let s = grad_check("attention/none", &vars, &|| {
        f.attn.forward(
            xq.as_tensor(),
            xkv.as_tensor(),
            &AttentionMask::None,
            None,
            None,
        )
    });
    assert_nonzero(&s, &QKVO);
    assert_nonzero(&s, &["x_q", "x_kv"]);
}

#[test]
fn attention_causal_rope_gradients_match_finite_differences() {
    let f = attn_fixture(true);
    let mut vars = f.vars.clone();
    let x = var(&[2, 5, 8], 32);
    vars.push(("x".into(), x.clone()));
    let s = grad_check("attention/causal", &vars, &|| {
        f.attn.forward(
            x.as_tensor(),
            x.as_tensor(),
            &AttentionMask::Causal,
            Some((&f.rope, 2, 2)),
            None,
        )
    });
    assert_nonzero(&s, &QKVO);
    // RoPE rotates b_k differently per key position, so here it does matter.
    assert_nonzero(&s, &["k_proj.bias"]);
}

#[test]
fn attention_shifted_causal_gradients_match_finite_differences() {
    let f = attn_fixture(false);
    let mut vars = f.vars.clone();
    let xq = var(&[2, 4, 8], 33);
    // Keys [0-vector, c_1..c_4]: the zero row is data, not a parameter.
    let ctx = var(&[2, 4, 8], 34);
    vars.push(("ctx".into(), ctx.clone()));
    let s = grad_check("attention/shifted-causal", &vars, &|| {
        let zero = Tensor::zeros((2, 1, 8), DType::F64, &cpu())?;
        let keys = Tensor::cat(&[&zero, ctx.as_tensor()], 1)?;
        f.attn.forward(
            xq.as_tensor(),
            &keys,
            &AttentionMask::ShiftedCausal,
            None,
            None,
        )
    });
    assert_nonzero(&s, &QKVO[..4]);
    assert_nonzero(&s, &["ctx"]);
}

#[test]
fn attention_identity_gradients_match_finite_differences() {
    let f = attn_fixture(true);
    let mut vars = f.vars.clone();
    let x = var(&[2, 5, 8], 35);
    vars.push(("x".into(), x.clone()));
    let s = grad_check("attention/identity", &vars, &|| {
        f.attn.forward(
            x.as_tensor(),
            x.as_tensor(),
            &AttentionMask::Identity,
            Some((&f.rope, 0, 0)),
            None,
        )
    });
    assert_nonzero(&s, &["v_proj.weight", "output_proj.weight", "x"]);
    // With one visible key the softmax is constant 1: Q and K truly have zero gradient,
    // and finite differences (checked above) agree.
    for (name, g) in &s {
        if name.contains("q_proj") || name.contains("k_proj") {
            assert_eq!(*g, 0.0, "{name}");
        }
    }
}

#[test]
fn attention_additive_mask_gradients_match_finite_differences() {
    let f = attn_fixture(true);
    let mut vars = f.vars.clone();
    let x = var(&[2, 4, 8], 36);
    vars.push(("x".into(), x.clone()));
    // Per-batch-row mask [B, 1, Tq, Tk]: batch 0 causal, batch 1 sees keys 0 and itself.
    let mut m = vec![0.0; 2 * 4 * 4];
    for i in 0..4 {
        for j in 0..4 {
            if j > i {
                m[i * 4 + j] = MASK_NEG;
            }
            if j != 0 && j != i {
                m[16 + i * 4 + j] = MASK_NEG;
            }
        }
    }
    let mask = Tensor::from_vec(m, (2, 1, 4, 4), &cpu()).unwrap();
    let mask = AttentionMask::Additive(mask);
    let s = grad_check("attention/additive", &vars, &|| {
        f.attn.forward(
            x.as_tensor(),
            x.as_tensor(),
            &mask,
            Some((&f.rope, 0, 0)),
            None,
        )
    });
    assert_nonzero(&s, &QKVO);
}

fn small_config() -> DecoderConfig {
    DecoderConfig {
        ffn_inner_dim: 12,
        max_seq_len: 32,
        ..DecoderConfig::new(8, 2, 2)
    }
}

#[test]
fn decoder_layer_gradients_match_finite_differences() {
    let (varmap, vb) = f64_varmap();
    let cfg = small_config();
    let layer = TransformerDecoderLayer::new(&cfg, vb.pp("layer")).unwrap();
    let rope =
        RotaryEmbedding::new(cfg.head_dim(), 32, cfg.rope_theta, DType::F64, &cpu()).unwrap();
    let mut vars = reseed(&varmap, 40, 0.5);
    let x = var(&[2, 5, 8], 41);
    vars.push(("x".into(), x.clone()));
    let s = grad_check("decoder layer", &vars, &|| {
        layer.forward(x.as_tensor(), &AttentionMask::Causal, Some(&rope), None)
    });
    assert_nonzero(&s, &QKVO);
    assert_nonzero(
        &s,
        &[
            "self_attn_layer_norm.weight",
            "ffn_layer_norm.weight",
            "gate_proj.weight",
        ],
    );
}

#[test]
fn full_decoder_gradients_match_finite_differences() {
    let (varmap, vb) = f64_varmap();
    let cfg = small_config();
    let dec = TransformerDecoder::new(&cfg, vb).unwrap();
    let mut vars = reseed(&varmap, 50, 0.5);
    let x = var(&[1, 4, 8], 51);
    vars.push(("x".into(), x.clone()));
    let s = grad_check("decoder", &vars, &|| dec.forward(x.as_tensor(), None));
    assert_nonzero(
        &s,
        &[
            "layers.0.self_attn.q_proj.weight",
            "layers.0.self_attn.k_proj.weight",
        ],
    );
    assert_nonzero(
        &s,
        &["layers.1.self_attn.q_proj.weight", "layer_norm.weight"],
    );
}

// ---------------------------------------------------------------------------------------
// Mask semantics
// ---------------------------------------------------------------------------------------

fn row(t: &Tensor, b: usize, i: usize) -> Vec<f64> {
    t.get(b).unwrap().get(i).unwrap().to_vec1::<f64>().unwrap()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Perturbs `x_kv` at key positions where `visible(i, j)` is false and checks that output
/// row `i` is bit-for-bit unchanged, and that perturbing a visible key does change it.
fn check_mask(mask: AttentionMask, tq: usize, tk: usize, visible: fn(usize, usize) -> bool) {
    let f = attn_fixture(true);
    let xq = uniform(&[1, tq, 8], 60, 1.0, DType::F64);
    let xkv = uniform(&[1, tk, 8], 61, 1.0, DType::F64);
    let base = f.attn.forward(&xq, &xkv, &mask, None, None).unwrap();
    let noise = uniform(&[1, tk, 8], 62, 5.0, DType::F64);
    for i in 0..tq {
        let keep: Vec<f64> = (0..tk)
            .map(|j| if visible(i, j) { 0.0 } else { 1.0 })
            .collect();
        let keep = Tensor::from_vec(keep, (1, tk, 1), &cpu()).unwrap();
        let hidden = (&xkv + noise.broadcast_mul(&keep).unwrap()).unwrap();
        let out = f.attn.forward(&xq, &hidden, &mask, None, None).unwrap();
        assert_eq!(
            row(&out, 0, i),
            row(&base, 0, i),
            "row {i} saw a hidden key"
        );

        let shown_mask = (1.0 - keep).unwrap();
        let shown = (&xkv + noise.broadcast_mul(&shown_mask).unwrap()).unwrap();
        let out = f.attn.forward(&xq, &shown, &mask, None, None).unwrap();
        assert!(
            max_abs_diff(&row(&out, 0, i), &row(&base, 0, i)) > 1e-6,
            "row {i} ignores its visible keys"
        );
    }
}

#[test]
fn causal_mask_hides_future_keys() {
    check_mask(AttentionMask::Causal, 5, 5, |i, j| j <= i);
}

#[test]
fn causal_mask_with_prefix_sees_prefix() {
    // Tq = 3 queries at the end of Tk = 6 keys: query i sits at position 3 + i.
    check_mask(AttentionMask::Causal, 3, 6, |i, j| j <= 3 + i);
}

#[test]
fn shifted_causal_mask_sees_zero_vector_and_strict_past() {
    // Keys [0-vector, c_1..c_4]; query i sees keys 0..=i.
    check_mask(AttentionMask::ShiftedCausal, 4, 5, |i, j| j <= i);
    let m = AttentionMask::ShiftedCausal
        .materialize(3, 4, DType::F64, &cpu())
        .unwrap()
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    let n = MASK_NEG;
    assert_eq!(
        m,
        vec![
            vec![0.0, n, n, n],
            vec![0.0, 0.0, n, n],
            vec![0.0, 0.0, 0.0, n]
        ]
    );
}

#[test]
fn identity_mask_sees_only_own_position() {
    check_mask(AttentionMask::Identity, 5, 5, |i, j| i == j);
}

#[test]
fn identity_shortcut_equals_explicit_diagonal_mask() {
    let f = attn_fixture(true);
    let x = uniform(&[2, 5, 8], 63, 1.0, DType::F64);
    let eye = AttentionMask::Identity
        .materialize(5, 5, DType::F64, &cpu())
        .unwrap()
        .unwrap();
    let explicit = f
        .attn
        .forward(&x, &x, &AttentionMask::Additive(eye), None, None)
        .unwrap();
    let shortcut = f
        .attn
        .forward(&x, &x, &AttentionMask::Identity, None, None)
        .unwrap();
    let d = (explicit - shortcut)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(d.to_scalar::<f64>().unwrap() < 1e-12);
}

#[test]
fn fully_masked_additive_row_stays_finite() {
    // Built-in masks always leave key 0 (or key i) visible; only a custom mask can empty
    // a row, and the finite MASK_NEG turns that into a uniform average rather than NaN.
    let x = uniform(&[1, 3, 8], 64, 1.0, DType::F32);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    let attn = MultiHeadAttention::new(8, 2, true, vb).unwrap();
    let mut m = vec![0.0f32; 9];
    m[3..6].fill(MASK_NEG as f32);
    let mask = AttentionMask::Additive(Tensor::from_vec(m, (3, 3), &cpu()).unwrap());
    let out = attn.forward(&x, &x, &mask, None, None).unwrap();
    let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}

// ---------------------------------------------------------------------------------------
// KV cache
// ---------------------------------------------------------------------------------------

#[test]
fn attention_kv_cache_incremental_equals_full() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    let attn = MultiHeadAttention::new(16, 4, true, vb).unwrap();
    let rope = RotaryEmbedding::new(4, 32, 1e4, DType::F32, &cpu()).unwrap();
    let x = uniform(&[2, 7, 16], 70, 1.0, DType::F32);
    let full = attn
        .forward(&x, &x, &AttentionMask::Causal, Some((&rope, 0, 0)), None)
        .unwrap();

    let mut cache = KvCache::new();
    let mut pieces = Vec::new();
    for (start, len) in [(0, 3), (3, 1), (4, 2), (6, 1)] {
        let xs = x.narrow(1, start, len).unwrap();
        let off = cache.len();
        assert_eq!(off, start);
        pieces.push(
            attn.forward(
                &xs,
                &xs,
                &AttentionMask::Causal,
                Some((&rope, off, off)),
                Some(&mut cache),
            )
            .unwrap(),
        );
    }
    let inc = Tensor::cat(&pieces, 1).unwrap();
    let d = (full - inc).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f32>().unwrap() <= 1e-5);
}

#[test]
fn decoder_kv_cache_incremental_equals_full() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
    let cfg = DecoderConfig {
        max_seq_len: 64,
        ..DecoderConfig::new(32, 4, 3)
    };
    let dec = TransformerDecoder::new(&cfg, vb).unwrap();
    let x = uniform(&[2, 9, 32], 71, 1.0, DType::F32);
    let full = dec.forward(&x, None).unwrap();

    let mut cache = DecoderCache::new(cfg.n_layers);
    let mut pieces = vec![
        dec.forward(&x.narrow(1, 0, 4).unwrap(), Some(&mut cache))
            .unwrap(),
    ];
    for t in 4..9 {
        pieces.push(
            dec.forward(&x.narrow(1, t, 1).unwrap(), Some(&mut cache))
                .unwrap(),
        );
    }
    assert_eq!(cache.seq_len(), 9);
    let inc = Tensor::cat(&pieces, 1).unwrap();
    let d = (full - inc).unwrap().abs().unwrap().max_all().unwrap();
    assert!(d.to_scalar::<f32>().unwrap() <= 1e-5, "{d}");
}

#[test]
fn rope_rejects_positions_beyond_table() {
    let rope = RotaryEmbedding::new(4, 8, 1e4, DType::F32, &cpu()).unwrap();
    let x = Tensor::zeros((1, 1, 3, 4), DType::F32, &cpu()).unwrap();
    assert!(rope.apply(&x, 5).is_ok());
    assert!(rope.apply(&x, 6).is_err());
}

// ---------------------------------------------------------------------------------------
// RoPE properties
// ---------------------------------------------------------------------------------------

fn dot_at(rope: &RotaryEmbedding, q: &Tensor, k: &Tensor, m: usize, n: usize) -> f64 {
    let qm = rope.apply(q, m).unwrap();
    let kn = rope.apply(k, n).unwrap();
    (qm * kn).unwrap().sum_all().unwrap().to_scalar().unwrap()
}

#[test]
fn rope_scores_depend_only_on_relative_position() {
    let rope = RotaryEmbedding::new(16, 128, 1e4, DType::F64, &cpu()).unwrap();
    let q = uniform(&[1, 1, 1, 16], 80, 1.0, DType::F64);
    let k = uniform(&[1, 1, 1, 16], 81, 1.0, DType::F64);
    for (m, n) in [(0, 0), (3, 1), (1, 3), (10, 2)] {
        let reference = dot_at(&rope, &q, &k, m, n);
        for shift in [1, 7, 50] {
            let shifted = dot_at(&rope, &q, &k, m + shift, n + shift);
            assert!((reference - shifted).abs() < 1e-10, "({m},{n})+{shift}");
        }
    }
    // …and does depend on it.
    assert!((dot_at(&rope, &q, &k, 0, 0) - dot_at(&rope, &q, &k, 5, 0)).abs() > 1e-3);
}

#[test]
fn rope_rotates_interleaved_pairs_like_fairseq2() {
    let dh = 8;
    let theta: f64 = 1e4;
    let rope = RotaryEmbedding::new(dh, 16, theta, DType::F64, &cpu()).unwrap();
    let p = 5usize;
    // Unit vector on x[2i]: output must be (cos, sin) on (x[2i], x[2i+1]) with angle
    // p·θ^(-2i/Dh), everything else zero.
    for i in 0..dh / 2 {
        let mut e = vec![0.0; dh];
        e[2 * i] = 1.0;
        let x = Tensor::from_vec(e, (1, 1, 1, dh), &cpu()).unwrap();
        let out = rope
            .apply(&x, p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let angle = p as f64 * theta.powf(-((2 * i) as f64) / dh as f64);
        let mut want = vec![0.0; dh];
        want[2 * i] = angle.cos();
        want[2 * i + 1] = angle.sin();
        assert!(max_abs_diff(&out, &want) < 1e-12, "pair {i}: {out:?}");
    }
    // Norm-preserving.
    let x = uniform(&[1, 2, 4, dh], 82, 1.0, DType::F64);
    let y = rope.apply(&x, 3).unwrap();
    let nx = x.sqr().unwrap().sum(D::Minus1).unwrap();
    let ny = y.sqr().unwrap().sum(D::Minus1).unwrap();
    assert!(max_abs_diff(&values(&nx), &values(&ny)) < 1e-12);
}

// ---------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------

#[test]
fn swiglu_inner_dim_matches_reference() {
    assert_eq!(swiglu_inner_dim(2048, 256), 5632);
    assert_eq!(swiglu_inner_dim(4096, 256), 11008);
    assert_eq!(DecoderConfig::new(2048, 16, 32).ffn_inner_dim, 5632);
}

#[test]
fn analytic_parameter_count_equals_varmap() {
    for bias in [true, false] {
        let cfg = DecoderConfig {
            bias,
            max_seq_len: 16,
            ..DecoderConfig::new(64, 4, 3)
        };
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &cpu());
        let _dec = TransformerDecoder::new(&cfg, vb).unwrap();
        let actual: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(cfg.num_parameters(), actual, "bias={bias}");
    }
}
