//! The settings every buffer plan takes, as command-line arguments shared by `thaw plan buffer`
//! and `thaw bench utilisation`.

use crate::buffer::{plan_buffer, BufferPlan, BufferProblem};
use crate::demand::{mean_service, Demand, Request};
use crate::offers::Offer;
use crate::{Error, Result};

/// How demand is turned into a plan.
#[derive(clap::Args, Clone, Debug)]
pub struct PlanArgs {
    /// Window length, seconds: the plan holds a number of GPUs per window.
    #[arg(long, default_value_t = 60.0)]
    pub window: f64,
    /// Serve demand up to this quantile of each window's request count.
    #[arg(long, default_value_t = 0.99)]
    pub quantile: f64,
    /// Longest a request may wait for a GPU, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub latency_target: f64,
    /// Requests per second one replica serves [default: 1 / the trace's mean service time].
    #[arg(long)]
    pub throughput: Option<f64>,
}

impl PlanArgs {
    /// The plan for the traffic of a trace.
    pub fn plan(
        &self,
        requests: &[Request],
        offers: Vec<Offer>,
        cold_start_s: f64,
    ) -> Result<BufferPlan> {
        let demand = Demand::from_trace(requests, self.window)?;
        let throughput = self
            .throughput
            .unwrap_or_else(|| 1.0 / mean_service(requests).max(1e-9));
        self.plan_demand(demand, throughput, offers, cold_start_s)
    }

    /// The plan for a demand series (a forecast); `--throughput` is required.
    pub fn plan_forecast(
        &self,
        demand: Demand,
        offers: Vec<Offer>,
        cold_start_s: f64,
    ) -> Result<BufferPlan> {
        let throughput = self.throughput.ok_or_else(|| {
            Error::Invalid("a forecast needs --throughput (requests per second per replica)".into())
        })?;
        self.plan_demand(demand, throughput, offers, cold_start_s)
    }

    fn plan_demand(
        &self,
        demand: Demand,
        throughput: f64,
        offers: Vec<Offer>,
        cold_start_s: f64,
    ) -> Result<BufferPlan> {
        let problem = BufferProblem::new(
            demand,
            self.quantile,
            throughput,
            offers,
            cold_start_s,
            self.latency_target,
        )?;
        plan_buffer(&problem)
    }
}
