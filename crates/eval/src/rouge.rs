//! ROUGE-L (longest common subsequence F-measure) as Google's `rouge-score` computes it, and
//! the length ratio of a summary to its reference (issue 17 item 5).
//!
//! Reference behaviour (`rouge-score` 0.1.2: `rouge_score/tokenize.py`, `tokenizers.py`,
//! `rouge_scorer.py`, `scoring.py`), with `RougeScorer(["rougeL"])`'s defaults:
//! - tokenisation: the text is lowercased (Python `str.lower`, full Unicode case mapping),
//!   every run of characters outside `[a-z0-9]` becomes a space, the text is split on
//!   whitespace and only tokens matching `^[a-z0-9]+$` are kept — so the tokens are exactly
//!   the maximal ASCII-alphanumeric runs of the lowercased text (accented letters, CJK and
//!   other non-ASCII characters separate tokens and are dropped); no stemming;
//! - `_score_lcs`: 0 for precision, recall and F when either side has no token; otherwise
//!   `p = lcs / len(prediction)`, `r = lcs / len(target)`, `F = 2pr / (p + r)` (0 when
//!   `p + r = 0`), all in f64 in that order, so the numbers match Python's bit for bit.
//!
//! The parity fixture `fixtures/eval/rouge_l.json` (made by `scripts/fixtures/rouge_fixture.py`
//! with the real package) holds this module to `rouge-score` in `tests/rouge_parity.rs`.
//!
//! The length ratio is hypothesis tokens / reference tokens under the same tokenisation
//! (`None` when the reference has no token). Corpus figures ([`RougeSummary`]) are plain
//! means over pairs, as the mean of `rouge-score`'s per-pair scores.

/// The version of `rouge-score` whose behaviour this module reproduces.
pub const ROUGE_SCORE_VERSION: &str = "0.1.2";

/// Precision, recall and F-measure of one ROUGE comparison, each in 0..=1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeScore {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// `rouge-score`'s default tokens of `text`: the maximal `[a-z0-9]` runs of its lowercase form.
pub fn tokenize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// Length of the longest common subsequence of two token sequences (two rows of the table).
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L of already tokenised sequences (`rouge_scorer._score_lcs(target, prediction)`).
pub fn rouge_l_tokens<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> RougeScore {
    if reference.is_empty() || hypothesis.is_empty() {
        return RougeScore::default();
    }
    let lcs = lcs_len(reference, hypothesis) as f64;
    let precision = lcs / hypothesis.len() as f64;
    let recall = lcs / reference.len() as f64;
    RougeScore {
        precision,
        recall,
        fmeasure: fmeasure(precision, recall),
    }
}

/// ROUGE-L of a hypothesis (prediction) against one reference (target), as
/// `RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"]`.
pub fn rouge_l(reference: &str, hypothesis: &str) -> RougeScore {
    rouge_l_tokens(&tokenize(reference), &tokenize(hypothesis))
}

/// Hypothesis tokens / reference tokens ([`tokenize`]); `None` for a reference with no token.
pub fn length_ratio(reference: &str, hypothesis: &str) -> Option<f64> {
    let r = tokenize(reference).len();
    (r > 0).then(|| tokenize(hypothesis).len() as f64 / r as f64)
}

fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// Corpus-level ROUGE-L and length ratio: means over (reference, hypothesis) pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RougeSummary {
    /// Pairs scored.
    pub pairs: usize,
    /// Mean ROUGE-L precision, recall and F-measure.
    pub rouge_l: RougeScore,
    /// Mean length ratio over the pairs whose reference has a token (`None` when none has).
    pub length_ratio: Option<f64>,
}

/// Scores every `(reference, hypothesis)` pair and averages ([`RougeSummary`]).
pub fn corpus_rouge_l<'a, I>(pairs: I) -> RougeSummary
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let (mut p, mut r, mut f, mut ratio) = (
        Mean::default(),
        Mean::default(),
        Mean::default(),
        Mean::default(),
    );
    for (reference, hypothesis) in pairs {
        let rt = tokenize(reference);
        let ht = tokenize(hypothesis);
        let s = rouge_l_tokens(&rt, &ht);
        p.push(s.precision);
        r.push(s.recall);
        f.push(s.fmeasure);
        if !rt.is_empty() {
            ratio.push(ht.len() as f64 / rt.len() as f64);
        }
    }
    RougeSummary {
        pairs: f.n,
        rouge_l: RougeScore {
            precision: p.get(),
            recall: r.get(),
            fmeasure: f.get(),
        },
        length_ratio: (ratio.n > 0).then(|| ratio.get()),
    }
}

/// A running mean (sum and count), 0 when empty.
#[derive(Default)]
struct Mean {
    sum: f64,
    n: usize,
}

impl Mean {
    fn push(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }

    fn get(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercase_ascii_alphanumeric_runs() {
        assert_eq!(
            tokenize("Hello, WORLD! It's 3.14 café-au-lait"),
            ["hello", "world", "it", "s", "3", "14", "caf", "au", "lait"]
        );
        assert!(tokenize("  ... !!! ").is_empty());
        // U+212A KELVIN SIGN lowercases to ASCII 'k' (Python and Rust alike).
        assert_eq!(tokenize("\u{212A}elvin"), ["kelvin"]);
    }

    #[test]
    fn lcs_by_hand() {
        assert_eq!(lcs_len(&[1, 2, 3, 4], &[2, 4, 3]), 2);
        assert_eq!(lcs_len(&[1, 1, 1], &[1, 1]), 2);
        assert_eq!(lcs_len::<u8>(&[], &[1]), 0);
    }

    #[test]
    fn rouge_l_by_hand() {
        // reference "the cat sat on the mat" (6), hypothesis "the cat on a mat" (5):
        // LCS "the cat on mat" = 4, p = 4/5, r = 4/6, F = 2pr/(p+r) = 8/11.
        let s = rouge_l("The cat sat on the mat.", "the cat on a mat");
        assert!((s.precision - 0.8).abs() < 1e-12);
        assert!((s.recall - 4.0 / 6.0).abs() < 1e-12);
        assert!((s.fmeasure - 8.0 / 11.0).abs() < 1e-12);
        assert_eq!(rouge_l("", "anything"), RougeScore::default());
        assert_eq!(rouge_l("a b", "c d").fmeasure, 0.0);
        assert_eq!(rouge_l("A b", "a B").fmeasure, 1.0);
    }

    #[test]
    fn corpus_means_and_length_ratio() {
        let s = corpus_rouge_l([("a b c d", "a b"), ("x y", "x y"), ("", "z")]);
        assert_eq!(s.pairs, 3);
        // F: 2·1·0.5/1.5 = 2/3, 1, 0 → mean 5/9.
        assert!((s.rouge_l.fmeasure - 5.0 / 9.0).abs() < 1e-12);
        // ratios 2/4 and 2/2 (the empty reference is left out) → 0.75.
        assert_eq!(s.length_ratio, Some(0.75));
        assert_eq!(length_ratio("a b c d", "a b"), Some(0.5));
        assert_eq!(length_ratio("...", "a"), None);
    }
}
