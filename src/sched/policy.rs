//! Policies: per request, pick an option (cut + encoding) of a [`CostTable`].

use super::cost::{CostTable, OptionCost};
use super::{Choice, Cut, Encoding, Estimates, SchedError};

/// What a policy sees when deciding.
pub struct Context<'a> {
    /// Live estimates (rate, RTT, queue).
    pub estimates: Estimates,
    /// The true remote seconds (transfer + RTT + queue before the server computes) of an option,
    /// known only in simulation; only [`Oracle`] uses it.
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

/// Picks an option per request.
pub trait Policy {
    /// The policy's name (as reported).
    fn name(&self) -> &str;
    /// Decides for one request.
    fn decide(&mut self, ctx: &Context<'_>) -> Decision;
    /// Whether the policy uses the estimates (then a simulator keeps them fresh with probes).
    fn adaptive(&self) -> bool {
        false
    }
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
        Self::new(
            table,
            Choice {
                cut: Cut::Device,
                encoding: Encoding::None,
            },
        )
        .expect("every table has device-only")
    }

    /// Server-only (the input as uint8 when it is an image).
    pub fn server_only(table: &CostTable) -> Self {
        let index = 0;
        Self {
            name: "server".into(),
            index,
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
}

/// Minimises the expected latency of the cost model under the live estimates, over the options
/// whose encoding is allowed and whose accuracy (when known) meets the floor.
#[derive(Debug, Clone)]
pub struct Dynamic {
    name: String,
    table: CostTable,
    /// Indices of the options considered.
    allowed: Vec<usize>,
}

impl Dynamic {
    /// Every option, any split encoding.
    pub fn new(table: &CostTable) -> Self {
        Self::with(table, &Encoding::SPLIT, None).expect("device-only is always allowed")
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
        })
    }

    /// The option of least expected latency under `est`: the live-use entry point.
    #[inline]
    pub fn choose(&self, est: &Estimates) -> Decision {
        let mut best = self.allowed[0];
        let mut best_t = f64::INFINITY;
        for &i in &self.allowed {
            let t = self.table.options[i].expected(est);
            if t < best_t {
                best_t = t;
                best = i;
            }
        }
        Decision {
            index: best,
            option: self.table.options[best].choice,
            expected_s: best_t,
        }
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
}

/// Knows the true future data rate and server load (simulation only): picks the option whose
/// expected latency under the true transfer and queue times is least. Without the truth it
/// behaves like [`Dynamic`].
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
    fn decide(&mut self, ctx: &Context<'_>) -> Decision {
        let Some(truth) = ctx.truth else {
            return self.inner.choose(&ctx.estimates);
        };
        let t = &self.inner.table;
        let mut best = self.inner.allowed[0];
        let mut best_t = f64::INFINITY;
        for &i in &self.inner.allowed {
            let o = &t.options[i];
            let remote = if o.remote() { truth(o) } else { 0.0 };
            let e = o.expected_with(remote);
            if e < best_t {
                best_t = e;
                best = i;
            }
        }
        Decision {
            index: best,
            option: t.options[best].choice,
            expected_s: best_t,
        }
    }
}

/// Parses a policy name: `device`, `server`, `static:<block name or index>[:fp32|fp16|int8]`,
/// `dynamic`, `dynamic-fp32|fp16|int8`, `oracle`, `oracle-fp32|fp16|int8`.
pub fn parse(
    name: &str,
    table: &CostTable,
    accuracy_floor: Option<f64>,
) -> Result<Box<dyn Policy>, SchedError> {
    let encs = |suffix: &str| -> Result<Vec<Encoding>, SchedError> {
        if suffix.is_empty() {
            Ok(Encoding::SPLIT.to_vec())
        } else {
            Ok(vec![
                Encoding::parse(suffix).map_err(|_| SchedError::UnknownPolicy(name.into()))?
            ])
        }
    };
    Ok(match name {
        "device" | "device-only" => Box::new(Fixed::device_only(table)),
        "server" | "server-only" => Box::new(Fixed::server_only(table)),
        _ if name.starts_with("static:") => {
            let rest = &name["static:".len()..];
            let (cut, enc) = match rest.rsplit_once(':') {
                Some((c, e)) => (c, Encoding::parse(e)?),
                None => (rest, Encoding::Fp32),
            };
            let cut = table.parse_cut(cut)?;
            Box::new(Fixed::new(table, Choice { cut, encoding: enc })?)
        }
        _ if name == "dynamic" || name.starts_with("dynamic-") => {
            let e = encs(
                name.strip_prefix("dynamic")
                    .unwrap_or("")
                    .trim_start_matches('-'),
            )?;
            Box::new(Dynamic::with(table, &e, accuracy_floor)?)
        }
        _ if name == "oracle" || name.starts_with("oracle-") => {
            let e = encs(
                name.strip_prefix("oracle")
                    .unwrap_or("")
                    .trim_start_matches('-'),
            )?;
            Box::new(Oracle::with(table, &e, accuracy_floor)?)
        }
        _ => return Err(SchedError::UnknownPolicy(name.into())),
    })
}
