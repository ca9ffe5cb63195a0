/* The depthwise convolution kernels (conv_depthwise.h) as one table per
 * (ISA level, dtype), looked up with cf_depthwise_kernels_for(is_double) by
 * the driver (_depthwise.pyx). A table of its own, beside cf_conv_kernels:
 * the depthwise driver is a module of its own and compiles only these. Data
 * pointers are void * holding CF_T of the table's dtype; every kernel writes
 * only the rows, planes or partial sums its caller hands it. */
#ifndef CNNFAST_CONV_DEPTHWISE_KERNELS_H
#define CNNFAST_CONV_DEPTHWISE_KERNELS_H

#include <stdint.h>

#include "cf_base.h"
#include "cf_isa.h"

#include "conv_depthwise_table.h"

#define CF_FAMILY "conv_depthwise_family.h"
#include "cf_instantiate.h"
#undef CF_FAMILY

CF_DEFINE_TABLE_FOR(cf_depthwise_kernels, cf_depthwise_kernels_for, cf_depthwise_table)

#endif
