use lcm_train::LrSchedule;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-12)
}

#[test]
fn cosine_known_points() {
    let s = LrSchedule::Cosine {
        lr: 4e-4,
        start_lr: 0.0,
        warmup_steps: 10,
        max_steps: 110,
        final_lr_scale: 0.1,
    };
    s.validate().unwrap();
    assert_eq!(s.lr_at(0), 0.0);
    assert!(close(s.lr_at(5), 2e-4));
    assert!(close(s.lr_at(9), 3.6e-4));
    assert!(close(s.lr_at(10), 4e-4));
    // Half-way through the cycle the cosine term is 0: midpoint of lr and final_lr.
    assert!(close(s.lr_at(60), 0.5 * (4e-4 + 4e-5)));
    // Quarter: final + ½(lr−final)(1+cos(π/4)).
    let q = 4e-5 + 0.5 * (4e-4 - 4e-5) * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
    assert!(close(s.lr_at(35), q));
    assert!(close(s.lr_at(110), 4e-5));
    assert!(close(s.lr_at(1000), 4e-5));
    // Monotone non-increasing after warmup.
    let lrs: Vec<f64> = (10..=110).map(|t| s.lr_at(t)).collect();
    assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
}

#[test]
fn warmup_from_start_lr_and_final_lr_constructor() {
    let s = LrSchedule::cosine_with_final_lr(1e-3, 1e-7, 1e-5, 4, 20).unwrap();
    assert!(close(s.lr_at(0), 1e-7));
    assert!(close(s.lr_at(2), 1e-7 + (1e-3 - 1e-7) * 0.5));
    assert!(close(s.lr_at(4), 1e-3));
    assert!(close(s.lr_at(20), 1e-5));
    assert!(LrSchedule::cosine_with_final_lr(1e-3, 0.0, 1e-5, 20, 20).is_err());
}

#[test]
fn zero_warmup_starts_at_peak() {
    let s = LrSchedule::Cosine {
        lr: 1.0,
        start_lr: 0.0,
        warmup_steps: 0,
        max_steps: 4,
        final_lr_scale: 0.0,
    };
    assert!(close(s.lr_at(0), 1.0));
    assert!(close(s.lr_at(2), 0.5));
    assert_eq!(s.lr_at(4), 0.0);
}

#[test]
fn constant_with_and_without_warmup() {
    let s = LrSchedule::Constant {
        lr: 3e-4,
        start_lr: 0.0,
        warmup_steps: 3,
    };
    assert_eq!(s.lr_at(0), 0.0);
    assert!(close(s.lr_at(1), 1e-4));
    assert_eq!(s.lr_at(3), 3e-4);
    assert_eq!(s.lr_at(1_000_000), 3e-4);
    let flat = LrSchedule::Constant {
        lr: 3e-4,
        start_lr: 0.0,
        warmup_steps: 0,
    };
    assert_eq!(flat.lr_at(0), 3e-4);
}

#[test]
fn serde_roundtrip() {
    let s = LrSchedule::Cosine {
        lr: 4e-4,
        start_lr: 1e-7,
        warmup_steps: 10_000,
        max_steps: 250_000,
        final_lr_scale: 0.025,
    };
    let j = serde_json::to_string(&s).unwrap();
    assert!(j.contains("\"kind\":\"cosine\""), "{j}");
    let back: LrSchedule = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s);
    let c: LrSchedule = serde_json::from_str(r#"{"kind":"constant","lr":0.001}"#).unwrap();
    assert_eq!(c.lr_at(0), 0.001);
}
