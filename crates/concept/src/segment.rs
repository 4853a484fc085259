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
//!    re-split into `round(len / max_chars) + 1` pieces (more only where the budget forces it).
//!    Each cut takes sentence-like punctuation (`...`, `!`, `?`, a full stop before a closing
//!    quote) anywhere within the budget; else, near the equal-length position, a line break, then
//!    clause punctuation (`;`, `:`, `,`), then a tab or a space (a bare full stop inside a
//!    sentence is an abbreviation and counts as a space); a hard cut is the last resort; pieces of
//!    at most `min_chars` characters join a neighbour. `lcm prepare` applies the cap (256);
//!    `lcm segment` only when asked.
//!
//! Everything is deterministic and linear in the input length.

use std::collections::HashSet;
use std::ops::{Range, RangeInclusive};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

/// Written into every artifact built from segmented text; bump it whenever the output can change.
pub const SEGMENTER_VERSION: &str = "lcm-seg-2";

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
    /// Whether a number with a full stop before another number is a German ordinal ("am 3. 10.").
    ordinals: bool,
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
            ordinals: !ordinal_followers.is_empty(),
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
        let lists = inline_list_starts(u, &self.ordinal_followers);
        let titles = title_spans(u);
        let mut title_at = 0;
        let mut cur: Option<Range<usize>> = None;
        for mut next in split_at(uax_pieces(u), &lists) {
            let Some(c) = cur.as_mut() else {
                cur = Some(next);
                continue;
            };
            // An item of an inline list ("1) first 2) second") starts a sentence.
            if lists.binary_search(&next.start).is_ok() {
                push_trimmed(&u[c.clone()], out);
                *c = next;
                continue;
            }
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
            // A terminator inside a title (《摔跤吧！爸爸》) ends nothing.
            while titles.get(title_at).is_some_and(|t| t.end <= next.start) {
                title_at += 1;
            }
            if titles.get(title_at).is_some_and(|t| t.start < next.start) {
                c.end = next.end;
                continue;
            }
            match spaced_ellipsis(&u[c.clone()]) {
                Ellipsis::None => {}
                Ellipsis::Inside => {
                    c.end = next.end;
                    continue;
                }
                Ellipsis::Ends => {
                    push_trimmed(&u[c.clone()], out);
                    *c = next;
                    continue;
                }
                Ellipsis::AfterFullStop(len) => {
                    // "compounds. . . . The practice": the full stop ends the sentence and the
                    // spaced ellipsis opens the next one.
                    let cut = c.start + len;
                    push_trimmed(&u[c.start..cut], out);
                    *c = cut..next.end;
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
        // "Yahoo! in the …", "“Help!” she cried": a lowercase word continues the sentence
        // (UAX #29 only looks for one after a full stop).
        if strip_closers(pt).ends_with(['!', '?']) && first.is_lowercase() {
            return true;
        }
        // A quotation followed by its citation: "… [...]" (Smith 55).
        if matches!(last, '"' | '”' | '’' | '»') && is_citation(n) {
            return true;
        }
        if matches!(last, '.' | ')') && is_marker(pt.trim_start()) {
            // The piece is only a list marker ("1.", "1.)", "IV.", "• 9."), so it belongs to
            // what follows.
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
        let next_first = first_significant(n);
        // "N°. 1026", "nº. 5": the numero sign before a number.
        if before_dot.ends_with(['°', 'º'])
            && before_dot[..before_dot.len() - 2].ends_with(['N', 'n'])
        {
            return next_first.is_numeric();
        }
        let token = trailing_token(before_dot);
        if token.is_empty() {
            return false;
        }
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
        let prefix = &before_dot[..before_dot.len() - token.len()];
        let mut chars = token.chars();
        if let (Some(c), None) = (chars.next(), chars.next())
            && c.is_alphabetic()
        {
            // A spaced abbreviation: "z. B.", "u. Ä.", "d. h.".
            let part = next_initial(next);
            if !part.is_empty() && contains(&self.always, &format!("{token}.{part}")) {
                return true;
            }
        }
        let mut chars = token.chars();
        if let (Some(c), None) = (chars.next(), chars.next())
            && c.is_uppercase()
            && starts_word(prefix)
        {
            // An initial ("J. R. R. Tolkien"); "I." is usually the pronoun, unless it starts a
            // run of initials ("I. M. Pei") or sits between two names ("Albert I. Jones").
            return c != 'I'
                || starts_with_initial(next)
                || (previous_word_capitalised(prefix)
                    && next_first.is_uppercase()
                    && !is_sentence_starter(leading_word(next)));
        }
        if is_initialism(token) {
            // "the U.S. Government" / "the U.S. How about you?": decided by what follows.
            return !is_sentence_starter(leading_word(next));
        }
        let digit_next = next_first.is_numeric();
        if contains(&self.before_number, token) {
            return digit_next;
        }
        if contains(&self.unless_after_number, token) {
            let rest = prefix.trim_end();
            return !rest.chars().next_back().is_some_and(char::is_numeric);
        }
        if self.ordinals && token.len() <= 2 && token.bytes().all(|b| b.is_ascii_digit()) {
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
    /// Cuts are placed one after another: each targets an equal share of what is left and takes
    /// sentence-like punctuation anywhere within the budget (the piece stays below the cap, the
    /// rest still fits in the pieces left), else the best separator near the target (see
    /// [`best_cut`]). A budget is shorter than the cap and each cut advances by at least
    /// `min_len`, so the re-split is linear.
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
            // The budget: the piece stays below the cap and what is left still fits in the
            // pieces left.
            let lo = (p + min_len).max(n.saturating_sub((left - 1) * max_len));
            let hi = (p + max_len).min(n.saturating_sub(min_len));
            let half = (target / 4).max(1);
            let near = ideal.saturating_sub(half)..=ideal + half;
            let cut = if lo <= hi {
                best_cut(chars, p, lo..=hi, near, ideal)
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
    particle: bool,
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
            // Japanese wrapped after a particle (これは父の / 家です。) is mid-sentence.
            particle: last.is_some_and(|c| matches!(c, 'の' | 'を' | 'が' | 'は' | 'へ' | 'で')),
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
    if cur.terminal || next.starts_lower || cur.continues || cur.particle {
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

/// Bullets that may precede a list marker ("• 9.", "⁃9.").
fn is_bullet(c: char) -> bool {
    matches!(c, '•' | '⁃' | '‣' | '◦' | '▪' | '·' | '●' | '○' | '■' | '□')
}

/// A list marker at the start of an inline-list candidate: its value and style.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Marker {
    value: u32,
    /// Digits or a letter, the closing form (`.`, `)`, `.)`) and whether a bullet precedes.
    style: (bool, u8, bool),
}

/// `word` as a marker of an inline list: "1.", "1)", "1.)", "a.", optionally after a bullet.
fn inline_marker(word: &str, bulleted: bool) -> Option<Marker> {
    if word.len() > 5 {
        return None;
    }
    let (inner, close) = if let Some(i) = word.strip_suffix(".)") {
        (i, 2)
    } else if let Some(i) = word.strip_suffix(')') {
        (i, 1)
    } else {
        (word.strip_suffix('.')?, 0)
    };
    let digits = (1..=3).contains(&inner.len()) && inner.bytes().all(|b| b.is_ascii_digit());
    let value = if digits {
        inner.parse().ok()?
    } else if inner.len() == 1 && inner.bytes().all(|b| b.is_ascii_lowercase()) {
        u32::from(inner.as_bytes()[0] - b'a') + 1
    } else {
        return None;
    };
    Some(Marker {
        value,
        style: (digits, close, bulleted),
    })
}

/// Byte offsets where the items of an inline list start ("1) The first item 2) The second
/// item"): markers of one style counting up by one, the first one (1, a, or any bulleted
/// number) opening the unit or following a colon or a sentence's end, each followed by text. The offset of the first item is included unless
/// it is 0.
fn inline_list_starts(u: &str, ordinal_followers: &HashSet<String>) -> Vec<usize> {
    let mut found = Vec::new();
    // The run being built: its items' offsets and its last marker.
    let mut run: Vec<usize> = Vec::new();
    let mut last: Option<Marker> = None;
    let mut bullet_at: Option<(usize, bool)> = None;
    let mut prev_end_char: Option<char> = None;
    let mut words = u.split(char::is_whitespace).peekable();
    while let Some(word) = words.next() {
        if word.is_empty() {
            continue;
        }
        // `word` is a subslice of `u`.
        let start = word.as_ptr() as usize - u.as_ptr() as usize;
        let mut opens = prev_end_char.is_none_or(|c| matches!(c, ':' | '.' | '!' | '?'));
        prev_end_char = word.chars().next_back();
        let mut body = word;
        let mut item_start = start;
        if let Some((b, colon)) = bullet_at.take() {
            item_start = b;
            opens = colon;
        } else if let Some(rest) = word.strip_prefix(is_bullet) {
            if rest.is_empty() {
                bullet_at = Some((start, opens));
                continue;
            }
            body = rest;
        }
        let bulleted = item_start < start || body.len() < word.len();
        // A marker needs text after it, and a German date is no list ("am 3. Oktober").
        let Some(m) = inline_marker(body, bulleted) else {
            continue;
        };
        let Some(&following) = words.peek() else {
            continue;
        };
        if ordinal_followers.contains(following) {
            continue;
        }
        if last.is_some_and(|l| l.style == m.style && l.value + 1 == m.value) {
            run.push(item_start);
            last = Some(m);
        } else if opens && (m.value == 1 || bulleted) {
            if run.len() >= 2 {
                found.extend(run.drain(..).filter(|&s| s > 0));
            }
            run.clear();
            run.push(item_start);
            last = Some(m);
        }
    }
    if run.len() >= 2 {
        found.extend(run.into_iter().filter(|&s| s > 0));
    }
    found
}

/// `pieces` cut again at each of the sorted `at` offsets inside them.
fn split_at(pieces: Vec<Range<usize>>, at: &[usize]) -> Vec<Range<usize>> {
    if at.is_empty() {
        return pieces;
    }
    let mut out = Vec::with_capacity(pieces.len() + at.len());
    let mut k = 0;
    for mut piece in pieces {
        while k < at.len() && at[k] <= piece.start {
            k += 1;
        }
        while k < at.len() && at[k] < piece.end {
            out.push(piece.start..at[k]);
            piece.start = at[k];
            k += 1;
        }
        out.push(piece);
    }
    out
}

/// Byte ranges of book and work titles in 《》 (outermost pairs, at most 300 bytes long).
fn title_spans(u: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    if !u.contains('《') {
        return spans;
    }
    let mut depth = 0usize;
    let mut open = 0;
    for (i, c) in u.char_indices() {
        match c {
            '《' => {
                if depth == 0 {
                    open = i;
                }
                depth += 1;
            }
            '》' if depth > 0 => {
                depth -= 1;
                if depth == 0 && i - open <= 300 {
                    spans.push(open..i);
                }
            }
            _ => {}
        }
    }
    spans
}

/// What a spaced ellipsis (". . .") ending a piece means for the boundary after it.
enum Ellipsis {
    /// The piece does not end in a spaced ellipsis.
    None,
    /// Three spaced dots after a space: an omission inside the sentence.
    Inside,
    /// Four spaced dots after a space ("… a period . . . ."): an omission, then the full stop.
    Ends,
    /// A full stop glued to a word, then a spaced ellipsis ("compounds. . . ."): the sentence
    /// ends after the byte length given, the ellipsis opens the next one.
    AfterFullStop(usize),
}

fn spaced_ellipsis(piece: &str) -> Ellipsis {
    let t = piece.trim_end().as_bytes();
    let mut dots = 0;
    let mut i = t.len();
    // Walk back over ". . ." (dots separated by single whitespace bytes).
    while i > 0 && t[i - 1] == b'.' {
        dots += 1;
        i -= 1;
        if i >= 2 && t[i - 1].is_ascii_whitespace() && t[i - 2] == b'.' {
            i -= 1;
        } else {
            break;
        }
        if dots > 8 {
            return Ellipsis::None;
        }
    }
    if dots < 3 {
        return Ellipsis::None;
    }
    let glued = i > 0 && !t[i - 1].is_ascii_whitespace();
    match (glued, dots) {
        (false, 3) => Ellipsis::Inside,
        (false, _) => Ellipsis::Ends,
        (true, 4) => Ellipsis::AfterFullStop(i + 1),
        _ => Ellipsis::None,
    }
}

/// A parenthetical citation ending a sentence: "(Smith 55).", "(ibid., p. 3)".
fn is_citation(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('(') else {
        return false;
    };
    let Some(close) = rest.char_indices().take(60).find(|&(_, c)| c == ')') else {
        return false;
    };
    let inner = &rest[..close.0];
    !inner.is_empty()
        && !inner.ends_with(is_terminator)
        && rest[close.0 + 1..]
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '.' | ',' | ';' | ':') || c.is_whitespace())
}

/// The letters before the first full stop of `s` when `s` starts with one or two letters and a
/// full stop ("B" in "B. ist es").
fn next_initial(s: &str) -> &str {
    let s = s.trim_start();
    let end = s
        .char_indices()
        .take(3)
        .find(|&(_, c)| !c.is_alphabetic())
        .map_or(0, |(i, c)| if c == '.' { i } else { 0 });
    &s[..end]
}

/// Whether a token after `prefix` starts a word (rather than following "°", a digit, …).
fn starts_word(prefix: &str) -> bool {
    prefix.chars().next_back().is_none_or(|c| {
        c.is_whitespace()
            || matches!(
                c,
                '(' | '[' | '{' | '"' | '\'' | '“' | '‘' | '„' | '«' | '‹' | '–' | '—' | '/'
            )
    })
}

/// Whether the word before `prefix`'s trailing whitespace starts with a capital ("Albert ").
fn previous_word_capitalised(prefix: &str) -> bool {
    let p = prefix.trim_end();
    let start = p
        .char_indices()
        .rev()
        .take(32)
        .find(|&(_, c)| !c.is_alphabetic())
        .map_or(0, |(i, c)| i + c.len_utf8());
    p[start..].chars().next().is_some_and(char::is_uppercase)
}

/// Capitals joined by full stops: "U.S", "E.U", "U.S.A", "Л.Н".
fn is_initialism(token: &str) -> bool {
    let mut parts = 0;
    for part in token.split('.') {
        let mut chars = part.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_uppercase() => parts += 1,
            _ => return false,
        }
    }
    parts >= 2
}

/// Words that usually open an English sentence, so that an initialism before them ends one
/// ("I live in the U.S. How about you?").
fn is_sentence_starter(word: &str) -> bool {
    const STARTERS: &[&str] = &[
        "A", "After", "Also", "An", "And", "As", "At", "Before", "But", "Did", "Do", "Does",
        "During", "Each", "Every", "For", "He", "Her", "Here", "His", "How", "However", "I", "If",
        "In", "Is", "It", "Its", "Many", "More", "Most", "My", "Now", "Our", "She", "So", "Some",
        "That", "The", "Their", "Then", "There", "These", "They", "This", "Those", "Thus", "To",
        "We", "What", "When", "Where", "Which", "While", "Who", "Why", "Yet", "You", "Your",
    ];
    STARTERS.contains(&word)
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
    // "• 9.", "⁃9."
    let word = word.trim_start_matches(is_bullet).trim_start();
    let inner = match word.strip_prefix('(') {
        Some(rest) => rest.strip_suffix(')'),
        None => word
            .strip_suffix(".)")
            .or_else(|| word.strip_suffix(['.', ')'])),
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
        | '⁃'
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
/// separator ends:
///
/// 0. sentence-like punctuation: an ellipsis, `!`, `?`, a full stop before a closing quote or
///    bracket, `。！？`;
/// 1. a line break of the input (a paragraph wrapped mid-sentence);
/// 2. – 4. clause punctuation: `;`, then `:`, then `,` (and their CJK forms, `、`);
/// 5. – 6. whitespace: a tab, then a space.
///
/// A bare full stop inside a sentence is an abbreviation or an initial the segmenter kept
/// ("Mr. Smith"), so it counts as a plain space. ASCII punctuation counts only before
/// whitespace, so "3.14", "1,000" and "e.g.," never become cut points; CJK punctuation needs
/// no space.
fn cut_priority(chars: &[char], p: usize, c: usize) -> Option<u8> {
    let prev = chars[c - 1];
    let next = chars[c];
    if prev.is_whitespace() {
        let mut q = c - 1;
        while q > p && q + 4 > c && is_closer(chars[q - 1]) {
            q -= 1;
        }
        let closed = q + 1 < c;
        let before = if q > p { chars[q - 1] } else { ' ' };
        let ellipsis = before == '…'
            || (q >= p + 3 && chars[q - 1] == '.' && chars[q - 2] == '.' && chars[q - 3] == '.');
        if ellipsis {
            return Some(0);
        }
        let space = match prev {
            '\u{0B}' => 1,
            '\t' => 5,
            _ => 6,
        };
        return Some(punct_priority(before, closed).map_or(space, |pr| pr.min(space)));
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
        return punct_priority(before, true);
    }
    None
}

/// Priority of a cut after the punctuation mark `c`; `closed` when a closing quote or bracket
/// follows it.
fn punct_priority(c: char, closed: bool) -> Option<u8> {
    Some(match c {
        '!' | '！' | '‼' | '?' | '？' | '。' | '｡' => 0,
        '．' => 0,
        '.' if closed => 0,
        ';' | '；' => 2,
        ':' | '：' => 3,
        ',' | '，' | '、' | '､' => 4,
        _ => return None,
    })
}

/// The best cut in the `budget`: sentence-like punctuation anywhere in it (the one nearest to
/// `ideal`); else the highest-priority separator in the `near` window around `ideal`, nearest to
/// `ideal` among equals, which keeps the pieces balanced; else the best separator anywhere in
/// the budget; else a hard cut at a grapheme boundary near `ideal`.
fn best_cut(
    chars: &[char],
    p: usize,
    budget: RangeInclusive<usize>,
    near: RangeInclusive<usize>,
    ideal: usize,
) -> usize {
    let (lo, hi) = (*budget.start(), *budget.end());
    let mut best_near: Option<(u8, usize, usize)> = None;
    let mut best_any: Option<(u8, usize, usize)> = None;
    for c in budget {
        if let Some(pr) = cut_priority(chars, p, c) {
            let key = (pr, c.abs_diff(ideal), c);
            if best_any.is_none_or(|b| key < b) {
                best_any = Some(key);
            }
            if near.contains(&c) && best_near.is_none_or(|b| key < b) {
                best_near = Some(key);
            }
        }
    }
    let choice = match (best_any, best_near) {
        (Some(any), _) if any.0 == 0 => Some(any),
        (_, Some(near)) => Some(near),
        (any, None) => any,
    };
    if let Some((_, _, c)) = choice {
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

const COMMON_ALWAYS: &[&str] = &["Dr", "Prof", "St", "Mt", "e.g", "i.e", "cf", "vs", "viz"];
const COMMON_BEFORE_NUMBER: &[&str] = &[
    "etc", "ca", "vol", "art", "p", "pp", "Nr", "No", "tel", "ext",
];

const EN_ALWAYS: &[&str] = &[
    "Mr", "Mrs", "Ms", "Mx", "Messrs", "Mt", "Ft", "Sr", "Gen", "Gov", "Sen", "Rep", "Rev", "Hon",
    "Capt", "Col", "Lt", "Sgt", "Cpl", "Adm", "Maj", "Cmdr", "Pres", "Supt", "Dept", "Univ", "v",
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
    "med",
    "kath",
    "ev",
    "u.Ä",
    "o.Ä",
    "z.Z",
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
    "Excma", "Ilmo", "Mons", "Cra",
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
    "пгт",
];
const RU_BEFORE_NUMBER: &[&str] = &[
    "т.д", "т.п", "др", "пр", "рис", "стр", "с", "ст", "т", "гл", "руб", "коп", "тыс", "млн",
    "млрд", "янв", "февр", "мар", "апр", "авг", "сент", "окт", "нояб", "дек",
];
const RU_UNLESS_AFTER_NUMBER: &[&str] = &["г", "гг"];
