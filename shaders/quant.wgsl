// Packing of split tensors for the wire: f32 -> f16 pairs, f32 -> int8 quads with a per-tensor
// scale and zero point, and back. Words are little-endian: element 2i (f16) or 4i (int8) sits in
// the low bits of word i, so the packed words are the byte stream the wire carries.
//
// int8_range:      one workgroup; r[0..4] = (scale, zero_point, min, max) of x[0..len] with the
//                  range widened to include 0; scale = (hi - lo) / 255 (1 when hi == lo),
//                  zero_point = clamp(round(-128 - lo / scale), -128, 127)
// quantize_int8:   y[i] = 4 codes clamp(round(x / scale) + zero_point, -128, 127), one per byte
// dequantize_int8: y[i] = (code - zero_point) * scale, as f32 bits, with the scale and zero point
//                  of sample row r = i / row at range[2r], range[2r + 1] (a batch of requests
//                  each quantised on its own; row = len for one per-tensor pair)
// pack_f16:        y[i] = pack2x16float(x[2i], x[2i + 1])
// unpack_f16:      y[i] = unpack2x16float(x[i / 2])[i % 2], as f32 bits
// Non-finite inputs give unspecified codes (the wire carries finite activations).
//
// Bindings (group 0):
//   0: uniform QuantParams
//   1: x     array<u32> (read): f32 bits (int8_range, quantize_int8, pack_f16) or packed words
//   2: range array<f32> (read): (scale, zero_point, min, max) written by int8_range, or
//                               (scale, zero_point) per sample row received from peers
//   3: y     array<u32> (write): packed words, f32 bits, or the range (int8_range)
// Override constants: WG (workgroup size, at most 256).

struct QuantParams {
    len: u32,
    words: u32,
    row: u32,
    _pad: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> params: QuantParams;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> range: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<u32>;

var<workgroup> lows: array<f32, 256>;
var<workgroup> highs: array<f32, 256>;

fn linear_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

@compute @workgroup_size(WG)
fn int8_range(@builtin(local_invocation_index) lid: u32) {
    var lo = 3.4028235e38;
    var hi = -3.4028235e38;
    for (var i = lid; i < params.len; i += WG) {
        let v = bitcast<f32>(x[i]);
        lo = min(lo, v);
        hi = max(hi, v);
    }
    lows[lid] = lo;
    highs[lid] = hi;
    workgroupBarrier();
    if lid != 0u { return; }
    for (var t = 1u; t < WG; t++) {
        lo = min(lo, lows[t]);
        hi = max(hi, highs[t]);
    }
    let wide_lo = min(lo, 0.0);
    let wide_hi = max(hi, 0.0);
    var scale = (wide_hi - wide_lo) / 255.0;
    if scale <= 0.0 { scale = 1.0; }
    let zero_point = clamp(round(-128.0 - wide_lo / scale), -128.0, 127.0);
    y[0] = bitcast<u32>(scale);
    y[1] = bitcast<u32>(zero_point);
    y[2] = bitcast<u32>(lo);
    y[3] = bitcast<u32>(hi);
}

@compute @workgroup_size(WG)
fn quantize_int8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = linear_id(gid, nwg);
    if w >= params.words { return; }
    let scale = range[0];
    let zero_point = range[1];
    var word = 0u;
    for (var j = 0u; j < 4u; j++) {
        let i = 4u * w + j;
        if i < params.len {
            let q = clamp(round(bitcast<f32>(x[i]) / scale) + zero_point, -128.0, 127.0);
            word |= (bitcast<u32>(i32(q)) & 0xffu) << (8u * j);
        }
    }
    y[w] = word;
}

@compute @workgroup_size(WG)
fn dequantize_int8(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if i >= params.len { return; }
    let byte = (x[i / 4u] >> (8u * (i % 4u))) & 0xffu;
    let code = bitcast<i32>(byte << 24u) >> 24u;
    let r = 2u * (i / params.row);
    y[i] = bitcast<u32>((f32(code) - range[r + 1u]) * range[r]);
}

@compute @workgroup_size(WG)
fn pack_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = linear_id(gid, nwg);
    if w >= params.words { return; }
    let a = bitcast<f32>(x[2u * w]);
    var b = 0.0;
    if 2u * w + 1u < params.len { b = bitcast<f32>(x[2u * w + 1u]); }
    y[w] = pack2x16float(vec2<f32>(a, b));
}

@compute @workgroup_size(WG)
fn unpack_f16(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = linear_id(gid, nwg);
    if i >= params.len { return; }
    let pair = unpack2x16float(x[i / 2u]);
    y[i] = bitcast<u32>(pair[i % 2u]);
}
