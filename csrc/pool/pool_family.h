/* One instantiation of the pooling kernels (see pool_kernels.h): every
 * pooling family header, then its table. */
#include "cf_vector.h"
#include "cf_tiles.h"
#include "pool_copy.h"
#include "pool_max.h"
#include "pool_in_place.h"
#include "pool_avg.h"
#include "pool_adaptive.h"

static const cf_pool_kernels FN(cf_pool_table) = {
    .isa = CF_LEVEL,
    .vector_width = CF_VW,
    .pool_copy_interior = FN(pool_copy_interior),
    .max_pool_plane = FN(max_pool_plane),
    .max_pool_backward_plane = FN(max_pool_backward_plane),
    .max_pool_plane_inplace = FN(max_pool_plane_inplace),
    .avg_pool_plane_inplace = FN(avg_pool_plane_inplace),
    .avg_pool_plane = FN(avg_pool_plane),
    .avg_pool_plane_narrow = FN(avg_pool_plane_narrow),
    .avg_pool_backward_plane = FN(avg_pool_backward_plane),
    .adaptive_avg_plane = FN(adaptive_avg_plane),
    .global_avg_planes = FN(global_avg_planes),
    .adaptive_max_plane = FN(adaptive_max_plane),
    .adaptive_avg_backward_plane = FN(adaptive_avg_backward_plane),
};

#include "cf_family_end.h"
