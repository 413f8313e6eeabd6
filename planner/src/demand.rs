//! Demand: requests of a trace, or requests expected per window from a forecast, and the GPUs a
//! window needs to serve its demand up to a quantile.
//!
//! A window's arrivals are taken as Poisson with the window's expected count as mean (for a
//! trace, the count it saw). Serving demand up to quantile `q` means capacity for the `q`
//! quantile of that count: `needed = ceil(Q_q(Poisson(requests)) / (throughput * window))`.

use std::path::Path;

use crate::lines::{line_error, non_negative, read_csv};
use crate::{Error, Result};

/// One request of a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Arrival, seconds from the start of the trace.
    pub arrival: f64,
    /// Seconds of GPU work it needs.
    pub service: f64,
}

/// The header of a request trace.
pub const TRACE_HEADER: &str = "arrival_s,service_s";
/// The header of a forecast.
pub const FORECAST_HEADER: &str = "window_start_s,requests";

/// The requests of a trace file (`arrival_s,service_s`), sorted by arrival.
pub fn read_trace(path: &Path) -> Result<Vec<Request>> {
    let mut requests = Vec::new();
    for (line, fields) in read_csv(path, TRACE_HEADER)? {
        requests.push(Request {
            arrival: non_negative(path, line, "arrival_s", &fields[0])?,
            service: non_negative(path, line, "service_s", &fields[1])?,
        });
    }
    if requests.is_empty() {
        return Err(Error::Invalid(format!("{}: no requests", path.display())));
    }
    requests.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    Ok(requests)
}

/// Mean service time of `requests` (seconds).
pub fn mean_service(requests: &[Request]) -> f64 {
    requests.iter().map(|r| r.service).sum::<f64>() / requests.len().max(1) as f64
}

/// Requests expected per window of equal length, from the first window at 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    /// Window length, seconds.
    pub window_s: f64,
    /// Requests expected in each window.
    pub requests: Vec<f64>,
}

impl Demand {
    /// The requests of a trace counted per `window_s`.
    pub fn from_trace(requests: &[Request], window_s: f64) -> Result<Demand> {
        check_window(window_s)?;
        let last = requests.iter().map(|r| r.arrival).fold(0.0, f64::max);
        let windows = (last / window_s).floor() as usize + 1;
        let mut counts = vec![0.0; windows];
        for r in requests {
            counts[((r.arrival / window_s).floor() as usize).min(windows - 1)] += 1.0;
        }
        Ok(Demand {
            window_s,
            requests: counts,
        })
    }

    /// A forecast file: `window_start_s,requests` lines, windows of equal length from 0 (the
    /// length is the spacing of the starts; `window_s` for a single line).
    pub fn read_forecast(path: &Path, window_s: f64) -> Result<Demand> {
        check_window(window_s)?;
        let rows = read_csv(path, FORECAST_HEADER)?;
        let mut starts = Vec::with_capacity(rows.len());
        let mut requests = Vec::with_capacity(rows.len());
        for (line, fields) in &rows {
            starts.push((
                *line,
                non_negative(path, *line, "window_start_s", &fields[0])?,
            ));
            requests.push(non_negative(path, *line, "requests", &fields[1])?);
        }
        if starts.is_empty() {
            return Err(Error::Invalid(format!("{}: no windows", path.display())));
        }
        let window_s = match starts.get(1) {
            Some((_, second)) => second - starts[0].1,
            None => window_s,
        };
        for (i, &(line, start)) in starts.iter().enumerate() {
            let expected = i as f64 * window_s;
            if window_s <= 0.0 || (start - expected).abs() > 1e-6 * window_s.max(1.0) {
                return Err(line_error(
                    path,
                    line,
                    format!(
                        "windows must start at 0 and be evenly spaced: expected {expected}, found {start}"
                    ),
                ));
            }
        }
        Ok(Demand { window_s, requests })
    }

    /// GPUs each window needs to serve its demand up to `quantile`, each replica serving
    /// `throughput` requests per second.
    pub fn needed(&self, quantile: f64, throughput: f64) -> Result<Vec<u64>> {
        if !(0.0..1.0).contains(&quantile) {
            return Err(Error::Invalid(format!(
                "the quantile must be in [0, 1), not {quantile}"
            )));
        }
        let per_gpu = per_gpu(throughput, self.window_s)?;
        Ok(self
            .requests
            .iter()
            .map(|&r| (poisson_quantile(r, quantile) as f64 / per_gpu).ceil() as u64)
            .collect())
    }

    /// GPUs each window's expected demand keeps busy.
    pub fn expected(&self, throughput: f64) -> Result<Vec<u64>> {
        let per_gpu = per_gpu(throughput, self.window_s)?;
        Ok(self
            .requests
            .iter()
            .map(|&r| (r / per_gpu).ceil() as u64)
            .collect())
    }
}

fn check_window(window_s: f64) -> Result<()> {
    if window_s.is_finite() && window_s > 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the window must be a positive number of seconds, not {window_s}"
        )))
    }
}

/// Requests one GPU serves in a window.
fn per_gpu(throughput: f64, window_s: f64) -> Result<f64> {
    if throughput.is_finite() && throughput > 0.0 {
        Ok(throughput * window_s)
    } else {
        Err(Error::Invalid(format!(
            "the per-replica throughput must be positive, not {throughput}"
        )))
    }
}

/// The smallest `k` with P(Poisson(mean) <= k) >= `q`.
pub fn poisson_quantile(mean: f64, q: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    // Terms in log space: exp(-mean) underflows for large means, the terms near the mean do not.
    let mut log_term = -mean;
    let mut cdf = 0.0;
    let limit = (mean + 50.0 * mean.sqrt() + 100.0) as u64;
    for k in 0..=limit {
        if k > 0 {
            log_term += mean.ln() - (k as f64).ln();
        }
        cdf += log_term.exp();
        if cdf >= q {
            return k;
        }
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_quantiles_match_the_tables() {
        // P(X <= 0) = e^-1 = 0.368, P(X <= 1) = 0.736, P(X <= 2) = 0.920, P(X <= 3) = 0.981.
        assert_eq!(poisson_quantile(1.0, 0.3), 0);
        assert_eq!(poisson_quantile(1.0, 0.5), 1);
        assert_eq!(poisson_quantile(1.0, 0.9), 2);
        assert_eq!(poisson_quantile(1.0, 0.95), 3);
        assert_eq!(poisson_quantile(0.0, 0.99), 0);
        // Large means: near mean + 2.326 sd for q = 0.99.
        let k = poisson_quantile(10_000.0, 0.99);
        assert!((10_228..=10_236).contains(&k), "{k}");
    }

    #[test]
    fn a_trace_counts_per_window_and_needs_capacity_for_its_quantile() {
        let requests: Vec<Request> = [1.0, 2.0, 61.0, 62.0, 63.0, 64.0, 179.0]
            .iter()
            .map(|&arrival| Request {
                arrival,
                service: 1.0,
            })
            .collect();
        let demand = Demand::from_trace(&requests, 60.0).unwrap();
        assert_eq!(demand.requests, vec![2.0, 4.0, 1.0]);
        // One GPU serves 60 requests a window at 1 req/s: one GPU is enough for each.
        assert_eq!(demand.needed(0.99, 1.0).unwrap(), vec![1, 1, 1]);
        // At 0.05 req/s a GPU serves 3 a window: Q_0.99(Poisson(4)) = 9 -> 3 GPUs.
        assert_eq!(demand.needed(0.99, 0.05).unwrap()[1], 3);
        assert_eq!(demand.expected(0.05).unwrap(), vec![1, 2, 1]);
        assert!(demand.needed(1.0, 1.0).is_err());
        assert!(demand.needed(0.5, 0.0).is_err());
    }

    #[test]
    fn bad_lines_are_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trace.csv");
        std::fs::write(&file, "arrival_s,service_s\n1,2\n3,x\n").unwrap();
        let err = read_trace(&file).unwrap_err().to_string();
        assert!(
            err.contains("trace.csv: line 3") && err.contains("service_s"),
            "{err}"
        );
        std::fs::write(&file, "arrival_s,service_s\n1,2,3\n").unwrap();
        let err = read_trace(&file).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("expected 2 fields"),
            "{err}"
        );
        std::fs::write(&file, "window_start_s,requests\n0,5\n60,7\n100,1\n").unwrap();
        let err = Demand::read_forecast(&file, 60.0).unwrap_err().to_string();
        assert!(
            err.contains("line 4") && err.contains("evenly spaced"),
            "{err}"
        );
        std::fs::write(&file, "window_start_s,requests\n0,5\n30,7\n").unwrap();
        let demand = Demand::read_forecast(&file, 60.0).unwrap();
        assert_eq!(demand.window_s, 30.0);
        assert_eq!(demand.requests, vec![5.0, 7.0]);
    }
}
