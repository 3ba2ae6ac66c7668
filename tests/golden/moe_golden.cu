// moe-golden in a MOE_ENABLE_CUDA build: the same program, compiled by nvcc
// with backend::Cuda, which adds --backend cuda|cuda-bf16 (MOE_GOLDEN_CUDA).
#include "moe_golden.cpp"
