# Included by cnnfast/_ext/_conv.pyx (one extension, one file per idea).
# What the planner asks the kernels (tile sizes, lane waste).

# ---------------------------------------------------------------- queries

def kernel_tiles(dtype):
    """The running kernel table's tile sizes for dtype (float32/float64): the
    planner (cnnfast._plan) sizes GEMM tiles and work arrays by them."""
    cdef const cf_conv_kernels *k = cf_conv_kernels_for(np.dtype(dtype) == np.float64)
    return {"isa": k.isa, "vector_width": k.vector_width, "gemm_mr": k.gemm_mr,
            "gemm_nr": k.gemm_nr, "lanes_block": k.lanes_block}


def lanes_waste(dtype, Py_ssize_t K, Py_ssize_t N, tuple reach, tuple out_size, tuple kernel,
                tuple dilation, bint batch):
    """Positions the channels-in-lanes forward computes per output for K
    channels, tiling positions of the padded plane (extent `reach`, stride 1)
    or, with batch, the N images: the kernel family's own count
    (csrc/conv/conv_direct_lanes.h), for the planner's choice between them."""
    cdef const cf_conv_kernels *k = cf_conv_kernels_for(np.dtype(dtype) == np.float64)
    cdef cf_geom g = _geometry(0, reach[0], reach[1], reach[2], K, out_size[0], out_size[1],
                               out_size[2], kernel, (1, 1, 1), (0, 0, 0), dilation)
    return k.direct_cv_waste(K, N, &g, batch)
