//! The buffer program: how many GPUs of each offer to hold per window, at least cost, so that
//! every window's demand (up to a quantile) finds a GPU ready within the latency target.
//!
//! Per offer `o` and window `t`, `held[o][t]` GPUs are paid for the whole window and
//! `acquired[o][t]` GPUs are new in it. A new GPU must be asked for
//! `lead[o] = max(0, boot_s[o] + cold_start_s - latency_target_s)` seconds before its window
//! starts (the VM boots, then the replica starts; what fits inside the target need not be done
//! ahead), and that lead is paid too. So the program is
//!
//! ```text
//! minimise   sum_o,t price[o] / 3600 * (window_s * held[o][t] + lead[o] * acquired[o][t])
//! subject to sum_o held[o][t] >= needed[t]                        (demand up to the quantile)
//!            acquired[o][t] >= held[o][t] - held[o][t-1]          (held[o][-1] = 0)
//!            held[o][t] + sum of acquired[o][t'] still booting during t <= available[o]
//!            held, acquired >= 0 and whole
//! ```
//!
//! Holding a GPU idle through a lull costs `window_s * price`; letting it go and asking for it
//! again costs `lead * price`: the program keeps the cheaper one, which is the buffer. Of a
//! window's held GPUs, those its expected demand keeps busy are reported as running and the rest
//! as idle in the buffer. When the cold start itself exceeds the target, an idle GPU cannot
//! answer a burst in time: the lead then includes the replica's start, so the buffer holds
//! started (warm) replicas rather than empty GPUs, and the plan says so.

use std::fmt;
use std::time::Instant;

use good_lp::{constraint, variable, Expression, Solution, SolverModel, Variable};
use serde::Serialize;

use crate::demand::Demand;
use crate::offers::Offer;
use crate::solve::{solver_error, whole};
use crate::{Error, Result};

/// What the buffer program is given.
#[derive(Clone, Debug)]
pub struct BufferProblem {
    /// Expected requests per window.
    pub demand: Demand,
    /// GPUs each window needs to serve its demand up to the quantile.
    pub needed: Vec<u64>,
    /// GPUs each window's expected demand keeps busy (the rest of what is held is buffer).
    pub expected: Vec<u64>,
    /// Where GPUs can be had.
    pub offers: Vec<Offer>,
    /// Seconds a replica takes to be ready on a booted GPU (the cold-start path).
    pub cold_start_s: f64,
    /// Longest a request may wait for a GPU, seconds.
    pub latency_target_s: f64,
}

impl BufferProblem {
    /// The problem for `demand` served up to `quantile`, each replica serving `throughput`
    /// requests per second.
    pub fn new(
        demand: Demand,
        quantile: f64,
        throughput: f64,
        offers: Vec<Offer>,
        cold_start_s: f64,
        latency_target_s: f64,
    ) -> Result<BufferProblem> {
        Ok(BufferProblem {
            needed: demand.needed(quantile, throughput)?,
            expected: demand.expected(throughput)?,
            demand,
            offers,
            cold_start_s,
            latency_target_s,
        })
    }
}

/// One window of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedWindow {
    /// 0-based window number.
    pub window: usize,
    /// Its start, seconds.
    pub start_s: f64,
    /// Requests expected.
    pub requests: f64,
    /// GPUs needed at the quantile.
    pub needed: u64,
    /// Held GPUs the expected demand keeps busy.
    pub running: u64,
    /// Held GPUs beyond that: the buffer.
    pub buffer: u64,
    /// GPUs held per offer (in the order of [`BufferPlan::offers`]).
    pub held: Vec<u64>,
    /// GPUs newly asked for per offer.
    pub acquired: Vec<u64>,
}

impl PlannedWindow {
    /// All GPUs held.
    pub fn total(&self) -> u64 {
        self.held.iter().sum()
    }
}

/// An offer as the plan used it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedOffer {
    /// `kind@region`.
    pub name: String,
    /// Price per GPU-hour.
    pub price_per_hour: f64,
    /// Seconds before its window a new GPU must be asked for.
    pub lead_s: f64,
}

/// The cheapest holding of GPUs per window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BufferPlan {
    /// Window length, seconds.
    pub window_s: f64,
    /// The cold start planned for.
    pub cold_start_s: f64,
    /// The latency target planned for.
    pub latency_target_s: f64,
    /// True when the cold start exceeds the target, so the buffer holds started replicas.
    pub warm_buffer: bool,
    /// The offers, in input order.
    pub offers: Vec<PlannedOffer>,
    /// Per window.
    pub windows: Vec<PlannedWindow>,
    /// What the plan costs (price units).
    pub cost: f64,
    /// The LP relaxation's cost: no plan in whole GPUs costs less.
    pub lp_bound: f64,
    /// GPU-hours paid.
    pub gpu_hours: f64,
    /// Seconds the solver took (integer program and relaxation together).
    pub solve_seconds: f64,
}

impl BufferPlan {
    /// The most GPUs held in any window.
    pub fn peak(&self) -> u64 {
        self.windows
            .iter()
            .map(PlannedWindow::total)
            .max()
            .unwrap_or(0)
    }
}

/// Checks that every window can be served by all offers together.
fn check_feasible(problem: &BufferProblem) -> Result<()> {
    let available: u64 = problem.offers.iter().map(|o| o.available).sum();
    let w = problem.demand.window_s;
    match problem
        .needed
        .iter()
        .enumerate()
        .find(|(_, &n)| n > available)
    {
        Some((window, &needed)) => Err(Error::Infeasible {
            window,
            start_s: window as f64 * w,
            end_s: (window + 1) as f64 * w,
            needed,
            available,
            short: needed - available,
        }),
        None => Ok(()),
    }
}

/// The lead of each offer: how long before its window a new GPU is asked for.
fn leads(problem: &BufferProblem) -> Vec<f64> {
    problem
        .offers
        .iter()
        .map(|o| (o.boot_s + problem.cold_start_s - problem.latency_target_s).max(0.0))
        .collect()
}

/// The program's variables: per offer, per window.
struct Program {
    held: Vec<Vec<Variable>>,
    acquired: Vec<Vec<Variable>>,
}

/// A solved program: per offer, per window.
struct Solved {
    held: Vec<Vec<f64>>,
    acquired: Vec<Vec<f64>>,
    cost: f64,
}

/// Solves the program, in whole GPUs (`integer`) or as its relaxation.
fn solve(problem: &BufferProblem, lead: &[f64], integer: bool) -> Result<Solved> {
    let windows = problem.needed.len();
    let w = problem.demand.window_s;
    let mut vars = good_lp::ProblemVariables::new();
    let make = |vars: &mut good_lp::ProblemVariables| {
        (0..windows)
            .map(|_| {
                let v = variable().min(0);
                vars.add(if integer { v.integer() } else { v })
            })
            .collect::<Vec<_>>()
    };
    let program = Program {
        held: problem.offers.iter().map(|_| make(&mut vars)).collect(),
        acquired: problem.offers.iter().map(|_| make(&mut vars)).collect(),
    };
    let mut cost = Expression::from(0.0);
    for (o, offer) in problem.offers.iter().enumerate() {
        let per_second = offer.price_per_hour / 3600.0;
        for t in 0..windows {
            cost +=
                per_second * w * program.held[o][t] + per_second * lead[o] * program.acquired[o][t];
        }
    }
    let mut model = vars.minimise(cost.clone()).using(good_lp::microlp);
    for t in 0..windows {
        let all: Expression = program.held.iter().map(|h| h[t]).sum();
        model = model.with(constraint!(all >= problem.needed[t] as f64));
    }
    for (o, offer) in problem.offers.iter().enumerate() {
        // Windows a GPU asked for `lead` ahead spends booting.
        let booting_windows = (lead[o] / w).ceil() as usize;
        for t in 0..windows {
            let previous = match t {
                0 => Expression::from(0.0),
                _ => Expression::from(program.held[o][t - 1]),
            };
            model = model.with(constraint!(
                program.acquired[o][t] >= program.held[o][t] - previous
            ));
            let mut in_use = Expression::from(program.held[o][t]);
            for later in (t + 1)..=(t + booting_windows).min(windows - 1) {
                in_use += program.acquired[o][later];
            }
            model = model.with(constraint!(in_use <= offer.available as f64));
        }
    }
    let solution = model.solve().map_err(solver_error)?;
    let values = |vars: &[Vec<Variable>]| -> Vec<Vec<f64>> {
        vars.iter()
            .map(|row| row.iter().map(|&v| solution.value(v)).collect())
            .collect()
    };
    Ok(Solved {
        held: values(&program.held),
        acquired: values(&program.acquired),
        cost: solution.eval(&cost),
    })
}

/// The cheapest plan in whole GPUs, with the relaxation's cost as a bound.
pub fn plan_buffer(problem: &BufferProblem) -> Result<BufferPlan> {
    let windows = problem.needed.len();
    if windows == 0 || problem.expected.len() != windows || problem.demand.requests.len() != windows
    {
        return Err(Error::Invalid(
            "demand, needed and expected differ in windows".into(),
        ));
    }
    if problem.offers.is_empty() {
        return Err(Error::Invalid("no GPU offers".into()));
    }
    for value in [problem.cold_start_s, problem.latency_target_s] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(Error::Invalid(format!(
                "cold start and latency target must be non-negative seconds, not {value}"
            )));
        }
    }
    check_feasible(problem)?;
    let lead = leads(problem);
    let started = Instant::now();
    let lp_bound = solve(problem, &lead, false)?.cost;
    let Solved {
        held,
        acquired,
        cost,
    } = solve(problem, &lead, true)?;
    let solve_seconds = started.elapsed().as_secs_f64();
    let w = problem.demand.window_s;
    let mut gpu_seconds = 0.0;
    let planned: Vec<PlannedWindow> = (0..windows)
        .map(|t| {
            let held_t: Vec<u64> = held.iter().map(|h| whole(h[t])).collect();
            let acquired_t: Vec<u64> = acquired.iter().map(|a| whole(a[t])).collect();
            gpu_seconds += held_t.iter().sum::<u64>() as f64 * w
                + acquired_t
                    .iter()
                    .zip(&lead)
                    .map(|(&a, l)| a as f64 * l)
                    .sum::<f64>();
            let total: u64 = held_t.iter().sum();
            let running = problem.expected[t].min(total);
            PlannedWindow {
                window: t,
                start_s: t as f64 * w,
                requests: problem.demand.requests[t],
                needed: problem.needed[t],
                running,
                buffer: total - running,
                held: held_t,
                acquired: acquired_t,
            }
        })
        .collect();
    Ok(BufferPlan {
        window_s: w,
        cold_start_s: problem.cold_start_s,
        latency_target_s: problem.latency_target_s,
        warm_buffer: problem.cold_start_s > problem.latency_target_s,
        offers: problem
            .offers
            .iter()
            .zip(&lead)
            .map(|(o, &lead_s)| PlannedOffer {
                name: o.name(),
                price_per_hour: o.price_per_hour,
                lead_s,
            })
            .collect(),
        windows: planned,
        cost,
        lp_bound,
        gpu_hours: gpu_seconds / 3600.0,
        solve_seconds,
    })
}

impl fmt::Display for BufferPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} windows of {}s; cold start {:.2}s, target {:.2}s; leads: {}",
            self.windows.len(),
            self.window_s,
            self.cold_start_s,
            self.latency_target_s,
            self.offers
                .iter()
                .map(|o| format!("{} {:.0}s", o.name, o.lead_s))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        if self.warm_buffer {
            writeln!(
                f,
                "the cold start exceeds the target: the buffer holds started replicas, not idle GPUs"
            )?;
        }
        write!(
            f,
            "{:>6} {:>8} {:>9} {:>6} {:>7} {:>7}",
            "window", "start s", "requests", "needed", "running", "buffer"
        )?;
        for o in &self.offers {
            write!(f, " {:>14}", o.name)?;
        }
        writeln!(f)?;
        for w in &self.windows {
            write!(
                f,
                "{:>6} {:>8.0} {:>9.0} {:>6} {:>7} {:>7}",
                w.window, w.start_s, w.requests, w.needed, w.running, w.buffer
            )?;
            for (held, acquired) in w.held.iter().zip(&w.acquired) {
                let new = if *acquired > 0 {
                    format!(" (+{acquired})")
                } else {
                    String::new()
                };
                write!(f, " {:>14}", format!("{held}{new}"))?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "cost {:.2} ({:.2} GPU-hours; LP bound {:.2}); solved in {:.1} ms",
            self.cost,
            self.gpu_hours,
            self.lp_bound,
            self.solve_seconds * 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(name: &str, price: f64, available: u64, boot_s: f64) -> Offer {
        Offer {
            kind: "gpu".into(),
            region: name.into(),
            price_per_hour: price,
            available,
            boot_s,
        }
    }

    /// Hour-long windows, so that costs are prices times GPUs.
    fn problem(needed: &[u64], offers: Vec<Offer>) -> BufferProblem {
        BufferProblem {
            demand: Demand {
                window_s: 3600.0,
                requests: needed.iter().map(|&n| n as f64).collect(),
            },
            needed: needed.to_vec(),
            expected: needed.to_vec(),
            offers,
            cold_start_s: 0.0,
            latency_target_s: 0.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn two_offers_three_windows_the_cheap_one_fills_first() {
        // A: $1/h, 2 GPUs, boots at once. B: $3/h, plenty, boots in half an hour (paid: $1.5).
        // Needs 1, 4, 3: A holds 1, 2, 2; B holds 0, 2, 1 (its 2 acquired in window 1, one kept).
        // Cost: 1 + (2 + 2*3 + 2*1.5) + (2 + 3) = 17.
        let p = problem(
            &[1, 4, 3],
            vec![offer("a", 1.0, 2, 0.0), offer("b", 3.0, 10, 1800.0)],
        );
        let plan = plan_buffer(&p).unwrap();
        assert!(close(plan.cost, 17.0), "{plan}");
        let held: Vec<Vec<u64>> = plan.windows.iter().map(|w| w.held.clone()).collect();
        assert_eq!(held, vec![vec![1, 0], vec![2, 2], vec![2, 1]], "{plan}");
        assert_eq!(plan.windows[1].acquired, vec![1, 2]);
        assert_eq!(plan.windows[2].acquired, vec![0, 0]);
        assert!(close(plan.lp_bound, 17.0));
        assert!(close(plan.offers[1].lead_s, 1800.0));
    }

    #[test]
    fn a_gpu_is_kept_idle_through_a_lull_when_asking_again_costs_more() {
        // One offer, $3/h, booting for 1.5 h (paid $4.5 each time). Needs 0, 3, 0, 3. Letting the
        // three go in window 2 and asking again costs 3 * 4.5 = 13.5; holding them costs 9.
        // Cost: window 1: 9 + 13.5; windows 2 and 3: 9 each: 40.5. Window 2 holds 3 idle.
        let p = problem(&[0, 3, 0, 3], vec![offer("b", 3.0, 3, 5400.0)]);
        let plan = plan_buffer(&p).unwrap();
        assert!(close(plan.cost, 40.5), "{plan}");
        let lull = &plan.windows[2];
        assert_eq!((lull.running, lull.buffer), (0, 3), "{plan}");
        assert_eq!(plan.windows[3].acquired, vec![0]);
        // With a fast boot the lull is let go instead: 3 + 3 and two short leads.
        let p = problem(&[0, 3, 0, 3], vec![offer("b", 3.0, 3, 600.0)]);
        let plan = plan_buffer(&p).unwrap();
        assert_eq!(plan.windows[2].total(), 0, "{plan}");
        assert!(close(plan.cost, 9.0 + 9.0 + 2.0 * 3.0 * 0.5), "{plan}");
    }

    #[test]
    fn a_cold_start_inside_the_target_needs_no_lead_and_one_outside_says_warm() {
        let mut p = problem(&[1, 1], vec![offer("a", 1.0, 4, 60.0)]);
        p.cold_start_s = 2.0;
        p.latency_target_s = 90.0;
        let plan = plan_buffer(&p).unwrap();
        assert_eq!(plan.offers[0].lead_s, 0.0);
        assert!(!plan.warm_buffer);
        p.cold_start_s = 120.0;
        let plan = plan_buffer(&p).unwrap();
        assert!(close(plan.offers[0].lead_s, 90.0));
        assert!(plan.warm_buffer && plan.to_string().contains("started replicas"));
    }

    #[test]
    fn demand_above_every_offer_names_the_window_and_the_shortfall() {
        let p = problem(
            &[1, 2, 9, 3],
            vec![offer("a", 1.0, 2, 0.0), offer("b", 2.0, 4, 0.0)],
        );
        let err = plan_buffer(&p).unwrap_err().to_string();
        assert!(
            err.contains("window 2 (7200..10800 s) needs 9 GPUs") && err.contains("short by 3"),
            "{err}"
        );
    }
}
