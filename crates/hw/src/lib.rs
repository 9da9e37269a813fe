//! Accelerator model: the 002 PE-array GEMM core simulator and board/resource/time models.
