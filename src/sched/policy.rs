//! Policies: per request, pick an option (cut + encoding) of a [`CostTable`].

use super::cost::{best_mix, CostTable, OptionCost};
use super::{Choice, Cut, Encoding, Estimates, SchedError, POLICY_FORMS};
use std::cell::RefCell;

/// What a policy sees when deciding.
pub struct Context<'a> {
    /// Live estimates (rate, RTT, queue) and the backlog of the device, uplink and server.
    pub estimates: Estimates,
    /// When an option's request would truly be answered if no exit answers (seconds from the
    /// decision, through every queue it joins, at the true future rate and load, with no later
    /// request), known only in simulation; only [`Oracle`] uses it.
    pub truth: Option<&'a dyn Fn(&OptionCost) -> f64>,
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Index into the table's options.
    pub index: usize,
    /// The cut and encoding.
    pub option: Choice,
    /// Latency the policy expects (seconds).
    pub expected_s: f64,
}

/// Picks an option per request: the one trait behind the live runner
/// ([`crate::split::runner::run`]) and the simulator ([`crate::sim::simulate`]), so a policy is
/// the same code in both.
pub trait Policy {
    /// The policy's name (as reported), in the parser's canonical form.
    fn name(&self) -> &str;
    /// Decides for one request.
    fn decide(&mut self, ctx: &Context<'_>) -> Decision;
    /// Whether the policy uses the estimates (then a simulator keeps them fresh with probes and
    /// a live run measures profiles and calibrates exits for it).
    fn adaptive(&self) -> bool {
        false
    }
    /// Whether the policy needs the true future ([`Context::truth`]): only a simulation has it.
    fn needs_future(&self) -> bool {
        false
    }
    /// Decides over `table` from now on: the same model's options with updated block times or
    /// exit probabilities (a live run refines its profiles after every answer). The options
    /// keep their order, so a fixed choice keeps its index.
    fn set_table(&mut self, table: &CostTable);
}

fn fixed(table: &CostTable, index: usize, est: &Estimates) -> Decision {
    let o = &table.options[index];
    Decision {
        index,
        option: o.choice,
        expected_s: o.expected(est),
    }
}

/// One option, always (device-only, server-only and static cuts).
#[derive(Debug, Clone)]
pub struct Fixed {
    name: String,
    index: usize,
    table: CostTable,
}

impl Fixed {
    /// Always `choice` (must be an option of the table).
    pub fn new(table: &CostTable, choice: Choice) -> Result<Self, SchedError> {
        let index = table
            .index(choice)
            .ok_or_else(|| SchedError::NotACandidate {
                cut: choice.cut.to_string(),
                model: table.model.clone(),
                candidates: format!("{:?}", table.candidates),
            })?;
        let name = match choice.cut {
            Cut::Device => "device".into(),
            Cut::Server => "server".into(),
            Cut::After(k) => format!("static:{}:{}", table.block_names[k], choice.encoding),
        };
        Ok(Self {
            name,
            index,
            table: table.clone(),
        })
    }

    /// Device-only.
    pub fn device_only(table: &CostTable) -> Self {
        Self {
            name: "device".into(),
            index: table.options.len() - 1,
            table: table.clone(),
        }
    }

    /// Server-only (the input as 8-bit pixels when it is an image: [`CostTable::server_choice`]).
    pub fn server_only(table: &CostTable) -> Self {
        Self {
            name: "server".into(),
            index: 0,
            table: table.clone(),
        }
    }

    /// The option index.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Policy for Fixed {
    fn name(&self) -> &str {
        &self.name
    }
    fn decide(&mut self, ctx: &Context<'_>) -> Decision {
        fixed(&self.table, self.index, &ctx.estimates)
    }
    fn set_table(&mut self, table: &CostTable) {
        self.table = table.clone();
    }
}

/// Minimises the expected latency of the cost model under the live estimates, over the options
/// whose encoding is allowed and whose accuracy (when known) meets the floor. With a backlog in
/// the estimates ([`Estimates::with_backlog`]), that is the option that finishes first given the
/// device, uplink and server queues it joins ([`OptionCost::expected`]).
#[derive(Debug, Clone)]
pub struct Dynamic {
    name: String,
    table: CostTable,
    /// Indices of the options considered.
    allowed: Vec<usize>,
    /// The options of the best mix ([`CostTable::capacity`]) at a data rate, by rate bucket.
    drain: RefCell<Option<(i64, Vec<usize>)>>,
}

/// Congestion: the best option's expected latency with the queues it joins is more than this
/// many times the best latency on idle queues. Then the request's own latency matters less than
/// how fast the backlog drains.
pub const CONGESTION_FACTOR: f64 = 2.0;

/// Rate buckets (5% wide) within which the best mix is reused rather than recomputed.
const RATE_BUCKET: f64 = 1.05;

/// The option of least `cost` among `options` (the first on ties).
fn least(
    options: impl IntoIterator<Item = usize>,
    mut cost: impl FnMut(usize) -> f64,
) -> (usize, f64) {
    let mut best = (usize::MAX, f64::INFINITY);
    for i in options {
        let t = cost(i);
        if t < best.1 || best.0 == usize::MAX {
            best = (i, t);
        }
    }
    best
}

impl Dynamic {
    /// Every option, any split encoding.
    pub fn new(table: &CostTable) -> Self {
        Self::with(table, &Encoding::ALL, None).expect("device-only is always allowed")
    }

    /// Split tensors only in `encodings`; options with known accuracy below `accuracy_floor` are
    /// excluded (device-only and server-only stay eligible as their accuracy allows).
    pub fn with(
        table: &CostTable,
        encodings: &[Encoding],
        accuracy_floor: Option<f64>,
    ) -> Result<Self, SchedError> {
        let allowed = allowed(table, encodings, accuracy_floor)?;
        let name = if encodings.len() == 1 {
            format!("dynamic-{}", encodings[0])
        } else {
            "dynamic".into()
        };
        Ok(Self {
            name,
            table: table.clone(),
            allowed,
            drain: RefCell::new(None),
        })
    }

    /// The option of least expected latency under `est`: the live-use entry point.
    ///
    /// Under congestion (the best expected latency with the queues of `est` is more than
    /// [`CONGESTION_FACTOR`] times the best on idle queues), only the options of the best mix
    /// at the estimated rate ([`CostTable::capacity`]) are considered, the one that finishes
    /// first among them chosen: the queues then drain as fast as any policy can drain them,
    /// where the option fastest for one request (often server-only) would spend the
    /// bottleneck's time on it.
    pub fn choose(&self, est: &Estimates) -> Decision {
        let options = &self.table.options;
        let (best, best_t) = least(self.allowed.iter().copied(), |i| options[i].expected(est));
        let decision = |index: usize, expected_s: f64| Decision {
            index,
            option: options[index].choice,
            expected_s,
        };
        if !self.congested(est, best_t) {
            return decision(best, best_t);
        }
        let drain = self.drain_options(est.rate_bytes_per_s);
        let (i, t) = least(drain, |i| options[i].expected(est));
        decision(i, t)
    }

    /// Whether a request whose best option is expected at `best_s` meets congested queues.
    fn congested(&self, est: &Estimates, best_s: f64) -> bool {
        if est.device_wait_s + est.uplink_wait_s + est.server_wait_s <= 0.0 {
            return false;
        }
        let idle = est.with_backlog(0.0, 0.0, 0.0);
        let options = &self.table.options;
        let (_, idle_s) = least(self.allowed.iter().copied(), |i| options[i].expected(&idle));
        best_s > CONGESTION_FACTOR * idle_s
    }

    /// The allowed options of the best mix at `rate` bytes/s (cached per 5% rate bucket).
    fn drain_options(&self, rate: f64) -> Vec<usize> {
        let bucket = (rate.max(1e-9).ln() / RATE_BUCKET.ln()).round() as i64;
        if let Some((b, v)) = &*self.drain.borrow() {
            if *b == bucket {
                return v.clone();
            }
        }
        let demands: Vec<[f64; 3]> = self
            .allowed
            .iter()
            .map(|&i| self.table.options[i].demand(rate, 1))
            .collect();
        let (_, mix) = best_mix(&demands);
        let mut v: Vec<usize> = mix.iter().map(|&(k, _)| self.allowed[k]).collect();
        if v.is_empty() {
            v = self.allowed.clone();
        }
        *self.drain.borrow_mut() = Some((bucket, v.clone()));
        v
    }

    /// The table it decides over.
    pub fn table(&self) -> &CostTable {
        &self.table
    }
}

fn allowed(
    table: &CostTable,
    encodings: &[Encoding],
    floor: Option<f64>,
) -> Result<Vec<usize>, SchedError> {
    let v: Vec<usize> = table
        .options
        .iter()
        .enumerate()
        .filter(|(_, o)| match o.choice.cut {
            Cut::After(_) => encodings.contains(&o.choice.encoding),
            _ => true,
        })
        .filter(|(_, o)| match (floor, o.accuracy) {
            (Some(f), Some(a)) => a >= f,
            _ => true,
        })
        .map(|(i, _)| i)
        .collect();
    if v.is_empty() {
        return Err(SchedError::Invalid {
            what: "accuracy floor".into(),
            reason: format!("no option reaches {floor:?}"),
        });
    }
    Ok(v)
}

impl Policy for Dynamic {
    fn name(&self) -> &str {
        &self.name
    }
    fn decide(&mut self, ctx: &Context<'_>) -> Decision {
        self.choose(&ctx.estimates)
    }
    fn adaptive(&self) -> bool {
        true
    }
    fn set_table(&mut self, table: &CostTable) {
        self.table = table.clone();
        *self.drain.borrow_mut() = None;
    }
}

/// Clairvoyant per request (simulation only): it knows the whole future trace and server load,
/// so for each option it gets the exact time its request would be answered
/// ([`Context::truth`]: the device's queue, the transfer simulated against the true trace from
/// the moment the uplink is free, the server's queue and background delay) and picks the
/// earliest. It is greedy: each request is placed as well as possible given the requests before
/// it, ignoring what it does to the requests after it (bytes it puts on the uplink, work it
/// puts on the server), so it is not a global optimum and a policy may beat it under load. At
/// low load (requests rarely overlap) it is a lower bound for any policy that decides once per
/// request. Without the truth (live) it behaves like [`Dynamic`].
#[derive(Debug, Clone)]
pub struct Oracle {
    name: String,
    inner: Dynamic,
}

impl Oracle {
    /// Over the options `Dynamic::with(table, encodings, floor)` considers.
    pub fn with(
        table: &CostTable,
        encodings: &[Encoding],
        accuracy_floor: Option<f64>,
    ) -> Result<Self, SchedError> {
        let inner = Dynamic::with(table, encodings, accuracy_floor)?;
        let name = inner.name.replace("dynamic", "oracle");
        Ok(Self { name, inner })
    }
}

impl Policy for Oracle {
    fn name(&self) -> &str {
        &self.name
    }
    fn needs_future(&self) -> bool {
        true
    }
    fn set_table(&mut self, table: &CostTable) {
        self.inner.set_table(table);
    }
    fn decide(&mut self, ctx: &Context<'_>) -> Decision {
        let Some(truth) = ctx.truth else {
            return self.inner.choose(&ctx.estimates);
        };
        let options = &self.inner.table.options;
        let wait = ctx.estimates.device_wait_s;
        let (best, best_t) = least(self.inner.allowed.iter().copied(), |i| {
            options[i].expected_given(wait, truth(&options[i]))
        });
        Decision {
            index: best,
            option: options[best].choice,
            expected_s: best_t,
        }
    }
}

/// Parses a policy name, the one parser of `run`, `demo`, `simulate` and `study`: `device`,
/// `server`, `static:<block name or index>[:fp32|fp16|int8]` (cut AFTER that block; fp32 when no
/// encoding is given), `dynamic`, `dynamic-<enc>`, `oracle`, `oracle-<enc>`.
///
/// Refused with the new form: `static:K` with a bare number (it meant "the device runs blocks
/// `0..K`" in `edgecut run`; write the block's name, or the index with an encoding), the aliases
/// `device-only` / `server-only`, and the `<block>/<enc>` labels of older reports.
pub fn parse(
    name: &str,
    table: &CostTable,
    accuracy_floor: Option<f64>,
) -> Result<Box<dyn Policy>, SchedError> {
    refuse_old_spellings(name, table)?;
    let encodings = |family: &str| -> Result<Vec<Encoding>, SchedError> {
        match name.strip_prefix(family) {
            Some("") => Ok(Encoding::ALL.to_vec()),
            Some(suffix) => suffix
                .strip_prefix('-')
                .and_then(|e| Encoding::parse(e).ok())
                .map(|e| vec![e])
                .ok_or_else(|| SchedError::UnknownPolicy(name.into())),
            None => Err(SchedError::UnknownPolicy(name.into())),
        }
    };
    Ok(match name {
        "device" => Box::new(Fixed::device_only(table)),
        "server" => Box::new(Fixed::server_only(table)),
        _ if name.starts_with("static:") => {
            let rest = &name["static:".len()..];
            let (cut, encoding) = match rest.rsplit_once(':') {
                Some((c, e)) => (
                    c,
                    Encoding::parse(e).map_err(|_| SchedError::UnknownPolicy(name.into()))?,
                ),
                None => (rest, Encoding::Fp32),
            };
            let cut = table.parse_cut(cut)?;
            Box::new(Fixed::new(table, Choice { cut, encoding })?)
        }
        _ if name.starts_with("dynamic") => Box::new(Dynamic::with(
            table,
            &encodings("dynamic")?,
            accuracy_floor,
        )?),
        _ if name.starts_with("oracle") => {
            Box::new(Oracle::with(table, &encodings("oracle")?, accuracy_floor)?)
        }
        _ => return Err(SchedError::UnknownPolicy(name.into())),
    })
}

/// The default policies of `edgecut simulate`: device, server, a static cut after every
/// candidate (fp32), dynamic and oracle.
pub fn default_names(table: &CostTable) -> Vec<String> {
    let mut v = vec!["device".to_string(), "server".to_string()];
    v.extend(
        table
            .candidates
            .iter()
            .map(|&k| format!("static:{}", table.block_names[k])),
    );
    v.push("dynamic".into());
    v.push("oracle".into());
    v
}

/// [`parse`] for a live run: the oracle is refused (it needs the future).
pub fn parse_live(name: &str, table: &CostTable) -> Result<Box<dyn Policy>, SchedError> {
    let p = parse(name, table, None)?;
    if p.needs_future() {
        return Err(SchedError::NeedsFuture(name.into()));
    }
    Ok(p)
}

/// The spellings whose meaning changed, each refused with what to write now.
fn refuse_old_spellings(name: &str, table: &CostTable) -> Result<(), SchedError> {
    let old = |hint: String| {
        Err(SchedError::OldSpelling {
            given: name.into(),
            hint,
        })
    };
    let named = |k: usize| {
        table
            .block_names
            .get(k)
            .map_or_else(|| format!("static:<block {k}>"), |b| format!("static:{b}"))
    };
    match name {
        "device-only" => return old("write `device`".into()),
        "server-only" => return old("write `server`".into()),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("static:") {
        if let Ok(k) = rest.parse::<usize>() {
            if !table.block_names.iter().any(|b| b == rest) {
                let before = k
                    .checked_sub(1)
                    .map(|p| format!(", or `{}` for what `edgecut run --policy static:{k}` once meant (blocks 0..{k} on the device)", named(p)))
                    .unwrap_or_default();
                return old(format!(
                    "static:<block> now cuts AFTER that block: write `{}` to cut after block {k}{before}; an index needs an encoding: `static:{k}:fp32`",
                    named(k)
                ));
            }
        }
        if let Some((block, enc)) = rest.split_once('/') {
            return old(format!(
                "write `static:{block}:{enc}` (a colon before the encoding)"
            ));
        }
    }
    if name.starts_with("static") && !name.starts_with("static:") {
        return old(format!(
            "write `static:<block name or index>[:fp32|fp16|int8]`; known: {POLICY_FORMS}"
        ));
    }
    Ok(())
}
