/* One instantiation of the elementwise kernels (see elementwise_kernels.h):
 * every elementwise family header, then its table. */
#include "cf_vector.h"
#include "cf_tiles.h"
#include "norm_batch.h"
#include "activation_relu.h"
#include "activation_tanh.h"
#include "optim_sgd.h"
#include "optim_adam.h"
#include "norm_batch_last.h"

static const cf_elementwise_kernels FN(cf_elementwise_table) = {
    .isa = CF_LEVEL,
    .vector_width = CF_VW,
    .bn_channel_stats = FN(bn_channel_stats),
    .channel_affine = FN(channel_affine),
    .bn_channel_grad_sums = FN(bn_channel_grad_sums),
    .bn_grad_input_plane = FN(bn_grad_input_plane),
    .clamp = FN(clamp),
    .clamp_backward = FN(clamp_backward),
    .relu_backward = FN(relu_backward),
    .add_relu = FN(add_relu),
    .tanh_values = FN(tanh_values),
    .sgd_update = FN(sgd_update),
    .adam_update = FN(adam_update),
    .bnl_stats_rows = FN(bnl_stats_rows),
    .bnl_affine_rows = FN(bnl_affine_rows),
    .bnl_grad_sums_rows = FN(bnl_grad_sums_rows),
    .bnl_grad_input_rows = FN(bnl_grad_input_rows),
};

#include "cf_family_end.h"
