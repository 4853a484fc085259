//! Language codes: SONAR's (FLORES-200 style, `fra_Latn`), the ISO 639-1 short forms users
//! type (`fr`, `de`, `zh`) mapped to them, and which encoders cover which languages.
//!
//! [`resolve`] turns what a user typed into a SONAR code, or fails listing close matches;
//! [`LanguageCoverage`] says whether an encoder was trained on a language (SONAR: its 202
//! codes; XLM-R-family encoders such as multilingual-e5: the ~100 languages of CC-100;
//! all-MiniLM-L6-v2: English).

use std::ops::RangeInclusive;

/// The 202 languages of SONAR's text cards, in card order
/// (`sonar/cards/text_sonar_basic_encoder.yaml`, `tokenizer_config.langs`): the order gives
/// the language tags' token ids, so it must not change.
pub const SONAR_LANGUAGES: [&str; 202] = [
    "ace_Arab", "ace_Latn", "acm_Arab", "acq_Arab", "aeb_Arab", "afr_Latn", "ajp_Arab", "aka_Latn",
    "amh_Ethi", "apc_Arab", "arb_Arab", "ars_Arab", "ary_Arab", "arz_Arab", "asm_Beng", "ast_Latn",
    "awa_Deva", "ayr_Latn", "azb_Arab", "azj_Latn", "bak_Cyrl", "bam_Latn", "ban_Latn", "bel_Cyrl",
    "bem_Latn", "ben_Beng", "bho_Deva", "bjn_Arab", "bjn_Latn", "bod_Tibt", "bos_Latn", "bug_Latn",
    "bul_Cyrl", "cat_Latn", "ceb_Latn", "ces_Latn", "cjk_Latn", "ckb_Arab", "crh_Latn", "cym_Latn",
    "dan_Latn", "deu_Latn", "dik_Latn", "dyu_Latn", "dzo_Tibt", "ell_Grek", "eng_Latn", "epo_Latn",
    "est_Latn", "eus_Latn", "ewe_Latn", "fao_Latn", "pes_Arab", "fij_Latn", "fin_Latn", "fon_Latn",
    "fra_Latn", "fur_Latn", "fuv_Latn", "gla_Latn", "gle_Latn", "glg_Latn", "grn_Latn", "guj_Gujr",
    "hat_Latn", "hau_Latn", "heb_Hebr", "hin_Deva", "hne_Deva", "hrv_Latn", "hun_Latn", "hye_Armn",
    "ibo_Latn", "ilo_Latn", "ind_Latn", "isl_Latn", "ita_Latn", "jav_Latn", "jpn_Jpan", "kab_Latn",
    "kac_Latn", "kam_Latn", "kan_Knda", "kas_Arab", "kas_Deva", "kat_Geor", "knc_Arab", "knc_Latn",
    "kaz_Cyrl", "kbp_Latn", "kea_Latn", "khm_Khmr", "kik_Latn", "kin_Latn", "kir_Cyrl", "kmb_Latn",
    "kon_Latn", "kor_Hang", "kmr_Latn", "lao_Laoo", "lvs_Latn", "lij_Latn", "lim_Latn", "lin_Latn",
    "lit_Latn", "lmo_Latn", "ltg_Latn", "ltz_Latn", "lua_Latn", "lug_Latn", "luo_Latn", "lus_Latn",
    "mag_Deva", "mai_Deva", "mal_Mlym", "mar_Deva", "min_Latn", "mkd_Cyrl", "plt_Latn", "mlt_Latn",
    "mni_Beng", "khk_Cyrl", "mos_Latn", "mri_Latn", "zsm_Latn", "mya_Mymr", "nld_Latn", "nno_Latn",
    "nob_Latn", "npi_Deva", "nso_Latn", "nus_Latn", "nya_Latn", "oci_Latn", "gaz_Latn", "ory_Orya",
    "pag_Latn", "pan_Guru", "pap_Latn", "pol_Latn", "por_Latn", "prs_Arab", "pbt_Arab", "quy_Latn",
    "ron_Latn", "run_Latn", "rus_Cyrl", "sag_Latn", "san_Deva", "sat_Beng", "scn_Latn", "shn_Mymr",
    "sin_Sinh", "slk_Latn", "slv_Latn", "smo_Latn", "sna_Latn", "snd_Arab", "som_Latn", "sot_Latn",
    "spa_Latn", "als_Latn", "srd_Latn", "srp_Cyrl", "ssw_Latn", "sun_Latn", "swe_Latn", "swh_Latn",
    "szl_Latn", "tam_Taml", "tat_Cyrl", "tel_Telu", "tgk_Cyrl", "tgl_Latn", "tha_Thai", "tir_Ethi",
    "taq_Latn", "taq_Tfng", "tpi_Latn", "tsn_Latn", "tso_Latn", "tuk_Latn", "tum_Latn", "tur_Latn",
    "twi_Latn", "tzm_Tfng", "uig_Arab", "ukr_Cyrl", "umb_Latn", "urd_Arab", "uzn_Latn", "vec_Latn",
    "vie_Latn", "war_Latn", "wol_Latn", "xho_Latn", "ydd_Hebr", "yor_Latn", "yue_Hant", "zho_Hans",
    "zho_Hant", "zul_Latn",
];

/// ISO 639-1 code → SONAR code, for every ISO 639-1 language SONAR covers. Macrolanguages map
/// to the variety SONAR was trained on (`ar` → Modern Standard Arabic `arb_Arab`, `fa` →
/// Western Persian, `ms` → Standard Malay, `zh` → Simplified Chinese, `no` → Bokmål).
#[rustfmt::skip]
pub const ISO_639_1: [(&str, &str); 136] = [
    ("af", "afr_Latn"), ("ak", "aka_Latn"), ("am", "amh_Ethi"), ("ar", "arb_Arab"),
    ("as", "asm_Beng"), ("ay", "ayr_Latn"), ("az", "azj_Latn"), ("ba", "bak_Cyrl"),
    ("be", "bel_Cyrl"), ("bg", "bul_Cyrl"), ("bm", "bam_Latn"), ("bn", "ben_Beng"),
    ("bo", "bod_Tibt"), ("bs", "bos_Latn"), ("ca", "cat_Latn"), ("cs", "ces_Latn"),
    ("cy", "cym_Latn"), ("da", "dan_Latn"), ("de", "deu_Latn"), ("dz", "dzo_Tibt"),
    ("ee", "ewe_Latn"), ("el", "ell_Grek"), ("en", "eng_Latn"), ("eo", "epo_Latn"),
    ("es", "spa_Latn"), ("et", "est_Latn"), ("eu", "eus_Latn"), ("fa", "pes_Arab"),
    ("ff", "fuv_Latn"), ("fi", "fin_Latn"), ("fj", "fij_Latn"), ("fo", "fao_Latn"),
    ("fr", "fra_Latn"), ("ga", "gle_Latn"), ("gd", "gla_Latn"), ("gl", "glg_Latn"),
    ("gn", "grn_Latn"), ("gu", "guj_Gujr"), ("ha", "hau_Latn"), ("he", "heb_Hebr"),
    ("hi", "hin_Deva"), ("hr", "hrv_Latn"), ("ht", "hat_Latn"), ("hu", "hun_Latn"),
    ("hy", "hye_Armn"), ("id", "ind_Latn"), ("ig", "ibo_Latn"), ("is", "isl_Latn"),
    ("it", "ita_Latn"), ("ja", "jpn_Jpan"), ("jv", "jav_Latn"), ("ka", "kat_Geor"),
    ("kg", "kon_Latn"), ("ki", "kik_Latn"), ("kk", "kaz_Cyrl"), ("km", "khm_Khmr"),
    ("kn", "kan_Knda"), ("ko", "kor_Hang"), ("kr", "knc_Latn"), ("ks", "kas_Arab"),
    ("ku", "kmr_Latn"), ("ky", "kir_Cyrl"), ("lb", "ltz_Latn"), ("lg", "lug_Latn"),
    ("li", "lim_Latn"), ("ln", "lin_Latn"), ("lo", "lao_Laoo"), ("lt", "lit_Latn"),
    ("lv", "lvs_Latn"), ("mg", "plt_Latn"), ("mi", "mri_Latn"), ("mk", "mkd_Cyrl"),
    ("ml", "mal_Mlym"), ("mn", "khk_Cyrl"), ("mr", "mar_Deva"), ("ms", "zsm_Latn"),
    ("mt", "mlt_Latn"), ("my", "mya_Mymr"), ("nb", "nob_Latn"), ("ne", "npi_Deva"),
    ("nl", "nld_Latn"), ("nn", "nno_Latn"), ("no", "nob_Latn"), ("ny", "nya_Latn"),
    ("oc", "oci_Latn"), ("om", "gaz_Latn"), ("or", "ory_Orya"), ("pa", "pan_Guru"),
    ("pl", "pol_Latn"), ("ps", "pbt_Arab"), ("pt", "por_Latn"), ("qu", "quy_Latn"),
    ("rn", "run_Latn"), ("ro", "ron_Latn"), ("ru", "rus_Cyrl"), ("rw", "kin_Latn"),
    ("sa", "san_Deva"), ("sc", "srd_Latn"), ("sd", "snd_Arab"), ("sg", "sag_Latn"),
    ("si", "sin_Sinh"), ("sk", "slk_Latn"), ("sl", "slv_Latn"), ("sm", "smo_Latn"),
    ("sn", "sna_Latn"), ("so", "som_Latn"), ("sq", "als_Latn"), ("sr", "srp_Cyrl"),
    ("ss", "ssw_Latn"), ("st", "sot_Latn"), ("su", "sun_Latn"), ("sv", "swe_Latn"),
    ("sw", "swh_Latn"), ("ta", "tam_Taml"), ("te", "tel_Telu"), ("tg", "tgk_Cyrl"),
    ("th", "tha_Thai"), ("ti", "tir_Ethi"), ("tk", "tuk_Latn"), ("tl", "tgl_Latn"),
    ("tn", "tsn_Latn"), ("tr", "tur_Latn"), ("ts", "tso_Latn"), ("tt", "tat_Cyrl"),
    ("tw", "twi_Latn"), ("ug", "uig_Arab"), ("uk", "ukr_Cyrl"), ("ur", "urd_Arab"),
    ("uz", "uzn_Latn"), ("vi", "vie_Latn"), ("wo", "wol_Latn"), ("xh", "xho_Latn"),
    ("yi", "ydd_Hebr"), ("yo", "yor_Latn"), ("zh", "zho_Hans"), ("zu", "zul_Latn"),
];

/// Region and script forms of BCP 47 that pick another SONAR code than their language alone.
const REGIONAL: [(&str, &str); 6] = [
    ("zh-hant", "zho_Hant"),
    ("zh-tw", "zho_Hant"),
    ("zh-hk", "yue_Hant"),
    ("zh-hans", "zho_Hans"),
    ("zh-cn", "zho_Hans"),
    ("sr-latn", "srp_Cyrl"),
];

/// The languages of XLM-R's training data (CC-100, Conneau et al. 2020, table 6) as ISO 639-1
/// codes: what XLM-R-family sentence encoders (multilingual-e5, paraphrase-multilingual-*)
/// cover. The romanised variants the paper lists separately (Hindi, Urdu, … in Latin script)
/// share their language's code.
pub const XLMR_LANGUAGES: [&str; 94] = [
    "af", "am", "ar", "as", "az", "be", "bg", "bn", "br", "bs", "ca", "cs", "cy", "da", "de", "el",
    "en", "eo", "es", "et", "eu", "fa", "fi", "fr", "fy", "ga", "gd", "gl", "gu", "ha", "he", "hi",
    "hr", "hu", "hy", "id", "is", "it", "ja", "jv", "ka", "kk", "km", "kn", "ko", "ku", "ky", "la",
    "lo", "lt", "lv", "mg", "mk", "ml", "mn", "mr", "ms", "my", "ne", "nl", "no", "om", "or", "pa",
    "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si", "sk", "sl", "so", "sq", "sr", "su", "sv", "sw",
    "ta", "te", "th", "tl", "tr", "ug", "uk", "ur", "uz", "vi", "xh", "yi", "zh", "nb",
];

/// A language code no table knows, with the known codes closest to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown language code `{code}`{}; language codes are SONAR's (`fra_Latn`) or ISO 639-1 \
     (`fr`)",
    match suggestions.is_empty() {
        true => String::new(),
        false => format!(" (close matches: {})", suggestions.join(", ")),
    }
)]
pub struct UnknownLanguage {
    pub code: String,
    /// Known codes closest to `code`, best first, each written `sonar_code` or
    /// `iso (sonar_code)`.
    pub suggestions: Vec<String>,
}

/// The SONAR code of `code`: a SONAR code in any letter case (`fra_Latn`, `FRA_LATN`,
/// `fra-Latn`), an ISO 639-1 code (`fr`), a BCP 47 tag whose language is one (`fr-FR`,
/// `pt_BR`, `zh-TW` → `zho_Hant`), or an ISO 639-3 code SONAR has in exactly one script
/// (`fra`). Anything else fails with the closest known codes.
pub fn resolve(code: &str) -> Result<&'static str, UnknownLanguage> {
    let trimmed = code.trim();
    let lower = trimmed.to_ascii_lowercase().replace('-', "_");
    if let Some(sonar) = SONAR_LANGUAGES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(&lower))
    {
        return Ok(sonar);
    }
    let dashed = lower.replace('_', "-");
    if let Some((_, sonar)) = REGIONAL.iter().find(|(tag, _)| dashed.starts_with(tag)) {
        return Ok(sonar);
    }
    let language = lower.split('_').next().unwrap_or_default();
    if let Some((_, sonar)) = ISO_639_1.iter().find(|(iso, _)| *iso == language) {
        return Ok(sonar);
    }
    if language.len() == 3 && !lower.contains('_') {
        let mut scripts = SONAR_LANGUAGES
            .iter()
            .filter(|s| s.split('_').next() == Some(language));
        if let (Some(only), None) = (scripts.next(), scripts.next()) {
            return Ok(only);
        }
    }
    Err(UnknownLanguage {
        code: trimmed.to_string(),
        suggestions: close_matches(&lower),
    })
}

/// The ISO 639-1 code of a SONAR code, where it has one (`fra_Latn` → `fr`).
pub fn iso_639_1(sonar: &str) -> Option<&'static str> {
    ISO_639_1
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(sonar))
        .map(|(iso, _)| *iso)
}

/// Up to five known codes within a small edit distance of `lower` (lowercase, `_`-separated).
fn close_matches(lower: &str) -> Vec<String> {
    let language = lower.split('_').next().unwrap_or_default();
    // (distance, SONAR codes before ISO forms, text)
    let mut scored: Vec<(usize, u8, String)> = Vec::new();
    for sonar in SONAR_LANGUAGES {
        let s = sonar.to_ascii_lowercase();
        let same_language = s.split('_').next() == Some(language) && language.len() == 3;
        let d = edit_distance(lower, &s).min(if same_language { 1 } else { usize::MAX });
        let d = d.min(edit_distance(language, s.split('_').next().unwrap_or_default()) + 1);
        scored.push((d, 0, sonar.to_string()));
    }
    for (iso, sonar) in ISO_639_1 {
        scored.push((edit_distance(language, iso), 1, format!("{iso} ({sonar})")));
    }
    let limit = if lower.len() <= 3 { 1 } else { 2 };
    scored.retain(|(d, _, _)| *d <= limit);
    scored.sort();
    scored.into_iter().take(5).map(|(_, _, s)| s).collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Function words and letters of the Latin- and Cyrillic-script languages [`detect`] tells
/// apart: (SONAR code, words, letters peculiar to it).
#[rustfmt::skip]
const WORD_LISTS: [(&str, &[&str], &str); 14] = [
    ("eng_Latn", &["the", "and", "of", "to", "is", "in", "that", "it", "for", "with", "this", "are", "be", "from"], ""),
    ("fra_Latn", &["le", "la", "les", "et", "des", "est", "une", "du", "dans", "pour", "que", "qui", "pas", "sur", "au", "avec"], "çèêàùœ"),
    ("deu_Latn", &["der", "die", "das", "und", "ist", "nicht", "mit", "ein", "eine", "zu", "den", "von", "für", "auf", "sich", "werden"], "äöüß"),
    ("spa_Latn", &["el", "los", "las", "y", "que", "en", "es", "una", "por", "para", "con", "del", "se", "no", "al"], "ñ¿¡"),
    ("ita_Latn", &["il", "gli", "di", "che", "è", "per", "con", "non", "della", "sono", "una", "nel", "alla", "anche"], "ìò"),
    ("por_Latn", &["os", "as", "um", "uma", "para", "com", "não", "do", "da", "em", "que", "são", "pelo", "também"], "ãõç"),
    ("nld_Latn", &["het", "een", "en", "van", "niet", "dat", "op", "te", "met", "voor", "zijn", "ook", "wordt"], "ij"),
    ("pol_Latn", &["i", "w", "na", "się", "nie", "jest", "do", "że", "jak", "dla", "oraz", "być", "ten"], "łąęśżźćń"),
    ("ces_Latn", &["a", "v", "se", "na", "je", "že", "pro", "není", "jako", "také", "jsou", "který", "s"], "řěůčš"),
    ("dan_Latn", &["og", "det", "at", "en", "er", "til", "på", "af", "med", "den", "ikke", "som", "har", "kan"], "æø"),
    ("swe_Latn", &["och", "att", "det", "som", "är", "på", "för", "med", "av", "inte", "till", "kan", "har"], "äö"),
    ("rus_Cyrl", &["и", "в", "не", "на", "что", "с", "это", "как", "по", "для", "он", "из", "или", "есть"], "ыэъё"),
    ("ukr_Cyrl", &["і", "в", "не", "на", "що", "з", "це", "як", "до", "для", "та", "або", "є", "його"], "іїєґ"),
    ("bul_Cyrl", &["и", "в", "не", "на", "че", "с", "това", "как", "за", "от", "да", "се", "е", "са"], "ъ"),
];

/// A guess of the language of `text` from its letters, for documents that carry no language
/// tag (only when a user asks for it: `lcm prepare --detect-lang`): a script with one main
/// language decides (Hangul → `kor_Hang`, kana → `jpn_Jpan`, Han → `zho_Hans`, Thai, Greek,
/// Hebrew, …); Latin and Cyrillic text is scored by function words and peculiar letters of
/// 14 languages, and only a clear winner counts. `None` when nothing is clear (the caller's
/// default language then applies).
pub fn detect(text: &str) -> Option<&'static str> {
    let mut scripts: [usize; SCRIPTS.len()] = [0; SCRIPTS.len()];
    let mut letters = 0usize;
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        if let Some(i) = SCRIPTS
            .iter()
            .position(|(_, ranges, _)| ranges.iter().any(|r| r.contains(&(c as u32))))
        {
            scripts[i] += 1;
        }
    }
    if letters == 0 {
        return None;
    }
    let count = |name: &str| {
        SCRIPTS
            .iter()
            .position(|(n, _, _)| *n == name)
            .map_or(0, |i| scripts[i])
    };
    // Japanese mixes kana with Han characters.
    if count("kana") > 0 && 2 * (count("kana") + count("han")) >= letters {
        return Some("jpn_Jpan");
    }
    let (best, &n) = scripts.iter().enumerate().max_by_key(|(_, n)| **n)?;
    if 2 * n < letters {
        return None;
    }
    match SCRIPTS[best] {
        (_, _, Some(lang)) => Some(lang),
        ("latin", _, None) | ("cyrillic", _, None) => by_words(text),
        _ => None,
    }
}

/// A script: its name, its Unicode ranges, and the language it decides (if one).
type Script = (
    &'static str,
    &'static [RangeInclusive<u32>],
    Option<&'static str>,
);

/// Unicode ranges of the scripts [`detect`] knows, with the language a script decides.
#[rustfmt::skip]
const SCRIPTS: [Script; 27] = [
    ("latin", &[0x41..=0x5A, 0x61..=0x7A, 0xC0..=0x24F], None),
    ("cyrillic", &[0x400..=0x4FF], None),
    ("greek", &[0x370..=0x3FF], Some("ell_Grek")),
    ("armenian", &[0x530..=0x58F], Some("hye_Armn")),
    ("hebrew", &[0x590..=0x5FF], Some("heb_Hebr")),
    ("arabic", &[0x600..=0x6FF, 0x750..=0x77F], Some("arb_Arab")),
    ("devanagari", &[0x900..=0x97F], Some("hin_Deva")),
    ("bengali", &[0x980..=0x9FF], Some("ben_Beng")),
    ("gurmukhi", &[0xA00..=0xA7F], Some("pan_Guru")),
    ("gujarati", &[0xA80..=0xAFF], Some("guj_Gujr")),
    ("oriya", &[0xB00..=0xB7F], Some("ory_Orya")),
    ("tamil", &[0xB80..=0xBFF], Some("tam_Taml")),
    ("telugu", &[0xC00..=0xC7F], Some("tel_Telu")),
    ("kannada", &[0xC80..=0xCFF], Some("kan_Knda")),
    ("malayalam", &[0xD00..=0xD7F], Some("mal_Mlym")),
    ("sinhala", &[0xD80..=0xDFF], Some("sin_Sinh")),
    ("thai", &[0xE00..=0xE7F], Some("tha_Thai")),
    ("lao", &[0xE80..=0xEFF], Some("lao_Laoo")),
    ("tibetan", &[0xF00..=0xFFF], Some("bod_Tibt")),
    ("myanmar", &[0x1000..=0x109F], Some("mya_Mymr")),
    ("georgian", &[0x10A0..=0x10FF], Some("kat_Geor")),
    ("hangul", &[0x1100..=0x11FF, 0x3130..=0x318F, 0xAC00..=0xD7AF], Some("kor_Hang")),
    ("ethiopic", &[0x1200..=0x137F], Some("amh_Ethi")),
    ("khmer", &[0x1780..=0x17FF], Some("khm_Khmr")),
    ("kana", &[0x3040..=0x30FF], Some("jpn_Jpan")),
    ("han", &[0x3400..=0x4DBF, 0x4E00..=0x9FFF], Some("zho_Hans")),
    ("tifinagh", &[0x2D30..=0x2D7F], Some("tzm_Tfng")),
];

/// The best-scoring language of [`WORD_LISTS`], if it clearly wins.
fn by_words(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    let mut scores: Vec<(usize, &'static str)> = WORD_LISTS
        .iter()
        .map(|(lang, list, letters)| {
            let hits = words.iter().filter(|w| list.contains(w)).count();
            let peculiar = lower.chars().filter(|c| letters.contains(*c)).count();
            (hits + peculiar, *lang)
        })
        .collect();
    scores.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    match scores.as_slice() {
        [(best, lang), (second, _), ..] if *best >= 2 && best > second => Some(lang),
        _ => None,
    }
}

/// Which languages an encoder was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanguageCoverage {
    /// SONAR: the 202 codes of [`SONAR_LANGUAGES`].
    Sonar,
    /// XLM-R-family encoders: the ~100 languages of CC-100 ([`XLMR_LANGUAGES`]).
    Xlmr,
    /// English-only encoders (all-MiniLM-L6-v2).
    English,
    /// Not known (an encoder the project cannot classify): never warned about.
    Unknown,
}

impl LanguageCoverage {
    /// Whether `sonar` (a code [`resolve`] returned) is among the encoder's languages;
    /// `true` for [`LanguageCoverage::Unknown`].
    pub fn covers(self, sonar: &str) -> bool {
        match self {
            Self::Sonar => SONAR_LANGUAGES
                .iter()
                .any(|s| s.eq_ignore_ascii_case(sonar)),
            Self::Xlmr => iso_639_1(sonar).is_some_and(|iso| XLMR_LANGUAGES.contains(&iso)),
            Self::English => sonar.eq_ignore_ascii_case("eng_Latn"),
            Self::Unknown => true,
        }
    }

    /// The covered languages in words.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Sonar => "SONAR's 202 languages",
            Self::Xlmr => "the ~100 languages of XLM-R's training data (CC-100)",
            Self::English => "English only",
            Self::Unknown => "an unknown set of languages",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_only_sonar_codes() {
        for (iso, sonar) in ISO_639_1 {
            assert!(SONAR_LANGUAGES.contains(&sonar), "{iso} → {sonar}");
        }
        for (tag, sonar) in REGIONAL {
            assert!(SONAR_LANGUAGES.contains(&sonar), "{tag} → {sonar}");
        }
        let mut isos: Vec<&str> = ISO_639_1.iter().map(|(iso, _)| *iso).collect();
        isos.dedup();
        assert_eq!(isos.len(), ISO_639_1.len(), "sorted, each ISO code once");
    }

    #[test]
    fn short_forms_map_to_sonar_codes() {
        for (typed, want) in [
            ("fr", "fra_Latn"),
            ("de", "deu_Latn"),
            ("zh", "zho_Hans"),
            ("zh-TW", "zho_Hant"),
            ("pt_BR", "por_Latn"),
            ("fr-FR", "fra_Latn"),
            ("fra_Latn", "fra_Latn"),
            ("FRA_LATN", "fra_Latn"),
            ("fra-Latn", "fra_Latn"),
            ("fra", "fra_Latn"),
            (" en ", "eng_Latn"),
        ] {
            assert_eq!(resolve(typed), Ok(want), "{typed}");
        }
    }

    #[test]
    fn unknown_codes_list_close_matches() {
        let e = resolve("fre_Latn").unwrap_err();
        assert!(e.suggestions.iter().any(|s| s == "fra_Latn"), "{e}");
        let e = resolve("xx").unwrap_err();
        assert_eq!(e.code, "xx");
        let e = resolve("deu_Cyrl").unwrap_err();
        assert_eq!(e.suggestions.first().map(String::as_str), Some("deu_Latn"));
        assert!(
            e.to_string().contains("unknown language code `deu_Cyrl`"),
            "{e}"
        );
        // Three-letter codes in several scripts are ambiguous: listed, not guessed.
        let e = resolve("kas").unwrap_err();
        assert!(e.suggestions.iter().any(|s| s == "kas_Arab"), "{e}");
    }

    #[test]
    fn detection_decides_only_clear_cases() {
        for (text, want) in [
            (
                "The cat sleeps on the sofa and the dog is in the garden.",
                Some("eng_Latn"),
            ),
            (
                "Le chat dort sur le canapé et le chien est dans le jardin.",
                Some("fra_Latn"),
            ),
            (
                "Die Katze schläft auf dem Sofa und der Hund ist im Garten.",
                Some("deu_Latn"),
            ),
            (
                "El gato duerme en el sofá y el perro está en el jardín.",
                Some("spa_Latn"),
            ),
            (
                "Кошка спит на диване, а собака гуляет в саду, и это хорошо.",
                Some("rus_Cyrl"),
            ),
            (
                "Кішка спить на дивані, а собака гуляє в саду, і це добре.",
                Some("ukr_Cyrl"),
            ),
            ("猫はソファの上で寝ています。", Some("jpn_Jpan")),
            ("猫在沙发上睡觉。", Some("zho_Hans")),
            ("고양이가 소파에서 자고 있습니다.", Some("kor_Hang")),
            ("Η γάτα κοιμάται στον καναπέ.", Some("ell_Grek")),
            ("Xyz qwv.", None),
            ("12345 !!!", None),
        ] {
            assert_eq!(detect(text), want, "{text}");
        }
    }

    #[test]
    fn coverage() {
        assert!(LanguageCoverage::Sonar.covers("wol_Latn"));
        assert!(LanguageCoverage::Xlmr.covers("fra_Latn"));
        assert!(LanguageCoverage::Xlmr.covers("zho_Hans"));
        assert!(!LanguageCoverage::Xlmr.covers("wol_Latn"));
        assert!(LanguageCoverage::English.covers("eng_Latn"));
        assert!(!LanguageCoverage::English.covers("fra_Latn"));
        assert!(LanguageCoverage::Unknown.covers("wol_Latn"));
    }
}
