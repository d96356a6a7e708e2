// dense_subgroup: a dense layer over 16 or more batch rows (inputs % 4 == 0) in
// subgroup_tile.wgsl's tiles: each invocation computes 32 batch rows (the tile's rows, input
// rows shared through the subgroup) x 8 outputs. Per four inputs a lane makes 4 input and 8
// weight vec4 loads for 1024 multiply-adds (dense_vec4_r16: 16 + 4 for 256). A workgroup covers
// output tiles of one 32-row block. Rows and outputs past the last are computed on repeated
// operands and never stored.

// Row r's outputs o0..o0+7 (those that exist), biases ba (o0..o0+3) and bb (o0+4..o0+7)
// loaded once per tile.
fn store_row(r: u32, o0: u32, m: mat2x4<f32>, ba: vec4<f32>, bb: vec4<f32>) {
    if r >= params.batch { return; }
    for (var c = 0u; c < 4u; c++) {
        var o = o0 + c;
        if o < params.outputs {
            y[r * params.outputs + o] = activate(m[0][c] + ba[c], params.activation, params.act_a, params.act_b);
        }
        o += 4u;
        if o < params.outputs {
            y[r * params.outputs + o] = activate(m[1][c] + bb[c], params.activation, params.act_a, params.act_b);
        }
    }
}

// The stores are spelled out like the tile's fields (see subgroup_tile.wgsl).
fn store_tile(r0: u32, o0: u32, t: Tile) {
    let last = params.outputs - 1u;
    let ba = vec4<f32>(bias[min(o0, last)], bias[min(o0 + 1u, last)], bias[min(o0 + 2u, last)], bias[min(o0 + 3u, last)]);
    let bb = vec4<f32>(bias[min(o0 + 4u, last)], bias[min(o0 + 5u, last)], bias[min(o0 + 6u, last)], bias[min(o0 + 7u, last)]);
    store_row(r0 + 0u, o0, t.c0, ba, bb);
    store_row(r0 + 1u, o0, t.c1, ba, bb);
    store_row(r0 + 2u, o0, t.c2, ba, bb);
    store_row(r0 + 3u, o0, t.c3, ba, bb);
    store_row(r0 + 4u, o0, t.c4, ba, bb);
    store_row(r0 + 5u, o0, t.c5, ba, bb);
    store_row(r0 + 6u, o0, t.c6, ba, bb);
    store_row(r0 + 7u, o0, t.c7, ba, bb);
    store_row(r0 + 8u, o0, t.c8, ba, bb);
    store_row(r0 + 9u, o0, t.c9, ba, bb);
    store_row(r0 + 10u, o0, t.c10, ba, bb);
    store_row(r0 + 11u, o0, t.c11, ba, bb);
    store_row(r0 + 12u, o0, t.c12, ba, bb);
    store_row(r0 + 13u, o0, t.c13, ba, bb);
    store_row(r0 + 14u, o0, t.c14, ba, bb);
    store_row(r0 + 15u, o0, t.c15, ba, bb);
    store_row(r0 + 16u, o0, t.c16, ba, bb);
    store_row(r0 + 17u, o0, t.c17, ba, bb);
    store_row(r0 + 18u, o0, t.c18, ba, bb);
    store_row(r0 + 19u, o0, t.c19, ba, bb);
    store_row(r0 + 20u, o0, t.c20, ba, bb);
    store_row(r0 + 21u, o0, t.c21, ba, bb);
    store_row(r0 + 22u, o0, t.c22, ba, bb);
    store_row(r0 + 23u, o0, t.c23, ba, bb);
    store_row(r0 + 24u, o0, t.c24, ba, bb);
    store_row(r0 + 25u, o0, t.c25, ba, bb);
    store_row(r0 + 26u, o0, t.c26, ba, bb);
    store_row(r0 + 27u, o0, t.c27, ba, bb);
    store_row(r0 + 28u, o0, t.c28, ba, bb);
    store_row(r0 + 29u, o0, t.c29, ba, bb);
    store_row(r0 + 30u, o0, t.c30, ba, bb);
    store_row(r0 + 31u, o0, t.c31, ba, bb);
}

@compute @workgroup_size(WG)
fn dense_subgroup(@builtin(local_invocation_index) lid: u32,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(subgroup_invocation_id) sid: u32) {
    let out_tiles = (params.outputs + 7u) / 8u;
    let per_block = (out_tiles + WG - 1u) / WG; // workgroups per row block
    let g = wid.x + wid.y * nwg.x;
    let r0 = (g / per_block) * TILE_ROWS;
    let t = (g % per_block) * WG + lid;
    let o0 = min(t, out_tiles - 1u) * 8u;
    let n4 = params.inputs / 4u;
    // The input rows this lane loads for its subgroup, and its eight weight rows.
    let lane = sid % 8u;
    let last_r = params.batch - 1u;
    let x0 = min(r0 + lane, last_r) * n4;
    let x1 = min(r0 + 8u + lane, last_r) * n4;
    let x2 = min(r0 + 16u + lane, last_r) * n4;
    let x3 = min(r0 + 24u + lane, last_r) * n4;
    let last_o = params.outputs - 1u;
    let wa = min(vec4<u32>(o0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last_o)) * n4;
    let wb = min(vec4<u32>(o0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last_o)) * n4;
    var tile: Tile;
    for (var i = 0u; i < n4; i++) {
        // transpose: a * x = (w[o0] . x, .., w[o0 + 3] . x).
        let a = transpose(mat4x4<f32>(w4[wa.x + i], w4[wa.y + i], w4[wa.z + i], w4[wa.w + i]));
        let b = transpose(mat4x4<f32>(w4[wb.x + i], w4[wb.y + i], w4[wb.z + i], w4[wb.w + i]));
        accumulate(&tile, x4[x0 + i], x4[x1 + i], x4[x2 + i], x4[x3 + i], a, b);
    }
    // Lanes past the last output tile computed the last one again (every lane takes part in
    // the broadcasts).
    if t >= out_tiles { return; }
    store_tile(r0, o0, tile);
}
