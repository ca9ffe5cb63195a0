# One group's view of a convolution (csrc/common/conv_geom.h), shared by the
# convolution drivers and their kernel tables.

cdef extern from "conv_geom.h" nogil:
    ctypedef Py_ssize_t cf_idx
    ctypedef struct cf_geom:
        cf_idx C, D, H, W
        cf_idx K, OD, OH, OW
        cf_idx KD, KH, KW
        cf_idx sd, sh, sw
        cf_idx pd, ph, pw
        cf_idx dd, dh, dw
        int pad_mode
    int CF_KB
    int CF_PAD_ZEROS, CF_PAD_REFLECT, CF_PAD_REPLICATE, CF_PAD_CIRCULAR
