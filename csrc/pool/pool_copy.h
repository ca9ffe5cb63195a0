/* Pooling: the per-thread padded copy of a plane.
 * A family header: compiled once per ISA level and dtype through its bundle
 * (conv_kernels.h or pool_kernels.h), with CF_T, FN() and the tile sizes
 * of cf_tiles.h defined. */

/* Copy plane x into the interior of buf. The border keeps the pad value that
 * the driver filled once per thread, since no plane ever writes there. */
static void FN(pool_copy_interior)(const void *x_, void *buf_, const cf_pool_geom *g) {
    const CF_T *x = (const CF_T *)x_;
    CF_T *buf = (CF_T *)buf_;
    for (cf_idx d = 0; d < g->D; d++)
        for (cf_idx h = 0; h < g->H; h++)
            memcpy(buf + ((d + g->pd) * g->Hp + h + g->ph) * g->Wp + g->pw,
                   x + (d * g->H + h) * g->W, (size_t)g->W * sizeof(CF_T));
}

