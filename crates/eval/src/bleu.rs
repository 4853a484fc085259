//! sacreBLEU-compatible BLEU (Papineni et al. 2002) with sacreBLEU 2.5.1's defaults.
//!
//! Reference behaviour (`sacrebleu/metrics/bleu.py`, `sacrebleu/tokenizers/tokenizer_13a.py`,
//! `tokenizer_re.py`):
//! - each line is right-stripped (Python `str.rstrip`), then tokenised with `13a` (mteval-v13a:
//!   `<skipped>` and `-\n` removed, newlines to spaces, four HTML entities unescaped, ASCII
//!   punctuation split off, `.`/`,` split off except between digits, `-` split off after a
//!   digit), then split on whitespace;
//! - clipped n-gram matches for n = 1..4 against one reference; brevity penalty
//!   `exp(1 - ref_len / sys_len)` when the system is shorter (0 when it is empty);
//! - smoothing `exp` (mteval's NIST method 3): the k-th order with no match gets precision
//!   `100 / (2^k · total)`; no match at all gives a score of 0 with all precisions 0;
//! - `effective_order` (sentence BLEU) averages only the orders that have n-grams.
//!
//! Corpus BLEU sums the statistics of all segments before computing one score, exactly as
//! `BLEU().corpus_score(hyps, [refs])`; sentence BLEU is
//! `BLEU(effective_order=True).sentence_score(hyp, [ref])`.

use std::collections::HashMap;
use std::fmt;

use crate::{EvalError, Result};

/// Highest n-gram order (sacreBLEU's `MAX_NGRAM_ORDER`).
const MAX_ORDER: usize = 4;
/// The sacreBLEU version whose behaviour (and signature string) this module reproduces.
pub const SACREBLEU_VERSION: &str = "2.5.1";

/// A BLEU score with its sufficient statistics, like sacreBLEU's `BLEUScore`.
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    /// BLEU in 0..=100.
    pub score: f64,
    /// Clipped matching n-grams, n = 1..4.
    pub counts: [usize; 4],
    /// Hypothesis n-grams, n = 1..4.
    pub totals: [usize; 4],
    /// Percent precisions after smoothing.
    pub precisions: [f64; 4],
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis tokens.
    pub sys_len: usize,
    /// Reference tokens.
    pub ref_len: usize,
}

impl BleuScore {
    /// sacreBLEU's signature string, e.g.
    /// `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.5.1` (`eff:yes` for
    /// [`sentence_bleu`]).
    pub fn signature(effective_order: bool) -> String {
        format!(
            "nrefs:1|case:mixed|eff:{}|tok:13a|smooth:exp|version:{SACREBLEU_VERSION}",
            if effective_order { "yes" } else { "no" }
        )
    }

    /// `hyp_len / ref_len`, 0 without a reference.
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }

    /// sacreBLEU's one-line form, e.g.
    /// `BLEU = 42.11 68.4/50.0/37.2/24.7 (BP = 1.000 ratio = 1.020 hyp_len = 155 ref_len = 152)`.
    pub fn format(&self) -> String {
        self.format_with_signature("")
    }

    /// [`BleuScore::format`] with `BLEU|<signature> = …` when `signature` is not empty.
    pub fn format_with_signature(&self, signature: &str) -> String {
        let name = if signature.is_empty() {
            "BLEU".to_string()
        } else {
            format!("BLEU|{signature}")
        };
        let precisions: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{name} = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            precisions.join("/"),
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

impl fmt::Display for BleuScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

/// Python's `str.isspace`: Unicode White_Space plus the four ASCII separators U+001C-U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The mteval-v13a tokenisation of one line, exactly as sacreBLEU's `Tokenizer13a` (which
/// does not strip the line itself; BLEU right-strips before calling it).
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let chars: Vec<char> = format!(" {line} ").chars().collect();

    // r'([\{-\~\[-\` -\&\(-\+\:-\@\/])' -> r' \1 ': ASCII punctuation other than ' , - .
    let is_punct =
        |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let mut step1 = Vec::with_capacity(chars.len() * 2);
    for &c in &chars {
        if is_punct(c) {
            step1.extend([' ', c, ' ']);
        } else {
            step1.push(c);
        }
    }
    let digit = |c: char| c.is_ascii_digit();
    let period_comma = |c: char| c == '.' || c == ',';
    // The other three rules match two characters; Python's `re.sub` takes non-overlapping
    // matches left to right, which a scan that skips past each match reproduces.
    let step2 = pair_rule(
        &step1,
        |a, b| !digit(a) && period_comma(b),
        |a, b| vec![a, ' ', b, ' '],
    );
    let step3 = pair_rule(
        &step2,
        |a, b| period_comma(a) && !digit(b),
        |a, b| vec![' ', a, ' ', b],
    );
    let step4 = pair_rule(
        &step3,
        |a, b| digit(a) && b == '-',
        |a, b| vec![a, ' ', b, ' '],
    );

    let text: String = step4.into_iter().collect();
    text.split(is_py_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn pair_rule(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char) -> Vec<char>,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// Per-segment statistics: `[hyp_len, ref_len, correct 1..4, total 1..4]`.
#[derive(Clone, Copy, Default)]
struct Stats {
    sys_len: usize,
    ref_len: usize,
    correct: [usize; MAX_ORDER],
    total: [usize; MAX_ORDER],
}

fn ngram_counts(tokens: &[&str]) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for window in tokens.windows(n) {
            let key: Vec<String> = window.iter().map(|t| t.to_string()).collect();
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

/// Python `str.rstrip()`.
fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

fn segment_stats(hyp: &str, reference: &str) -> Stats {
    let hyp = tokenize_13a(py_rstrip(hyp));
    let reference = tokenize_13a(py_rstrip(reference));
    // The tokeniser's output is single-space separated with no padding.
    let hyp_tokens: Vec<&str> = hyp.split(' ').filter(|t| !t.is_empty()).collect();
    let ref_tokens: Vec<&str> = reference.split(' ').filter(|t| !t.is_empty()).collect();
    let ref_counts = ngram_counts(&ref_tokens);
    let mut stats = Stats {
        sys_len: hyp_tokens.len(),
        ref_len: ref_tokens.len(),
        ..Stats::default()
    };
    for (ngram, count) in ngram_counts(&hyp_tokens) {
        let n = ngram.len() - 1;
        stats.total[n] += count;
        if let Some(&r) = ref_counts.get(&ngram) {
            stats.correct[n] += count.min(r);
        }
    }
    stats
}

/// sacreBLEU's `my_log`: log with log(0) floored to -9999999999.
fn floored_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// `BLEU.compute_bleu` with smoothing `exp`.
fn compute(stats: Stats, effective_order: bool) -> BleuScore {
    let Stats {
        sys_len,
        ref_len,
        correct,
        total,
    } = stats;
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = [0.0; MAX_ORDER];
    let mut score = 0.0;
    if correct.iter().any(|&c| c > 0) {
        let mut smooth = 1.0;
        let mut eff_order = MAX_ORDER;
        for n in 0..MAX_ORDER {
            if total[n] == 0 {
                break;
            }
            if effective_order {
                eff_order = n + 1;
            }
            precisions[n] = if correct[n] == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total[n] as f64)
            } else {
                100.0 * correct[n] as f64 / total[n] as f64
            };
        }
        // Python's `sum` adds left to right; so does this fold.
        let log_sum = precisions[..eff_order]
            .iter()
            .fold(0.0, |acc, &p| acc + floored_log(p));
        score = bp * (log_sum / eff_order as f64).exp();
    }
    BleuScore {
        score,
        counts: correct,
        totals: total,
        precisions,
        bp,
        sys_len,
        ref_len,
    }
}

/// [`corpus_bleu`] that refuses lists of different lengths (sacreBLEU raises there).
pub fn try_corpus_bleu(hyps: &[&str], refs: &[&str]) -> Result<BleuScore> {
    if hyps.len() != refs.len() {
        return Err(EvalError::Invalid(format!(
            "BLEU needs one reference per hypothesis: {} hypotheses, {} references",
            hyps.len(),
            refs.len()
        )));
    }
    Ok(corpus_bleu(hyps, refs))
}

/// Corpus BLEU of `hyps` against one reference each, with `BLEU()`'s defaults (13a, mixed
/// case, exp smoothing, no effective order). Only the first `min(len)` pairs are scored when
/// the lists differ in length; [`try_corpus_bleu`] rejects that instead.
pub fn corpus_bleu(hyps: &[&str], refs: &[&str]) -> BleuScore {
    let mut sum = Stats::default();
    for (hyp, reference) in hyps.iter().zip(refs) {
        let s = segment_stats(hyp, reference);
        sum.sys_len += s.sys_len;
        sum.ref_len += s.ref_len;
        for n in 0..MAX_ORDER {
            sum.correct[n] += s.correct[n];
            sum.total[n] += s.total[n];
        }
    }
    compute(sum, false)
}

/// Sentence BLEU as sacreBLEU recommends it: `BLEU(effective_order=True).sentence_score`.
pub fn sentence_bleu(hyp: &str, reference: &str) -> BleuScore {
    compute(segment_stats(hyp, reference), true)
}
