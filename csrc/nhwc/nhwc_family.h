/* One instantiation of the channels-last convolution kernels (see
 * nhwc_kernels.h): the family header, then its table. */
#include "cf_vector.h"
#include "cf_tiles.h"
#include "conv_nhwc.h"
#include "conv_nhwc_winograd.h"
#include "pool_nhwc.h"
#include "conv_nhwc_backward.h"

static const cf_nhwc_kernels FN(cf_nhwc_table) = {
    .isa = CF_LEVEL,
    .vector_width = CF_VW,
    .block = CF_LANES_NVMAX * CF_VW,
    .tile_pixels = CF_NHWC_PIXELS(CF_LANES_NVMAX),
    .wg_vectors = CF_LEVEL >= 4 ? 4 : 1, /* conv_nhwc_backward.h's CF_WG_NV */
    .forward = FN(nhwc_forward),
    .pack = FN(nhwc_pack),
    .pack_flipped = FN(nhwc_pack_flipped),
    .wino_pack = FN(nhwc_wino_pack),
    .wino_input = FN(nhwc_wino_input),
    .wino_output = FN(nhwc_wino_output),
    .wino_grad_out = FN(nhwc_wino_grad_out),
    .wino_taps = FN(nhwc_wino_taps),
    .max_pool = FN(nhwc_max_pool),
    .global_avg = FN(nhwc_global_avg),
    .weight_grad = FN(nhwc_weight_grad),
};

#include "cf_family_end.h"
