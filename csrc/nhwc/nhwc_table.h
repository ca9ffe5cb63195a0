/* The type of the channels-last kernel table (nhwc_kernels.h), on its own: a
 * driver of another module that is handed a table (the inverted-residual
 * block, _block.pyx, from _conv_nhwc.kernel_table) includes this and not
 * the kernels, which compile in their own module only. */
#ifndef CNNFAST_NHWC_TABLE_H
#define CNNFAST_NHWC_TABLE_H

#include "cf_base.h"
#include "conv_geom.h"

typedef struct {
    int isa;             /* ISA level the table's kernels are compiled for */
    cf_idx vector_width; /* lanes of one 64-byte vector */
    cf_idx block;        /* output channels per packed weight block */
    cf_idx tile_pixels;  /* output pixels of a full-block register tile */
    cf_idx wg_vectors;   /* vectors of output channels per weight-gradient tile */
    void (*forward)(const void *x, cf_idx xs, const void *w, const void *bias, void *out,
                    cf_idx os, const void *res, cf_idx p0, cf_idx p1, cf_idx nk,
                    cf_idx cchunk, int clamp, double lo, double hi, const void *zeros,
                    const void *next, cf_idx next_bytes, int mode, const cf_geom *g);
    /* returns 1, 0 for a NaN or infinite weight, -1 when out of memory */
    int (*pack)(const void *w, cf_idx K, cf_idx C, cf_idx KVOL, cf_idx cchunk, void *dst);
    int (*pack_flipped)(const void *w, cf_idx Kw, cf_idx Cw, cf_idx KVOL, const cf_idx *taps,
                        cf_idx ntaps, cf_idx cchunk, void *dst, cf_idx b0, cf_idx b1);
    /* conv_nhwc_winograd.h; m: the output tile, 4 (F(4x4, 3x3)) or 2 (F(2x2, 3x3)) */
    int (*wino_pack)(const void *w, cf_idx K, cf_idx C, cf_idx ks, cf_idx cs, int flip,
                     void *u, cf_idx pos_stride, int m);
    /* tiles numbered across consecutive images, per_image each */
    int (*wino_input)(const void *x, cf_idx xs, cf_idx H, cf_idx W, cf_idx ph, cf_idx pw,
                      cf_idx tw, cf_idx per_image, cf_idx t0, cf_idx t1, cf_idx c0, cf_idx c1,
                      void *v, cf_idx T, cf_idx C, int m);
    int (*wino_output)(const void *mp, cf_idx T, cf_idx ms, cf_idx tw, cf_idx per_image,
                       cf_idx t0, cf_idx t1, cf_idx OH, cf_idx OW, cf_idx nk, const void *bias,
                       void *out, cf_idx os, const void *res, int clamp, double lo, double hi,
                       int m);
    /* the Winograd weight gradient's transforms of grad_out and of the sums */
    int (*wino_grad_out)(const void *go, cf_idx gs, cf_idx OH, cf_idx OW, cf_idx tw, cf_idx t0,
                         cf_idx t1, cf_idx k0, cf_idx k1, void *u, cf_idx T, cf_idx K, int m);
    void (*wino_taps)(const void *mp, cf_idx K, cf_idx C, cf_idx k0, cf_idx k1, void *dwt,
                      int m);
    /* pool_nhwc.h */
    void (*max_pool)(const void *x, void *out, cf_idx C, cf_idx H, cf_idx W, cf_idx OW,
                     cf_idx kh, cf_idx kw, cf_idx sh, cf_idx sw, cf_idx ph, cf_idx pw,
                     cf_idx dh, cf_idx dw, cf_idx oh0, cf_idx oh1, void *ring, cf_idx *tags);
    void (*global_avg)(const void *x, void *out, cf_idx C, cf_idx P, cf_idx c0, cf_idx c1);
    /* conv_nhwc_backward.h */
    void (*weight_grad)(const void *go, cf_idx gs, const void *go_end, const void *x,
                        cf_idx xs, void *acc, cf_idx vstride, cf_idx nv, cf_idx r0, cf_idx r1,
                        cf_idx c0, cf_idx c1, cf_idx rows_per_block, const void *zeros,
                        const cf_geom *g);
} cf_nhwc_kernels;

#endif
