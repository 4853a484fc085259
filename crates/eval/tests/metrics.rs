//! Hand-computed examples for every metric, the baselines and the report.

use candle_core::{Device, Tensor};
use lcm_eval::metrics::{
    MI_TEMPERATURE, contrastive_accuracy, evaluate_tensor, l2, mean_concept, mutual_information,
    paraphrasing_ratio, repeat_previous, training_mean,
};
use lcm_eval::report::{MEAN_CONCEPT, REPEAT_PREVIOUS};
use lcm_eval::{ConceptBatch, EvalError, EvalOptions, EvalReport, evaluate};

const EPS: f64 = 1e-9;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

fn opts() -> EvalOptions {
    EvalOptions::default()
}

#[test]
fn l2_is_the_mean_euclidean_distance() {
    // One document: x0 = (0,0), x1 = (3,4), x2 = (1,0).
    let batch = ConceptBatch::from_documents(&[&[0.0, 0.0, 3.0, 4.0, 1.0, 0.0]], 2).unwrap();
    // Position 0 is not scored (its prediction may be anything, even NaN).
    // x̂1 = (0,0): distance 5; x̂2 = (1,1): distance 1. Mean = 3.
    let predictions = [f32::NAN, f32::NAN, 0.0, 0.0, 1.0, 1.0];
    assert!(close(l2(&batch, &predictions, &opts()).unwrap(), 3.0));
    // Scoring position 0 as well: x̂0 = (0,0) is exact, so the mean is 6 / 3 = 2.
    let predictions = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0];
    let all = EvalOptions { first_position: 0 };
    assert!(close(l2(&batch, &predictions, &all).unwrap(), 2.0));
}

#[test]
fn mi_is_the_infonce_bound_over_the_batch_contexts() {
    // Two documents of two concepts (dim 2): A = [(1,0), (0,1)], B = [(0,1), (1,0)]. The
    // scored positions are A1 (context mean (1,0)) and B1 (context mean (0,1)).
    let batch =
        ConceptBatch::from_documents(&[&[1.0, 0.0, 0.0, 1.0], &[0.0, 1.0, 1.0, 0.0]], 2).unwrap();
    let t = MI_TEMPERATURE;
    // Predictions pointing at their own context: s_nn = 1/τ, s_nm = 0/τ for m ≠ n.
    let copying = [f32::NAN, f32::NAN, 2.0, 0.0, f32::NAN, f32::NAN, 0.0, 3.0];
    let own = 1.0 / t - ((1.0 / t).exp() + 1.0).ln();
    let expected = 2f64.ln() + own;
    let mi = mutual_information(&batch, &copying, &opts())
        .unwrap()
        .unwrap();
    assert!(close(mi, expected), "{mi} vs {expected}");
    assert!(mi < 2f64.ln() && mi > 2f64.ln() - 1e-3);
    // One constant prediction cannot tell the contexts apart: MI = log 2 + log ½ = 0.
    let constant = [f32::NAN, f32::NAN, 1.0, 1.0, f32::NAN, f32::NAN, 1.0, 1.0];
    let mi = mutual_information(&batch, &constant, &opts())
        .unwrap()
        .unwrap();
    assert!(mi.abs() < 1e-12, "{mi}");
    // Predictions pointing at the *other* context score below zero; evaluate agrees.
    let swapped = [f32::NAN, f32::NAN, 0.0, 1.0, f32::NAN, f32::NAN, 1.0, 0.0];
    let mi = mutual_information(&batch, &swapped, &opts())
        .unwrap()
        .unwrap();
    assert!(close(mi, 2f64.ln() - ((1.0 / t).exp() + 1.0).ln()));
    assert!(mi < 0.0);
    assert_eq!(evaluate(&batch, &swapped, &opts()).unwrap().mi, Some(mi));
    // Without a scored position that has a context there is no estimate.
    let single = ConceptBatch::from_documents(&[&[1.0, 0.0]], 2).unwrap();
    let all = EvalOptions { first_position: 0 };
    assert_eq!(
        mutual_information(&single, &[1.0, 0.0], &all).unwrap(),
        None
    );
}

#[test]
fn ca_excludes_the_previous_neighbour_but_not_other_documents() {
    // Document A = [100, 0], document B = [5] (dim 1). Only A's position 1 is scored.
    let batch = ConceptBatch::from_documents(&[&[100.0, 0.0], &[5.0]], 1).unwrap();
    // x̂ = 3, gold 0 at distance 3. Candidates: every gold row except x_1 itself and its
    // neighbour x_0 = 100 → {B0 = 5}, at distance 2: not farther. CA = 0 / 1.
    // (Without the exclusion it would be 1/2; B0 is the next *row* but another document, so
    // it is not a neighbour.)
    let predictions = [f32::NAN, 3.0, f32::NAN];
    let ca = contrastive_accuracy(&batch, &predictions, &opts()).unwrap();
    assert_eq!(ca, Some(0.0));
    let metrics = evaluate(&batch, &predictions, &opts()).unwrap();
    assert_eq!((metrics.scored, metrics.ca_scored), (1, 1));
}

#[test]
fn ca_averages_over_predictions() {
    // A = [0, 10, 20, 30, 40], B = [12, 50] (dim 1). Scored: A1..A4 and B1.
    let batch =
        ConceptBatch::from_documents(&[&[0.0, 10.0, 20.0, 30.0, 40.0], &[12.0, 50.0]], 1).unwrap();
    // Perfect everywhere except A2 (gold 20), predicted 14: gold distance 6. Candidates exclude
    // A1 = 10, A2, A3 = 30 → {A0 = 0, A4 = 40, B0 = 12, B1 = 50} at distances 14, 26, 2, 36:
    // 3 of 4 farther → 0.75. (A1 = 10 at distance 4 would not be farther: it is excluded.)
    // Perfect predictions with distinct gold values score 1. CA = (1 + 0.75 + 1 + 1 + 1) / 5.
    let predictions = [f32::NAN, 10.0, 14.0, 30.0, 40.0, f32::NAN, 50.0];
    let ca = contrastive_accuracy(&batch, &predictions, &opts())
        .unwrap()
        .unwrap();
    assert!(close(ca, 0.95), "{ca}");
    // Ties count as not farther: A2 predicted as 16 (gold distance 4): B0 = 12 at distance 4
    // is a tie → not farther; A0 at 16, A4 at 24, B1 at 34 are → 3/4 again.
    let predictions = [f32::NAN, 10.0, 16.0, 30.0, 40.0, f32::NAN, 50.0];
    let ca = contrastive_accuracy(&batch, &predictions, &opts())
        .unwrap()
        .unwrap();
    assert!(close(ca, 0.95), "{ca}");
}

#[test]
fn ca_is_undefined_without_candidates() {
    // A single document of two concepts: the only candidate of position 1 is its neighbour.
    let batch = ConceptBatch::from_documents(&[&[1.0, 2.0]], 1).unwrap();
    let metrics = evaluate(&batch, &[f32::NAN, 2.0], &opts()).unwrap();
    assert_eq!(metrics.ca, None);
    assert_eq!(metrics.ca_scored, 0);
}

#[test]
fn par_is_the_ratio_of_context_similarities() {
    let s = std::f64::consts::SQRT_2;
    // Document 1: x0 = (1,0), x1 = (0,1), x2 = (1,1). Document 2: y0 = (1,0), y1 = (1,1).
    let batch =
        ConceptBatch::from_documents(&[&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[1.0, 0.0, 1.0, 1.0]], 2)
            .unwrap();
    let predictions = [
        f32::NAN,
        f32::NAN,
        // x̂1 = (1,1): the denominator max cos(x1, x0) = 0 is not positive → skipped.
        1.0,
        1.0,
        // x̂2 = (2,0): max(cos(x̂2, x0), cos(x̂2, x1)) = 1; gold max(cos(x2,x0), cos(x2,x1)) = 1/√2.
        // PAR = √2.
        2.0,
        0.0,
        f32::NAN,
        f32::NAN,
        // ŷ1 = (0,1): context is y0 only (not document 1): cos = 0; gold cos(y1, y0) = 1/√2.
        // PAR = 0.
        0.0,
        1.0,
    ];
    let metrics = evaluate(&batch, &predictions, &opts()).unwrap();
    assert_eq!(metrics.par_scored, 2);
    assert!(
        close(metrics.par.unwrap(), (s + 0.0) / 2.0),
        "{:?}",
        metrics.par
    );
    assert_eq!(
        paraphrasing_ratio(&batch, &predictions, &opts()).unwrap(),
        metrics.par
    );
    // Position 0 has no context: skipped even when scored.
    let all = EvalOptions { first_position: 0 };
    let mut with_first = predictions;
    with_first[..2].copy_from_slice(&[1.0, 0.0]);
    with_first[6..8].copy_from_slice(&[1.0, 0.0]);
    let metrics = evaluate(&batch, &with_first, &all).unwrap();
    assert_eq!(metrics.par_scored, 2);
    assert_eq!(metrics.scored, 5);
}

#[test]
fn a_perfect_predictor_gets_l2_zero_ca_one_par_one() {
    // Distinct (first coordinate = row number + 1), positively correlated vectors.
    let docs: Vec<Vec<f32>> = (0..3)
        .map(|d| {
            (0..4)
                .flat_map(|n| {
                    let r = (d * 4 + n) as f32;
                    [r + 1.0, (r * r) % 7.0 + 1.0, 2.0]
                })
                .collect()
        })
        .collect();
    let refs: Vec<&[f32]> = docs.iter().map(Vec::as_slice).collect();
    let batch = ConceptBatch::from_documents(&refs, 3).unwrap();
    let metrics = evaluate(&batch, batch.values(), &opts()).unwrap();
    assert!(metrics.l2.abs() < EPS);
    assert!(close(metrics.ca.unwrap(), 1.0));
    assert!(close(metrics.par.unwrap(), 1.0));
    assert_eq!(metrics.scored, 9);
    assert_eq!(metrics.ca_scored, 9);
}

#[test]
fn baselines_and_report() {
    // One document [0, 10, 20] and one [5, 7] (dim 1).
    let batch = ConceptBatch::from_documents(&[&[0.0, 10.0, 20.0], &[5.0, 7.0]], 1).unwrap();
    let repeat = repeat_previous(&batch);
    assert!(repeat[0].is_nan() && repeat[3].is_nan());
    assert_eq!(&repeat[1..3], &[0.0, 10.0]);
    assert_eq!(repeat[4], 5.0);
    // Scored: 10 ← 0, 20 ← 10, 7 ← 5: distances 10, 10, 2 → ℓ2 = 22/3.
    let metrics = evaluate(&batch, &repeat, &opts()).unwrap();
    assert!(close(metrics.l2, 22.0 / 3.0));

    let mean = training_mean(&[0.0, 2.0, 4.0, 6.0], 2).unwrap();
    assert_eq!(mean, [2.0, 4.0]);
    let mean = training_mean(&[4.0, 8.0, 6.0], 1).unwrap();
    assert_eq!(mean, [6.0]);
    // Mean 6: distances to 10, 20, 7 → 4, 14, 1 → ℓ2 = 19/3.
    let mean_predictions = mean_concept(&batch, &mean).unwrap();
    let metrics = evaluate(&batch, &mean_predictions, &opts()).unwrap();
    assert!(close(metrics.l2, 19.0 / 3.0));
    assert!(mean_concept(&batch, &[1.0, 2.0]).is_err());

    let mut report = EvalReport::new();
    report
        .add("model", &batch, batch.values(), &opts())
        .unwrap();
    report.add_baselines(&batch, &mean, &opts()).unwrap();
    assert!(close(report.get(REPEAT_PREVIOUS).unwrap().l2, 22.0 / 3.0));
    assert!(close(report.get(MEAN_CONCEPT).unwrap().l2, 19.0 / 3.0));
    let table = report.to_markdown();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert_eq!(
        lines[0],
        "| predictor | ℓ2 | CA (%) | PAR | MI | positions |"
    );
    assert!(lines[2].starts_with("| model | 0.000 | 100.0 |"), "{table}");
    assert!(
        lines[3].starts_with("| repeat previous concept | 7.333 |"),
        "{table}"
    );
    assert!(lines[4].starts_with("| mean concept | 6.333 |"), "{table}");
    assert_eq!(report.to_string(), table);

    // Position 0 cannot be scored for "repeat previous".
    let all = EvalOptions { first_position: 0 };
    let err = EvalReport::new()
        .add_baselines(&batch, &mean, &all)
        .unwrap_err();
    assert!(matches!(err, EvalError::NonFinite(_)), "{err}");
}

#[test]
fn tensors_and_bad_input() {
    let device = Device::Cpu;
    let a = Tensor::new(&[[0f32, 0.0], [3.0, 4.0]], &device).unwrap();
    let b = Tensor::new(&[[1f32, 1.0], [1.0, 2.0], [2.0, 1.0]], &device).unwrap();
    let batch = ConceptBatch::from_tensors(&[a, b]).unwrap();
    assert_eq!(batch.lengths(), [2, 3]);
    assert_eq!(batch.rows(), 5);
    let predictions = Tensor::new(
        &[[9f32, 9.0], [0.0, 0.0], [9.0, 9.0], [1.0, 1.0], [2.0, 1.0]],
        &device,
    )
    .unwrap();
    let metrics = evaluate_tensor(&batch, &predictions, &opts()).unwrap();
    // Scored: (3,4) ← (0,0): 5; (1,2) ← (1,1): 1; (2,1) ← (2,1): 0 → 2.
    assert!(close(metrics.l2, 2.0));

    assert!(matches!(
        evaluate(&batch, &[0.0; 4], &opts()),
        Err(EvalError::Shape(_))
    ));
    let mut nan = vec![0.0f32; 10];
    nan[3] = f32::NAN; // row 1 = document 0, position 1: scored.
    assert!(matches!(
        evaluate(&batch, &nan, &opts()),
        Err(EvalError::NonFinite(_))
    ));
    assert!(ConceptBatch::new(vec![0.0; 5], vec![2], 2).is_err());
    assert!(ConceptBatch::new(vec![f32::NAN, 0.0], vec![1], 2).is_err());
    let single = ConceptBatch::from_documents(&[&[1.0]], 1).unwrap();
    assert!(matches!(
        evaluate(&single, &[1.0], &opts()),
        Err(EvalError::Invalid(_))
    ));
}
