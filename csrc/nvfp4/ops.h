// NVFP4 codec entry points that other translation units reuse (train/ops.cu: a rowwise
// train_quantize with round to nearest, no transform and 1-D scales is the inference
// quantize, docs/spec.md sec. 8; a computed global scale of an untransformed operand is
// global_scale). Arguments are checked by the caller; these only launch.
#pragma once

#include <tuple>

#include "torch_utils.h"

namespace nvfp4 {

// nvfp4.quantize(x, global_scale, swizzle) with scale_method "amax".
std::tuple<Tensor, Tensor> quantize_amax(const Tensor& x, const Tensor& global_scale,
                                         bool swizzle);

// nvfp4.global_scale(x): [1] float32, 2688 / amax(x) as docs/spec.md sec. 2 defines it.
Tensor global_scale_of(const Tensor& x);

}  // namespace nvfp4
