//! `lcm wm eval`: seeded planning episodes on Two-Rooms for the oracle, a trained JEPA with
//! each planner, and the random policy.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use lcm_plan::cost::{Cost, HazardGuardrail, Severity, euclidean};
use lcm_plan::data::render_state;
use lcm_plan::env::TwoRoomsConfig;
use lcm_plan::env::two_rooms::Vec2;
use lcm_plan::gradient::{GradientConfig, GradientPlanner};
use lcm_plan::jepa::ObservationKind;
use lcm_plan::learned::{Latent, LearnedWorld, ProbedHazardGuardrail, latent_distance};
use lcm_plan::planner::{
    AugLagCem, AugLagConfig, Cem, CemConfig, ConstrainedCem, EpisodeOptions, Mppi, MppiConfig,
    ObservationSource, RandomPolicy, RepeatActions,
};
use lcm_plan::wm_eval::{
    EpisodeSummary, RowResult, markdown_table, opposite_room_pairs, plot_trajectories, run_agent,
    summarise,
};
use lcm_plan::wm_train::load_world_model;
use lcm_plan::world::{OracleTwoRooms, PlanError, WorldModel};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// CEM on the true simulator (no model error).
    OracleCem,
    /// Feasible-first CEM on the true simulator.
    OracleConstrainedCem,
    JepaCem,
    JepaMppi,
    JepaConstrainedCem,
    JepaAugLag,
    /// Gradient descent on the actions through the learned predictor.
    JepaGradient,
    Random,
}

impl Agent {
    fn name(self) -> &'static str {
        match self {
            Agent::OracleCem => "oracle + CEM",
            Agent::OracleConstrainedCem => "oracle + constrained CEM",
            Agent::JepaCem => "JEPA + CEM",
            Agent::JepaMppi => "JEPA + MPPI",
            Agent::JepaConstrainedCem => "JEPA + constrained CEM",
            Agent::JepaAugLag => "JEPA + augmented Lagrangian",
            Agent::JepaGradient => "JEPA + gradient",
            Agent::Random => "random policy",
        }
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// A world-model run directory (`lcm wm train --out`); needed by the JEPA agents.
    model: Option<PathBuf>,
    /// Agents (rows) to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![
        Agent::OracleCem, Agent::JepaCem, Agent::JepaMppi, Agent::JepaConstrainedCem,
        Agent::JepaAugLag, Agent::JepaGradient, Agent::Random])]
    agents: Vec<Agent>,
    /// The guardrail variant: one hazard square per room, a hard guardrail for every planner.
    #[arg(long)]
    hazards: bool,
    #[arg(long, default_value_t = 50)]
    episodes: usize,
    /// Seed of the start/goal pairs (and, offset per episode, of the planners).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Planner actions per plan; each is held for --repeat real steps.
    #[arg(long, default_value_t = 12)]
    horizon: usize,
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Real steps executed per planning call (default: one whole held action, --repeat).
    #[arg(long)]
    steps_per_call: Option<usize>,
    /// Candidates per iteration (CEM, MPPI).
    #[arg(long, default_value_t = 300)]
    population: usize,
    #[arg(long, default_value_t = 5)]
    iterations: usize,
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

fn cem_config(args: &Args, seed: u64, init_std: f32) -> CemConfig {
    CemConfig {
        horizon: args.horizon,
        population: args.population,
        elites: (args.population / 10).max(1),
        iterations: args.iterations,
        init_std,
        min_std: 0.05,
        seed,
        ..CemConfig::default()
    }
}

fn options(args: &Args, observation: ObservationSource) -> EpisodeOptions {
    EpisodeOptions {
        max_steps: 200,
        replan_every: 1,
        action_repeat: args.repeat,
        steps_per_call: args.steps_per_call,
        observation,
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.episodes == 0 || args.horizon == 0 || args.repeat == 0 || args.population < 2 {
        bail!("--episodes, --horizon, --repeat must be > 0 and --population ≥ 2");
    }
    let env_cfg = if args.hazards {
        TwoRoomsConfig::with_default_hazards()
    } else {
        TwoRoomsConfig::default()
    };
    let pairs = opposite_room_pairs(&env_cfg, args.episodes, args.seed);
    let needs_model = args.agents.iter().any(|a| {
        !matches!(
            a,
            Agent::OracleCem | Agent::OracleConstrainedCem | Agent::Random
        )
    });
    let learned = match (&args.model, needs_model) {
        (Some(path), _) => {
            let loaded = load_world_model(path)
                .with_context(|| format!("loading world model {}", path.display()))?;
            tracing::info!(checkpoint = %loaded.checkpoint.display(), "loaded world model");
            Some(LearnedWorld::new(loaded.model))
        }
        (None, true) => bail!(
            "the JEPA agents need a trained world model: pass its run directory \
             (`lcm wm eval RUN`, from `lcm wm train --out RUN`) or choose --agents oracle-cem,random"
        ),
        (None, false) => None,
    };
    let seed = args.seed;
    let mut rows = Vec::new();
    for &agent in &args.agents {
        let started = std::time::Instant::now();
        let episodes = match agent {
            Agent::OracleCem | Agent::OracleConstrainedCem | Agent::Random => {
                let oracle = RepeatActions {
                    inner: OracleTwoRooms::new(&env_cfg),
                    repeat: args.repeat,
                };
                let build = |goal: Vec2| -> Result<Cost<Vec2>, PlanError> {
                    let mut cost = Cost::new(goal, euclidean);
                    if args.hazards {
                        cost = cost.with_guardrail(
                            HazardGuardrail::new(env_cfg.hazards.clone()).with_buffer(0.5),
                            Severity::Hard,
                        );
                    }
                    Ok(cost)
                };
                let opts = options(&args, ObservationSource::State);
                match agent {
                    Agent::OracleCem => run_agent(
                        &env_cfg,
                        &pairs,
                        &oracle,
                        |i| Cem::new(cem_config(&args, seed + i as u64, 1.5)),
                        build,
                        &opts,
                    )?,
                    Agent::OracleConstrainedCem => run_agent(
                        &env_cfg,
                        &pairs,
                        &oracle,
                        |i| ConstrainedCem::new(cem_config(&args, seed + i as u64, 1.5)),
                        build,
                        &opts,
                    )?,
                    _ => {
                        // One random action per real step.
                        let single = RepeatActions {
                            inner: OracleTwoRooms::new(&env_cfg),
                            repeat: 1,
                        };
                        let opts = EpisodeOptions {
                            action_repeat: 1,
                            ..opts
                        };
                        run_agent(
                            &env_cfg,
                            &pairs,
                            &single,
                            |i| Ok(RandomPolicy::new(env_cfg.max_action_norm, seed + i as u64)),
                            build,
                            &opts,
                        )?
                    }
                }
            }
            _ => {
                let world = learned.as_ref().context("world model required")?;
                let source = match world.observation() {
                    ObservationKind::State { .. } => ObservationSource::State,
                    ObservationKind::Pixels { .. } => ObservationSource::Pixels,
                };
                let probe = world
                    .probe_position()
                    .context("reading the position probe")?;
                let model = RepeatActions {
                    inner: world.clone(),
                    repeat: args.repeat,
                };
                let build = |goal: Vec2| -> Result<Cost<Latent>, PlanError> {
                    let obs = match source {
                        ObservationSource::State => goal.to_vec(),
                        ObservationSource::Pixels => render_state(&env_cfg, goal)?,
                    };
                    let mut cost = Cost::new(world.encode(&obs)?, latent_distance);
                    if args.hazards {
                        cost = cost.with_guardrail(
                            ProbedHazardGuardrail {
                                probe: probe.clone(),
                                hazards: HazardGuardrail::new(env_cfg.hazards.clone())
                                    .with_buffer(args.hazard_buffer),
                            },
                            Severity::Hard,
                        );
                    }
                    Ok(cost)
                };
                let opts = options(&args, source);
                let s = |i: usize| seed + i as u64;
                match agent {
                    Agent::JepaCem => run_agent(
                        &env_cfg,
                        &pairs,
                        &model,
                        |i| Cem::new(cem_config(&args, s(i), 1.5)),
                        build,
                        &opts,
                    )?,
                    Agent::JepaConstrainedCem => run_agent(
                        &env_cfg,
                        &pairs,
                        &model,
                        |i| ConstrainedCem::new(cem_config(&args, s(i), 1.5)),
                        build,
                        &opts,
                    )?,
                    Agent::JepaAugLag => run_agent(
                        &env_cfg,
                        &pairs,
                        &model,
                        |i| {
                            AugLagCem::new(AugLagConfig {
                                cem: CemConfig {
                                    iterations: 2,
                                    ..cem_config(&args, s(i), 1.5)
                                },
                                ..AugLagConfig::default()
                            })
                        },
                        build,
                        &opts,
                    )?,
                    Agent::JepaMppi => run_agent(
                        &env_cfg,
                        &pairs,
                        &model,
                        |i| {
                            Mppi::new(MppiConfig {
                                horizon: args.horizon,
                                population: args.population,
                                iterations: args.iterations,
                                sigma: 1.5,
                                lambda: 0.05,
                                seed: s(i),
                                ..MppiConfig::default()
                            })
                        },
                        build,
                        &opts,
                    )?,
                    Agent::JepaGradient => run_agent(
                        &env_cfg,
                        &pairs,
                        &model,
                        |i| {
                            GradientPlanner::new(GradientConfig {
                                horizon: args.horizon,
                                seed: s(i),
                                ..GradientConfig::default()
                            })
                        },
                        build,
                        &opts,
                    )?,
                    other => bail!("agent {other:?} needs no world model; handled above"),
                }
            }
        };
        let row = summarise(agent.name(), &episodes);
        tracing::info!(
            agent = agent.name(),
            success = row.success_rate,
            seconds = started.elapsed().as_secs_f64(),
            "agent done"
        );
        eprintln!(
            "{}: success {:.2}, violations {:.2}, {:.1} ms/plan ({:.0} s)",
            agent.name(),
            row.success_rate,
            row.violation_rate,
            row.ms_per_plan,
            started.elapsed().as_secs_f64()
        );
        if let Some(dir) = &args.plots {
            plot(
                dir,
                agent,
                &env_cfg,
                &episodes,
                args.plot_episodes,
                args.hazards,
            )?;
        }
        rows.push(row);
    }
    report(&args, &rows)
}

fn plot(
    dir: &std::path::Path,
    agent: Agent,
    cfg: &TwoRoomsConfig,
    episodes: &[EpisodeSummary],
    n: usize,
    hazards: bool,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let slug: String = agent
        .name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let variant = if hazards { "hazards" } else { "plain" };
    let path = dir.join(format!("{variant}-{slug}.png").replace("---", "-"));
    plot_trajectories(&path, cfg, &episodes[..n.min(episodes.len())])
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

fn report(args: &Args, rows: &[RowResult]) -> Result<()> {
    let json = serde_json::to_string_pretty(rows)?;
    let md = format!(
        "Two-Rooms{}, {} episodes (seed {}), horizon {}×{} steps, population {}, {} iterations\n\n{}",
        if args.hazards { " with hazards" } else { "" },
        args.episodes,
        args.seed,
        args.horizon,
        args.repeat,
        args.population,
        args.iterations,
        markdown_table(rows)
    );
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
