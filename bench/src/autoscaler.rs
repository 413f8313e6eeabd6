//! A simple serverless autoscaler, simulated: how much of the GPU time paid for runs application
//! code, and how long requests wait, for a given cold-start time.
//!
//! The model (docs/benchmarks.md repeats it):
//! - Requests arrive at given times and each needs a given service time on one replica slot; a
//!   replica (one GPU) serves up to `concurrency` requests at once, first come first served.
//! - A request that finds no free slot (counting slots of replicas still starting) makes the
//!   autoscaler start one new replica, up to `max_replicas`. A replica is paid from the moment it
//!   is started, is ready `cold_start` seconds later, and stops `idle_timeout` seconds after its
//!   last request ends (the keep-warm window). No replica runs before the first request.
//! - A request runs on the slot where it can start earliest: an existing slot that frees up, or
//!   the new replica once it is ready.
//! - Utilisation = GPU-seconds with at least one request running / GPU-seconds paid.

/// One request of a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Arrival, seconds from the start of the trace.
    pub arrival: f64,
    /// Seconds of GPU work it needs.
    pub service: f64,
}

/// How the autoscaler behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Requests a replica serves at once.
    pub concurrency: usize,
    /// Seconds a replica stays up after its last request.
    pub idle_timeout: f64,
    /// Most replicas at once.
    pub max_replicas: usize,
}

/// What a trace cost under one cold-start time.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// GPU-seconds paid (replica lifetimes).
    pub gpu_seconds_paid: f64,
    /// GPU-seconds with application code running.
    pub gpu_seconds_busy: f64,
    /// busy / paid.
    pub utilisation: f64,
    /// Replicas started.
    pub replicas_started: usize,
    /// Median wait from arrival to start of service.
    pub p50_delay: f64,
    /// 99th percentile wait.
    pub p99_delay: f64,
    /// Longest wait.
    pub max_delay: f64,
}

struct Replica {
    started: f64,
    /// When each slot is next free (a slot never used is free at `started + cold_start`).
    slots: Vec<f64>,
    /// Busy intervals, in start order.
    busy: Vec<(f64, f64)>,
    /// End of its last request (or when it became ready, if none yet).
    last_end: f64,
}

impl Replica {
    fn stops_at(&self, idle_timeout: f64) -> f64 {
        self.last_end + idle_timeout
    }
}

/// Percentile `p` (0..=1) of sorted `values` (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Total length of the union of `intervals` (sorted by start).
fn union_length(intervals: &[(f64, f64)]) -> f64 {
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for &(s, e) in intervals {
        current = match current {
            Some((cs, ce)) if s <= ce => Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + current.map_or(0.0, |(s, e)| e - s)
}

/// Replays `requests` (sorted by arrival) against the autoscaler with replicas that take
/// `cold_start` seconds to become ready.
pub fn simulate(requests: &[Request], cold_start: f64, policy: &Policy) -> Outcome {
    let concurrency = policy.concurrency.max(1);
    let mut live: Vec<Replica> = Vec::new();
    let mut retired: Vec<Replica> = Vec::new();
    let mut delays = Vec::with_capacity(requests.len());
    let mut started = 0;
    for request in requests {
        let now = request.arrival;
        // Replicas whose keep-warm window ended before this arrival have stopped.
        let (stay, gone): (Vec<Replica>, Vec<Replica>) = live.into_iter().partition(|r| {
            r.slots.iter().any(|&f| f > now) || r.stops_at(policy.idle_timeout) > now
        });
        live = stay;
        retired.extend(gone);
        let has_free_slot = live.iter().any(|r| {
            r.slots.iter().any(|&free| {
                free <= now || (free == r.started + cold_start && r.busy.len() < concurrency)
            })
        });
        if !has_free_slot && live.len() < policy.max_replicas.max(1) {
            live.push(Replica {
                started: now,
                slots: vec![now + cold_start; concurrency],
                busy: Vec::new(),
                last_end: now + cold_start,
            });
            started += 1;
        }
        let (replica, slot, start) = live
            .iter()
            .enumerate()
            .flat_map(|(ri, r)| {
                r.slots
                    .iter()
                    .enumerate()
                    .map(move |(si, &free)| (ri, si, free.max(now)))
            })
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .expect("at least one replica");
        let end = start + request.service;
        let chosen = &mut live[replica];
        chosen.slots[slot] = end;
        chosen.busy.push((start, end));
        chosen.last_end = chosen.last_end.max(end);
        delays.push(start - now);
    }
    retired.extend(live);
    let mut paid = 0.0;
    let mut busy = 0.0;
    for r in &mut retired {
        paid += r.stops_at(policy.idle_timeout) - r.started;
        r.busy.sort_by(|a, b| a.0.total_cmp(&b.0));
        busy += union_length(&r.busy);
    }
    delays.sort_by(f64::total_cmp);
    Outcome {
        gpu_seconds_paid: paid,
        gpu_seconds_busy: busy,
        utilisation: if paid > 0.0 { busy / paid } else { 0.0 },
        replicas_started: started,
        p50_delay: percentile(&delays, 0.5),
        p99_delay: percentile(&delays, 0.99),
        max_delay: delays.last().copied().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        concurrency: 1,
        idle_timeout: 5.0,
        max_replicas: 10,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn one_request_pays_the_cold_start_its_work_and_the_keep_warm_window() {
        let out = simulate(
            &[Request {
                arrival: 0.0,
                service: 2.0,
            }],
            10.0,
            &POLICY,
        );
        assert_eq!(out.replicas_started, 1);
        assert!(close(out.gpu_seconds_paid, 17.0), "{out:?}");
        assert!(close(out.gpu_seconds_busy, 2.0));
        assert!(close(out.utilisation, 2.0 / 17.0));
        assert!(close(out.p99_delay, 10.0));
    }

    #[test]
    fn a_warm_replica_serves_the_next_request_without_a_cold_start() {
        let requests = [
            Request {
                arrival: 0.0,
                service: 2.0,
            },
            Request {
                arrival: 14.0,
                service: 2.0,
            }, // inside the keep-warm window (ends at 17)
            Request {
                arrival: 40.0,
                service: 1.0,
            }, // after it: a new replica
        ];
        let out = simulate(&requests, 10.0, &POLICY);
        assert_eq!(out.replicas_started, 2);
        // Replica 1: 0 .. 16 + 5; replica 2: 40 .. 51 + 5.
        assert!(close(out.gpu_seconds_paid, 21.0 + 16.0), "{out:?}");
        assert!(close(out.max_delay, 10.0));
        assert!(close(out.p50_delay, 10.0));
    }

    #[test]
    fn a_burst_starts_replicas_and_a_busy_slot_that_frees_first_is_used() {
        // Two requests at once: the second starts a second replica.
        let out = simulate(
            &[
                Request {
                    arrival: 0.0,
                    service: 1.0,
                },
                Request {
                    arrival: 0.0,
                    service: 1.0,
                },
            ],
            3.0,
            &POLICY,
        );
        assert_eq!(out.replicas_started, 2);
        // The second request finds the first replica busy and starts another; the third sees
        // that replica still starting with a free slot and starts none. Each runs where it can
        // start first: the busy replica frees up long before the new one is ready.
        let out = simulate(
            &[
                Request {
                    arrival: 0.0,
                    service: 10.0,
                },
                Request {
                    arrival: 105.0,
                    service: 10.0,
                },
                Request {
                    arrival: 106.0,
                    service: 1.0,
                },
            ],
            100.0,
            &POLICY,
        );
        assert_eq!(out.replicas_started, 2, "{out:?}");
        assert!(close(out.max_delay, 100.0), "{out:?}");
        // Delays 100, 5 (110 - 105) and 14 (120 - 106).
        assert!(close(out.p50_delay, 14.0), "{out:?}");
    }

    #[test]
    fn faster_cold_starts_raise_utilisation_and_cut_waits() {
        let requests: Vec<Request> = (0..200)
            .map(|i| Request {
                arrival: (i / 20) as f64 * 120.0 + (i % 20) as f64 * 0.5,
                service: 1.5,
            })
            .collect();
        let slow = simulate(&requests, 60.0, &POLICY);
        let fast = simulate(&requests, 2.0, &POLICY);
        assert!(fast.utilisation > slow.utilisation, "{fast:?} {slow:?}");
        assert!(fast.p99_delay < slow.p99_delay);
        assert!(close(fast.gpu_seconds_busy, slow.gpu_seconds_busy));
    }

    #[test]
    fn concurrency_overlaps_count_once_and_replicas_are_capped() {
        let policy = Policy {
            concurrency: 2,
            max_replicas: 1,
            ..POLICY
        };
        let requests = [
            Request {
                arrival: 0.0,
                service: 4.0,
            },
            Request {
                arrival: 0.0,
                service: 4.0,
            },
            Request {
                arrival: 0.0,
                service: 4.0,
            },
        ];
        let out = simulate(&requests, 1.0, &policy);
        assert_eq!(out.replicas_started, 1);
        // Two run 1..5, the third 5..9: busy 8 s, paid 0..9 + 5.
        assert!(close(out.gpu_seconds_busy, 8.0), "{out:?}");
        assert!(close(out.gpu_seconds_paid, 14.0));
        assert!(close(out.max_delay, 5.0));
        assert!(close(
            union_length(&[(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]),
            4.0
        ));
        assert!(close(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0));
    }
}
