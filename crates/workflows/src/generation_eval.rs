//! `lcm eval-generation`: generation quality that can be compared across models and
//! sampling settings (issue 17 items 2 and 4).
//!
//! Prompts ([`held_out_prompts`]) are the first `K` sentences of held-out documents of a
//! store: the documents the id-hash split ([`lcm_data::batch::split_of`]) holds out at the
//! given fraction, the same split `lcm train` and `lcm eval` use, so no model trained with
//! that fraction or a larger one saw them. Among the held-out documents with more than `K`
//! sentences, the `N` with the smallest `fnv1a64("{seed}:{id}")` are taken (a seeded,
//! reproducible draw that does not depend on shard order), ordered by that hash.
//!
//! Every prompt is continued by the one generation path ([`GenerationSession`], what `lcm
//! generate` runs) under each sampling setting of the grid (guidance scale × DDIM steps for
//! diffusion models; a single setting for Base-LCM, which has neither). Prompt `i` uses
//! the sampling seed `seed + i` under every setting, so settings are compared on the same
//! noise. Per (model, setting) [`evaluate_generation`] reports:
//!
//! - the share of prompts whose continuation the repetition rule stopped with at most one
//!   sentence generated ("repetition ≤ 1"), and the share of every stop reason;
//! - the mean number of generated sentences;
//! - REP-4 and OVL-3 ([`lcm_eval::generation`]) micro-averaged over the prompts: the
//!   n-gram counts of every continuation (its sentences joined by a space) are summed and
//!   divided once; OVL-3 is against the prompt's own sentences;
//! - coherence: the mean over prompts with at least one generated sentence of the mean
//!   cosine of consecutive concepts of [last prompt concept, generated concepts…] (the
//!   generated concepts, before decoding);
//! - the register shares: for every generated sentence, the source (corpus) of the store
//!   document the decoded sentence first occurs in (store order), as a share of all generated
//!   sentences; `other` for a sentence the store does not hold (a trained decoder's text, or
//!   a bank built from another store); and the share of generated sentences whose source is
//!   the prompt's own.
//!
//! [`held_out_l2_by_source`] adds the held-out teacher-forced ℓ2 per source (the loss side
//! of choosing a data mixture).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use lcm_data::batch::{DEFAULT_MAX_SEQ_LEN, DatasetConfig, SequenceDataset, Split, SplitDataset};
use lcm_data::store::{ConceptDocument, ConceptStore};
use lcm_eval::generation::{NgramShare, coherence, overlap, repetition};
use lcm_util::hash::fnv1a64;
use serde::Serialize;
use serde_json::{Value, json};

use crate::evaluate::{EvalConfig, evaluate_model, training_mean};
use crate::generate::StopRules;
use crate::load::{SamplingSettings, TrainedLcm};
use crate::session::GenerationSession;
use crate::{Result, WorkflowError};

/// The register of a generated sentence the store does not hold.
pub const OTHER_SOURCE: &str = "other";

/// One prompt: the first sentences of a held-out document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOutPrompt {
    pub id: String,
    pub source: String,
    pub sentences: Vec<String>,
}

/// The prompts of an evaluation and the source of every sentence of the store.
#[derive(Debug, Clone)]
pub struct PromptSet {
    pub prompts: Vec<HeldOutPrompt>,
    /// The held-out fraction the prompts were drawn at.
    pub valid_fraction: f64,
    /// Held-out documents long enough to give a prompt (the draw's population).
    pub candidates: usize,
    /// Held-out documents per source among the candidates.
    pub candidates_by_source: BTreeMap<String, usize>,
    /// Sentence → the source of the first store document holding it.
    sentence_sources: HashMap<String, String>,
}

impl PromptSet {
    /// The register of a decoded sentence: its store source, else [`OTHER_SOURCE`].
    pub fn source_of(&self, sentence: &str) -> &str {
        self.sentence_sources
            .get(sentence)
            .map(String::as_str)
            .unwrap_or(OTHER_SOURCE)
    }
}

/// Draws `count` prompts of `sentences` sentences each from the documents of `store` held
/// out at `valid_fraction` (module doc); fewer when the store has fewer such documents.
pub fn held_out_prompts(
    store: &Path,
    valid_fraction: f64,
    count: usize,
    sentences: usize,
    seed: u64,
) -> Result<PromptSet> {
    if sentences == 0 {
        return Err(WorkflowError::Config(
            "a prompt of 0 sentences gives the model no context; pass --prompt-sentences 1 \
             or more"
                .into(),
        ));
    }
    if !(0.0..=1.0).contains(&valid_fraction) {
        return Err(WorkflowError::Config(format!(
            "held-out fraction {valid_fraction} is not in [0, 1]"
        )));
    }
    let opened = ConceptStore::open(store)?;
    let mut sentence_sources: HashMap<String, String> = HashMap::new();
    let mut candidates: Vec<(u64, HeldOutPrompt)> = Vec::new();
    for document in opened.documents() {
        let ConceptDocument {
            id,
            source,
            sentences: text,
            ..
        } = document?;
        for sentence in &text {
            if !sentence_sources.contains_key(sentence) {
                sentence_sources.insert(sentence.clone(), source.clone());
            }
        }
        if lcm_data::batch::split_of(&id, valid_fraction) == Split::Valid && text.len() > sentences
        {
            let key = fnv1a64(format!("{seed}:{id}").as_bytes());
            candidates.push((
                key,
                HeldOutPrompt {
                    id,
                    source,
                    sentences: text[..sentences].to_vec(),
                },
            ));
        }
    }
    let mut candidates_by_source = BTreeMap::new();
    for (_, p) in &candidates {
        *candidates_by_source.entry(p.source.clone()).or_insert(0) += 1;
    }
    let total = candidates.len();
    candidates.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let prompts: Vec<HeldOutPrompt> = candidates.into_iter().take(count).map(|(_, p)| p).collect();
    if prompts.is_empty() {
        return Err(WorkflowError::Refused(format!(
            "{} has no held-out document (fraction {valid_fraction}) with more than \
             {sentences} sentences; raise --valid-fraction (and train with at least that \
             fraction) or lower --prompt-sentences",
            store.display()
        )));
    }
    Ok(PromptSet {
        prompts,
        valid_fraction,
        candidates: total,
        candidates_by_source,
        sentence_sources,
    })
}

/// The held-out fraction a run was trained with (what its prompts must stay within).
pub fn trained_valid_fraction(trained: &TrainedLcm) -> Option<f64> {
    trained
        .loaded
        .train_config
        .as_ref()
        .map(|c| c.valid_fraction)
}

/// Refuses prompts drawn at a larger held-out fraction than `trained` held out: some of
/// them would be documents it trained on (the split holds out `hash < fraction`).
pub fn check_prompts_held_out(trained: &TrainedLcm, run: &Path, prompts: &PromptSet) -> Result<()> {
    match trained_valid_fraction(trained) {
        Some(f) if prompts.valid_fraction <= f => Ok(()),
        Some(f) => Err(WorkflowError::Refused(format!(
            "{} was trained with --valid-fraction {f}, but the prompts are drawn from the \
             documents held out at {}: some were trained on; pass --valid-fraction {f} or less",
            run.display(),
            prompts.valid_fraction
        ))),
        None => Err(WorkflowError::Refused(format!(
            "{} does not record its validation fraction, so held-out prompts cannot be \
             guaranteed; evaluate a run trained by `lcm train`",
            run.display()
        ))),
    }
}

/// What [`evaluate_generation`] does besides the model and the prompts.
#[derive(Debug, Clone)]
pub struct GenerationEvalConfig {
    /// Guidance scales of the grid (diffusion models).
    pub guidance: Vec<f64>,
    /// DDIM steps of the grid (diffusion models).
    pub steps: Vec<usize>,
    /// The other sampling settings (rescale, initial noise, ε scaling); its seed is the
    /// base seed (prompt `i` is sampled with `seed + i`).
    pub sampling: SamplingSettings,
    pub rules: StopRules,
}

impl Default for GenerationEvalConfig {
    fn default() -> Self {
        Self {
            guidance: vec![1.0, 3.0],
            steps: vec![10, 40],
            sampling: SamplingSettings::default(),
            rules: StopRules::default(),
        }
    }
}

/// One prompt's continuation under one setting.
#[derive(Debug, Clone, Serialize)]
pub struct PromptGeneration {
    pub id: String,
    pub source: String,
    pub prompt: Vec<String>,
    pub generated: Vec<String>,
    /// The register of each generated sentence.
    pub registers: Vec<String>,
    pub stop: String,
    /// Mean cosine of consecutive concepts (last prompt concept first); `None` without a
    /// generated sentence.
    pub coherence: Option<f64>,
}

/// The scores of one (model, setting).
#[derive(Debug, Clone)]
pub struct SettingReport {
    pub model: String,
    pub run: PathBuf,
    /// `None` for Base-LCM (no guidance, no DDIM).
    pub guidance: Option<f64>,
    pub ddim_steps: Option<usize>,
    pub prompts: usize,
    /// Prompts per stop reason.
    pub stops: BTreeMap<String, usize>,
    /// Prompts stopped by the repetition rule with at most one generated sentence.
    pub repetition_after_one: usize,
    pub sentences: usize,
    pub rep4: NgramShare,
    pub ovl3: NgramShare,
    /// Mean over prompts with a generated sentence; `None` when none has one.
    pub coherence: Option<f64>,
    /// Generated sentences per register.
    pub registers: BTreeMap<String, usize>,
    /// Generated sentences whose register is the prompt's source.
    pub same_register: usize,
    pub generations: Vec<PromptGeneration>,
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl SettingReport {
    pub fn stop_share(&self, stop: &str) -> f64 {
        share(self.stops.get(stop).copied().unwrap_or(0), self.prompts)
    }
    pub fn repetition_after_one_share(&self) -> f64 {
        share(self.repetition_after_one, self.prompts)
    }
    pub fn mean_sentences(&self) -> f64 {
        share(self.sentences, self.prompts)
    }
    pub fn register_share(&self, source: &str) -> f64 {
        share(
            self.registers.get(source).copied().unwrap_or(0),
            self.sentences,
        )
    }
    pub fn same_register_share(&self) -> f64 {
        share(self.same_register, self.sentences)
    }

    /// The summary as JSON (shares, not counts), the generations under `generations`.
    pub fn to_json(&self, with_generations: bool) -> Value {
        let registers: BTreeMap<&str, f64> = self
            .registers
            .keys()
            .map(|k| (k.as_str(), self.register_share(k)))
            .collect();
        let stops: BTreeMap<&str, f64> = self
            .stops
            .keys()
            .map(|k| (k.as_str(), self.stop_share(k)))
            .collect();
        let mut doc = json!({
            "model": self.model,
            "run": self.run.display().to_string(),
            "guidance_scale": self.guidance,
            "ddim_steps": self.ddim_steps,
            "prompts": self.prompts,
            "repetition_after_one": self.repetition_after_one_share(),
            "stops": stops,
            "mean_sentences": self.mean_sentences(),
            "sentences": self.sentences,
            "rep4": self.rep4.ratio(),
            "rep4_counts": { "repeated": self.rep4.hits, "four_grams": self.rep4.total },
            "ovl3": self.ovl3.ratio(),
            "ovl3_counts": { "in_prompt": self.ovl3.hits, "three_grams": self.ovl3.total },
            "coherence": self.coherence,
            "registers": registers,
            "same_register": self.same_register_share(),
        });
        if with_generations {
            doc["generations"] = json!(self.generations);
        }
        doc
    }
}

/// Continues every prompt with `session` (the run at `run`) under each setting of the
/// grid and scores the continuations (module doc); `progress` hears each finished setting.
pub fn evaluate_generation(
    session: &GenerationSession,
    run: &Path,
    prompts: &PromptSet,
    config: &GenerationEvalConfig,
    progress: &mut dyn FnMut(&SettingReport),
) -> Result<Vec<SettingReport>> {
    let trained = session.trained();
    check_prompts_held_out(trained, run, prompts)?;
    let settings: Vec<(Option<f64>, Option<usize>)> = if trained.loaded.kind.is_diffusion() {
        if config.guidance.is_empty() || config.steps.is_empty() {
            return Err(WorkflowError::Config(
                "the grid is empty; pass at least one --guidance and one --steps value".into(),
            ));
        }
        config
            .guidance
            .iter()
            .flat_map(|&g| config.steps.iter().map(move |&s| (Some(g), Some(s))))
            .collect()
    } else {
        vec![(None, None)]
    };
    let label = trained.label();
    let mut reports = Vec::with_capacity(settings.len());
    for (guidance, steps) in settings {
        let sampling = config
            .sampling
            .clone()
            .with_overrides(guidance, steps)
            .diffusion()?;
        let mut report = SettingReport {
            model: label.clone(),
            run: run.to_path_buf(),
            guidance,
            ddim_steps: steps,
            prompts: 0,
            stops: BTreeMap::new(),
            repetition_after_one: 0,
            sentences: 0,
            rep4: NgramShare::default(),
            ovl3: NgramShare::default(),
            coherence: None,
            registers: BTreeMap::new(),
            same_register: 0,
            generations: Vec::with_capacity(prompts.prompts.len()),
        };
        let (mut coherence_sum, mut coherence_count) = (0f64, 0usize);
        for (i, prompt) in prompts.prompts.iter().enumerate() {
            let seed = config.sampling.seed.wrapping_add(i as u64);
            let traced = session.generate_traced(
                prompt.sentences.clone(),
                &config.rules,
                &sampling,
                seed,
                false,
            )?;
            let generated: Vec<String> = traced
                .generation
                .sentences
                .iter()
                .map(|d| d.text.clone())
                .collect();
            let stop = traced.generation.stop.name();
            *report.stops.entry(stop.to_string()).or_insert(0) += 1;
            if stop == crate::generate::Stop::Repetition.name() && generated.len() <= 1 {
                report.repetition_after_one += 1;
            }
            let text = generated.join(" ");
            report.rep4 += repetition(&text, 4);
            report.ovl3 += overlap(&text, &prompt.sentences.join(" "), 3);
            let dim = traced.prompt_last.len();
            let mut rows = traced.prompt_last.clone();
            traced
                .concepts
                .iter()
                .for_each(|c| rows.extend_from_slice(c));
            let coh = coherence(&rows, dim);
            if let Some(c) = coh {
                coherence_sum += c;
                coherence_count += 1;
            }
            let registers: Vec<String> = generated
                .iter()
                .map(|s| prompts.source_of(s).to_string())
                .collect();
            for r in &registers {
                *report.registers.entry(r.clone()).or_insert(0) += 1;
                if *r == prompt.source {
                    report.same_register += 1;
                }
            }
            report.prompts += 1;
            report.sentences += generated.len();
            report.generations.push(PromptGeneration {
                id: prompt.id.clone(),
                source: prompt.source.clone(),
                prompt: prompt.sentences.clone(),
                generated,
                registers,
                stop: stop.to_string(),
                coherence: coh,
            });
        }
        report.coherence = (coherence_count > 0).then(|| coherence_sum / coherence_count as f64);
        progress(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// Fraction formatted as a percentage with one decimal.
fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

/// The markdown table of `reports`: one row per (model, setting); shares in percent;
/// registers listed by decreasing share.
pub fn generation_markdown(reports: &[SettingReport]) -> String {
    let mut out = String::from(
        "| model | g | S | prompts | rep-stop ≤1 % | EOS stop % | mean sent. | REP-4 % | OVL-3 % | coherence | same register % | registers % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let mut registers: Vec<(&String, &usize)> = r.registers.iter().collect();
        registers.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let registers: Vec<String> = registers
            .iter()
            .map(|(k, _)| format!("{k} {}", pct(r.register_share(k))))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.guidance.map_or("–".to_string(), |g| format!("{g}")),
            r.ddim_steps.map_or("–".to_string(), |s| s.to_string()),
            r.prompts,
            pct(r.repetition_after_one_share()),
            pct(r.stop_share(crate::generate::Stop::EndOfText.name())),
            r.mean_sentences(),
            pct(r.rep4.ratio()),
            pct(r.ovl3.ratio()),
            r.coherence.map_or("–".to_string(), |c| format!("{c:.3}")),
            pct(r.same_register_share()),
            registers.join(", "),
        ));
    }
    out
}

/// Held-out teacher-forced ℓ2 of one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceLoss {
    pub source: String,
    pub documents: usize,
    pub concepts: usize,
    /// The model's ℓ2 (paper's definition, raw space; diffusion models sampled).
    pub l2: f64,
    /// ℓ2 of the "repeat previous concept" baseline on the same positions.
    pub repeat_previous_l2: f64,
}

/// The held-out split of `store` at the run's own fraction, grouped by source, each group
/// scored teacher-forced like `lcm eval` (up to `config.max_concepts` concepts per source).
pub fn held_out_l2_by_source(
    trained: &TrainedLcm,
    store: &Path,
    eos: Vec<f32>,
    config: &EvalConfig,
) -> Result<Vec<SourceLoss>> {
    let valid_fraction = trained_valid_fraction(trained).ok_or_else(|| {
        WorkflowError::Refused(
            "the checkpoint does not record its validation fraction: no held-out split".into(),
        )
    })?;
    let opened = ConceptStore::open(store)?;
    let max_seq_len = trained
        .loaded
        .train_config
        .as_ref()
        .and_then(|c| c.max_seq_len)
        .unwrap_or(DEFAULT_MAX_SEQ_LEN)
        .min(trained.model().max_seq_len());
    let split = SplitDataset::from_store(
        &opened,
        &trained.normalizer,
        eos.clone(),
        DatasetConfig {
            max_seq_len,
            valid_fraction,
        },
    )?;
    let mean = training_mean(&split.train, &trained.normalizer)?;
    drop(split);
    let mut by_source: BTreeMap<String, Vec<ConceptDocument>> = BTreeMap::new();
    for document in opened.documents() {
        let document = document?;
        if lcm_data::batch::split_of(&document.id, valid_fraction) == Split::Valid {
            by_source
                .entry(document.source.clone())
                .or_default()
                .push(document);
        }
    }
    let mut out = Vec::new();
    for (source, documents) in by_source {
        let count = documents.len();
        let valid = SequenceDataset::from_documents(
            documents,
            &trained.normalizer,
            eos.clone(),
            max_seq_len,
        )?;
        if !valid.sequences().iter().any(|s| s.len() >= 2) {
            continue;
        }
        let outcome = evaluate_model(
            trained.model(),
            &trained.label(),
            &valid,
            &trained.normalizer,
            &mean,
            config,
        )?;
        let rows = &outcome.report.rows;
        let l2 = rows.first().map(|r| r.metrics.l2).unwrap_or(f64::NAN);
        let repeat = rows
            .iter()
            .find(|r| r.predictor == lcm_eval::report::REPEAT_PREVIOUS)
            .map(|r| r.metrics.l2)
            .unwrap_or(f64::NAN);
        out.push(SourceLoss {
            source,
            documents: count,
            concepts: outcome.concepts,
            l2,
            repeat_previous_l2: repeat,
        });
    }
    Ok(out)
}

/// The markdown table of [`held_out_l2_by_source`].
pub fn source_loss_markdown(model: &str, losses: &[SourceLoss]) -> String {
    let mut out = String::from(
        "| model | source | held-out docs | concepts | ℓ2 | repeat-previous ℓ2 |\n|---|---|---|---|---|---|\n",
    );
    for l in losses {
        out.push_str(&format!(
            "| {model} | {} | {} | {} | {:.4} | {:.4} |\n",
            l.source, l.documents, l.concepts, l.l2, l.repeat_previous_l2
        ));
    }
    out
}
