/* Register tiles of the kernels at ISA level CF_LEVEL: the one place that
 * states them. Included per instantiation (cf_instantiate.h) by each family
 * bundle; the kernel tables export them to the drivers.
 *
 * A vector is one register at levels 4 and 3 (cf_vector.h): a zmm on AVX-512
 * (32 of them), a ymm on AVX2 (16); tiles keep 24 and 12 accumulators, the
 * rest of the registers for the broadcast input and the weights. On the
 * baseline a vector is four xmm (16 registers). */

#if CF_LEVEL >= 4
/* Packed GEMM: MR rows (output channels) x NCH vectors of columns; 12 x 2 is
 * 24 of the 32 zmm registers. */
#define CF_GEMM_MR 12
#define CF_GEMM_NCH 2
/* Direct conv, channels in lanes: blocks of up to NVMAX vectors of output
 * channels; pixels per tile for nv vectors (at most 24 accumulators). */
#define CF_LANES_NVMAX 4
#define CF_LANES_PIXELS(nv) ((nv) == 1 ? 24 : (nv) == 2 ? 12 : (nv) == 3 ? 8 : 6)
/* The channels-last kernel reads each pixel of a tile through its own
 * pointer, and the pointers (with the weight and prefetch cursors) must
 * stay in the general registers inside the channel loop. In-process A/B of
 * two builds, one thread: one vector of output channels, 12 pixels ran 1x1
 * 32 -> 16 at 112x112 16% faster than 24 and 4-8% faster than 8; two
 * vectors, 8 pixels ran every 32-channel layer 1.5-1.95x faster than 12
 * (MobileNetV2's 3x3/2 stem 56 -> 87 GFLOP/s, 96 -> 32 1x1 84 -> 160; 6
 * pixels: the same within 4%); three vectors, 6 pixels 1.22-1.56x faster
 * than 8 (48-channel layers). */
#define CF_NHWC_PIXELS(nv) ((nv) == 1 ? 12 : (nv) == 2 ? 8 : (nv) == 3 ? 6 : CF_LANES_PIXELS(nv))
/* ...and, with the batch in the tile, the candidate tile widths in images
 * (i = 0, 1, 2): the widest first, the one recomputing fewest images runs. */
#define CF_LANES_IMAGES(nv, i)                                                         \
    ((nv) == 1 ? (i) == 0 ? 24 : (i) == 1 ? 16 : 8                                     \
   : (nv) == 2 ? (i) == 0 ? 12 : (i) == 1 ? 8 : 4                                      \
   : (nv) == 3 ? (i) == 0 ? 8 : (i) == 1 ? 6 : 4                                       \
   :             (i) == 0 ? 6 : (i) == 1 ? 4 : 2)
/* Depthwise channels-last forward: output pixels per tile of a row (one
 * vector of channels each); 6 ran MobileNetV2's rows 0-15% faster than 4
 * or 8 (and 14x14's 12 interior outputs are two tiles). */
#define CF_DW_PIXELS 6
#elif CF_LEVEL >= 3
/* 4 x 2 vectors: 8 accumulators, two FMA pipes x 4 cycles of latency.
 * The GEMM's row blocks are 12, 8 or 4 (gemm_packed.h), so the 6-row AVX2
 * tile of OpenBLAS's and MLAS's kernels does not fit them. */
#define CF_GEMM_MR 4
#define CF_GEMM_NCH 2
/* Blocks of 2 vectors x 6 pixels: a weight vector per 3 FMAs, where 4 x 3
 * streamed 4 of them per 3 and a layer whose weights stay in L2 (512 KB on
 * Zen 3) ran at L2's speed. One thread, GFLOP/s, 4 x 3 -> 2 x 6: 3x3 256 ->
 * 256 at 14x14 69 -> 80, 3x3/2 256 -> 512 49 -> 55, 3x3/2 64 -> 128 at
 * 56x56 56 -> 85, 1x1 256 -> 64 at 56x56 77 -> 87, 512 -> 128 at 28x28 73
 * -> 88; the 7x7/2 RGB stem 81 -> 70 (sgemm 95); fused ResNet-50 b1 85 ->
 * 82 ms, ResNet-18 b16 training step 586-609 -> 546. */
#define CF_LANES_NVMAX 2
#define CF_LANES_PIXELS(nv) ((nv) == 1 ? 12 : 6)
#define CF_NHWC_PIXELS(nv) CF_LANES_PIXELS(nv)
#define CF_LANES_IMAGES(nv, i)                                                         \
    ((nv) == 1 ? (i) == 0 ? 12 : (i) == 1 ? 8 : 4                                      \
   :             (i) == 0 ? 6 : (i) == 1 ? 4 : 2)
#define CF_DW_PIXELS 6
#else
#define CF_GEMM_MR 4
#define CF_GEMM_NCH 1
#define CF_LANES_NVMAX 2
#define CF_LANES_PIXELS(nv) ((nv) == 1 ? 6 : 3)
#define CF_NHWC_PIXELS(nv) CF_LANES_PIXELS(nv)
#define CF_DW_PIXELS 4
#define CF_LANES_IMAGES(nv, i)                                                         \
    ((nv) == 1 ? (i) == 0 ? 6 : (i) == 1 ? 4 : 2                                       \
   :             (i) == 0 ? 3 : (i) == 1 ? 2 : 1)
#endif
