//! Generation-quality metrics of the LCM paper over decoded text and generated concepts:
//! REP-4, OVL-3 and coherence (issue 17 item 2).
//!
//! **Tokenisation** (shared by REP-4 and OVL-3, see [`words`]): the text is lower-cased
//! (Unicode) and split into maximal runs of alphanumeric characters; everything else
//! (whitespace, punctuation, quotes, apostrophes) separates words. So `"Don't stop, Stop!"` is
//! `[don, t, stop, stop]`. Sentences of a continuation are joined with a space before
//! tokenising, so n-grams cross sentence boundaries (a repeated sentence repeats its n-grams).
//!
//! **Definitions** (the paper, arXiv 2412.08821 §4, reports "OVL-3: share of source 3-grams"
//! and "REP-4: share of duplicated 4-grams" without code; the reference repository ships no
//! implementation, so the usual definitions are used, REP-4 as `seq-rep-4` of Welleck et al.
//! 2019):
//!
//! - **REP-4** of a text with word 4-grams `g_1..g_T` (with multiplicity):
//!   `1 − |{g_1..g_T}| / T`, the share of 4-gram occurrences that repeat an earlier one. A text
//!   with fewer than 4 words has `T = 0` and REP-4 0 (nothing can repeat).
//! - **OVL-3** of an output against a source (the prompt, or the document to summarise): the
//!   share of the output's word 3-gram occurrences (with multiplicity) that occur at least once
//!   among the source's word 3-grams. An output with fewer than 3 words has OVL-3 0.
//! - **Coherence**: the mean cosine similarity of consecutive concepts. [`coherence`] takes
//!   the sequence it is given; the generation evaluation passes the last prompt concept
//!   followed by the generated concepts, so the first generated concept's fit to the prompt
//!   counts (one generated sentence still has a coherence). The paper's "coherence"
//!   (Table 4) is a trained classifier's score, not this cosine: the two are not comparable.
//!
//! Corpus-level values are better aggregated from [`NgramShare`] counts (micro-average:
//! every n-gram weighs the same) than by averaging per-text ratios; both are offered.

use lcm_util::vector::cosine;

/// A count-based share: `hits` of `total` n-gram occurrences. Sum over texts, then take
/// [`NgramShare::ratio`] for a micro-averaged corpus value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NgramShare {
    pub hits: usize,
    pub total: usize,
}

impl NgramShare {
    /// `hits / total`, 0 when there are no n-grams.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.hits as f64 / self.total as f64
        }
    }
}

impl std::ops::Add for NgramShare {
    type Output = NgramShare;
    fn add(self, other: NgramShare) -> NgramShare {
        NgramShare {
            hits: self.hits + other.hits,
            total: self.total + other.total,
        }
    }
}

impl std::ops::AddAssign for NgramShare {
    fn add_assign(&mut self, other: NgramShare) {
        *self = *self + other;
    }
}

impl std::iter::Sum for NgramShare {
    fn sum<I: Iterator<Item = NgramShare>>(iter: I) -> NgramShare {
        iter.fold(NgramShare::default(), |a, b| a + b)
    }
}

/// The words of `text`: lower-cased maximal runs of alphanumeric characters (module doc).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn ngrams(words: &[String], n: usize) -> impl Iterator<Item = &[String]> {
    // n = 0 has no n-grams by convention (`windows(0)` would panic).
    let count = if n == 0 || words.len() < n {
        0
    } else {
        words.len() - n + 1
    };
    (0..count).map(move |i| &words[i..i + n])
}

/// Repeated word `n`-grams of `text`: `hits` = occurrences that repeat an earlier occurrence
/// (`total − distinct`), `total` = all `n`-gram occurrences.
pub fn repetition(text: &str, n: usize) -> NgramShare {
    let words = words(text);
    let mut seen = std::collections::HashSet::new();
    let mut share = NgramShare::default();
    for gram in ngrams(&words, n) {
        share.total += 1;
        if !seen.insert(gram) {
            share.hits += 1;
        }
    }
    share
}

/// Word `n`-gram occurrences of `output` that occur in `source`: `hits` of `total`.
pub fn overlap(output: &str, source: &str, n: usize) -> NgramShare {
    let source_words = words(source);
    let source_grams: std::collections::HashSet<&[String]> = ngrams(&source_words, n).collect();
    let output_words = words(output);
    let mut share = NgramShare::default();
    for gram in ngrams(&output_words, n) {
        share.total += 1;
        if source_grams.contains(gram) {
            share.hits += 1;
        }
    }
    share
}

/// REP-4 of `text`: `1 − distinct/total` word 4-grams, in [0, 1]; 0 for fewer than 4 words.
pub fn rep4(text: &str) -> f64 {
    repetition(text, 4).ratio()
}

/// OVL-3 of `output` against `source`: the share of the output's word 3-grams that occur in the
/// source, in [0, 1]; 0 when the output has fewer than 3 words.
pub fn ovl3(output: &str, source: &str) -> f64 {
    overlap(output, source, 3).ratio()
}

/// Mean cosine similarity of consecutive concepts of `concepts` (`len / dim` rows of `dim`
/// values, row-major). `None` when there are fewer than two rows or `dim` is 0 (no pair).
/// A trailing partial row is ignored. The cosine of a zero vector with anything is 0.
pub fn coherence(concepts: &[f32], dim: usize) -> Option<f64> {
    if dim == 0 {
        return None;
    }
    let rows: Vec<&[f32]> = concepts.chunks_exact(dim).collect();
    if rows.len() < 2 {
        return None;
    }
    let sum: f64 = rows.windows(2).map(|pair| cosine(pair[0], pair[1])).sum();
    Some(sum / (rows.len() - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_lowercase_and_split_on_non_alphanumeric() {
        assert_eq!(
            words("Don't stop, Stop!  Über-2"),
            ["don", "t", "stop", "stop", "über", "2"]
        );
        assert!(words(" ... ").is_empty());
    }

    #[test]
    fn rep4_counts_repeated_four_gram_occurrences() {
        // "a b c d a b c d": 4-grams abcd bcda cdab dabc abcd -> 5 total, 4 distinct.
        assert_eq!(
            repetition("a b c d a b c d", 4),
            NgramShare { hits: 1, total: 5 }
        );
        assert!((rep4("a b c d a b c d") - 0.2).abs() < 1e-12);
        // Case and punctuation do not matter: "The cat sat. the CAT sat!" -> 3-grams
        // [the cat sat] [cat sat the] [sat the cat] [the cat sat] -> 1 of 4 repeats.
        assert!((repetition("The cat sat. the CAT sat!", 3).ratio() - 0.25).abs() < 1e-12);
        // A sentence repeated three times: words w1..w5 x3 = 15 words, 12 4-grams, 5 distinct.
        let s = "One two three four five. ";
        assert!((rep4(&s.repeat(3)) - 7.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn rep4_is_zero_without_repeats_or_without_four_grams() {
        assert_eq!(rep4("one two three four five six"), 0.0);
        assert_eq!(rep4("one two three"), 0.0);
        assert_eq!(repetition("one two three", 4).total, 0);
        assert_eq!(repetition("", 4), NgramShare::default());
    }

    #[test]
    fn ovl3_is_share_of_output_trigrams_found_in_source() {
        let source = "The old man walked slowly along the river.";
        // Output 3-grams: [the old man] [old man sat] [man sat down] -> 1 of 3 in the source.
        assert!((ovl3("The old man sat down.", source) - 1.0 / 3.0).abs() < 1e-12);
        // With multiplicity: [the river the] is not in the source; "along the river" twice is.
        // Output words: along the river along the river -> 3-grams
        // [along the river] [the river along] [river along the] [along the river] -> 2 of 4.
        assert_eq!(
            overlap("Along the river, along the river.", source, 3),
            NgramShare { hits: 2, total: 4 }
        );
        assert_eq!(ovl3("Nothing here matches at all.", source), 0.0);
        assert_eq!(ovl3("Too short", source), 0.0);
        assert!((ovl3(source, source) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn shares_sum_to_micro_average() {
        let a = repetition("a b c d a b c d", 4); // 1 / 5
        let b = repetition("a b c d e", 4); // 0 / 2
        let total: NgramShare = [a, b].into_iter().sum();
        assert_eq!(total, NgramShare { hits: 1, total: 7 });
        assert!((total.ratio() - 1.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn coherence_is_mean_cosine_of_consecutive_rows() {
        // Rows (1,0), (1,1), (0,1): cosines 1/sqrt2 and 1/sqrt2.
        let c = coherence(&[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], 2).unwrap();
        assert!((c - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // Rows (1,0), (-1,0), (0,1): cosines -1 and 0 -> mean -0.5.
        let c = coherence(&[1.0, 0.0, -1.0, 0.0, 0.0, 1.0], 2).unwrap();
        assert!((c + 0.5).abs() < 1e-6);
        assert_eq!(coherence(&[1.0, 0.0], 2), None);
        assert_eq!(coherence(&[1.0, 0.0, 1.0, 0.0], 0), None);
    }
}
