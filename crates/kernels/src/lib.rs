//! Compute kernels: exact integer GEMMs with a fused fixed-to-float epilogue, and f32 GEMM.
