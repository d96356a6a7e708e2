// Convolutions in subgroup_tile.wgsl's tiles: each invocation computes 32 output channels
// (the tile's rows, weight rows shared through the subgroup) x 8 consecutive output pixels of
// one sample. A workgroup covers pixel tiles of one 32-channel block. Channels past the last
// are computed on a repeated weight row and never stored; so are pixels past the plane's end.
//
// conv1x1_subgroup:        a 1x1 stride-1 unpadded convolution as a GEMM per sample,
//                          Y[Cout, HW] = W[Cout, Cin] * X[Cin, HW], with HW % 4 == 0 and
//                          in_channels % 4 == 0: pixel quads as vec4 loads and stores. Per four
//                          input channels a lane makes 4 weight and 8 pixel vec4 loads for 1024
//                          multiply-adds (conv1x1_vec4: 8 + 8 loads for 256). Pixels past the
//                          plane's end read the next plane (or, clamped, the buffer's end).
// conv1x1_subgroup_scalar: the same for in_channels % 4 == 0 only: scalar pixel loads and
//                          stores (7 x 7 planes). (vec4 stores instead of scalar ones measured
//                          1.25x faster on a 56 x 56 plane, which is why both variants exist:
//                          one entry point cannot use both views of a binding.)
// conv_subgroup:           any one-group convolution as an implicit GEMM, Y = W[Cout, Cin * KH
//                          * KW] * im2col(X): each lane gathers its 8 pixels' window values
//                          (zeros in the padding) four reduction terms at a time, and loads
//                          weights as scalars (the depth need not be a multiple of 4). As many
//                          loads per multiply-add as conv1x1_subgroup_scalar (EfficientNet's
//                          3 x 3 stride-2 stem: 27 terms).
//
// With GATED (the 1x1 kernels), input channel c of sample b is scaled by gate[b, c] as it is
// loaded: a squeeze-excite gate (x * sigmoid(...), one value per channel) fused into the 1x1
// projection that follows it, instead of a separate multiply writing and re-reading the whole
// tensor.

// Bindings (group 0; 0-3 in conv_common.wgsl): 4 the gate [batch, in_channels] (read; bound
// but unread without GATED), 5 the output.
@group(0) @binding(4) var<storage, read> gate4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> y4: array<vec4<f32>>;

// Override constants: WG (workgroup size), GATED (scale input channels by the gate), KH, KW
// (conv_subgroup's kernel).
override GATED: bool = false;
override KH: u32 = 1u;
override KW: u32 = 1u;

// The gate of sample b's input channels c4*4..c4*4+3 (ones without GATED).
fn gate_of(b: u32, c4: u32) -> vec4<f32> {
    if !GATED { return vec4<f32>(1.0); }
    return gate4[b * (params.in_channels / 4u) + c4];
}

// Pixels of four input channels (one column each), each channel scaled by its gate.
fn scaled(a: mat4x4<f32>, g: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a[0] * g.x, a[1] * g.y, a[2] * g.z, a[3] * g.w);
}

// One invocation's share of the work.
struct Job {
    // False for lanes past the last tile (they compute the last one again and store nothing).
    live: bool,
    b: u32,
    p0: u32,
    oc0: u32,
    // The weight rows (output channels, clamped to the last) this lane loads for its subgroup.
    r0: u32,
    r1: u32,
    r2: u32,
    r3: u32,
}

fn job(lid: u32, wid: vec3<u32>, nwg: vec3<u32>, sid: u32) -> Job {
    let hw = params.out_h * params.out_w;
    let tiles = (hw + 7u) / 8u;
    let all_tiles = params.batch * tiles;
    let per_block = (all_tiles + WG - 1u) / WG; // workgroups per channel block
    let g = wid.x + wid.y * nwg.x;
    let oc0 = (g / per_block) * TILE_ROWS;
    let t = (g % per_block) * WG + lid;
    let tc = min(t, all_tiles - 1u);
    let lane = sid % 8u;
    let last = params.out_channels - 1u;
    return Job(t < all_tiles, tc / tiles, (tc % tiles) * 8u, oc0,
               min(oc0 + lane, last), min(oc0 + 8u + lane, last),
               min(oc0 + 16u + lane, last), min(oc0 + 24u + lane, last));
}

// Channel oc0 + c's pixels p0..p0+7 as two vec4 stores (those in the plane; none past the
// last channel).
fn store_quads(j: Job, c: u32, m: mat2x4<f32>) {
    let oc = j.oc0 + c;
    if oc >= params.out_channels { return; }
    let hw4 = params.out_h * params.out_w / 4u;
    let q0 = j.p0 / 4u;
    let o = (j.b * params.out_channels + oc) * hw4 + q0;
    y4[o] = epilogue4(m[0], oc);
    if q0 + 1u < hw4 { y4[o + 1u] = epilogue4(m[1], oc); }
}

// The same with scalar stores.
fn store_pixels8(j: Job, c: u32, m: mat2x4<f32>) {
    let oc = j.oc0 + c;
    if oc >= params.out_channels { return; }
    store8(j.b, oc, j.p0, params.out_h * params.out_w, m[0], m[1]);
}

// The stores are spelled out: a loop over an array of the tile's channels measured 1.7x slower
// (lavapipe copies the array to memory).
fn store_tile_quads(j: Job, t: Tile) {
    store_quads(j, 0u, t.c0);
    store_quads(j, 1u, t.c1);
    store_quads(j, 2u, t.c2);
    store_quads(j, 3u, t.c3);
    store_quads(j, 4u, t.c4);
    store_quads(j, 5u, t.c5);
    store_quads(j, 6u, t.c6);
    store_quads(j, 7u, t.c7);
    store_quads(j, 8u, t.c8);
    store_quads(j, 9u, t.c9);
    store_quads(j, 10u, t.c10);
    store_quads(j, 11u, t.c11);
    store_quads(j, 12u, t.c12);
    store_quads(j, 13u, t.c13);
    store_quads(j, 14u, t.c14);
    store_quads(j, 15u, t.c15);
    store_quads(j, 16u, t.c16);
    store_quads(j, 17u, t.c17);
    store_quads(j, 18u, t.c18);
    store_quads(j, 19u, t.c19);
    store_quads(j, 20u, t.c20);
    store_quads(j, 21u, t.c21);
    store_quads(j, 22u, t.c22);
    store_quads(j, 23u, t.c23);
    store_quads(j, 24u, t.c24);
    store_quads(j, 25u, t.c25);
    store_quads(j, 26u, t.c26);
    store_quads(j, 27u, t.c27);
    store_quads(j, 28u, t.c28);
    store_quads(j, 29u, t.c29);
    store_quads(j, 30u, t.c30);
    store_quads(j, 31u, t.c31);
}

fn store_tile_pixels(j: Job, t: Tile) {
    store_pixels8(j, 0u, t.c0);
    store_pixels8(j, 1u, t.c1);
    store_pixels8(j, 2u, t.c2);
    store_pixels8(j, 3u, t.c3);
    store_pixels8(j, 4u, t.c4);
    store_pixels8(j, 5u, t.c5);
    store_pixels8(j, 6u, t.c6);
    store_pixels8(j, 7u, t.c7);
    store_pixels8(j, 8u, t.c8);
    store_pixels8(j, 9u, t.c9);
    store_pixels8(j, 10u, t.c10);
    store_pixels8(j, 11u, t.c11);
    store_pixels8(j, 12u, t.c12);
    store_pixels8(j, 13u, t.c13);
    store_pixels8(j, 14u, t.c14);
    store_pixels8(j, 15u, t.c15);
    store_pixels8(j, 16u, t.c16);
    store_pixels8(j, 17u, t.c17);
    store_pixels8(j, 18u, t.c18);
    store_pixels8(j, 19u, t.c19);
    store_pixels8(j, 20u, t.c20);
    store_pixels8(j, 21u, t.c21);
    store_pixels8(j, 22u, t.c22);
    store_pixels8(j, 23u, t.c23);
    store_pixels8(j, 24u, t.c24);
    store_pixels8(j, 25u, t.c25);
    store_pixels8(j, 26u, t.c26);
    store_pixels8(j, 27u, t.c27);
    store_pixels8(j, 28u, t.c28);
    store_pixels8(j, 29u, t.c29);
    store_pixels8(j, 30u, t.c30);
    store_pixels8(j, 31u, t.c31);
}

@compute @workgroup_size(WG)
fn conv1x1_subgroup(@builtin(local_invocation_index) lid: u32,
                    @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(subgroup_invocation_id) sid: u32) {
    let j = job(lid, wid, nwg, sid);
    let hw4 = params.out_h * params.out_w / 4u;
    let cin4 = params.in_channels / 4u;
    let wo = vec4<u32>(j.r0, j.r1, j.r2, j.r3) * cin4; // the weight rows, in vec4s
    var tile: Tile;
    // vec4 index of pixel p0 of the current input channel.
    var q = j.b * params.in_channels * hw4 + j.p0 / 4u;
    for (var c4 = 0u; c4 < cin4; c4++) {
        let g = gate_of(j.b, c4);
        let xa = scaled(mat4x4<f32>(x4[q], x4[q + hw4], x4[q + 2u * hw4], x4[q + 3u * hw4]), g);
        let xb = scaled(mat4x4<f32>(x4[q + 1u], x4[q + hw4 + 1u], x4[q + 2u * hw4 + 1u], x4[q + 3u * hw4 + 1u]), g);
        q += 4u * hw4;
        accumulate(&tile, w4[wo.x + c4], w4[wo.y + c4], w4[wo.z + c4], w4[wo.w + c4], xa, xb);
    }
    if !j.live { return; }
    store_tile_quads(j, tile);
}

// Pixels p..p+3 starting at value offset `o`.
fn quad(o: u32) -> vec4<f32> {
    return vec4<f32>(x[o], x[o + 1u], x[o + 2u], x[o + 3u]);
}

@compute @workgroup_size(WG)
fn conv1x1_subgroup_scalar(@builtin(local_invocation_index) lid: u32,
                           @builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(subgroup_invocation_id) sid: u32) {
    let j = job(lid, wid, nwg, sid);
    let hw = params.out_h * params.out_w;
    let cin4 = params.in_channels / 4u;
    let wo = vec4<u32>(j.r0, j.r1, j.r2, j.r3) * cin4; // the weight rows, in vec4s
    var tile: Tile;
    // Offset (in values) of pixel p0 of the current input channel.
    var o = j.b * params.in_channels * hw + j.p0;
    for (var c4 = 0u; c4 < cin4; c4++) {
        let g = gate_of(j.b, c4);
        let xa = scaled(mat4x4<f32>(quad(o), quad(o + hw), quad(o + 2u * hw), quad(o + 3u * hw)), g);
        let xb = scaled(mat4x4<f32>(quad(o + 4u), quad(o + hw + 4u), quad(o + 2u * hw + 4u), quad(o + 3u * hw + 4u)), g);
        o += 4u * hw;
        accumulate(&tile, w4[wo.x + c4], w4[wo.y + c4], w4[wo.z + c4], w4[wo.w + c4], xa, xb);
    }
    if !j.live { return; }
    store_tile_pixels(j, tile);
}

// Reduction terms k..k+3 of weight row `r` (a row holds `depth` terms; zeros past its end).
fn weight_terms(r: u32, k: u32, depth: u32) -> vec4<f32> {
    let o = r * depth;
    let last = depth - 1u;
    let v = vec4<f32>(w[o + min(k, last)], w[o + min(k + 1u, last)],
                      w[o + min(k + 2u, last)], w[o + min(k + 3u, last)]);
    return select(vec4<f32>(0.0), v, vec4<u32>(k, k + 1u, k + 2u, k + 3u) < vec4<u32>(depth));
}

// The input value of reduction term `k` (input channel, kernel row, kernel column) under four
// output pixels whose window origins are (iy, ix); zeros in the padding and past the depth.
fn window_terms(plane0: u32, k: u32, depth: u32, iy: vec4<i32>, ix: vec4<i32>) -> vec4<f32> {
    let kc = min(k, depth - 1u);
    let ic = kc / (KH * KW);
    let yy = iy + vec4<i32>(i32(((kc / KW) % KH) * params.dilation_h));
    let xx = ix + vec4<i32>(i32((kc % KW) * params.dilation_w));
    let h = vec4<i32>(i32(params.in_h));
    let w = vec4<i32>(i32(params.in_w));
    let zero = vec4<i32>(0);
    let inside = (yy >= zero) & (yy < h) & (xx >= zero) & (xx < w) & vec4<bool>(k < depth);
    let o = vec4<i32>(i32(plane0 + ic * params.in_h * params.in_w)) + clamp(yy, zero, h - 1) * w
        + clamp(xx, zero, w - 1);
    return select(vec4<f32>(0.0), vec4<f32>(x[o.x], x[o.y], x[o.z], x[o.w]), inside);
}

@compute @workgroup_size(WG)
fn conv_subgroup(@builtin(local_invocation_index) lid: u32,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(subgroup_invocation_id) sid: u32) {
    let j = job(lid, wid, nwg, sid);
    let hw = params.out_h * params.out_w;
    let depth = params.in_channels * KH * KW;
    // Window origins of pixels p0..p0+3 (a) and p0+4..p0+7 (b), past the plane's end the last
    // pixel's.
    let pa = min(vec4<u32>(j.p0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(hw - 1u));
    let pb = min(vec4<u32>(j.p0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(hw - 1u));
    let ow = vec4<u32>(params.out_w);
    let top = vec4<i32>(i32(params.pad_top));
    let left = vec4<i32>(i32(params.pad_left));
    let iya = vec4<i32>((pa / ow) * params.stride_h) - top;
    let ixa = vec4<i32>((pa % ow) * params.stride_w) - left;
    let iyb = vec4<i32>((pb / ow) * params.stride_h) - top;
    let ixb = vec4<i32>((pb % ow) * params.stride_w) - left;
    let plane0 = j.b * params.in_channels * params.in_h * params.in_w;
    var tile: Tile;
    for (var k = 0u; k < depth; k += 4u) {
        let xa = mat4x4<f32>(window_terms(plane0, k, depth, iya, ixa),
                             window_terms(plane0, k + 1u, depth, iya, ixa),
                             window_terms(plane0, k + 2u, depth, iya, ixa),
                             window_terms(plane0, k + 3u, depth, iya, ixa));
        let xb = mat4x4<f32>(window_terms(plane0, k, depth, iyb, ixb),
                             window_terms(plane0, k + 1u, depth, iyb, ixb),
                             window_terms(plane0, k + 2u, depth, iyb, ixb),
                             window_terms(plane0, k + 3u, depth, iyb, ixb));
        accumulate(&tile, weight_terms(j.r0, k, depth), weight_terms(j.r1, k, depth),
                   weight_terms(j.r2, k, depth), weight_terms(j.r3, k, depth), xa, xb);
    }
    if !j.live { return; }
    store_tile_pixels(j, tile);
}
