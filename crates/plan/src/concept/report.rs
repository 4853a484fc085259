//! Rendering `lcm plan`'s results: the JSON documents, the markdown report of a case file
//! and the text form of one case. Sentences are looked up through the caller's
//! `sentence(candidate)` (a sentence bank), so this stays free of the data layer.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::cases::Case;
use super::compare::{CaseResult, Outcome};
use super::cosine;
use super::cost::{ConceptCost, violates};
use super::metrics::{RolloutScore, Summary};
use super::planner::{Candidate, ConceptPlan};

/// Looks up the sentence a candidate will say.
pub type SentenceOf<'a> = &'a dyn Fn(&Candidate) -> String;

/// What every report says about the run besides the results.
pub struct ReportContext<'a> {
    /// The model's label (`two-tower tiny`, …).
    pub model: String,
    /// The settings object of the JSON documents.
    pub settings: Value,
    /// The three methods' names, in [`CaseResult::outcomes`] order.
    pub methods: [&'static str; 3],
    /// Where the planner's candidates come from, for the markdown report's intro.
    pub proposals: String,
    pub steps: usize,
    pub beam: usize,
    pub candidates: usize,
    pub radius: f32,
    pub greedy_neighbours: usize,
    pub bank_sentences: usize,
    pub seed: u64,
    pub sentence: SentenceOf<'a>,
}

/// `v` as JSON, `null` when not finite.
fn finite(v: f32) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

impl ReportContext<'_> {
    /// A method's continuation as JSON: each sentence with its goal cosine and margins.
    pub fn steps_json(&self, cost: &ConceptCost, outcome: &Outcome) -> Value {
        let names = cost.guardrail_names();
        let sentences: Vec<Value> = outcome
            .steps
            .iter()
            .map(|s| {
                let margins: serde_json::Map<String, Value> = names
                    .iter()
                    .cloned()
                    .zip(cost.margins(&s.concept).into_iter().map(|m| json!(m)))
                    .collect();
                json!({
                    "text": (self.sentence)(s),
                    "goal_cosine": cosine(&s.concept, &cost.goal),
                    "margins": margins,
                })
            })
            .collect();
        json!({
            "sentences": sentences,
            "reached_at": outcome.score.reached_at.map(|i| i + 1),
            "best_goal_cosine": finite(outcome.score.best_goal_cosine),
            "violating_steps": outcome.score.violating_steps,
            "coherence": finite(outcome.score.coherence),
            "ms": outcome.millis,
        })
    }

    /// The three methods of one case: `(planner with its plan, unconstrained, greedy)`.
    fn methods_json(&self, r: &CaseResult) -> (Value, Value, Value) {
        let mut planner = self.steps_json(&r.cost, &r.planner);
        planner["plan"] = plan_json(&r.plan);
        (
            planner,
            self.steps_json(&r.cost, &r.unconstrained),
            self.steps_json(&r.cost, &r.greedy),
        )
    }

    /// The JSON document of a single prompt.
    pub fn single_json(&self, case: &Case, result: &CaseResult) -> Value {
        let (planner, unconstrained, greedy) = self.methods_json(result);
        json!({
            "model": self.model,
            "prompt": case.prompt,
            "goal": case.goal,
            "avoid": case.avoid,
            "settings": self.settings,
            "planner": planner,
            "unconstrained": unconstrained,
            "greedy_retrieval": greedy,
        })
    }

    /// The text form of a single prompt's plan and baselines.
    pub fn single_text(&self, case: &Case, result: &CaseResult) -> String {
        let cost = &result.cost;
        let plan = &result.plan;
        let mut s = String::new();
        let _ = writeln!(s, "Prompt ({} sentences):", case.prompt.len());
        for p in &case.prompt {
            let _ = writeln!(s, "  {p}");
        }
        let _ = writeln!(s, "Goal (reached at cos ≥ {}): {}", case.tau, case.goal);
        for name in cost.guardrail_names() {
            let _ = writeln!(s, "Guardrail: {name}");
        }
        let status = match (plan.feasible, plan.reached_at) {
            (true, Some(t)) => format!("feasible, goal reached at step {}", t + 1),
            (true, None) => "feasible, goal not reached".to_string(),
            (false, _) => "INFEASIBLE: every plan found enters a hard guardrail region; this \
                           is the least-violating one"
                .to_string(),
        };
        let _ = writeln!(
            s,
            "\nPlan by {} ({} steps, beam {}, {} candidates per step): {status}",
            self.model, self.steps, self.beam, self.candidates
        );
        for (t, step) in plan.steps.iter().enumerate() {
            let margins: Vec<String> = cost
                .margins(&step.concept)
                .iter()
                .map(|m| format!("{m:+.3}"))
                .collect();
            let _ = writeln!(
                s,
                "  {:>2}. [goal {:.3} | anticipated cost {:.3} | margins {}] {}",
                t + 1,
                plan.goal_cosines[t],
                plan.anticipated[t],
                if margins.is_empty() {
                    "—".to_string()
                } else {
                    margins.join(" ")
                },
                (self.sentence)(step)
            );
        }
        for (name, m) in &plan.margins {
            let _ = writeln!(s, "Minimum margin of `{name}`: {m:+.3}");
        }
        let _ = writeln!(
            s,
            "Feasible candidates {}/{}; feasible complete plans {}/{}.",
            plan.feasible_candidates, plan.candidates, plan.feasible_plans, plan.complete_plans
        );
        for (label, outcome) in [
            ("Unconstrained generation", &result.unconstrained),
            ("Greedy retrieval", &result.greedy),
        ] {
            let _ = writeln!(s, "\n{label}:");
            for (t, step) in outcome.steps.iter().enumerate() {
                let inside = cost.margins(&step.concept).into_iter().any(violates);
                let _ = writeln!(
                    s,
                    "  {:>2}. [goal {:.3}{}] {}",
                    t + 1,
                    cosine(&step.concept, &cost.goal),
                    if inside { " | INSIDE a guardrail" } else { "" },
                    (self.sentence)(step)
                );
            }
        }
        s
    }

    /// The JSON document of a case file.
    pub fn cases_json(
        &self,
        path: &Path,
        cases: &[Case],
        results: &[CaseResult],
        summaries: &[(Summary, f64)],
    ) -> Value {
        let summary: Vec<Value> = self
            .methods
            .iter()
            .zip(summaries)
            .map(|(name, (s, ms))| {
                json!({
                    "method": name,
                    "cases": s.cases,
                    "goal_reach_rate": s.goal_reach_rate,
                    "goal_reach_ci95": [s.goal_reach_ci.0, s.goal_reach_ci.1],
                    "reach_and_safe_rate": s.reach_and_safe_rate,
                    "violation_rate": s.violation_rate,
                    "step_violation_rate": s.step_violation_rate,
                    "coherence": s.coherence,
                    "mean_best_goal_cosine": s.mean_best_goal_cosine,
                    "ms_per_case": ms,
                })
            })
            .collect();
        let per_case: Vec<Value> = cases
            .iter()
            .zip(results)
            .map(|(case, r)| {
                let (planner, unconstrained, greedy) = self.methods_json(r);
                json!({
                    "id": case.id,
                    "prompt": case.prompt,
                    "goal": case.goal,
                    "avoid": case.avoid,
                    "tau": case.tau,
                    "planner": planner,
                    "unconstrained": unconstrained,
                    "greedy_retrieval": greedy,
                })
            })
            .collect();
        json!({
            "model": self.model,
            "cases_file": path.display().to_string(),
            "settings": self.settings,
            "planner_infeasible_cases": infeasible_cases(results),
            "summary": summary,
            "cases": per_case,
        })
    }

    /// The markdown report of a case file.
    pub fn markdown(
        &self,
        path: &Path,
        cases: &[Case],
        results: &[CaseResult],
        summaries: &[(Summary, f64)],
    ) -> String {
        let infeasible = infeasible_cases(results);
        let mut s = String::new();
        let _ = writeln!(s, "# Concept-space planning: {}\n", self.model);
        let taus: HashSet<String> = cases.iter().map(|c| format!("{}", c.tau)).collect();
        let mut taus: Vec<String> = taus.into_iter().collect();
        taus.sort();
        let _ = writeln!(
            s,
            "{} cases from `{}`; K = {} sentences; goal reached at cos ≥ τ = {}; --avoid balls \
             of cosine radius {} (hard); beam {} × {} {}; greedy retrieval among M = {} \
             neighbours; {} bank sentences; seed {}.\n",
            cases.len(),
            path.display(),
            self.steps,
            taus.join(" / "),
            self.radius,
            self.beam,
            self.candidates,
            self.proposals,
            self.greedy_neighbours,
            self.bank_sentences,
            self.seed
        );
        let _ = writeln!(
            s,
            "| method | goal reach (95% CI) | reach & safe | violation rate (cases) | violation \
             rate (sentences) | coherence | mean best goal cos | ms / case |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for (name, (m, ms)) in self.methods.iter().zip(summaries) {
            let _ = writeln!(
                s,
                "| {name} | {:.2} ({:.2}–{:.2}) | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} | {:.0} |",
                m.goal_reach_rate,
                m.goal_reach_ci.0,
                m.goal_reach_ci.1,
                m.reach_and_safe_rate,
                m.violation_rate,
                m.step_violation_rate,
                m.coherence,
                m.mean_best_goal_cosine,
                ms
            );
        }
        let (cand, feas): (usize, usize) = results.iter().fold((0, 0), |(c, f), r| {
            (c + r.plan.candidates, f + r.plan.feasible_candidates)
        });
        let _ = writeln!(
            s,
            "\nPlanner: {infeasible} of {} cases had no feasible plan (returned flagged \
             infeasible); {feas} of {cand} scored candidate extensions were feasible.\n",
            cases.len()
        );
        let _ = writeln!(
            s,
            "Coherence: mean cosine between consecutive sentences, the prompt's last included. \
             Violation: a sentence inside any --avoid ball (cos ≥ radius) or classifier region.\n"
        );
        let _ = writeln!(
            s,
            "## Per case\n\nReach: step at which the goal was reached (— = not within K); \
             viol: sentences inside a guardrail region; best: highest goal cosine.\n"
        );
        let _ = writeln!(
            s,
            "| id | planner reach | viol | best | feasible | unconstrained reach | viol | best | \
             greedy reach | viol | best |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        let reach = |o: &Outcome| {
            o.score
                .reached_at
                .map_or("—".to_string(), |t| (t + 1).to_string())
        };
        for (case, r) in cases.iter().zip(results) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | {} | {} | {:.2} |",
                case.id,
                reach(&r.planner),
                r.planner.score.violating_steps,
                r.planner.score.best_goal_cosine,
                if r.plan.feasible { "yes" } else { "no" },
                reach(&r.unconstrained),
                r.unconstrained.score.violating_steps,
                r.unconstrained.score.best_goal_cosine,
                reach(&r.greedy),
                r.greedy.score.violating_steps,
                r.greedy.score.best_goal_cosine,
            );
        }
        s
    }
}

/// The plan's own numbers as JSON.
pub fn plan_json(plan: &ConceptPlan) -> Value {
    json!({
        "feasible": plan.feasible,
        "objective": plan.objective,
        "anticipated": plan.anticipated,
        "min_margins": plan.margins.iter().map(|(n, m)| json!({"guardrail": n, "margin": finite(*m)})).collect::<Vec<_>>(),
        "candidates": plan.candidates,
        "feasible_candidates": plan.feasible_candidates,
        "complete_plans": plan.complete_plans,
        "feasible_plans": plan.feasible_plans,
    })
}

/// Cases whose planner found no feasible plan.
pub fn infeasible_cases(results: &[CaseResult]) -> usize {
    results.iter().filter(|r| !r.plan.feasible).count()
}

/// Per method (in [`CaseResult::outcomes`] order), the summary over cases and the mean
/// milliseconds per case.
pub fn summaries(results: &[CaseResult]) -> Vec<(Summary, f64)> {
    (0..3)
        .map(|m| {
            let outcomes: Vec<&Outcome> = results.iter().map(|r| r.outcomes()[m]).collect();
            let scores: Vec<RolloutScore> = outcomes.iter().map(|o| o.score.clone()).collect();
            let ms = outcomes.iter().map(|o| o.millis).sum::<f64>() / outcomes.len() as f64;
            (Summary::from_scores(&scores), ms)
        })
        .collect()
}
