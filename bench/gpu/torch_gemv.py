# Memory-bound peers of the LLM decode bench (bench/gpu/llm-decode.ts), same shapes, CUDA-event timing: the device's
# copy bandwidth, cuBLAS f16 GEMV, and where this PyTorch has it the int4 tinygemm GEMV (torch._weight_int4pack_mm,
# group 32, what gpt-fast decodes with).
import torch
dev = 'cuda'
print('torch', torch.__version__, torch.cuda.get_device_name(0))

def timeit(fn, reps=50):
    for _ in range(5): fn()
    torch.cuda.synchronize()
    s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(5):
        s.record()
        for _ in range(reps): fn()
        e.record(); torch.cuda.synchronize(); ms.append(s.elapsed_time(e) / reps)
    ms.sort()
    return ms[len(ms) // 2]

n = 256 * 1024 * 1024
a = torch.empty(n, dtype=torch.float32, device=dev); b = torch.empty_like(a)
ms = timeit(lambda: b.copy_(a), 20)
print(f'copy 1 GiB: {ms:.3f} ms, {2 * n * 4 / ms / 1e6:.0f} GB/s (read + write)')
del a, b

def int4_gemv(N, K, g=32):
    w = torch.randint(0, 16, (N, K), dtype=torch.int32, device=dev)
    x = torch.randn(1, K, dtype=torch.bfloat16, device=dev)
    sz = torch.randn(K // g, N, 2, dtype=torch.bfloat16, device=dev) * 0.01
    try:
        packed = torch._convert_weight_to_int4pack(w, 8)  # torch <= 2.4: int32 [N, K]
    except Exception:
        wu8 = (w[:, ::2] << 4 | w[:, 1::2]).to(torch.uint8)  # torch >= 2.5: uint8 [N, K/2]
        packed = torch._convert_weight_to_int4pack(wu8, 8)
    fn = lambda: torch._weight_int4pack_mm(x, packed, g, sz)
    fn()
    return timeit(fn), N * K // 2 + sz.numel() * 2 + K * 2 + N * 2

for (N, K) in [(8192, 8192), (2048, 2048), (11264, 2048), (2048, 5632), (32000, 2048)]:
    W = torch.randn(N, K, dtype=torch.float16, device=dev); x = torch.randn(K, dtype=torch.float16, device=dev)
    ms = timeit(lambda: torch.mv(W, x))
    line = f'GEMV {N}x{K}: cuBLAS f16 {ms:.4f} ms {(N * K * 2 + K * 2 + N * 2) / ms / 1e6:.0f} GB/s'
    try:
        ms4, by = int4_gemv(N, K)
        line += f' | int4 tinygemm g32 {ms4:.4f} ms {by / ms4 / 1e6:.0f} GB/s'
    except Exception as ex:
        line += f' | int4 tinygemm unavailable ({type(ex).__name__}: {str(ex)[:80]})'
    print(line)
    del W, x
