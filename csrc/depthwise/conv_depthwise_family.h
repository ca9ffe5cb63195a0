/* One instantiation of the depthwise convolution kernels (see
 * conv_depthwise_kernels.h): the family header and the fused epilogue it
 * shares with the other conv kernels, then the table. */
#include "cf_vector.h"
#include "cf_tiles.h"
#include "conv_epilogue.h"
#include "conv_depthwise.h"

static const cf_depthwise_kernels FN(cf_depthwise_table) = {
    .isa = CF_LEVEL,
    .vector_width = CF_VW,
    .tap_bytes = sizeof(FN(dw_tap)),
    .forward_planes = FN(dw_forward_planes),
    .backward_input_planes = FN(dw_backward_input_planes),
    .backward_weight_planes = FN(dw_backward_weight_planes),
    .forward_last = FN(dw_forward_last),
    .forward_last_rows = FN(dw_forward_last_rows),
    .backward_input_last = FN(dw_backward_input_last),
    .backward_weight_last = FN(dw_backward_weight_last),
    .epilogue = FN(conv_epilogue),
};

#include "cf_family_end.h"
