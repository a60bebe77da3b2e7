# cuBLAS reference for the GPU matmul sweep: f32 with TF32 off, TF32 on and f16, same shapes, CUDA-event timing.
import torch
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = 'cuda'
print('torch', torch.__version__, torch.cuda.get_device_name(0))
def t(M, N, K, dtype, tf32=False, reps=50):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(M, K, device=dev, dtype=dtype); b = torch.randn(K, N, device=dev, dtype=dtype)
    for _ in range(5): a @ b
    torch.cuda.synchronize()
    s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
    ms = []
    for _ in range(5):
        s.record()
        for _ in range(reps): a @ b
        e.record(); torch.cuda.synchronize(); ms.append(s.elapsed_time(e) / reps)
    ms.sort(); m = ms[len(ms)//2]
    torch.backends.cuda.matmul.allow_tf32 = False
    return m
for (M, N, K) in [(4096, 4096, 4096), (1024, 1024, 1024), (1, 4096, 4096), (4, 4096, 4096), (16, 4096, 4096)]:
    f = t(M, N, K, torch.float32); tf = t(M, N, K, torch.float32, True); h = t(M, N, K, torch.float16)
    fl = 2 * M * N * K
    gb = (M * K + K * N + M * N) * 4
    print(f'torch {M}x{N}x{K}: f32 {f:.4f} ms {fl/f/1e9:.2f} TFLOP/s {gb/f/1e6:.0f} GB/s | tf32 {fl/tf/1e9:.2f} TFLOP/s | f16 {h:.4f} ms {fl/h/1e9:.2f} TFLOP/s')
