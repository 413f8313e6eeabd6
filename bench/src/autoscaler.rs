//! A serverless autoscaler over a pool of GPUs, simulated: how much of the GPU time paid for runs
//! application code, how long requests wait and what it costs, for a given cold-start time and
//! a given way of holding idle GPUs (none, a fixed number, or the planner's per-window plan).
//!
//! The model (docs/benchmarks.md repeats it):
//! - Requests arrive at given times and each needs a given service time on one replica slot; a
//!   replica runs on one GPU and serves up to `concurrency` requests at once, first come first
//!   served.
//! - A request that finds no free slot (counting slots of replicas still starting) makes the
//!   autoscaler start one new replica, up to `max_replicas`: on an idle GPU of the pool if one
//!   is there (ready `cold_start` seconds after the GPU is), else on a new GPU of the cheapest
//!   offer with room, which first boots for the offer's `boot_s`. Whichever is ready first.
//! - A replica is ready `cold_start` seconds after it starts on a booted GPU, and stops
//!   `idle_timeout` seconds after its last request ends (the keep-warm window). Its GPU then
//!   returns to the pool if the buffer wants it, else is let go.
//! - The buffer: [`Buffer::None`] holds nothing idle; [`Buffer::Fixed`] keeps N GPUs idle at all
//!   times (booting replacements as replicas take them); [`Buffer::Planned`] holds, per offer,
//!   the GPUs the plan holds in the current window, asking for new ones the offer's lead ahead
//!   of the window that needs them. GPUs a buffer holds when the trace starts are ready then.
//! - A GPU is paid from when it is asked for until it is let go. Utilisation = GPU-seconds with
//!   at least one request running / GPU-seconds paid.
//! - A request runs on the slot where it can start earliest.

pub use thaw_planner::demand::Request;

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

/// Where GPUs can be had in a replay.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolOffer {
    /// Price of a GPU-hour.
    pub price_per_hour: f64,
    /// Seconds a new GPU takes to boot.
    pub boot_s: f64,
    /// Most GPUs held at once.
    pub available: u64,
}

/// What a buffer holds idle.
#[derive(Clone, Debug, PartialEq)]
pub enum Buffer {
    /// Nothing: every new replica beyond the busy ones waits for a GPU to boot.
    None,
    /// This many GPUs idle at all times, on the cheapest offers with room.
    Fixed(u64),
    /// The planner's holding: GPUs held per window and offer.
    Planned {
        /// Window length, seconds.
        window_s: f64,
        /// GPUs held, `[window][offer]`.
        held: Vec<Vec<u64>>,
        /// Seconds before its window a new GPU of each offer is asked for.
        lead_s: Vec<f64>,
    },
}

/// The GPUs of a replay: offers and what is held idle.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Where GPUs come from (at least one).
    pub offers: Vec<PoolOffer>,
    /// What is held idle.
    pub buffer: Buffer,
}

impl Pool {
    /// GPUs that are there the moment they are asked for, without limit or price: the model
    /// where only the cold start counts.
    pub fn instant() -> Pool {
        Pool {
            offers: vec![PoolOffer {
                price_per_hour: 0.0,
                boot_s: 0.0,
                available: u64::MAX,
            }],
            buffer: Buffer::None,
        }
    }
}

/// What a trace cost under one cold-start time.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// GPU-seconds paid (from asking for each GPU to letting it go).
    pub gpu_seconds_paid: f64,
    /// GPU-seconds with application code running.
    pub gpu_seconds_busy: f64,
    /// busy / paid.
    pub utilisation: f64,
    /// Replicas started.
    pub replicas_started: usize,
    /// GPUs asked for.
    pub gpus_acquired: usize,
    /// What the paid GPU time cost.
    pub cost: f64,
    /// Median wait from arrival to start of service.
    pub p50_delay: f64,
    /// 99th percentile wait.
    pub p99_delay: f64,
    /// Longest wait.
    pub max_delay: f64,
}

struct Gpu {
    offer: usize,
    acquired: f64,
    /// When it has booted.
    ready: f64,
    released: Option<f64>,
    /// Whether a replica runs on it.
    busy: bool,
}

struct Replica {
    gpu: usize,
    /// When it can serve.
    ready: f64,
    /// When each slot is next free (a slot never used is free at `ready`).
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

/// The state of one replay.
struct Replay<'a> {
    pool: &'a Pool,
    policy: &'a Policy,
    cold_start: f64,
    gpus: Vec<Gpu>,
    live: Vec<Replica>,
    retired: Vec<Replica>,
    started: usize,
    /// Past the end of the trace (and of the plan): buffers hold nothing more.
    ended: bool,
}

impl Replay<'_> {
    fn held(&self, offer: usize) -> u64 {
        self.gpus
            .iter()
            .filter(|g| g.offer == offer && g.released.is_none())
            .count() as u64
    }

    fn busy(&self, offer: usize) -> u64 {
        self.gpus
            .iter()
            .filter(|g| g.offer == offer && g.released.is_none() && g.busy)
            .count() as u64
    }

    /// GPUs of each offer the buffer wants held at `now` (busy ones included).
    fn wanted(&self, now: f64) -> Vec<u64> {
        let busy: Vec<u64> = (0..self.pool.offers.len()).map(|o| self.busy(o)).collect();
        if self.ended {
            return busy;
        }
        match &self.pool.buffer {
            Buffer::None => busy,
            Buffer::Fixed(n) => {
                let mut left = *n;
                let mut wanted = busy.clone();
                for o in self.offers_by_price() {
                    let room = self.pool.offers[o].available.saturating_sub(busy[o]);
                    let take = room.min(left);
                    wanted[o] += take;
                    left -= take;
                }
                wanted
            }
            Buffer::Planned {
                window_s,
                held,
                lead_s,
            } => {
                let at = |t: f64| {
                    let w = (t / window_s).floor() as usize;
                    held.get(w)
                };
                (0..self.pool.offers.len())
                    .map(|o| {
                        let now_w = at(now).map_or(0, |h| h[o]);
                        let ahead = at(now + lead_s[o]).map_or(0, |h| h[o]);
                        busy[o].max(now_w).max(ahead)
                    })
                    .collect()
            }
        }
    }

    fn offers_by_price(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.pool.offers.len()).collect();
        order.sort_by(|&a, &b| {
            self.pool.offers[a]
                .price_per_hour
                .total_cmp(&self.pool.offers[b].price_per_hour)
        });
        order
    }

    /// A new GPU of `offer` asked for at `now`; a buffer's GPUs at the start are ready then.
    fn acquire(&mut self, offer: usize, now: f64) -> usize {
        let ready = if now == 0.0 {
            0.0
        } else {
            now + self.pool.offers[offer].boot_s
        };
        self.gpus.push(Gpu {
            offer,
            acquired: now,
            ready,
            released: None,
            busy: false,
        });
        self.gpus.len() - 1
    }

    /// Asks for or lets go of idle GPUs until each offer holds what the buffer wants.
    fn rebalance(&mut self, now: f64) {
        for (o, want) in self.wanted(now).into_iter().enumerate() {
            let held = self.held(o);
            for _ in held..want {
                self.acquire(o, now);
            }
            if held > want {
                // Let go of the idle GPUs that would be ready last.
                let mut idle: Vec<usize> = (0..self.gpus.len())
                    .filter(|&i| {
                        let g = &self.gpus[i];
                        g.offer == o && g.released.is_none() && !g.busy
                    })
                    .collect();
                idle.sort_by(|&a, &b| self.gpus[b].ready.total_cmp(&self.gpus[a].ready));
                for &i in idle.iter().take((held - want) as usize) {
                    self.gpus[i].released = Some(now);
                }
            }
        }
    }

    /// Stops every replica whose keep-warm window ended by `now`, in order, each GPU going back
    /// to the buffer or away as the buffer wants at that moment.
    fn retire_until(&mut self, now: f64) {
        let idle_timeout = self.policy.idle_timeout;
        loop {
            let next = self
                .live
                .iter()
                .enumerate()
                .filter(|(_, r)| r.stops_at(idle_timeout) <= now)
                .min_by(|a, b| {
                    a.1.stops_at(idle_timeout)
                        .total_cmp(&b.1.stops_at(idle_timeout))
                })
                .map(|(i, _)| i);
            let Some(i) = next else { break };
            let replica = self.live.remove(i);
            let stop = replica.stops_at(idle_timeout);
            let freed = replica.gpu;
            let gpu = &mut self.gpus[freed];
            gpu.busy = false;
            gpu.ready = gpu.ready.max(stop);
            self.retired.push(replica);
            self.move_waiting_replica(freed, stop);
            self.rebalance(stop);
        }
    }

    /// A replica that has served nothing yet and waits for its GPU to boot moves to GPU `freed`,
    /// idle since `now`, when it is ready sooner there; the GPU it leaves becomes idle.
    fn move_waiting_replica(&mut self, freed: usize, now: f64) {
        let ready = now + self.cold_start;
        let waiting = self
            .live
            .iter_mut()
            .filter(|r| r.busy.is_empty() && r.ready > ready)
            .max_by(|a, b| a.ready.total_cmp(&b.ready));
        if let Some(replica) = waiting {
            let left = replica.gpu;
            replica.gpu = freed;
            replica.ready = ready;
            replica.last_end = ready;
            replica.slots.iter_mut().for_each(|s| *s = ready);
            self.gpus[freed].busy = true;
            self.gpus[left].busy = false;
        }
    }

    /// Starts a replica for a request arriving at `now` that found no free slot: on the GPU
    /// (idle in the pool, or new) where it is ready first.
    fn start_replica(&mut self, now: f64) {
        let idle = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, g)| g.released.is_none() && !g.busy)
            .map(|(i, g)| (Some(i), None, g.ready.max(now) + self.cold_start))
            .min_by(|a, b| a.2.total_cmp(&b.2));
        let fresh = self
            .offers_by_price()
            .into_iter()
            .find(|&o| self.held(o) < self.pool.offers[o].available)
            .map(|o| {
                (
                    None,
                    Some(o),
                    now + self.pool.offers[o].boot_s + self.cold_start,
                )
            });
        let choice = match (idle, fresh) {
            (Some(a), Some(b)) if b.2 < a.2 => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        };
        let Some((gpu, offer, ready)) = choice else {
            return;
        };
        let gpu = match (gpu, offer) {
            (Some(i), _) => i,
            (None, Some(o)) => {
                let i = self.acquire(o, now);
                // A GPU asked for by a request boots, even at the start of the trace.
                self.gpus[i].ready = now + self.pool.offers[o].boot_s;
                i
            }
            (None, None) => return,
        };
        self.gpus[gpu].busy = true;
        self.live.push(Replica {
            gpu,
            ready,
            slots: vec![ready; self.policy.concurrency.max(1)],
            busy: Vec::new(),
            last_end: ready,
        });
        self.started += 1;
    }

    /// Serves one request: its wait.
    fn serve(&mut self, request: &Request) -> f64 {
        let now = request.arrival;
        let concurrency = self.policy.concurrency.max(1);
        let has_free_slot = self.live.iter().any(|r| {
            r.slots
                .iter()
                .any(|&free| free <= now || (free == r.ready && r.busy.len() < concurrency))
        });
        if !has_free_slot && self.live.len() < self.policy.max_replicas.max(1) {
            self.start_replica(now);
        }
        let (replica, slot, start) = self
            .live
            .iter()
            .enumerate()
            .flat_map(|(ri, r)| {
                r.slots
                    .iter()
                    .enumerate()
                    .map(move |(si, &free)| (ri, si, free.max(now)))
            })
            .min_by(|a, b| a.2.total_cmp(&b.2))
            .expect("a replica runs: the pool has room for one");
        let end = start + request.service;
        let chosen = &mut self.live[replica];
        chosen.slots[slot] = end;
        chosen.busy.push((start, end));
        chosen.last_end = chosen.last_end.max(end);
        start - now
    }
}

/// Times at which the buffer changes what it wants: window starts and the leads before them.
fn control_times(buffer: &Buffer) -> Vec<f64> {
    let mut times = match buffer {
        Buffer::None => Vec::new(),
        Buffer::Fixed(_) => vec![0.0],
        Buffer::Planned {
            window_s,
            held,
            lead_s,
        } => (0..=held.len())
            .flat_map(|t| {
                let start = t as f64 * window_s;
                std::iter::once(start).chain(lead_s.iter().map(move |l| (start - l).max(0.0)))
            })
            .collect(),
    };
    times.sort_by(f64::total_cmp);
    times.dedup();
    times
}

/// Replays `requests` (sorted by arrival) against the autoscaler on `pool`, replicas taking
/// `cold_start` seconds to be ready on a booted GPU.
pub fn simulate(requests: &[Request], cold_start: f64, policy: &Policy, pool: &Pool) -> Outcome {
    let mut replay = Replay {
        pool,
        policy,
        cold_start,
        gpus: Vec::new(),
        live: Vec::new(),
        retired: Vec::new(),
        started: 0,
        ended: false,
    };
    let controls = control_times(&pool.buffer);
    let plan_end = match &pool.buffer {
        Buffer::Planned { window_s, held, .. } => held.len() as f64 * window_s,
        _ => 0.0,
    };
    let horizon = requests.iter().map(|r| r.arrival).fold(plan_end, f64::max);
    let mut next_control = controls.iter().peekable();
    let mut delays = Vec::with_capacity(requests.len());
    for request in requests {
        while let Some(&&t) = next_control.peek().filter(|&&&t| t <= request.arrival) {
            replay.retire_until(t);
            replay.rebalance(t);
            next_control.next();
        }
        replay.retire_until(request.arrival);
        delays.push(replay.serve(request));
        replay.rebalance(request.arrival);
    }
    for &t in next_control.filter(|&&t| t <= horizon) {
        replay.retire_until(t);
        replay.rebalance(t);
    }
    replay.retire_until(horizon);
    replay.ended = true;
    replay.rebalance(horizon);
    replay.retire_until(f64::INFINITY);
    let mut paid = 0.0;
    let mut cost = 0.0;
    for g in &replay.gpus {
        let seconds = g.released.unwrap_or(horizon) - g.acquired;
        paid += seconds;
        cost += seconds * pool.offers[g.offer].price_per_hour / 3600.0;
    }
    let mut busy = 0.0;
    for r in &mut replay.retired {
        r.busy.sort_by(|a, b| a.0.total_cmp(&b.0));
        busy += union_length(&r.busy);
    }
    delays.sort_by(f64::total_cmp);
    Outcome {
        gpu_seconds_paid: paid,
        gpu_seconds_busy: busy,
        utilisation: if paid > 0.0 { busy / paid } else { 0.0 },
        replicas_started: replay.started,
        gpus_acquired: replay.gpus.len(),
        cost,
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

    fn at(arrival: f64, service: f64) -> Request {
        Request { arrival, service }
    }

    fn one_offer(boot_s: f64, available: u64, buffer: Buffer) -> Pool {
        Pool {
            offers: vec![PoolOffer {
                price_per_hour: 3600.0,
                boot_s,
                available,
            }],
            buffer,
        }
    }

    #[test]
    fn without_a_buffer_a_new_replica_waits_for_its_gpu_to_boot() {
        let pool = one_offer(30.0, 10, Buffer::None);
        let out = simulate(&[at(0.0, 2.0)], 1.0, &POLICY, &pool);
        // Boot 30 + cold start 1, then 2 s of work and 5 s of keep-warm: 38 GPU-seconds.
        assert!(close(out.max_delay, 31.0), "{out:?}");
        assert!(close(out.gpu_seconds_paid, 38.0), "{out:?}");
        // $3600 an hour is $1 a second.
        assert!(close(out.cost, 38.0));
        assert_eq!(out.gpus_acquired, 1);
    }

    #[test]
    fn a_fixed_buffer_serves_after_the_cold_start_only_and_is_paid_while_idle() {
        let pool = one_offer(30.0, 10, Buffer::Fixed(1));
        // Two requests 100 s apart; the trace ends at the second arrival.
        let out = simulate(&[at(0.0, 2.0), at(100.0, 2.0)], 1.0, &POLICY, &pool);
        assert!(close(out.max_delay, 1.0), "{out:?}");
        // The first takes the idle GPU and the buffer asks for a replacement; the first's replica
        // stops at 8 and its GPU goes (one idle is enough). The second takes the replacement.
        // Paid: GPU 1 0..8; GPU 2 0..108 (its replica stops at 108); GPU 3, asked for at 100
        // when the second took GPU 2, is let go at once: the trace ends there.
        assert_eq!(out.gpus_acquired, 3, "{out:?}");
        assert!(close(out.gpu_seconds_paid, 8.0 + 108.0 + 0.0), "{out:?}");
        assert!(close(out.gpu_seconds_busy, 4.0));
    }

    #[test]
    fn a_planned_buffer_asks_for_gpus_a_lead_ahead_of_the_window_that_needs_them() {
        // Windows of 100 s: hold 0 GPUs in window 0, 2 in window 1, asking 40 s ahead (boot 30).
        let pool = one_offer(
            30.0,
            10,
            Buffer::Planned {
                window_s: 100.0,
                held: vec![vec![0], vec![2]],
                lead_s: vec![40.0],
            },
        );
        let out = simulate(&[at(100.0, 2.0), at(100.0, 2.0)], 1.0, &POLICY, &pool);
        // Both find a booted GPU at 100: they wait the cold start only.
        assert!(close(out.max_delay, 1.0), "{out:?}");
        assert_eq!(out.gpus_acquired, 2, "{out:?}");
        // Each GPU is paid from 60 to the end of the plan (200).
        assert!(close(out.gpu_seconds_paid, 2.0 * 140.0), "{out:?}");
        let none = simulate(
            &[at(100.0, 2.0), at(100.0, 2.0)],
            1.0,
            &POLICY,
            &one_offer(30.0, 10, Buffer::None),
        );
        assert!(close(none.max_delay, 31.0), "{none:?}");
    }

    #[test]
    fn an_exhausted_offer_makes_requests_queue_on_the_replicas_there_are() {
        let pool = one_offer(0.0, 1, Buffer::None);
        let out = simulate(&[at(0.0, 4.0), at(0.0, 4.0)], 1.0, &POLICY, &pool);
        assert_eq!(out.gpus_acquired, 1);
        // The second runs after the first: 1 + 4.
        assert!(close(out.max_delay, 5.0), "{out:?}");
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
            &Pool::instant(),
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
        let out = simulate(&requests, 10.0, &POLICY, &Pool::instant());
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
            &Pool::instant(),
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
            &Pool::instant(),
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
        let slow = simulate(&requests, 60.0, &POLICY, &Pool::instant());
        let fast = simulate(&requests, 2.0, &POLICY, &Pool::instant());
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
        let out = simulate(&requests, 1.0, &policy, &Pool::instant());
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
