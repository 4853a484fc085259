//! Sentence segmentation: text → sentences, the unit a concept encoder embeds.
//!
//! The pipeline, in order:
//!
//! 1. **Lines.** A blank line (or U+2029) always ends a paragraph. Inside a paragraph each line
//!    break is either *hard* (a list item, a heading, a short title line: the break ends a
//!    sentence) or *soft* (a paragraph wrapped mid-sentence: the break is just whitespace).
//! 2. **Units.** Lines joined by soft breaks form a unit; every whitespace run in it is collapsed
//!    to one character, which keeps the Unicode splitter linear and the output clean.
//! 3. **UAX #29** sentence boundaries (`unicode-segmentation`) inside each unit, then repairs for
//!    what real text needs: abbreviations and initials, German ordinals, list markers, closing
//!    guillemets after a space, glued URLs, Japanese quotations followed by と.
//! 4. **Punctuation-only fragments** ("...", "—", "***") join a neighbour.
//! 5. **Length cap** as in the LCM reference: a sentence of `max_chars` characters or more is
//!    re-split into `round(len / max_chars) + 1` pieces, cutting near the equal-length positions at
//!    the best separator (`...`, newline, `!`, `?`, `;`, `:`, `.`, `,`, tab, space), with a hard cut
//!    as the last resort; pieces of at most `min_chars` characters join a neighbour.
//!
//! Everything is deterministic and linear in the input length.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

/// Written into every artifact built from segmented text; bump it whenever the output can change.
pub const SEGMENTER_VERSION: &str = "lcm-seg-1";

/// Tunables of [`Segmenter`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmenterConfig {
    /// Sentences of this many characters (not bytes) or more are re-split; every re-split piece
    /// stays below it. `0` disables the cap.
    pub max_chars: usize,
    /// Re-split pieces of at most this many characters join a neighbour.
    pub min_chars: usize,
    /// Language hint ("en", "fr", "de", "es", "ru", "zh", "ja" or NLLB codes such as "fra_Latn")
    /// choosing abbreviation lists; `None` or an unknown language uses all lists.
    pub lang: Option<String>,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            max_chars: 256,
            min_chars: 10,
            lang: None,
        }
    }
}

/// A configured sentence segmenter; cheap to share across threads.
#[derive(Debug, Clone)]
pub struct Segmenter {
    config: SegmenterConfig,
    /// Abbreviations that never end a sentence ("Mr.", "z.B.", "т.е.").
    always: HashSet<String>,
    /// Abbreviations that do not end a sentence when a number follows ("No. 5", "Jan. 3").
    before_number: HashSet<String>,
    /// Abbreviations that end a sentence only after a number ("1990 г." is a year, "г. Москва" a
    /// city).
    unless_after_number: HashSet<String>,
    /// Words that keep a German ordinal in its sentence ("am 3. Oktober", "das 20. Jahrhundert").
    ordinal_followers: HashSet<String>,
}

impl Default for Segmenter {
    fn default() -> Self {
        Self::new(SegmenterConfig::default())
    }
}

/// Segments `text` with the default configuration.
pub fn segment(text: &str) -> Vec<String> {
    static DEFAULT: OnceLock<Segmenter> = OnceLock::new();
    DEFAULT.get_or_init(Segmenter::default).segment(text)
}

impl Segmenter {
    pub fn new(config: SegmenterConfig) -> Self {
        let lang = config.lang.as_deref().and_then(parse_lang);
        let mut always = HashSet::new();
        let mut before_number = HashSet::new();
        let mut unless_after_number = HashSet::new();
        let mut ordinal_followers = HashSet::new();
        let add = |set: &mut HashSet<String>, words: &[&str]| {
            for w in words {
                set.insert(normalize_entry(w));
            }
        };
        add(&mut always, COMMON_ALWAYS);
        add(&mut before_number, COMMON_BEFORE_NUMBER);
        // Chinese and Japanese text quotes Latin-script names and references freely, so those
        // hints keep every list, like no hint at all.
        let all = matches!(lang, None | Some(Lang::Zh) | Some(Lang::Ja));
        if all || lang == Some(Lang::En) {
            add(&mut always, EN_ALWAYS);
            add(&mut before_number, EN_BEFORE_NUMBER);
        }
        if all || lang == Some(Lang::Fr) {
            add(&mut always, FR_ALWAYS);
            add(&mut before_number, FR_BEFORE_NUMBER);
        }
        if all || lang == Some(Lang::De) {
            add(&mut always, DE_ALWAYS);
            add(&mut before_number, DE_BEFORE_NUMBER);
            add(&mut ordinal_followers, DE_ORDINAL_FOLLOWERS);
        }
        if all || lang == Some(Lang::Es) {
            add(&mut always, ES_ALWAYS);
            add(&mut before_number, ES_BEFORE_NUMBER);
        }
        if all || lang == Some(Lang::Ru) {
            add(&mut always, RU_ALWAYS);
            add(&mut before_number, RU_BEFORE_NUMBER);
            add(&mut unless_after_number, RU_UNLESS_AFTER_NUMBER);
        }
        Self {
            config,
            always,
            before_number,
            unless_after_number,
            ordinal_followers,
        }
    }

    pub fn config(&self) -> &SegmenterConfig {
        &self.config
    }

    /// Splits `text` into trimmed, whitespace-collapsed, non-empty sentences, in order.
    pub fn segment(&self, text: &str) -> Vec<String> {
        let mut raw = Vec::new();
        for unit in units(text) {
            self.segment_unit(&unit, &mut raw);
        }
        let merged = merge_punctuation_only(raw);
        let mut out = Vec::with_capacity(merged.len());
        for sentence in merged {
            self.cap(&sentence, &mut out);
        }
        out
    }

    /// UAX #29 boundaries inside one unit, repaired; pushes trimmed sentences that still carry
    /// the unit's whitespace markers.
    fn segment_unit(&self, u: &str, out: &mut Vec<String>) {
        let mut cur: Option<Range<usize>> = None;
        for mut next in uax_pieces(u) {
            let Some(c) = cur.as_mut() else {
                cur = Some(next);
                continue;
            };
            // UAX #29 counts opening brackets as closing punctuation, so 「 in 。「本当？」 sticks
            // to the sentence before it.
            let open = trailing_openers(&u[c.clone()]);
            if open > 0 && open < c.len() {
                c.end -= open;
                next.start -= open;
            }
            // French puts a space before a closing guillemet, which UAX #29 reads as the start
            // of the next sentence: « Bonjour. » Puis …
            let lead = shiftable_closers(&u[next.clone()]);
            if lead > 0 && ends_with_terminal(u[c.clone()].trim_end()) {
                c.end = next.start + lead;
                next.start += lead;
                if u[next.clone()].trim().is_empty() {
                    c.end = next.end;
                    continue;
                }
            }
            if self.should_join(u, c.clone(), next.clone()) {
                c.end = next.end;
            } else {
                push_trimmed(&u[c.clone()], out);
                *c = next;
            }
        }
        if let Some(c) = cur {
            push_trimmed(&u[c], out);
        }
    }

    /// Whether the UAX #29 boundary between `prev` and `next` is a false one.
    fn should_join(&self, u: &str, prev: Range<usize>, next: Range<usize>) -> bool {
        let p = &u[prev];
        let pt = p.trim_end();
        let spaced = pt.len() < p.len();
        let n = &u[next];
        let (Some(last), Some(first)) = (pt.chars().next_back(), n.chars().next()) else {
            return true;
        };
        // A terminator glued to the next word is a URL, a file name or a typo, not an ending.
        if !spaced && matches!(last, '.' | '!' | '?') && first.is_ascii_alphanumeric() {
            return true;
        }
        // 「本当？」と聞いた: the quotation is part of the reporting sentence.
        if matches!(last, '」' | '』') && matches!(first, 'と' | 'っ') {
            return true;
        }
        if last != '.' {
            return false;
        }
        let before_dot = &pt[..pt.len() - 1];
        if before_dot.ends_with('.') {
            // An ellipsis; UAX #29 already keeps it when a lowercase word follows.
            return false;
        }
        if is_marker(pt.trim_start()) {
            // The piece is only a list marker ("1.", "IV."), so it belongs to what follows.
            return true;
        }
        let token = trailing_token(before_dot);
        if token.is_empty() {
            return false;
        }
        let next_first = first_significant(n);
        self.abbreviation_continues(before_dot, token, n, next_first)
    }

    fn abbreviation_continues(
        &self,
        before_dot: &str,
        token: &str,
        next: &str,
        next_first: char,
    ) -> bool {
        if contains(&self.always, token) {
            return true;
        }
        let mut chars = token.chars();
        if let (Some(c), None) = (chars.next(), chars.next())
            && c.is_uppercase()
        {
            // An initial ("J. R. R. Tolkien"); "I." is usually the pronoun, unless it starts a
            // run of initials ("I. M. Pei").
            return c != 'I' || starts_with_initial(next);
        }
        let digit_next = next_first.is_numeric();
        if contains(&self.before_number, token) {
            return digit_next;
        }
        if contains(&self.unless_after_number, token) {
            let rest = before_dot[..before_dot.len() - token.len()].trim_end();
            return !rest.chars().next_back().is_some_and(char::is_numeric);
        }
        if token.len() <= 2 && token.bytes().all(|b| b.is_ascii_digit()) {
            // German ordinals: "am 3. Oktober", "3. 10. 2020".
            return digit_next || self.ordinal_followers.contains(leading_word(next));
        }
        // An unknown dotted abbreviation ("a.m.", "Ph.D.") before a number.
        token.contains('.') && digit_next
    }

    /// Applies the length cap to one sentence and pushes the output strings.
    fn cap(&self, sentence: &str, out: &mut Vec<String>) {
        let max = self.config.max_chars;
        if max == 0 || sentence.chars().count() < max {
            out.push(collapse(sentence));
            return;
        }
        let chars: Vec<char> = sentence.chars().collect();
        for piece in self.resplit(&chars) {
            let text: String = chars[piece].iter().collect();
            let text = text.trim();
            if !text.is_empty() {
                out.push(collapse(text));
            }
        }
    }

    /// Cut ranges for an over-long sentence (`chars` holds single-character whitespace).
    ///
    /// Cuts are placed one after another: each targets an equal share of what is left, searches
    /// a window around that target for the best separator, and never lets a piece reach the cap.
    /// Windows tile the text, so the whole re-split is linear.
    fn resplit(&self, chars: &[char]) -> Vec<Range<usize>> {
        let n = chars.len();
        let cap = self.config.max_chars.max(1);
        let max_len = cap.saturating_sub(1).max(1);
        // Two characters of slack for the whitespace that trimming removes at either end.
        let min_len = (self.config.min_chars + 3).min(max_len / 2).max(1);
        let planned = (n + cap / 2) / cap + 1;

        let mut cuts = vec![0];
        let mut p = 0;
        let mut made = 0;
        loop {
            let r = n - p;
            let needed = r.div_ceil(max_len);
            let mut left = planned.saturating_sub(made).max(needed);
            if left > 1 && r / left < 2 * min_len {
                left = needed;
            }
            if left <= 1 {
                break;
            }
            let target = r / left;
            let ideal = p + target;
            let half = (target / 4).max(1);
            let lo = ideal.saturating_sub(half).max(p + min_len);
            let hi = (ideal + half)
                .min(p + max_len)
                .min(n.saturating_sub(min_len));
            let cut = if lo <= hi {
                best_cut(chars, p, lo, hi, ideal)
            } else {
                ideal.clamp(p + 1, (p + max_len).min(n - 1))
            };
            cuts.push(cut);
            p = cut;
            made += 1;
        }
        cuts.push(n);

        let min_chars = self.config.min_chars;
        let mut pieces: Vec<Range<usize>> = Vec::with_capacity(cuts.len());
        for w in cuts.windows(2) {
            let piece = w[0]..w[1];
            if let Some(last) = pieces.last_mut()
                && (trimmed_len(chars, piece.clone()) <= min_chars
                    || trimmed_len(chars, last.clone()) <= min_chars)
            {
                last.end = piece.end;
                continue;
            }
            pieces.push(piece);
        }
        pieces
    }
}

// ---------------------------------------------------------------------------------------------
// Lines and units

/// One line of the input (without its terminator), as a byte range.
struct Line {
    range: Range<usize>,
    /// A paragraph separator (U+2029) follows, which ends the paragraph like a blank line.
    paragraph_after: bool,
}

fn split_lines(text: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let paragraph_after = match c {
            '\r' => {
                if let Some(&(_, '\n')) = iter.peek() {
                    iter.next();
                }
                false
            }
            '\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' => false,
            '\u{2029}' => true,
            _ => continue,
        };
        lines.push(Line {
            range: start..i,
            paragraph_after,
        });
        start = iter.peek().map_or(text.len(), |&(j, _)| j);
    }
    if start < text.len() {
        lines.push(Line {
            range: start..text.len(),
            paragraph_after: false,
        });
    }
    lines
}

/// What the line-break rules need to know about one non-blank line.
struct LineInfo<'a> {
    text: &'a str,
    item: bool,
    terminal: bool,
    continues: bool,
    starts_lower: bool,
    width: usize,
}

impl<'a> LineInfo<'a> {
    fn new(line: &'a str) -> Self {
        let text = line.trim();
        let last = strip_closers(text).chars().next_back();
        Self {
            text,
            item: is_list_item(text),
            terminal: ends_with_terminal(text),
            continues: last.is_some_and(|c| {
                matches!(
                    c,
                    ',' | ';' | '-' | '–' | '—' | '(' | '/' | '&' | '、' | '，' | '；'
                )
            }),
            starts_lower: first_significant(text).is_lowercase(),
            width: text.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum(),
        }
    }
}

/// Whether the break between two lines of one paragraph is just whitespace.
fn soft_break(cur: &LineInfo, next: &LineInfo, paragraph_width: usize) -> bool {
    if next.item {
        return false;
    }
    if cur.item {
        // A list item wrapped onto a second line continues in lowercase.
        return next.starts_lower;
    }
    if cur.terminal || next.starts_lower || cur.continues {
        // After a full stop the sentence splitter decides (it knows "Dr." from "end.").
        return true;
    }
    // No final punctuation and a capital next: a wrapped line runs close to the paragraph's
    // width, while a heading or a list without markers is shorter.
    paragraph_width >= 40 && cur.width * 4 >= paragraph_width * 3
}

/// The input as units: runs of lines joined by soft breaks, each with its whitespace runs
/// collapsed to one character: `\u{0B}` where the run held a line break, `\t` where it held a
/// tab, else a space. UAX #29 reads all three as `Sp`; the re-split reads them as separators of
/// different priority.
fn units(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut paragraph: Vec<LineInfo> = Vec::new();
    for line in split_lines(text) {
        let content = &text[line.range];
        if content.trim().is_empty() {
            flush_paragraph(&mut paragraph, &mut out);
        } else {
            paragraph.push(LineInfo::new(content));
        }
        if line.paragraph_after {
            flush_paragraph(&mut paragraph, &mut out);
        }
    }
    flush_paragraph(&mut paragraph, &mut out);
    out
}

fn flush_paragraph(paragraph: &mut Vec<LineInfo>, out: &mut Vec<String>) {
    let width = paragraph.iter().map(|l| l.width).max().unwrap_or(0);
    let mut unit = UnitBuilder::default();
    for (i, line) in paragraph.iter().enumerate() {
        unit.push(line.text);
        match paragraph.get(i + 1) {
            Some(next) if soft_break(line, next, width) => unit.soft_break(),
            _ => {
                if !unit.buf.is_empty() {
                    out.push(std::mem::take(&mut unit.buf));
                }
                unit = UnitBuilder::default();
            }
        }
    }
    paragraph.clear();
}

#[derive(Default)]
struct UnitBuilder {
    buf: String,
    pending_space: bool,
    pending_tab: bool,
    pending_newline: bool,
}

impl UnitBuilder {
    fn push(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.pending_space = true;
                self.pending_tab |= c == '\t';
            } else {
                self.flush_whitespace(c);
                self.buf.push(c);
            }
        }
    }

    fn soft_break(&mut self) {
        self.pending_space = true;
        self.pending_newline = true;
    }

    fn flush_whitespace(&mut self, next: char) {
        if self.pending_space {
            let prev = self.buf.chars().next_back();
            // Chinese and Japanese wrap lines anywhere and put no spaces between words.
            let cjk_wrap = self.pending_newline
                && prev.is_some_and(is_wide)
                && is_wide(next)
                && !is_wide_space(next);
            if prev.is_some() && !cjk_wrap {
                self.buf.push(if self.pending_newline {
                    '\u{0B}'
                } else if self.pending_tab {
                    '\t'
                } else {
                    ' '
                });
            }
        }
        self.pending_space = false;
        self.pending_tab = false;
        self.pending_newline = false;
    }
}

// ---------------------------------------------------------------------------------------------
// UAX #29 and its repairs

/// Characters that may sit in a long run after a full stop without stopping the UAX #29 SB8
/// look-ahead (closing punctuation and symbols); separator-line characters are left out since
/// UAX #29 stops at them anyway.
fn is_inert(c: char) -> bool {
    !c.is_alphanumeric()
        && !c.is_whitespace()
        && !is_terminator(c)
        && !matches!(
            c,
            '-' | '=' | '_' | '*' | '#' | '~' | '+' | '/' | '\\' | '|'
        )
}

/// UAX #29 pieces of a unit, as byte ranges covering it.
///
/// `unicode-segmentation` rescans the rest of the run for every closing mark that follows a full
/// stop (SB8), which is quadratic in the run's length; runs of 64 or more such characters are
/// therefore split off and segmented on their own.
fn uax_pieces(u: &str) -> Vec<Range<usize>> {
    const LONG_RUN: usize = 64;
    let mut spans = Vec::new();
    let mut start = 0;
    let mut run_start = 0;
    let mut run = 0;
    for (i, c) in u.char_indices() {
        if is_inert(c) {
            if run == 0 {
                run_start = i;
            }
            run += 1;
        } else {
            if run >= LONG_RUN {
                spans.push(start..run_start);
                spans.push(run_start..i);
                start = i;
            }
            run = 0;
        }
    }
    if run >= LONG_RUN {
        spans.push(start..run_start);
        start = run_start;
    }
    spans.push(start..u.len());

    let mut pieces = Vec::new();
    for span in spans {
        let base = span.start;
        for (i, s) in u[span].split_sentence_bound_indices() {
            pieces.push(base + i..base + i + s.len());
        }
    }
    pieces
}

/// Byte length of closing quotes/brackets opening `s` when they stand apart (followed by
/// whitespace or the end), i.e. when they close the previous sentence.
fn shiftable_closers(s: &str) -> usize {
    let mut end = 0;
    for (i, c) in s.char_indices().take(4) {
        if matches!(
            c,
            '»' | '›'
                | '”'
                | '’'
                | '"'
                | '\''
                | ')'
                | ']'
                | '}'
                | '」'
                | '』'
                | '）'
                | '】'
                | '》'
                | '〉'
        ) {
            end = i + c.len_utf8();
        } else if c.is_whitespace() {
            return end;
        } else {
            return 0;
        }
    }
    if end == s.len() { end } else { 0 }
}

/// Byte length of unambiguous opening brackets ending `s` right after a sentence terminator.
fn trailing_openers(s: &str) -> usize {
    let mut start = s.len();
    for (i, c) in s.char_indices().rev().take(4) {
        if matches!(
            c,
            '「' | '『'
                | '（'
                | '【'
                | '《'
                | '〈'
                | '〔'
                | '［'
                | '｛'
                | '('
                | '['
                | '{'
                | '„'
                | '‚'
                | '¿'
                | '¡'
        ) {
            start = i;
        } else {
            return if is_terminator(c) || is_closer(c) {
                s.len() - start
            } else {
                0
            };
        }
    }
    0
}

/// The word ending `s`: letters, digits and inner dots or hyphens ("e.g", "z.B", "Dipl.-Ing").
/// Empty when it is longer than any abbreviation, which also bounds the scan.
fn trailing_token(s: &str) -> &str {
    const MAX_CHARS: usize = 24;
    let mut start = s.len();
    for (count, (i, c)) in s.char_indices().rev().enumerate() {
        if !(c.is_alphanumeric() || c == '.' || c == '-') {
            break;
        }
        if count == MAX_CHARS {
            return "";
        }
        start = i;
    }
    s[start..].trim_start_matches(['.', '-'])
}

/// The first letter or digit near the start of `s`, skipping opening quotes and brackets.
fn first_significant(s: &str) -> char {
    let mut first = ' ';
    for (i, c) in s.trim_start().chars().take(4).enumerate() {
        if i == 0 {
            first = c;
        }
        if c.is_alphanumeric() {
            return c;
        }
    }
    first
}

/// The leading run of letters of `s` ("Oktober" in "Oktober 2020").
fn leading_word(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .char_indices()
        .find(|&(_, c)| !c.is_alphabetic())
        .map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// Whether `s` starts with an initial: a capital followed by a full stop.
fn starts_with_initial(s: &str) -> bool {
    let mut chars = s.trim_start().chars();
    matches!((chars.next(), chars.next()), (Some(c), Some('.')) if c.is_uppercase())
}

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '。' | '！' | '？' | '．' | '｡' | '‼' | '⁇' | '⁈' | '⁉'
    )
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '»'
            | '«'
            | '›'
            | '‹'
            | '”'
            | '“'
            | '’'
            | '‘'
            | '」'
            | '』'
            | '）'
            | '】'
            | '》'
            | '〉'
            | '〕'
            | '］'
            | '｝'
            | '＂'
    )
}

/// `s` without the closing quotes and brackets at its end (a few at most).
fn strip_closers(s: &str) -> &str {
    let mut end = s.len();
    for (i, c) in s.char_indices().rev().take(4) {
        if !is_closer(c) {
            break;
        }
        end = i;
    }
    &s[..end]
}

fn ends_with_terminal(s: &str) -> bool {
    strip_closers(s)
        .chars()
        .next_back()
        .is_some_and(is_terminator)
}

/// A list marker on its own: "1.", "2.1.", "a)", "(iv)", "IV.".
fn is_marker(word: &str) -> bool {
    // Markers are short; the bound also keeps checks on a long accumulated sentence O(1).
    if word.len() > 16 {
        return false;
    }
    let inner = match word.strip_prefix('(') {
        Some(rest) => rest.strip_suffix(')'),
        None => word.strip_suffix(['.', ')']),
    };
    let Some(inner) = inner else {
        return false;
    };
    if inner.is_empty() {
        return false;
    }
    let numbered = inner
        .split('.')
        .all(|part| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()));
    let lettered = inner.len() == 1 && inner.bytes().all(|b| b.is_ascii_alphabetic());
    let roman = inner.len() <= 6
        && (inner.bytes().all(|b| b"ivxlcdm".contains(&b))
            || inner.bytes().all(|b| b"IVXLCDM".contains(&b)));
    numbered || lettered || roman
}

/// Whether a trimmed line starts a list item or a heading.
fn is_list_item(line: &str) -> bool {
    let mut chars = line.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let second = chars.next();
    match first {
        '-' | '*' | '+' => second.is_some_and(char::is_whitespace),
        '•'
        | '·'
        | '‣'
        | '◦'
        | '▪'
        | '▫'
        | '►'
        | '▸'
        | '●'
        | '○'
        | '■'
        | '□'
        | '✓'
        | '✔'
        | '→'
        | '・'
        | '–'
        | '—'
        | '①'..='⑳' => true,
        '#' => line
            .trim_start_matches('#')
            .starts_with(char::is_whitespace),
        _ => {
            let word = line.split(char::is_whitespace).next().unwrap_or("");
            if word.len() < line.len() && is_marker(word) {
                return true;
            }
            // 1、 一、 （1） ２． — CJK numbering needs no space after it.
            let numeral = |c: char| {
                c.is_ascii_digit()
                    || ('０'..='９').contains(&c)
                    || "一二三四五六七八九十".contains(c)
            };
            let inner = line.strip_prefix(['(', '（']).unwrap_or(line);
            let digits = inner.chars().take_while(|&c| numeral(c)).count();
            (1..=3).contains(&digits)
                && inner
                    .chars()
                    .nth(digits)
                    .is_some_and(|c| matches!(c, '、' | '．' | '）'))
        }
    }
}

fn push_trimmed(s: &str, out: &mut Vec<String>) {
    let t = s.trim();
    if !t.is_empty() {
        out.push(t.to_string());
    }
}

/// Joins sentences without a letter or digit ("...", "—", "***") to the previous sentence, or
/// to the next one when they come first.
fn merge_punctuation_only(raw: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    let mut carry: Option<String> = None;
    for s in raw {
        if !s.chars().any(char::is_alphanumeric) {
            match (out.last_mut(), carry.as_mut()) {
                (Some(last), _) => {
                    last.push(' ');
                    last.push_str(&s);
                }
                (None, Some(c)) => {
                    c.push(' ');
                    c.push_str(&s);
                }
                (None, None) => carry = Some(s),
            }
            continue;
        }
        match carry.take() {
            Some(mut c) => {
                c.push(' ');
                c.push_str(&s);
                out.push(c);
            }
            None => out.push(s),
        }
    }
    out.extend(carry);
    out
}

/// Turns the unit's whitespace markers into plain spaces.
fn collapse(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Re-split of over-long sentences

/// Separator priority of a cut before `chars[c]` (lower is better), or `None` where no
/// separator ends. ASCII punctuation counts only before whitespace, so "3.14", "1,000" and
/// "e.g.," never become cut points; CJK punctuation needs no space.
fn cut_priority(chars: &[char], p: usize, c: usize) -> Option<u8> {
    let prev = chars[c - 1];
    let next = chars[c];
    if prev.is_whitespace() {
        let mut q = c - 1;
        while q > p && q + 4 > c && is_closer(chars[q - 1]) {
            q -= 1;
        }
        let before = if q > p { chars[q - 1] } else { ' ' };
        let ellipsis = before == '…'
            || (q >= p + 3 && chars[q - 1] == '.' && chars[q - 2] == '.' && chars[q - 3] == '.');
        return Some(if ellipsis {
            0
        } else if prev == '\u{0B}' {
            1
        } else if let Some(pr) = punct_priority(before) {
            pr
        } else if prev == '\t' {
            8
        } else {
            9
        });
    }
    if next.is_whitespace() || is_closer(next) {
        // The cut after the whitespace (or after the closing quote) covers this spot.
        return None;
    }
    let mut q = c;
    while q > p && q + 4 > c && is_closer(chars[q - 1]) {
        q -= 1;
    }
    if q == p {
        return None;
    }
    let before = chars[q - 1];
    if before == '…' && is_wide(next) {
        return Some(0);
    }
    if matches!(
        before,
        '。' | '．' | '！' | '？' | '；' | '：' | '，' | '、' | '｡' | '､'
    ) {
        return punct_priority(before);
    }
    None
}

fn punct_priority(c: char) -> Option<u8> {
    Some(match c {
        '!' | '！' | '‼' => 2,
        '?' | '？' => 3,
        ';' | '；' => 4,
        ':' | '：' => 5,
        '.' | '。' | '．' | '｡' => 6,
        ',' | '，' | '、' | '､' => 7,
        _ => return None,
    })
}

/// The best cut in `lo..=hi`: highest-priority separator, then nearest to `ideal`; a hard cut at
/// a grapheme boundary near `ideal` when the window has no separator.
fn best_cut(chars: &[char], p: usize, lo: usize, hi: usize, ideal: usize) -> usize {
    let mut best: Option<(u8, usize, usize)> = None;
    for c in lo..=hi {
        if let Some(pr) = cut_priority(chars, p, c) {
            let key = (pr, c.abs_diff(ideal), c);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
    }
    if let Some((_, _, c)) = best {
        return c;
    }
    let ideal = ideal.clamp(lo, hi);
    let a = ideal.saturating_sub(8).max(lo);
    let b = (ideal + 8).min(hi);
    let window: String = chars[a..=b].iter().collect();
    let mut byte_to_char = 0;
    let mut last_byte = 0;
    let mut choice = ideal;
    let mut choice_dist = usize::MAX;
    // Grapheme starts inside the window (the window's own start is unknown context).
    for (byte, _) in window.grapheme_indices(true).skip(1) {
        byte_to_char += window[last_byte..byte].chars().count();
        last_byte = byte;
        let c = a + byte_to_char;
        if c.abs_diff(ideal) < choice_dist {
            choice = c;
            choice_dist = c.abs_diff(ideal);
        }
    }
    choice
}

fn trimmed_len(chars: &[char], r: Range<usize>) -> usize {
    let s = &chars[r];
    let lead = s.iter().take_while(|c| c.is_whitespace()).count();
    let trail = s[lead..]
        .iter()
        .rev()
        .take_while(|c| c.is_whitespace())
        .count();
    s.len() - lead - trail
}

// ---------------------------------------------------------------------------------------------
// Scripts and languages

/// Characters that take two columns: CJK ideographs, kana, Hangul, fullwidth forms.
fn is_wide(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{115F}'
        | '\u{2E80}'..='\u{A4CF}'
        | '\u{AC00}'..='\u{D7A3}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{FE30}'..='\u{FE4F}'
        | '\u{FF00}'..='\u{FF60}'
        | '\u{FFE0}'..='\u{FFE6}'
        | '\u{20000}'..='\u{3FFFD}')
}

fn is_wide_space(c: char) -> bool {
    c == '\u{3000}'
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    En,
    Fr,
    De,
    Es,
    Ru,
    Zh,
    Ja,
}

/// "en", "eng", "eng_Latn", "fr-FR" … → a language with its own abbreviation list.
fn parse_lang(hint: &str) -> Option<Lang> {
    let code = hint
        .split(['_', '-'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Some(match code.as_str() {
        "en" | "eng" => Lang::En,
        "fr" | "fra" | "fre" => Lang::Fr,
        "de" | "deu" | "ger" => Lang::De,
        "es" | "spa" => Lang::Es,
        "ru" | "rus" => Lang::Ru,
        "zh" | "zho" | "chi" | "cmn" | "yue" => Lang::Zh,
        "ja" | "jpn" => Lang::Ja,
        _ => return None,
    })
}

/// Dotted abbreviations are matched case-insensitively ("E.g.", "Z.B."), plain ones exactly.
fn normalize_entry(w: &str) -> String {
    if w.contains('.') {
        w.to_lowercase()
    } else {
        w.to_string()
    }
}

fn contains(set: &HashSet<String>, token: &str) -> bool {
    if token.contains('.') {
        return set.contains(&token.to_lowercase());
    }
    if set.contains(token) {
        return true;
    }
    // A lowercase abbreviation capitalised at the start of a sentence ("Vgl.", "Etc.").
    let mut chars = token.chars();
    match chars.next() {
        Some(first) if first.is_uppercase() => {
            let lowered: String = first.to_lowercase().chain(chars).collect();
            set.contains(&lowered)
        }
        _ => false,
    }
}

const COMMON_ALWAYS: &[&str] = &["Dr", "Prof", "St", "e.g", "i.e", "cf", "vs", "viz"];
const COMMON_BEFORE_NUMBER: &[&str] = &["etc", "ca", "vol", "art", "p", "pp", "Nr", "No"];

const EN_ALWAYS: &[&str] = &[
    "Mr", "Mrs", "Ms", "Mx", "Messrs", "Mt", "Ft", "Sr", "Gen", "Gov", "Sen", "Rep", "Rev", "Hon",
    "Capt", "Col", "Lt", "Sgt", "Cpl", "Adm", "Maj", "Cmdr", "Pres", "Supt", "Dept", "Univ", "v",
    "U.S", "U.K", "U.N", "E.U",
];
const EN_BEFORE_NUMBER: &[&str] = &[
    "Nos", "Vol", "Vols", "Fig", "Figs", "Eq", "Eqs", "Ch", "Chap", "Sec", "Sect", "Art", "para",
    "c", "approx", "est", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct",
    "Nov", "Dec", "Inc", "Ltd", "Co", "Corp", "Jr", "a.m", "p.m", "al", "ed", "eds", "Ph.D",
    "U.S.A", "Tel", "ext", "no",
];

const FR_ALWAYS: &[&str] = &[
    "M", "MM", "Mme", "Mmes", "Mlle", "Mlles", "Mgr", "Me", "Pr", "Ste", "av", "bd", "boul",
    "c.-à-d", "p.ex", "env", "resp",
];
const FR_BEFORE_NUMBER: &[&str] = &[
    "n", "t", "chap", "janv", "févr", "fév", "avr", "juil", "sept", "oct", "nov", "déc", "éd",
    "réf", "tél",
];

const DE_ALWAYS: &[&str] = &[
    "z.B",
    "d.h",
    "u.a",
    "u.U",
    "z.T",
    "i.d.R",
    "s.o",
    "s.u",
    "o.g",
    "v.a",
    "bzw",
    "ggf",
    "evtl",
    "vgl",
    "sog",
    "inkl",
    "exkl",
    "bzgl",
    "zzgl",
    "Hr",
    "Hrn",
    "Fr",
    "Dipl",
    "Dipl.-Ing",
    "Ing",
    "Mio",
    "Mrd",
    "geb",
    "gest",
    "Abt",
];
const DE_BEFORE_NUMBER: &[&str] = &[
    "Abs", "Bd", "Bde", "S", "Kap", "Tel", "Str", "Jan", "Feb", "Mär", "Apr", "Jun", "Jul", "Aug",
    "Sep", "Sept", "Okt", "Nov", "Dez", "usw", "Jh", "Jhd", "u.ä", "o.ä", "u.v.m",
];
/// Words that follow a German ordinal: months, and nouns commonly counted ("20. Jahrhundert").
const DE_ORDINAL_FOLLOWERS: &[&str] = &[
    "Januar",
    "Jänner",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
    "Jan",
    "Feb",
    "Mär",
    "Apr",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Sept",
    "Okt",
    "Nov",
    "Dez",
    "Jahrhundert",
    "Jahrhunderts",
    "Jahrtausend",
    "Jahrestag",
    "Geburtstag",
    "Lebensjahr",
    "Platz",
    "Platzes",
    "Stock",
    "Stockwerk",
    "Etage",
    "Klasse",
    "Mal",
    "Kapitel",
    "Auflage",
    "Ausgabe",
    "Liga",
    "Bundesliga",
    "Weltkrieg",
    "Weltkriegs",
    "Runde",
    "Spieltag",
    "Sinfonie",
    "Symphonie",
    "Jahrgang",
    "Sitzung",
    "Wahlperiode",
];

const ES_ALWAYS: &[&str] = &[
    "Sr", "Sra", "Srta", "Sres", "Sras", "Dña", "Ud", "Uds", "Vd", "Vds", "Dra", "Lic", "Ing",
    "Arq", "Profa", "Gral", "Av", "Avda", "Sto", "Sta", "p.ej", "ej", "EE.UU", "EE", "Excmo",
    "Excma", "Ilmo", "Mons",
];
const ES_BEFORE_NUMBER: &[&str] = &[
    "núm", "n.º", "pág", "págs", "cap", "tel", "aprox", "Cía", "ene", "feb", "mar", "abr", "may",
    "jun", "jul", "ago", "sep", "sept", "oct", "nov", "dic",
];

const RU_ALWAYS: &[&str] = &[
    "т.е",
    "т.к",
    "т.н",
    "т.ч",
    "напр",
    "им",
    "ул",
    "просп",
    "пер",
    "пл",
    "д",
    "кв",
    "гр",
    "проф",
    "акад",
    "доц",
    "тов",
    "см",
    "ср",
    "англ",
    "нем",
    "франц",
    "лат",
    "рус",
    "пос",
    "обл",
];
const RU_BEFORE_NUMBER: &[&str] = &[
    "т.д", "т.п", "др", "пр", "рис", "стр", "с", "ст", "т", "гл", "руб", "коп", "тыс", "млн",
    "млрд", "янв", "февр", "мар", "апр", "авг", "сент", "окт", "нояб", "дек",
];
const RU_UNLESS_AFTER_NUMBER: &[&str] = &["г", "гг"];
