/* The channels-last convolution kernels (conv_nhwc.h, conv_nhwc_backward.h) as one table per (ISA
 * level, dtype), looked up with cf_nhwc_kernels_for(is_double) by the driver
 * (_conv_nhwc.pyx). Data pointers are void * holding CF_T of the table's
 * dtype; every kernel writes only memory its caller owns. */
#ifndef CNNFAST_NHWC_KERNELS_H
#define CNNFAST_NHWC_KERNELS_H

#include "cf_base.h"
#include "cf_isa.h"

#include "nhwc_table.h"

#define CF_FAMILY "nhwc_family.h"
#include "cf_instantiate.h"
#undef CF_FAMILY

CF_DEFINE_TABLE_FOR(cf_nhwc_kernels, cf_nhwc_kernels_for, cf_nhwc_table)

#endif
