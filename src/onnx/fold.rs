//! Constant folding: the operators whose inputs are all constants (weights reshaped or
//! transposed at export, and the `Shape`/`Gather`/`Slice`/`Concat`/`Unsqueeze`/`Cast` chains
//! that compute static shapes in PyTorch exports) are evaluated at import. Integer values may
//! be the batch size (`None`), which flows through data movement but not through arithmetic.

use super::graph::Node;
use super::reader::{self, Const, Data};
use crate::model::{checked_elems, MAX_TENSOR_ELEMS};

/// Row-major strides of `dims`.
pub(super) fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Element count of `dims`, bounded by [`MAX_TENSOR_ELEMS`].
pub(super) fn bounded(dims: &[usize]) -> Result<usize, String> {
    checked_elems(dims)
        .filter(|&n| n <= MAX_TENSOR_ELEMS)
        .ok_or_else(|| {
            format!("a result of shape {dims:?} is larger than {MAX_TENSOR_ELEMS} elements")
        })
}

/// An axis attribute in `-rank..rank`, made non-negative.
pub(super) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    if a < -r || a >= r {
        return Err(format!("axis {a} is outside -{r}..{r}"));
    }
    Ok(if a < 0 { (a + r) as usize } else { a as usize })
}

/// NumPy broadcast of two shapes (right-aligned, size-1 dimensions stretch).
pub(super) fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// For each element of `out`, the flat index into a tensor of `dims` broadcast to `out`.
pub(super) fn broadcast_index(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let n = out.len();
    let st = strides(dims);
    let mut bst = vec![0; n];
    for i in 0..dims.len() {
        if dims[i] != 1 {
            bst[n - dims.len() + i] = st[i];
        }
    }
    let total: usize = out.iter().product();
    let ost = strides(out);
    (0..total)
        .map(|f| (0..n).map(|i| (f / ost[i] % out[i]) * bst[i]).sum())
        .collect()
}

/// Picks elements of `c` by flat index.
fn pick(c: &Const, dims: Vec<usize>, idx: &[usize]) -> Const {
    let data = match &c.data {
        Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
        Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
    };
    Const { dims, data }
}

fn ints_const(values: Vec<Option<i64>>) -> Const {
    Const {
        dims: vec![values.len()],
        data: Data::I(values),
    }
}

/// New dims for a reshape of `dims` by an ONNX shape (`0` copies, `-1` infers).
pub(super) fn reshape_dims(
    dims: &[usize],
    shape: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let total = checked_elems(dims).ok_or("element count overflows")?;
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*dims.get(i).ok_or_else(|| {
                format!("shape {shape:?} copies dimension {i} (0), which the input {dims:?} lacks")
            })?),
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("shape {shape:?} holds an invalid entry {s}")),
        }
    }
    let known = checked_elems(&out).ok_or("element count overflows")?;
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {dims:?} to {shape:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {dims:?} ({total} elements) to {shape:?}"
        ));
    }
    Ok(out)
}

/// Folds `node` whose inputs are `inputs` (all constants; `None` for an omitted optional
/// input). Returns the outputs, or why this cannot be folded.
pub(super) fn fold(node: &Node<'_>, inputs: &[Option<&Const>]) -> Result<Vec<Const>, String> {
    let req = |i: usize| -> Result<&Const, String> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("input {i} is missing"))
    };
    let opset = node.opset;
    Ok(vec![match node.op {
        "Constant" => constant(node)?,
        "Identity" | "Dropout" => req(0)?.clone(),
        "ConstantOfShape" => {
            let shape = req(0)?.ints()?;
            let (dims, n) =
                reader::checked_dims("ConstantOfShape", &shape).map_err(|e| e.to_string())?;
            let value = match node.attr("value").and_then(|a| a.t.as_ref()) {
                Some(t) => reader::tensor(t, None).map_err(|e| e.to_string())?,
                None => Const {
                    dims: vec![1],
                    data: Data::F(vec![0.0]),
                },
            };
            let data = match value.data {
                Data::F(v) if v.len() == 1 => Data::F(vec![v[0]; n]),
                Data::I(v) if v.len() == 1 => Data::I(vec![v[0]; n]),
                _ => return Err("\"value\" must hold one element".into()),
            };
            Const { dims, data }
        }
        "Cast" => {
            let c = req(0)?;
            let to = node.int("to", 1);
            match to {
                1 | 10 | 11 | 16 => Const {
                    dims: c.dims.clone(),
                    data: Data::F(c.floats()),
                },
                2..=7 | 12 | 13 => Const {
                    dims: c.dims.clone(),
                    data: match &c.data {
                        Data::I(v) => Data::I(v.clone()),
                        Data::F(v) => Data::I(v.iter().map(|&x| Some(x as i64)).collect()),
                    },
                },
                9 => Const {
                    dims: c.dims.clone(),
                    data: Data::I(
                        c.floats()
                            .iter()
                            .map(|&x| Some((x != 0.0) as i64))
                            .collect(),
                    ),
                },
                other => return Err(format!("\"to\" = {other} is not a supported type")),
            }
        }
        "Gather" => {
            let data = req(0)?;
            let idx = req(1)?.ints()?;
            let idx_dims = req(1)?.dims.clone();
            let a = axis(node.int("axis", 0), data.dims.len())?;
            let dim = data.dims[a];
            let mut dims = data.dims[..a].to_vec();
            dims.extend_from_slice(&idx_dims);
            dims.extend_from_slice(&data.dims[a + 1..]);
            bounded(&dims)?;
            let outer: usize = data.dims[..a].iter().product();
            let inner: usize = data.dims[a + 1..].iter().product();
            let mut flat = Vec::new();
            for o in 0..outer {
                for &j in &idx {
                    let j = if j < 0 { j + dim as i64 } else { j };
                    if j < 0 || j >= dim as i64 {
                        return Err(format!("index {j} is outside 0..{dim}"));
                    }
                    let base = (o * dim + j as usize) * inner;
                    flat.extend(base..base + inner);
                }
            }
            pick(data, dims, &flat)
        }
        "Slice" => {
            let data = req(0)?;
            let rank = data.dims.len();
            let (starts, ends, axes, steps) = if opset < 10 {
                (
                    node.ints("starts").ok_or("\"starts\" is missing")?,
                    node.ints("ends").ok_or("\"ends\" is missing")?,
                    node.ints("axes"),
                    None,
                )
            } else {
                let opt = |i: usize| {
                    inputs
                        .get(i)
                        .copied()
                        .flatten()
                        .map(|c| c.ints())
                        .transpose()
                };
                (req(1)?.ints()?, req(2)?.ints()?, opt(3)?, opt(4)?)
            };
            let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("starts, ends, axes and steps must have one entry each".into());
            }
            let mut begin = vec![0i64; rank];
            let mut step = vec![1i64; rank];
            let mut dims = data.dims.clone();
            for k in 0..starts.len() {
                let a = axis(axes[k], rank)?;
                let d = data.dims[a] as i64;
                let s = steps[k];
                if s == 0 {
                    return Err("a step is 0".into());
                }
                let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
                let (b, len) = if s > 0 {
                    let b = norm(starts[k]).clamp(0, d);
                    let e = norm(ends[k]).clamp(0, d);
                    (b, if e > b { (e - b + s - 1) / s } else { 0 })
                } else {
                    let b = norm(starts[k]).clamp(0, d - 1);
                    let e = norm(ends[k]).clamp(-1, d - 1);
                    (b, if b > e { (b - e + (-s) - 1) / (-s) } else { 0 })
                };
                begin[a] = b;
                step[a] = s;
                dims[a] = len as usize;
            }
            let total = bounded(&dims)?;
            let ost = strides(&dims);
            let ist = strides(&data.dims);
            let flat: Vec<usize> = (0..total)
                .map(|f| {
                    (0..rank)
                        .map(|i| {
                            let k = (f / ost[i] % dims[i]) as i64;
                            (begin[i] + k * step[i]) as usize * ist[i]
                        })
                        .sum()
                })
                .collect();
            pick(data, dims, &flat)
        }
        "Concat" => {
            let pieces: Vec<&Const> = inputs.iter().flatten().copied().collect();
            let first = pieces.first().ok_or("no inputs")?;
            let rank = first.dims.len();
            let a = axis(node.int("axis", 0), rank.max(1))?;
            if rank == 0 {
                return Err("cannot concatenate scalars".into());
            }
            let mut dims = first.dims.clone();
            dims[a] = 0;
            for p in &pieces {
                if p.dims.len() != rank
                    || p.dims
                        .iter()
                        .enumerate()
                        .any(|(i, &d)| i != a && d != first.dims[i])
                {
                    return Err(format!(
                        "pieces {:?} and {:?} do not concatenate on axis {a}",
                        first.dims, p.dims
                    ));
                }
                dims[a] += p.dims[a];
            }
            bounded(&dims)?;
            let outer: usize = dims[..a].iter().product();
            let inner: usize = dims[a + 1..].iter().product();
            let float = pieces.iter().any(|p| matches!(p.data, Data::F(_)));
            let mut f = Vec::new();
            let mut i = Vec::new();
            for o in 0..outer {
                for p in &pieces {
                    let run = p.dims[a] * inner;
                    let range = o * run..(o + 1) * run;
                    match (&p.data, float) {
                        (_, true) => f.extend_from_slice(&p.floats()[range]),
                        (Data::I(v), false) => i.extend_from_slice(&v[range]),
                        (Data::F(_), false) => {
                            unreachable!("float is true when any piece is float")
                        }
                    }
                }
            }
            Const {
                dims,
                data: if float { Data::F(f) } else { Data::I(i) },
            }
        }
        "Unsqueeze" | "Squeeze" => {
            let c = req(0)?;
            let axes = if opset < 13 {
                node.ints("axes")
            } else {
                inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .map(|a| a.ints())
                    .transpose()?
            };
            let dims = squeeze_dims(&c.dims, axes.as_deref(), node.op == "Unsqueeze")?;
            Const {
                dims,
                data: c.data.clone(),
            }
        }
        "Reshape" => {
            let c = req(0)?;
            let shape = req(1)?.ints()?;
            let dims = reshape_dims(&c.dims, &shape, node.int("allowzero", 0) != 0)?;
            Const {
                dims,
                data: c.data.clone(),
            }
        }
        "Flatten" => {
            let c = req(0)?;
            let a = axis(node.int("axis", 1), c.dims.len() + 1)?;
            let dims = vec![c.dims[..a].iter().product(), c.dims[a..].iter().product()];
            Const {
                dims,
                data: c.data.clone(),
            }
        }
        "Transpose" => {
            let c = req(0)?;
            let rank = c.dims.len();
            let perm: Vec<usize> = match node.ints("perm") {
                Some(p) => p.iter().map(|&x| axis(x, rank)).collect::<Result<_, _>>()?,
                None => (0..rank).rev().collect(),
            };
            let mut seen = vec![false; rank];
            if perm.len() != rank || perm.iter().any(|&p| std::mem::replace(&mut seen[p], true)) {
                return Err(format!("perm {perm:?} is not a permutation of 0..{rank}"));
            }
            let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
            let ist = strides(&c.dims);
            let ost = strides(&dims);
            let total: usize = dims.iter().product();
            let flat: Vec<usize> = (0..total)
                .map(|f| {
                    (0..rank)
                        .map(|i| (f / ost[i] % dims[i]) * ist[perm[i]])
                        .sum()
                })
                .collect();
            pick(c, dims, &flat)
        }
        "Shape" => {
            let c = req(0)?;
            let values: Vec<Option<i64>> = c.dims.iter().map(|&d| Some(d as i64)).collect();
            ints_const(shape_range(node, values))
        }
        "Add" | "Sub" | "Mul" | "Div" => arithmetic(node.op, req(0)?, req(1)?)?,
        "Neg" | "Sqrt" | "Reciprocal" => {
            let c = req(0)?;
            let f = |x: f32| match node.op {
                "Neg" => -x,
                "Sqrt" => x.sqrt(),
                _ => 1.0 / x,
            };
            match (&c.data, node.op) {
                (Data::I(v), "Neg") => Const {
                    dims: c.dims.clone(),
                    data: Data::I(v.iter().map(|x| x.map(|x| x.wrapping_neg())).collect()),
                },
                _ => Const {
                    dims: c.dims.clone(),
                    data: Data::F(c.floats().into_iter().map(f).collect()),
                },
            }
        }
        other => return Err(format!("{other} on constant inputs cannot be folded")),
    }])
}

/// The `start`/`end` attributes of `Shape` (opset 15) applied to a shape.
pub(super) fn shape_range(node: &Node<'_>, values: Vec<Option<i64>>) -> Vec<Option<i64>> {
    let r = values.len() as i64;
    let norm = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = norm(node.int("start", 0));
    let end = norm(node.int("end", r));
    if start >= end {
        return Vec::new();
    }
    values[start..end].to_vec()
}

/// Dims after `Squeeze` (`unsqueeze` false) or `Unsqueeze` of `axes`.
pub(super) fn squeeze_dims(
    dims: &[usize],
    axes: Option<&[i64]>,
    unsqueeze: bool,
) -> Result<Vec<usize>, String> {
    if unsqueeze {
        let axes = axes.ok_or("\"axes\" is missing")?;
        let rank = dims.len() + axes.len();
        let mut at: Vec<usize> = axes
            .iter()
            .map(|&a| axis(a, rank))
            .collect::<Result<_, _>>()?;
        at.sort_unstable();
        if at.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("axes {axes:?} repeat an axis"));
        }
        let mut src = dims.iter();
        Ok((0..rank)
            .map(|i| {
                if at.contains(&i) {
                    1
                } else {
                    *src.next().unwrap_or(&1)
                }
            })
            .collect())
    } else {
        let at: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&x| axis(x, dims.len()))
                .collect::<Result<_, _>>()?,
            None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
        };
        if let Some(&i) = at.iter().find(|&&i| dims[i] != 1) {
            return Err(format!(
                "cannot squeeze axis {i} of size {} in {dims:?}",
                dims[i]
            ));
        }
        Ok(dims
            .iter()
            .enumerate()
            .filter(|(i, _)| !at.contains(i))
            .map(|(_, &d)| d)
            .collect())
    }
}

/// Elementwise arithmetic on constants with broadcasting; the batch size (`None`) only passes
/// through identities (`+ 0`, `- 0`, `* 1`, `/ 1`).
fn arithmetic(op: &str, a: &Const, b: &Const) -> Result<Const, String> {
    let dims = broadcast(&a.dims, &b.dims)
        .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.dims, b.dims))?;
    bounded(&dims)?;
    let ia = broadcast_index(&a.dims, &dims);
    let ib = broadcast_index(&b.dims, &dims);
    let data = match (&a.data, &b.data) {
        (Data::I(x), Data::I(y)) => {
            let mut out = Vec::with_capacity(ia.len());
            for (&i, &j) in ia.iter().zip(&ib) {
                out.push(match (x[i], y[j]) {
                    (Some(p), Some(q)) => Some(
                        match op {
                            "Add" => p.checked_add(q),
                            "Sub" => p.checked_sub(q),
                            "Mul" => p.checked_mul(q),
                            _ => p.checked_div(q),
                        }
                        .ok_or("integer overflow or division by zero")?,
                    ),
                    (None, Some(0)) if matches!(op, "Add" | "Sub") => None,
                    (None, Some(1)) if matches!(op, "Mul" | "Div") => None,
                    (Some(0), None) if op == "Add" => None,
                    (Some(1), None) if op == "Mul" => None,
                    _ => {
                        return Err("integer arithmetic on the batch size cannot be folded (the batch stays dynamic)".into())
                    }
                });
            }
            Data::I(out)
        }
        _ => {
            let (x, y) = (a.floats(), b.floats());
            Data::F(
                ia.iter()
                    .zip(&ib)
                    .map(|(&i, &j)| match op {
                        "Add" => x[i] + y[j],
                        "Sub" => x[i] - y[j],
                        "Mul" => x[i] * y[j],
                        _ => x[i] / y[j],
                    })
                    .collect(),
            )
        }
    };
    Ok(Const { dims, data })
}

/// The value of a `Constant` node.
fn constant(node: &Node<'_>) -> Result<Const, String> {
    if let Some(t) = node.attr("value").and_then(|a| a.t.as_ref()) {
        return reader::tensor(t, None).map_err(|e| e.to_string());
    }
    if let Some(f) = node.attr("value_float").and_then(|a| a.f) {
        return Ok(Const {
            dims: vec![],
            data: Data::F(vec![f]),
        });
    }
    if let Some(a) = node.attr("value_floats") {
        return Ok(Const {
            dims: vec![a.floats.len()],
            data: Data::F(a.floats.clone()),
        });
    }
    if let Some(i) = node.attr("value_int").and_then(|a| a.i) {
        return Ok(Const {
            dims: vec![],
            data: Data::I(vec![Some(i)]),
        });
    }
    if let Some(a) = node.attr("value_ints") {
        return Ok(ints_const(a.ints.iter().map(|&x| Some(x)).collect()));
    }
    Err("only tensor, float(s) and int(s) values are supported".into())
}
