/* End of one instantiation of a kernel family: undefine the per-instantiation
 * names of cf_vector.h and cf_tiles.h, so the next one can define them anew. */
#undef CF_VW
#undef CF_VBYTES
#undef CF_M
#undef CF_V
#undef FN
#undef CF_CAT
#undef CF_CAT2
#undef CF_GEMM_MR
#undef CF_GEMM_NCH
#undef CF_GEMM_NR
#undef CF_LANES_NVMAX
#undef CF_LANES_PIXELS
#undef CF_NHWC_PIXELS
#undef CF_LANES_IMAGES
#undef CF_DW_PIXELS
