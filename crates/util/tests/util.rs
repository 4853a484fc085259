use lcm_util::fs::{replace_with, temporary_path, write_atomic};
use lcm_util::hash::fnv1a64;
use lcm_util::random::{standard_normal, standard_normals};
use lcm_util::stats::{ranks, spearman, wilson_interval};
use lcm_util::vector::{cosine, cosine_f32, squared_distance};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

#[test]
fn cosine_of_known_vectors_in_both_precisions() {
    let a = [1.0f32, 0.0, 0.0];
    let b = [1.0f32, 1.0, 0.0];
    let expected = std::f64::consts::FRAC_1_SQRT_2;
    assert!((cosine(&a, &b) - expected).abs() < 1e-12);
    assert!((f64::from(cosine_f32(&a, &b)) - expected).abs() < 1e-6);
    assert_eq!(cosine(&a, &[0.0; 3]), 0.0);
    assert_eq!(cosine_f32(&[0.0; 3], &b), 0.0);
    assert!((cosine(&a, &[-2.0, 0.0, 0.0]) + 1.0).abs() < 1e-12);
    assert_eq!(squared_distance(&a, &b), 1.0);
}

#[test]
fn normal_draws_have_unit_moments_and_replay_from_a_seed() {
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let single: Vec<f64> = (0..20_000).map(|_| standard_normal(&mut rng)).collect();
    let mut rng = ChaCha12Rng::seed_from_u64(7);
    let paired = standard_normals(&mut rng, 20_001);
    for draws in [&single[..], &paired[..]] {
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert!(draws.iter().all(|x| x.is_finite()));
    }
    // The cosine halves of the pairs are the single draws: one uniform pair per draw each.
    assert_eq!(paired[0], single[0]);
    assert_eq!(paired[2], single[1]);
    let mut again = ChaCha12Rng::seed_from_u64(7);
    assert_eq!(standard_normal(&mut again), single[0]);
}

#[test]
fn atomic_write_replaces_whole_files_and_keeps_the_old_one_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    write_atomic(&path, b"old").unwrap();
    write_atomic(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert!(!temporary_path(&path).exists());

    let err = replace_with(&path, |tmp| {
        std::fs::write(tmp, b"half")?;
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    // The error names the file asked for first, not only its temporary.
    let asked = format!("cannot write {}:", path.display());
    assert!(err.to_string().starts_with(&asked), "{err}");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert!(
        !temporary_path(&path).exists(),
        "a failed write leaves no temporary"
    );

    let missing = dir.path().join("no/such/dir/file");
    let err = write_atomic(&missing, b"x").unwrap_err();
    let asked = format!("cannot write {}:", missing.display());
    assert!(err.to_string().starts_with(&asked), "{err}");
}

#[test]
fn fnv1a64_known_values() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn wilson_and_spearman_reference_values() {
    let close =
        |a: (f64, f64), b: (f64, f64)| (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12;
    assert!(close(wilson_interval(0, 50), (0.0, 0.07134759913335872)));
    assert!(close(wilson_interval(50, 50), (0.9286524008666414, 1.0)));
    assert_eq!(wilson_interval(0, 0), (0.0, 1.0));
    assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert!((spearman(&x, &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap() - 1.0).abs() < 1e-12);
    assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    assert_eq!(spearman(&x, &[1.0; 5]), None);
    assert_eq!(spearman(&x[..2], &x[..2]), None);
}
