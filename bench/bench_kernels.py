"""The weights of one musicgen-small decode step, per product form: which kernel pays on this CPU.

    python bench/bench_kernels.py [threads]

24 layers x (self-attention qkv + out, cross-attention q + out, FFN in + out), 2 rows (CFG at batch
1), random weights; prints the median and best of 7 rounds for fp32 `F.linear`, bf16 `W @ x.T`,
our int8 / int4 / w8a8 `QuantizedWeight.linear` (bfloat16 activations) and int8-dynamic (float32),
and torch.ao's dynamic int8 (`quantize_dynamic` of Linear layers, as in the bench's transformers
int8 row: fbgemm's kernel, activations quantized per tensor at each product).
Only the products: no attention, norms or sampling.
"""
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from audiocraft_patched.modules.weight_quant import QuantizedWeight

SHAPES = [(3072, 1024), (1024, 1024), (1024, 1024), (1024, 1024), (4096, 1024), (1024, 4096)]
LAYERS, ROWS, ROUNDS = 24, 2, 7


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    torch.manual_seed(0)
    dense = [torch.randn(n, k) * 0.02 for n, k in SHAPES]
    forms = {"fp32 F.linear": [(w.shape[1], lambda x, w=w: F.linear(x, w)) for w in dense],
             "bf16 W @ x.T": [(w.shape[1], lambda x, w=w.bfloat16(): w @ x.bfloat16().T) for w in dense]}
    for mode in ("int8", "int4", "w8a8"):
        quantized = [QuantizedWeight.quantize(w.bfloat16(), mode, 128) for w in dense]
        forms[mode] = [(q.shape[1], lambda x, q=q: q.linear(x.bfloat16())) for q in quantized]
    dynamic_ours = [QuantizedWeight.quantize(w, "int8-dynamic") for w in dense]
    forms["int8-dynamic"] = [(q.shape[1], lambda x, q=q: q.linear(x)) for q in dynamic_ours]
    with warnings.catch_warnings():  # torch deprecates torch.ao quantization for removal
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        # As bench_fast's "transformers int8 (torch.ao)" row quantizes the Linear layers.
        linears = [nn.Linear(w.shape[1], w.shape[0], bias=False) for w in dense]
        for linear, w in zip(linears, dense):
            linear.weight.data.copy_(w)
        dynamic = quantize_dynamic(nn.Sequential(*linears), {nn.Linear}, dtype=torch.qint8)
    forms["torch.ao int8"] = [(w.shape[1], layer) for w, layer in zip(dense, dynamic)]
    inputs = {k: torch.randn(ROWS, k) for k in (1024, 4096)}

    def step(products) -> None:
        for _ in range(LAYERS):
            for width, product in products:
                product(inputs[width])

    print(f"{torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    with torch.no_grad():
        for name, products in forms.items():
            step(products)  # warm: kernels' first-use layouts
            times = []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                step(products)
                times.append(time.perf_counter() - start)
            times.sort()
            print(f"{name:15s} median {times[ROUNDS // 2] * 1e3:7.1f} ms  best {times[0] * 1e3:7.1f} ms", flush=True)


if __name__ == "__main__":
    main()
