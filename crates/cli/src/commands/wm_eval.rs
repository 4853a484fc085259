//! `lcm wm eval`: seeded planning episodes on Two-Rooms for the oracle, a trained JEPA with
//! each planner, and the random policy. Flags → `lcm_plan::evaluation` → printing.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use lcm_plan::evaluation::{
    self, Episodes, EvalEnv, EvalSettings, RowResult, SearchSize, plot_agent, summarise,
};
use lcm_plan::world::train::WmEnv;

use super::wm::Agent;
use lcm_plan::world::learned::LearnedWorld;
use lcm_plan::world::load::load_world_model;

/// What the oracle planners minimise.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OracleCost {
    /// Straight-line distance to the goal (local minimum against the wall).
    Distance,
    /// Length of the shortest free path to the goal, through the door.
    PathLength,
}

impl From<OracleCost> for evaluation::OracleCost {
    fn from(cost: OracleCost) -> Self {
        match cost {
            OracleCost::Distance => evaluation::OracleCost::Distance,
            OracleCost::PathLength => evaluation::OracleCost::PathLength,
        }
    }
}

/// What the JEPA planners minimise.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JepaCost {
    /// Distance between the predicted and the goal latent (issue 5).
    Latent,
    /// Shortest free path between the probed positions of the predicted and the goal latent.
    ProbedPath,
    /// The probed path length plus a penalty for every predicted transition through the
    /// wall (Two-Rooms only).
    ProbedPathTransitions,
}

#[derive(clap::Args)]
pub struct Args {
    /// A world-model run directory (`lcm wm train --out`); needed by the JEPA agents.
    model: Option<PathBuf>,
    /// The environment (the model must have been trained on it).
    #[arg(long, value_enum, default_value = "two-rooms")]
    env: super::wm::Env,
    /// Agents (rows) to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![
        Agent::OracleCem, Agent::JepaCem, Agent::JepaMppi, Agent::JepaConstrainedCem,
        Agent::JepaAugLag, Agent::JepaGradient, Agent::Random])]
    agents: Vec<Agent>,
    /// The guardrail variant: one hazard square per room, a hard guardrail for every planner.
    #[arg(long)]
    hazards: bool,
    /// With --hazards: place the two hazard squares by this seed (a held-out layout) instead
    /// of the fixed default squares the planners were tuned on.
    #[arg(long)]
    hazard_seed: Option<u64>,
    #[arg(long, default_value_t = 50)]
    episodes: usize,
    /// Seed of the start/goal pairs (and, offset per episode, of the planners). The planners
    /// were tuned on seed 0; --eval-seed 1000 (planner seeds 1000–1049 for 50 episodes) is
    /// the held-out evaluation range.
    #[arg(long, visible_alias = "eval-seed", default_value_t = 0)]
    seed: u64,
    /// JEPA planner actions per plan; each is held for --repeat real steps.
    #[arg(long, default_value_t = 12)]
    horizon: usize,
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Real steps executed per planning call (default: one whole held action, --repeat).
    #[arg(long)]
    steps_per_call: Option<usize>,
    /// JEPA planner candidates per iteration (CEM, MPPI).
    #[arg(long, default_value_t = 300)]
    population: usize,
    /// JEPA planner iterations per planning call.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Oracle planner actions per plan (default 19: 95 steps of look-ahead).
    #[arg(long, default_value_t = SearchSize::ORACLE.horizon)]
    oracle_horizon: usize,
    /// Oracle planner candidates per iteration.
    #[arg(long, default_value_t = SearchSize::ORACLE.population)]
    oracle_population: usize,
    /// Oracle planner iterations per planning call.
    #[arg(long, default_value_t = SearchSize::ORACLE.iterations)]
    oracle_iterations: usize,
    /// The oracle planners' objective.
    #[arg(long, value_enum, default_value_t = OracleCost::PathLength)]
    oracle_cost: OracleCost,
    /// The JEPA planners' objective.
    #[arg(long, value_enum, default_value_t = JepaCost::ProbedPath)]
    jepa_cost: JepaCost,
    /// Weight of the JEPA cost's mean distance along the predicted path (the terminal
    /// distance weighs 1); larger prefers plans that get close early (default: 3 on
    /// Two-Rooms, 0.1 on the PointMaze).
    #[arg(long)]
    stage_weight: Option<f32>,
    /// Add this many px per latent unit of the distance between the predicted and the goal
    /// latent to a probed cost: pins the last pixels, where the probe's error is as large as
    /// the success radius (0: the probed cost alone; default: 20 for Two-Rooms pixel models,
    /// 0 otherwise).
    #[arg(long)]
    latent_weight: Option<f32>,
    /// PointMaze: only start-goal pairs at least this far apart along the free path.
    #[arg(long, default_value_t = 0.0)]
    min_goal_path: f32,
    /// Safety buffer (px) subtracted from the hazard margin; for the JEPA it covers the
    /// position probe's error.
    #[arg(long, default_value_t = 2.5)]
    hazard_buffer: f32,
    /// Write trajectory PNGs of the first --plot-episodes episodes per agent here.
    #[arg(long)]
    plots: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    plot_episodes: usize,
    /// Print JSON instead of markdown.
    #[arg(long)]
    json: bool,
    /// Also write the report (markdown and JSON) to this path (.md / .json).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Args {
    fn env(&self) -> EvalEnv {
        match self.env {
            super::wm::Env::TwoRooms => EvalEnv::TwoRooms,
            super::wm::Env::PointMaze => EvalEnv::PointMaze,
        }
    }

    fn settings(&self) -> EvalSettings {
        EvalSettings {
            env: self.env(),
            hazards: self.hazards,
            hazard_seed: self.hazard_seed,
            episodes: self.episodes,
            seed: self.seed,
            horizon: self.horizon,
            repeat: self.repeat,
            steps_per_call: self.steps_per_call,
            population: self.population,
            iterations: self.iterations,
            oracle: SearchSize {
                horizon: self.oracle_horizon,
                population: self.oracle_population,
                iterations: self.oracle_iterations,
            },
            oracle_cost: self.oracle_cost.into(),
            jepa_cost: match self.jepa_cost {
                JepaCost::Latent => evaluation::JepaCost::Latent,
                JepaCost::ProbedPath => evaluation::JepaCost::ProbedPathLength,
                JepaCost::ProbedPathTransitions => evaluation::JepaCost::ProbedPathTransitions,
            },
            jepa_stage_weight: self
                .stage_weight
                .unwrap_or_else(|| self.env().default_jepa_stage_weight()),
            // Resolved once the model's observation is known (`run`).
            jepa_latent_weight: self.latent_weight.unwrap_or(0.0),
            hazard_buffer: self.hazard_buffer,
            min_goal_path: self.min_goal_path,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut settings = args.settings();
    let episodes_to_run = Episodes::new(&settings)?;
    let agents: Vec<evaluation::Agent> = args.agents.iter().map(|&a| a.into()).collect();
    let needs_model = agents.iter().any(|a| a.needs_model());
    let learned = match (&args.model, needs_model) {
        (Some(path), _) => {
            let loaded = load_world_model(path)
                .with_context(|| format!("loading world model {}", path.display()))?;
            tracing::info!(checkpoint = %loaded.checkpoint.display(), "loaded world model");
            let trained_on = loaded.config.env;
            if (trained_on == WmEnv::PointMaze) != (settings.env == EvalEnv::PointMaze) {
                bail!(
                    "{} was trained on {}: pass --env {}",
                    path.display(),
                    trained_on.name(),
                    trained_on.name()
                );
            }
            Some(LearnedWorld::new(loaded.model))
        }
        (None, true) => bail!(
            "the JEPA agents need a trained world model: pass its run directory \
             (`lcm wm eval RUN`, from `lcm wm train --out RUN`) or choose --agents oracle-cem,random"
        ),
        (None, false) => None,
    };
    if let (None, Some(world)) = (args.latent_weight, &learned) {
        settings.jepa_latent_weight = settings
            .env
            .default_jepa_latent_weight(world.observation(), settings.jepa_cost);
    }
    let mut rows = Vec::new();
    for agent in agents {
        let started = std::time::Instant::now();
        let episodes = episodes_to_run
            .run(agent, &settings, learned.as_ref())
            .with_context(|| format!("running {}", agent.name()))?;
        let row = summarise(agent.name(), &episodes);
        eprintln!(
            "{}: success {:.2}, violations {:.2}, {:.1} ms/plan ({:.0} s)",
            agent.name(),
            row.success_rate,
            row.violation_rate,
            row.ms_per_plan,
            started.elapsed().as_secs_f64()
        );
        if let (
            Some(dir),
            Episodes::TwoRooms {
                config: env_cfg, ..
            },
        ) = (&args.plots, &episodes_to_run)
        {
            plot_agent(
                dir,
                agent,
                env_cfg,
                &episodes,
                args.plot_episodes,
                args.hazards,
            )
            .map_err(anyhow::Error::msg)?;
        }
        rows.push(row);
    }
    report(&args, &settings, &rows)
}

fn report(args: &Args, settings: &EvalSettings, rows: &[RowResult]) -> Result<()> {
    let json = serde_json::to_string_pretty(rows)?;
    let md = settings.markdown(rows);
    if args.json {
        println!("{json}");
    } else {
        println!("{md}");
    }
    if let Some(out) = &args.out {
        let (md_path, json_path) = (out.with_extension("md"), out.with_extension("json"));
        fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
        fs::write(&json_path, &json).with_context(|| format!("writing {}", json_path.display()))?;
    }
    Ok(())
}
