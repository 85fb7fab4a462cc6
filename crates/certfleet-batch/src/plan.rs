//! What a batch needs and how long the rate limits make it take: the numbers
//! `certfleet batch plan FILE` prints.
//!
//! The planner simulates the governor's buckets ([`crate::gcra`]) for one account, taking
//! each certificate as early as its buckets allow while others go ahead (a certificate
//! waiting for its registered domain does not hold up other domains), and assumes
//! issuance itself takes no time and nothing fails: the result is a lower bound.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use crate::batch_file::CertRequest;
use crate::gcra::{BucketKey, BucketState, Limit};
use crate::governor::{NameSet, name_set_key, new_orders_key, registered_domain_key};
use crate::limits::{Limits, format_duration};

/// The account key used in the simulation's bucket names.
const PLAN_ACCOUNT: &str = "(batch account)";

/// The plan of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Certificates to issue (one order each).
    pub certificates: usize,
    /// New orders needed (one per certificate when nothing fails).
    pub orders: usize,
    /// Names over all certificates.
    pub names: usize,
    /// Distinct registered domains.
    pub registered_domains: usize,
    /// Registered domains with the most certificates, most first (at most 5).
    pub busiest_domains: Vec<(String, usize)>,
    pub start: OffsetDateTime,
    /// When the last certificate can be ordered at the earliest.
    pub earliest_finish: OffsetDateTime,
    /// The bucket that held up the last certificate, if any did.
    pub limited_by: Option<BucketKey>,
    /// Earliest order time per certificate, in batch order (`None`: never, see
    /// [`Plan::impossible`]).
    pub schedule: Vec<Option<OffsetDateTime>>,
    /// Lines of certificates no limit lets through (a bucket of capacity 0).
    pub impossible: Vec<usize>,
}

impl Plan {
    /// `earliest_finish − start`.
    pub fn duration(&self) -> Duration {
        Duration::try_from(self.earliest_finish - self.start).unwrap_or(Duration::ZERO)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "certificates:        {}", self.certificates)?;
        writeln!(f, "new orders:          {}", self.orders)?;
        writeln!(f, "names:               {}", self.names)?;
        writeln!(f, "registered domains:  {}", self.registered_domains)?;
        if let Some((d, n)) = self.busiest_domains.first() {
            writeln!(f, "busiest domain:      {d} ({n} certificates)")?;
        }
        let finish = self
            .earliest_finish
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|_| fmt::Error)?;
        write!(
            f,
            "earliest finish:     {finish} (in {})",
            format_duration(self.duration())
        )?;
        if let Some(k) = &self.limited_by {
            write!(f, ", limited by {k}")?;
        }
        if !self.impossible.is_empty() {
            write!(
                f,
                "\nnever possible:      {} certificate(s) (lines {:?})",
                self.impossible.len(),
                self.impossible
            )?;
        }
        Ok(())
    }
}

/// Plans `certs` from fresh buckets.
pub fn plan(certs: &[CertRequest], limits: &Limits, start: OffsetDateTime) -> Plan {
    plan_from(certs, limits, start, &BTreeMap::new())
}

/// Plans `certs` from the given bucket states (for example those in the store, so tokens
/// spent by earlier runs count).
pub fn plan_from(
    certs: &[CertRequest],
    limits: &Limits,
    start: OffsetDateTime,
    initial: &BTreeMap<BucketKey, BucketState>,
) -> Plan {
    let mut per_domain: BTreeMap<String, usize> = BTreeMap::new();
    let mut all_names = 0;
    let jobs: Vec<Vec<(BucketKey, Limit)>> = certs
        .iter()
        .map(|c| {
            let set = NameSet::new(&c.names);
            all_names += c.names.len();
            let domains: BTreeSet<String> = set.registered_domains();
            let mut keys = Vec::new();
            if let Some(l) = limits.new_orders_per_account {
                keys.push((new_orders_key(PLAN_ACCOUNT), l));
            }
            for d in domains {
                if let Some(l) = limits.certificates_per_registered_domain {
                    keys.push((registered_domain_key(&d), l));
                }
                *per_domain.entry(d).or_default() += 1;
            }
            if let Some(l) = limits.certificates_per_name_set {
                keys.push((name_set_key(&set), l));
            }
            keys
        })
        .collect();
    let mut busiest: Vec<(String, usize)> =
        per_domain.iter().map(|(d, n)| (d.clone(), *n)).collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let registered_domains = busiest.len();
    busiest.truncate(5);

    let mut sim = Simulation::new(&jobs, start, initial);
    sim.run();
    let earliest_finish = sim
        .schedule
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(start);
    Plan {
        certificates: certs.len(),
        orders: certs.len(),
        names: all_names,
        registered_domains,
        busiest_domains: busiest,
        start,
        earliest_finish,
        limited_by: sim.limited_by,
        impossible: sim.impossible.iter().map(|i| certs[*i].line).collect(),
        schedule: sim.schedule,
    }
}

/// Event simulation: a heap of candidate times; a certificate blocked by a bucket waits in
/// that bucket's FIFO, and only the front of each FIFO is in the heap, so a thousand
/// certificates behind one registered domain cost one heap entry, not a thousand.
struct Simulation<'j> {
    jobs: &'j [Vec<(BucketKey, Limit)>],
    tats: HashMap<BucketKey, OffsetDateTime>,
    clock: OffsetDateTime,
    heap: BinaryHeap<Reverse<(OffsetDateTime, usize)>>,
    fronts: Vec<Option<BucketKey>>,
    waiting: HashMap<BucketKey, VecDeque<usize>>,
    blocked_by: Vec<Option<BucketKey>>,
    schedule: Vec<Option<OffsetDateTime>>,
    impossible: Vec<usize>,
    limited_by: Option<BucketKey>,
}

impl<'j> Simulation<'j> {
    fn new(
        jobs: &'j [Vec<(BucketKey, Limit)>],
        start: OffsetDateTime,
        initial: &BTreeMap<BucketKey, BucketState>,
    ) -> Simulation<'j> {
        let tats = initial
            .iter()
            .filter_map(|(k, s)| {
                let until = match (s.tat, s.paused_until) {
                    (Some(t), Some(p)) => Some(t.max(p)),
                    (t, p) => t.or(p),
                };
                until.map(|t| (k.clone(), t))
            })
            .collect();
        Simulation {
            jobs,
            tats,
            clock: start,
            heap: (0..jobs.len()).map(|i| Reverse((start, i))).collect(),
            fronts: vec![None; jobs.len()],
            waiting: HashMap::new(),
            blocked_by: vec![None; jobs.len()],
            schedule: vec![None; jobs.len()],
            impossible: Vec::new(),
            limited_by: None,
        }
    }

    /// The earliest time job `i` can go at or after `now`, and the bucket that decides it.
    fn earliest(
        &self,
        i: usize,
        now: OffsetDateTime,
    ) -> Option<(OffsetDateTime, Option<&'j BucketKey>)> {
        let mut best = (now, None);
        for (key, limit) in &self.jobs[i] {
            let at = limit.earliest(self.tats.get(key).copied(), 1, now)?;
            if at > best.0 {
                best = (at, Some(key));
            }
        }
        Some(best)
    }

    fn release_front(&mut self, i: usize, now: OffsetDateTime) {
        let Some(key) = self.fronts[i].take() else {
            return;
        };
        if let Some(q) = self.waiting.get_mut(&key) {
            q.pop_front();
            if let Some(&next) = q.front() {
                self.fronts[next] = Some(key);
                self.heap.push(Reverse((now, next)));
            }
        }
    }

    fn run(&mut self) {
        // Every pop schedules a job, drops an impossible one, or moves a job to a later
        // time; the bound only guards against a bug turning that into a spin.
        let bound = self.jobs.len().saturating_mul(64).saturating_add(1024);
        for _ in 0..bound {
            let Some(Reverse((t, i))) = self.heap.pop() else {
                return;
            };
            let now = t.max(self.clock);
            match self.earliest(i, now) {
                None => {
                    self.impossible.push(i);
                    self.release_front(i, now);
                }
                Some((at, _)) if at <= now => {
                    self.clock = now;
                    for (key, limit) in &self.jobs[i] {
                        let tat = limit.take(self.tats.get(key).copied(), 1, now);
                        self.tats.insert(key.clone(), tat);
                    }
                    self.schedule[i] = Some(now);
                    // The clock never goes back: this is the latest job so far.
                    self.limited_by = self.blocked_by[i].clone();
                    self.release_front(i, now);
                }
                Some((at, key)) => {
                    let key = key.cloned();
                    self.blocked_by[i] = key.clone();
                    if self.fronts[i] == key || key.is_none() {
                        self.heap.push(Reverse((at, i)));
                        continue;
                    }
                    self.release_front(i, now);
                    let Some(key) = key else { continue };
                    let q = self.waiting.entry(key.clone()).or_default();
                    q.push_back(i);
                    if q.len() == 1 {
                        self.fronts[i] = Some(key);
                        self.heap.push(Reverse((at, i)));
                    }
                }
            }
        }
        tracing::warn!("batch plan simulation stopped at its iteration bound");
    }
}

#[cfg(test)]
mod tests;
