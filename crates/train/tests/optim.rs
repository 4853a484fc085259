use candle_core::{Device, Tensor, Var};
use lcm_train::{AdamW, AdamWConfig, ParamState, UpdateRule, clip_grad_norm, default_decay_filter};

/// loss = Σ w·c has gradient exactly c, which lets a test choose the gradients.
fn grads_for(vars: &[(&Var, &[f64])]) -> candle_core::backprop::GradStore {
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (var, c) in vars {
        let c: Vec<f32> = c.iter().map(|&x| x as f32).collect();
        let c = Tensor::from_vec(c, var.shape(), &Device::Cpu).unwrap();
        loss = (loss + (var.as_tensor() * c).unwrap().sum_all().unwrap()).unwrap();
    }
    loss.backward().unwrap()
}

fn values(v: &Var) -> Vec<f32> {
    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
}

struct RefParam {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    decay: bool,
}

/// PyTorch AdamW (decoupled decay first, then the bias-corrected Adam step), in f64.
fn reference_step(r: &mut RefParam, g: &[f64], t: i32, lr: f64, cfg: &AdamWConfig) {
    let bc1 = 1.0 - cfg.beta1.powi(t);
    let bc2 = 1.0 - cfg.beta2.powi(t);
    for (((p, m), v), &gi) in r.p.iter_mut().zip(&mut r.m).zip(&mut r.v).zip(g) {
        if r.decay {
            *p -= lr * cfg.weight_decay * *p;
        }
        *m = cfg.beta1 * *m + (1.0 - cfg.beta1) * gi;
        *v = cfg.beta2 * *v + (1.0 - cfg.beta2) * gi * gi;
        let m_hat = *m / bc1;
        let v_hat = *v / bc2;
        *p -= lr * m_hat / (v_hat.sqrt() + cfg.eps);
    }
}

#[test]
fn adamw_matches_f64_reference_over_five_steps() {
    let cfg = AdamWConfig {
        lr: 0.0,
        ..AdamWConfig::default()
    };
    let w0 = [0.5, -1.25, 2.0, 0.75, -0.3, 1.1];
    let b0 = [0.1, -0.2, 0.05];
    let w = Var::from_vec(w0.iter().map(|&x| x as f32).collect(), (2, 3), &Device::Cpu).unwrap();
    let b = Var::from_vec(b0.iter().map(|&x| x as f32).collect(), 3, &Device::Cpu).unwrap();
    let mut opt = AdamW::new(
        vec![
            ("layer.weight".into(), w.clone()),
            ("layer.bias".into(), b.clone()),
        ],
        cfg.clone(),
        default_decay_filter,
    )
    .unwrap();
    assert_eq!(opt.decays("layer.weight"), Some(true));
    assert_eq!(opt.decays("layer.bias"), Some(false));

    let mut rw = RefParam {
        p: w0.to_vec(),
        m: vec![0.0; 6],
        v: vec![0.0; 6],
        decay: true,
    };
    let mut rb = RefParam {
        p: b0.to_vec(),
        m: vec![0.0; 3],
        v: vec![0.0; 3],
        decay: false,
    };
    for t in 1..=5 {
        // Large lr so that decay and moments both visibly move the weights.
        let lr = 0.05 * t as f64;
        let gw: Vec<f64> = (0..6).map(|i| ((i * 7 + t * 3) as f64).sin()).collect();
        let gb: Vec<f64> = (0..3).map(|i| 0.01 * ((i + t) as f64).cos()).collect();
        let grads = grads_for(&[(&w, &gw), (&b, &gb)]);
        opt.set_lr(lr);
        opt.step(&grads).unwrap();
        reference_step(&mut rw, &gw, t, lr, &cfg);
        reference_step(&mut rb, &gb, t, lr, &cfg);
        for (got, want) in values(&w)
            .iter()
            .zip(&rw.p)
            .chain(values(&b).iter().zip(&rb.p))
        {
            assert!(
                (f64::from(*got) - want).abs() < 1e-6,
                "step {t}: got {got}, want {want}"
            );
        }
    }
    assert_eq!(opt.step_count(), 5);
    let states: Vec<&ParamState> = opt.param_states().collect();
    assert_eq!(states[0].name, "layer.bias");
    for (got, want) in states[1].exp_avg_sq.iter().zip(&rw.v) {
        assert!((f64::from(*got) - want).abs() < 1e-7);
    }
}

#[test]
fn excluded_params_get_no_decay() {
    let w = Var::from_vec(vec![1.0f32, -2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
    let g = Var::from_vec(vec![1.0f32, -2.0], 2, &Device::Cpu).unwrap();
    let n = Var::from_vec(vec![1.0f32, -2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
    let cfg = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    // A custom predicate: exclude by name even for a matrix.
    let mut opt = AdamW::new(
        vec![
            ("proj.weight".into(), w.clone()),
            ("final_norm.weight".into(), g.clone()),
            ("no_decay_matrix".into(), n.clone()),
        ],
        cfg,
        |name, dims| name != "no_decay_matrix" && default_decay_filter(name, dims),
    )
    .unwrap();
    // Zero gradients: Adam's step is 0/(0+eps) = 0, so only decay can move weights.
    let grads = grads_for(&[(&w, &[0.0; 4]), (&g, &[0.0; 2]), (&n, &[0.0; 4])]);
    opt.step(&grads).unwrap();
    let f = 1.0 - 0.1 * 0.5;
    assert_eq!(values(&w), vec![f, -2.0 * f, 3.0 * f, 4.0 * f]);
    assert_eq!(values(&g), vec![1.0, -2.0]);
    assert_eq!(values(&n), vec![1.0, -2.0, 3.0, 4.0]);
}

#[test]
fn default_filter_cases() {
    assert!(default_decay_filter("layers.0.attn.q_proj.weight", &[8, 8]));
    assert!(!default_decay_filter("layers.0.attn.q_proj.bias", &[8]));
    assert!(!default_decay_filter("layers.0.ffn_norm.weight", &[8]));
    assert!(!default_decay_filter("layers.0.layer_norm.weight", &[8, 8]));
    assert!(!default_decay_filter("scale", &[8]));
}

#[test]
fn clip_grad_norm_scales_exactly() {
    let a = Var::from_vec(vec![0f32; 2], 2, &Device::Cpu).unwrap();
    let b = Var::from_vec(vec![0f32; 2], (1, 2), &Device::Cpu).unwrap();
    let vars = [a.clone(), b.clone()];
    // Global norm sqrt(9 + 16 + 0 + 144) = 13.
    let mut grads = grads_for(&[(&a, &[3.0, 4.0]), (&b, &[0.0, 12.0])]);
    let norm = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
    assert!((norm - 13.0).abs() < 1e-9);
    let coef = (1.0 / (13.0 + 1e-6)) as f32;
    let ga: Vec<f32> = grads.get(a.as_tensor()).unwrap().to_vec1().unwrap();
    let gb: Vec<f32> = grads
        .get(b.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (got, want) in ga.iter().chain(&gb).zip([3.0f32, 4.0, 0.0, 12.0]) {
        assert!(
            (got - want * coef).abs() <= 1e-7,
            "{got} vs {}",
            want * coef
        );
    }
    let clipped: f64 = ga
        .iter()
        .chain(&gb)
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((clipped - 1.0).abs() < 1e-6);

    // Below the threshold the gradients are untouched, bit for bit.
    let mut grads = grads_for(&[(&a, &[3.0, 4.0]), (&b, &[0.0, 12.0])]);
    let norm = clip_grad_norm(&mut grads, &vars, 25.0).unwrap();
    assert!((norm - 13.0).abs() < 1e-9);
    let ga: Vec<f32> = grads.get(a.as_tensor()).unwrap().to_vec1().unwrap();
    assert_eq!(ga, vec![3.0, 4.0]);
}

#[test]
fn state_export_import_roundtrip_and_validation() {
    let w = Var::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (2, 2), &Device::Cpu).unwrap();
    let mut opt = AdamW::new(
        vec![("w".into(), w.clone())],
        AdamWConfig::default(),
        default_decay_filter,
    )
    .unwrap();
    opt.step(&grads_for(&[(&w, &[1.0, 2.0, 3.0, 4.0])]))
        .unwrap();
    let exported: Vec<ParamState> = opt.param_states().cloned().collect();
    let mut other = AdamW::new(
        vec![("w".into(), w.clone())],
        AdamWConfig::default(),
        default_decay_filter,
    )
    .unwrap();
    other
        .import_state(opt.step_count(), exported.clone())
        .unwrap();
    assert_eq!(other.step_count(), 1);
    assert_eq!(other.param_states().cloned().collect::<Vec<_>>(), exported);

    let mut bad = exported.clone();
    bad[0].shape = vec![4];
    assert!(other.import_state(1, bad).is_err());
    let mut renamed = exported;
    renamed[0].name = "v".into();
    let err = other.import_state(1, renamed).unwrap_err().to_string();
    assert!(err.contains("missing state for `w`"), "{err}");
}

#[test]
fn duplicate_names_are_rejected() {
    let w = Var::from_vec(vec![1.0f32], 1, &Device::Cpu).unwrap();
    let r = AdamW::new(
        vec![("w".into(), w.clone()), ("w".into(), w)],
        AdamWConfig::default(),
        default_decay_filter,
    );
    assert!(r.is_err());
}

#[test]
fn non_f32_params_take_the_host_path_with_the_same_result() {
    let init = [0.5f64, -1.0, 2.0, 0.25];
    let w32 = Var::from_vec(
        init.iter().map(|&x| x as f32).collect(),
        (2, 2),
        &Device::Cpu,
    )
    .unwrap();
    let w64 = Var::from_vec(init.to_vec(), (2, 2), &Device::Cpu).unwrap();
    let cfg = AdamWConfig {
        lr: 0.1,
        ..AdamWConfig::default()
    };
    let mut o32 = AdamW::new(
        vec![("w".into(), w32.clone())],
        cfg.clone(),
        default_decay_filter,
    )
    .unwrap();
    let mut o64 = AdamW::new(vec![("w".into(), w64.clone())], cfg, default_decay_filter).unwrap();
    for t in 0..3 {
        let g: Vec<f64> = (0..4).map(|i| ((i + t) as f64).cos()).collect();
        o32.step(&grads_for(&[(&w32, &g)])).unwrap();
        let c = Tensor::from_vec(g.clone(), (2, 2), &Device::Cpu).unwrap();
        let grads = (w64.as_tensor() * c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        o64.step(&grads).unwrap();
    }
    let a = values(&w32);
    let b: Vec<f64> = w64.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((f64::from(*x) - y).abs() < 1e-6, "{x} vs {y}");
    }
}

#[test]
fn flat_gradients_step_and_clip_exactly_like_a_grad_store() {
    let make = || {
        let w = Var::from_vec(
            vec![0.5f32, -1.25, 2.0, 0.75, -0.3, 1.1],
            (2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let b = Var::from_vec(vec![0.1f32, -0.2, 0.05], 3, &Device::Cpu).unwrap();
        let frozen = Var::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu).unwrap();
        let opt = AdamW::new(
            vec![
                ("layer.weight".into(), w.clone()),
                ("layer.bias".into(), b.clone()),
                ("frozen.weight".into(), frozen.clone()),
            ],
            AdamWConfig::default(),
            default_decay_filter,
        )
        .unwrap();
        (w, b, frozen, opt)
    };
    let (w1, b1, f1, mut store_opt) = make();
    let (w2, b2, f2, mut flat_opt) = make();
    for step in 0..4 {
        let gw: Vec<f64> = (0..6)
            .map(|i| (i as f64 - 2.5) * (step + 1) as f64)
            .collect();
        let gb = [3.0, -4.0 * step as f64, 0.5];
        // A global norm above 5, so clipping changes the gradients.
        let mut grads = grads_for(&[(&w1, &gw), (&b1, &gb)]);
        let norm_store = store_opt.clip_grad_norm(&mut grads, 5.0).unwrap();
        store_opt.step(&grads).unwrap();

        let mut flat: Vec<f32> = gw.iter().chain(&gb).map(|&g| g as f32).collect();
        let norm_flat = lcm_train::optim::clip_grad_norm_flat(&mut flat, 5.0);
        assert!((norm_store - norm_flat).abs() <= 1e-12 * norm_store);
        let (fw, fb) = flat.split_at(6);
        flat_opt
            .step_flat(|name| match name {
                "layer.weight" => Some(fw),
                "layer.bias" => Some(fb),
                _ => None,
            })
            .unwrap();
        assert_eq!(values(&w1), values(&w2), "step {step}");
        assert_eq!(values(&b1), values(&b2), "step {step}");
    }
    // A parameter without a gradient is skipped on both paths.
    assert_eq!(values(&f1), vec![1.0, 2.0]);
    assert_eq!(values(&f2), vec![1.0, 2.0]);
    let steps = |o: &AdamW| {
        o.param_states()
            .map(|s| (s.name.clone(), s.step))
            .collect::<Vec<_>>()
    };
    assert_eq!(steps(&store_opt), steps(&flat_opt));
}

#[test]
fn sgd_steps_by_lr_times_gradient_on_candle_and_flat_gradients() {
    let cfg = AdamWConfig {
        lr: 0.25,
        rule: UpdateRule::Sgd,
        ..AdamWConfig::default()
    };
    let w0 = [0.5f32, -1.25, 2.0, 0.75];
    let w = Var::from_vec(w0.to_vec(), (2, 2), &Device::Cpu).unwrap();
    let mut opt = AdamW::new(
        vec![("layer.weight".into(), w.clone())],
        cfg,
        default_decay_filter,
    )
    .unwrap();
    // No weight decay and no moments: exactly w − lr·g, step after step.
    let g = [1.0, -2.0, 0.5, 4.0];
    opt.step(&grads_for(&[(&w, &g)])).unwrap();
    let expected: Vec<f32> = w0
        .iter()
        .zip(&g)
        .map(|(w, g)| w - 0.25 * *g as f32)
        .collect();
    assert_eq!(values(&w), expected);
    let flat = [0.5f32, 0.5, -1.0, 0.0];
    opt.step_flat(|name| (name == "layer.weight").then_some(&flat[..]))
        .unwrap();
    let expected: Vec<f32> = expected
        .iter()
        .zip(&flat)
        .map(|(w, g)| w - 0.25 * g)
        .collect();
    assert_eq!(values(&w), expected);
    assert_eq!(opt.step_count(), 2);
}
