/* Compile the kernel family CF_FAMILY (a header name) once per ISA level and
 * dtype (see cf_isa.h). Per instantiation:
 *   CF_T       float or double
 *   CF_ITYPE   an integer of CF_T's width (shuffle masks, lane masks)
 *   CF_LEVEL   4, 3 or 0: the ISA level the code is compiled for
 *   CF_SFX     dtype_level suffix of every name (FN(x) = x_f32_v4, ...)
 * The family header must undefine whatever macros it defines. */

#if CF_ISA_VARIANTS
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
#define CF_LEVEL 4
#define CF_T float
#define CF_ITYPE int
#define CF_SFX f32_v4
#include CF_FAMILY
#undef CF_T
#undef CF_ITYPE
#undef CF_SFX
#define CF_T double
#define CF_ITYPE long long
#define CF_SFX f64_v4
#include CF_FAMILY
#undef CF_T
#undef CF_ITYPE
#undef CF_SFX
#undef CF_LEVEL
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define CF_LEVEL 3
#define CF_T float
#define CF_ITYPE int
#define CF_SFX f32_v3
#include CF_FAMILY
#undef CF_T
#undef CF_ITYPE
#undef CF_SFX
#define CF_T double
#define CF_ITYPE long long
#define CF_SFX f64_v3
#include CF_FAMILY
#undef CF_T
#undef CF_ITYPE
#undef CF_SFX
#undef CF_LEVEL
#pragma GCC pop_options
#endif

#define CF_LEVEL CF_BASE_LEVEL
#define CF_T float
#define CF_ITYPE int
#define CF_SFX f32_base
#include CF_FAMILY
#undef CF_T
#undef CF_ITYPE
#undef CF_SFX
#define CF_T double
#define CF_ITYPE long long
#define CF_SFX f64_base
#include CF_FAMILY
#undef CF_T
#undef CF_ITYPE
#undef CF_SFX
#undef CF_LEVEL

/* The table of the running CPU's level for one dtype (is_double 0 or 1), as
 * `static const TYPE *NAME(int is_double)`; CF_TABLE is the family's table
 * name (tables are FN(CF_TABLE)). */
#define CF_TABLE_NAME2(t, s) t##_##s
#define CF_TABLE_NAME(t, s) CF_TABLE_NAME2(t, s)
#if CF_ISA_VARIANTS
#define CF_DEFINE_TABLE_FOR(TYPE, NAME, T)                                               \
    static const TYPE *NAME(int is_double) {                                             \
        switch (cf_isa_level()) {                                                        \
        case 4: return is_double ? &CF_TABLE_NAME(T, f64_v4) : &CF_TABLE_NAME(T, f32_v4); \
        case 3: return is_double ? &CF_TABLE_NAME(T, f64_v3) : &CF_TABLE_NAME(T, f32_v3); \
        default:                                                                         \
            return is_double ? &CF_TABLE_NAME(T, f64_base) : &CF_TABLE_NAME(T, f32_base);\
        }                                                                                \
    }
#else
#define CF_DEFINE_TABLE_FOR(TYPE, NAME, T)                                               \
    static const TYPE *NAME(int is_double) {                                             \
        return is_double ? &CF_TABLE_NAME(T, f64_base) : &CF_TABLE_NAME(T, f32_base);    \
    }
#endif
