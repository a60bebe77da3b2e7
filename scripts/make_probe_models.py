# Probe models with random weights for kinds webjit is measured on without being named (CNN, GRU, LSTM,
# PyTorch's TransformerEncoder): /usr/bin/python3 scripts/make_probe_models.py [OUT_DIR] (Debian python3-torch, python3-onnx),
# then: node bench/probe.mjs OUT_DIR/resnet.onnx 1,3,224,224 (dims of each model: bench/NOTES.md, "probe models")
import os, sys
import torch, torch.nn as nn
OUT = sys.argv[1] if len(sys.argv) > 1 else 'bench/probe-models'
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
class Res(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(3,32,7,2,3,bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(3,2,1))
        def blk(i,o,st): return nn.Sequential(nn.Conv2d(i,o,3,st,1,bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o,o,3,1,1,bias=False), nn.BatchNorm2d(o))
        s.b1 = blk(32,32,1); s.b2 = blk(32,64,2); s.d2 = nn.Sequential(nn.Conv2d(32,64,1,2,bias=False), nn.BatchNorm2d(64))
        s.b3 = blk(64,128,2); s.d3 = nn.Sequential(nn.Conv2d(64,128,1,2,bias=False), nn.BatchNorm2d(128))
        s.fc = nn.Linear(128, 100)
    def forward(s, x):
        x = s.stem(x); x = torch.relu(x + s.b1(x)); x = torch.relu(s.d2(x) + s.b2(x)); x = torch.relu(s.d3(x) + s.b3(x))
        return s.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
m = Res().eval()
for mod in m.modules():
    if isinstance(mod, nn.BatchNorm2d): mod.running_mean.uniform_(-0.5,0.5); mod.running_var.uniform_(0.5,2)
torch.onnx.export(m, torch.randn(1,3,224,224), OUT + '/resnet.onnx', opset_version=13, input_names=['x'], do_constant_folding=False)
class G(nn.Module):
    def __init__(s):
        super().__init__(); s.gru = nn.GRU(64, 128, num_layers=2, batch_first=True); s.fc = nn.Linear(128, 10)
    def forward(s, x): y, h = s.gru(x); return s.fc(y)
torch.onnx.export(G().eval(), torch.randn(1,100,64), OUT + '/gru.onnx', opset_version=13, input_names=['x'])
class L(nn.Module):
    def __init__(s):
        super().__init__(); s.l = nn.LSTM(40, 128, num_layers=2, batch_first=True, bidirectional=True); s.fc = nn.Linear(256, 30)
    def forward(s, x): y, h = s.l(x); return s.fc(y).log_softmax(-1)
torch.onnx.export(L().eval(), torch.randn(1,100,40), OUT + '/lstm.onnx', opset_version=13, input_names=['x'])
class T(nn.Module):
    def __init__(s):
        super().__init__(); s.e = nn.TransformerEncoder(nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True, activation='gelu'), 4); s.emb = nn.Linear(80, 256)
    def forward(s, x): return s.e(s.emb(x))
torch.onnx.export(T().eval(), torch.randn(1,100,80), OUT + '/tenc.onnx', opset_version=14, input_names=['x'])
# MobileNetV2-style: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project), ReLU6, squeeze-excite in the last blocks.
class SE(nn.Module):
    def __init__(s, c): super().__init__(); s.f = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1), nn.Hardsigmoid())
    def forward(s, x): return x * s.f(x)
class IR(nn.Module):
    def __init__(s, i, o, st, e, se=False):
        super().__init__(); h = i * e
        s.b = nn.Sequential(nn.Conv2d(i, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(), nn.Conv2d(h, h, 3, st, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                            *( [SE(h)] if se else [] ), nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o))
        s.res = st == 1 and i == o
    def forward(s, x): y = s.b(x); return x + y if s.res else y
class Mob(nn.Module):
    def __init__(s):
        super().__init__()
        s.f = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
                            IR(16, 16, 1, 1), IR(16, 24, 2, 4), IR(24, 24, 1, 3), IR(24, 40, 2, 3, True), IR(40, 40, 1, 3, True),
                            IR(40, 80, 2, 6), IR(80, 80, 1, 2), IR(80, 112, 1, 6, True), IR(112, 160, 2, 6, True),
                            nn.Conv2d(160, 576, 1, bias=False), nn.BatchNorm2d(576), nn.Hardswish())
        s.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1000))
    def forward(s, x): return s.head(s.f(x))
m = Mob().eval()
for mod in m.modules():
    if isinstance(mod, nn.BatchNorm2d): mod.running_mean.uniform_(-0.5,0.5); mod.running_var.uniform_(0.5,2)
torch.onnx.export(m, torch.randn(1,3,224,224), OUT + '/mobilenet.onnx', opset_version=13, input_names=['x'])
# ViT-tiny style: 16x16 patch embedding conv, class token, position embedding, 6 pre-LN blocks (dim 192, 3 heads), head.
class ViT(nn.Module):
    def __init__(s):
        super().__init__(); d = 192
        s.p = nn.Conv2d(3, d, 16, 16); s.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02); s.pos = nn.Parameter(torch.randn(1, 197, d) * 0.02)
        s.e = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 3, 4 * d, batch_first=True, activation='gelu', norm_first=True), 6)
        s.n = nn.LayerNorm(d); s.h = nn.Linear(d, 1000)
    def forward(s, x):
        x = s.p(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls.expand(x.shape[0], -1, -1), x], 1) + s.pos
        return s.h(s.n(s.e(x))[:, 0])
torch.onnx.export(ViT().eval(), torch.randn(1,3,224,224), OUT + '/vit.onnx', opset_version=14, input_names=['x'])
# 1-D conv audio model (keyword-spotting style): Conv1d/BN/ReLU stacks with dilation and stride, global pool, classifier.
class KWS(nn.Module):
    def __init__(s):
        super().__init__()
        def c(i, o, k, st=1, dl=1): return nn.Sequential(nn.Conv1d(i, o, k, st, dl * (k // 2), dl, bias=False), nn.BatchNorm1d(o), nn.ReLU())
        s.f = nn.Sequential(c(40, 128, 5, 2), c(128, 128, 3, 1, 2), c(128, 128, 3, 1, 4), c(128, 256, 3, 2), c(256, 256, 3, 1, 2))
        s.h = nn.Linear(256, 12)
    def forward(s, x): return s.h(s.f(x).mean(-1))
k = KWS().eval()
for mod in k.modules():
    if isinstance(mod, nn.BatchNorm1d): mod.running_mean.uniform_(-0.5,0.5); mod.running_var.uniform_(0.5,2)
torch.onnx.export(k, torch.randn(1,40,400), OUT + '/kws.onnx', opset_version=13, input_names=['x'])
# Small U-Net: conv blocks, max-pool down, transposed-conv and nearest-resize up, skip concatenations, sigmoid mask.
class UNet(nn.Module):
    def __init__(s):
        super().__init__()
        def blk(i, o): return nn.Sequential(nn.Conv2d(i, o, 3, 1, 1), nn.ReLU(), nn.Conv2d(o, o, 3, 1, 1), nn.ReLU())
        s.d1 = blk(3, 16); s.d2 = blk(16, 32); s.d3 = blk(32, 64)
        s.u2 = nn.ConvTranspose2d(64, 32, 2, 2); s.c2 = blk(64, 32); s.c1 = blk(48, 16); s.o = nn.Conv2d(16, 1, 1)
    def forward(s, x):
        a = s.d1(x); b = s.d2(nn.functional.max_pool2d(a, 2)); c = s.d3(nn.functional.max_pool2d(b, 2))
        b2 = s.c2(torch.cat([s.u2(c), b], 1))
        a2 = s.c1(torch.cat([nn.functional.interpolate(b2, scale_factor=2.0, mode='nearest'), a], 1))
        return torch.sigmoid(s.o(a2))
torch.onnx.export(UNet().eval(), torch.randn(1,3,128,128), OUT + '/unet.onnx', opset_version=13, input_names=['x'])
# Bidirectional GRU tagger on embeddings (batch 4).
class BiG(nn.Module):
    def __init__(s):
        super().__init__(); s.g = nn.GRU(96, 128, num_layers=2, batch_first=True, bidirectional=True); s.fc = nn.Linear(256, 20)
    def forward(s, x): y, h = s.g(x); return s.fc(y)
torch.onnx.export(BiG().eval(), torch.randn(4,60,96), OUT + '/bigru.onnx', opset_version=13, input_names=['x'])
