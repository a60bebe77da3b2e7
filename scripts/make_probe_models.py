# Probe models with random weights for kinds webjit is measured on without being named (CNN, GRU, LSTM,
# PyTorch's TransformerEncoder): /usr/bin/python3 scripts/make_probe_models.py [OUT_DIR] (Debian python3-torch, python3-onnx),
# then: node bench/probe.mjs OUT_DIR/resnet.onnx 1,3,224,224
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
