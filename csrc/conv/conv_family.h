/* One instantiation of the convolution kernels (see conv_kernels.h): every
 * conv family header, then its table. */
#include "cf_vector.h"
#include "cf_tiles.h"
#include "conv_pad.h"
#include "conv_direct.h"
#include "conv_direct_lanes.h"
#include "conv_weight_grad.h"
#include "conv_bias_grad.h"
#include "conv_im2col.h"
#include "gemm_packed.h"
#include "conv_epilogue.h"
#include "conv_winograd.h"

static const cf_conv_kernels FN(cf_conv_table) = {
    .isa = CF_LEVEL,
    .vector_width = CF_VW,
    .gemm_mr = CF_GEMM_MR,
    .gemm_nr = CF_GEMM_NR,
    .lanes_block = CF_LANES_NVMAX * CF_VW,
    .pad_plane = FN(pad_plane),
    .fold_plane = FN(fold_plane),
    .direct_forward_row = FN(direct_forward_row),
    .direct_forward_cv = FN(direct_forward_cv),
    .direct_forward_cv_batch = FN(direct_forward_cv_batch),
    .direct_cv_waste = FN(direct_cv_waste),
    .direct_cv_pack = FN(direct_cv_pack),
    .direct_backward_weight = FN(direct_backward_weight),
    .channel_sum = FN(channel_sum),
    .vol2col = FN(vol2col),
    .col2vol = FN(col2vol),
    .gemm_pack_rows = FN(gemm_pack_rows),
    .gemm_pack_columns = FN(gemm_pack_columns),
    .gemm_packed = FN(gemm_packed),
    .gemm_in_place = FN(gemm_in_place),
    .conv_epilogue = FN(conv_epilogue),
    .winograd_weights = FN(winograd_weights),
    .winograd_forward_block = FN(winograd_forward_block),
};

#include "cf_family_end.h"
