// The register tile of the subgroup GEMM kernels (conv_subgroup.wgsl, dense_subgroup.wgsl)
// for CPU-emulated adapters with subgroup operations (lavapipe). Such adapters run a subgroup
// as the SIMD lanes of one vector register and load memory lane by lane, so loads, not
// multiply-adds, bound a GEMM there.
//
// A tile is 32 rows x 8 columns of a product whose 32 rows are the same for every lane of a
// subgroup (a 1x1 convolution's output channels, a dense layer's batch rows). No lane loads
// all 32 row operands: lane l loads rows l, 8 + l, 16 + l and 24 + l, and subgroupBroadcast
// hands each to the others. This needs subgroups of at least 8 invocations whose lanes all
// share the tile's rows. The accumulators are the named fields of a struct: in an array
// (dynamically indexed) they measured 1.9x slower on lavapipe, which keeps arrays in memory.

// Rows of a tile (four row operands per lane of an 8-lane group).
const TILE_ROWS: u32 = 32u;

// Field cJ holds row J: its column 0 the tile's columns 0..3, its column 1 columns 4..7.
struct Tile {
    c0: mat2x4<f32>, c1: mat2x4<f32>, c2: mat2x4<f32>, c3: mat2x4<f32>,
    c4: mat2x4<f32>, c5: mat2x4<f32>, c6: mat2x4<f32>, c7: mat2x4<f32>,
    c8: mat2x4<f32>, c9: mat2x4<f32>, c10: mat2x4<f32>, c11: mat2x4<f32>,
    c12: mat2x4<f32>, c13: mat2x4<f32>, c14: mat2x4<f32>, c15: mat2x4<f32>,
    c16: mat2x4<f32>, c17: mat2x4<f32>, c18: mat2x4<f32>, c19: mat2x4<f32>,
    c20: mat2x4<f32>, c21: mat2x4<f32>, c22: mat2x4<f32>, c23: mat2x4<f32>,
    c24: mat2x4<f32>, c25: mat2x4<f32>, c26: mat2x4<f32>, c27: mat2x4<f32>,
    c28: mat2x4<f32>, c29: mat2x4<f32>, c30: mat2x4<f32>, c31: mat2x4<f32>,
}

// One step of four along the reduction: row J += (a * rJ, b * rJ), where rJ (four reduction
// terms) comes from lane J % 8's operand r[J / 8], and a and b map four terms to columns 0..3
// and 4..7.
fn accumulate(t: ptr<function, Tile>, r0: vec4<f32>, r1: vec4<f32>, r2: vec4<f32>, r3: vec4<f32>, a: mat4x4<f32>, b: mat4x4<f32>) {
    var v = subgroupBroadcast(r0, 0u); (*t).c0 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 1u); (*t).c1 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 2u); (*t).c2 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 3u); (*t).c3 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 4u); (*t).c4 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 5u); (*t).c5 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 6u); (*t).c6 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r0, 7u); (*t).c7 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 0u); (*t).c8 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 1u); (*t).c9 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 2u); (*t).c10 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 3u); (*t).c11 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 4u); (*t).c12 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 5u); (*t).c13 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 6u); (*t).c14 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r1, 7u); (*t).c15 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 0u); (*t).c16 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 1u); (*t).c17 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 2u); (*t).c18 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 3u); (*t).c19 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 4u); (*t).c20 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 5u); (*t).c21 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 6u); (*t).c22 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r2, 7u); (*t).c23 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 0u); (*t).c24 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 1u); (*t).c25 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 2u); (*t).c26 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 3u); (*t).c27 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 4u); (*t).c28 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 5u); (*t).c29 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 6u); (*t).c30 += mat2x4<f32>(a * v, b * v);
    v = subgroupBroadcast(r3, 7u); (*t).c31 += mat2x4<f32>(a * v, b * v);
}
