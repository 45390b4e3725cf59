#!/usr/bin/env python3
"""The PyTorch side of `cargo bench --bench train_vs_torch`.

Builds the network of a kflow model IR document (`model.json`, the
sequential subset: conv1d/conv2d, batch_norm, relu, abs, max_pool,
avg_pool, flatten, linear) as an `nn.Sequential` whose modules carry the IR
layer names, so that its state dict has kflow's tensor names and shapes;
optionally loads kflow's initial weights (safetensors); then trains it
with cross-entropy and `torch.optim.AdamW` on CPU, one epoch at a time, the
way kflow's `train_epoch` does: shuffle, mini-batches (a last batch of one
sample is skipped), forward, backward, optimizer step, then an
evaluation-mode pass over the validation split (loss and F1 of class 1).
With `--order`, epoch k visits the training windows in kflow's order for
epoch k (`Hyper::sample_order`, written by the bench), so that both tools
take the same batches; without it, torch.randperm shuffles.

Output: JSON lines on stdout. First a `ready` line (torch version, thread
counts, the model's tensors), then one `epoch` line per epoch with its
wall time and CPU time. With `--epochs N` it runs N epochs and exits;
without, it reads commands from stdin, one per line (`epoch` runs one
epoch, `quit` or end of input exits), so that the bench can interleave its
epochs with kflow's without paying for `import torch` each time.

Data: `--train X,Y,N` and `--val X,Y,N` name raw files of N·C·W
little-endian float32 values and N label bytes; without them, `--samples`
random windows are made here (for running it by hand).
"""

import argparse
import json
from collections import OrderedDict
import os
import struct
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="kflow model IR (model.json)")
    p.add_argument("--weights", help="initial weights (safetensors, kflow's names and layout)")
    p.add_argument("--train", help="X_FILE,Y_FILE,N: raw float32 windows and u8 labels")
    p.add_argument("--val", help="X_FILE,Y_FILE,N: raw float32 windows and u8 labels")
    p.add_argument("--samples", type=int, default=8192, help="random training windows when --train is not given")
    p.add_argument("--val-samples", type=int, default=256, help="random validation windows when --val is not given")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads and set_num_interop_threads")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0, help="seeds the shuffle (and random data)")
    p.add_argument(
        "--order",
        help="raw little-endian uint32 file: a permutation of the training windows per epoch, "
        "epoch 1 first (kflow's batch order); replaces the shuffle",
    )
    p.add_argument(
        "--adamw",
        choices=["default", "for-loop", "foreach", "fused"],
        default="default",
        help="AdamW's implementation: torch's default (the for-loop one for CPU tensors), or forced",
    )
    p.add_argument(
        "--numerics",
        choices=["float32", "float64", "no-onednn"],
        default="float32",
        help="float32 (the comparison); float64, or float32 with the oneDNN (mkldnn) kernels off, "
        "give a PyTorch that rounds differently, to see how far rounding alone moves the losses",
    )
    p.add_argument(
        "--perturb",
        type=float,
        default=0.0,
        help="multiply every initial weight by 1 + PERTURB * N(0, 1) (seeded by --seed); 2e-7 moves a "
        "float32 weight by about one rounding",
    )
    p.add_argument("--epochs", type=int, help="run this many epochs and exit instead of reading stdin")
    return p.parse_args()


args = parse_args()

# Thread counts must be set before torch does any parallel work.
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(args.threads)
if args.numerics == "no-onednn":
    torch.backends.mkldnn.enabled = False


def emit(record):
    print(json.dumps(record), flush=True)


def fail(message):
    print(f"torch_train.py: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def build(model_ir):
    """The IR's layers as a named nn.Sequential; the output shape."""
    if model_ir.get("task", {}).get("kind") != "classifier":
        fail("only classifier models are supported")
    shape = list(model_ir["input"])
    modules = []
    for layer in model_ir["layers"]:
        name, op = layer["name"], layer["op"]
        if layer.get("inputs"):
            fail(f"layer `{name}` names its inputs; only sequential models are supported")
        rank = len(shape)
        if op in ("conv1d", "conv2d"):
            k, pad, out = layer["kernel"], layer.get("padding", 0), layer["out_channels"]
            conv = nn.Conv1d if op == "conv1d" else nn.Conv2d
            module = conv(shape[0], out, k, padding=pad, bias=layer.get("bias", True))
            shape = [out] + [v + 2 * pad - k + 1 for v in shape[1:]]
        elif op == "batch_norm":
            norm = nn.BatchNorm2d if rank == 3 else nn.BatchNorm1d
            module = norm(shape[0], eps=layer.get("eps", 1e-5), momentum=layer.get("momentum", 0.1))
        elif op == "relu":
            module = nn.ReLU()
        elif op == "abs":
            module = Abs()
        elif op in ("max_pool", "avg_pool"):
            k, s = layer["kernel"], layer["stride"]
            pools = {
                ("max_pool", 2): nn.MaxPool1d,
                ("max_pool", 3): nn.MaxPool2d,
                ("avg_pool", 2): nn.AvgPool1d,
                ("avg_pool", 3): nn.AvgPool2d,
            }
            module = pools[(op, rank)](k, s)
            shape = [shape[0]] + [(v - k) // s + 1 for v in shape[1:]]
        elif op == "flatten":
            module = nn.Flatten()
            n = 1
            for v in shape:
                n *= v
            shape = [n]
        elif op == "linear":
            module = nn.Linear(shape[0], layer["out_features"], bias=layer.get("bias", True))
            shape = [layer["out_features"]]
        else:
            fail(f"layer `{name}`: op `{op}` is not supported here")
        modules.append((name, module))
    return nn.Sequential(OrderedDict(modules)), shape


class Abs(nn.Module):
    def forward(self, x):
        return x.abs()


def read_safetensors(path):
    """{name: tensor} of an f32 safetensors file, without the safetensors package."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    data = memoryview(blob)[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            fail(f"weights: `{name}` is {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32) if end > start else torch.zeros(0)
        out[name] = t.reshape(info["shape"])
    return out


def load_split(spec, per_sample):
    x_path, y_path, n = spec.rsplit(",", 2)
    n = int(n)
    with open(x_path, "rb") as f:
        xb = bytearray(f.read())
    with open(y_path, "rb") as f:
        yb = bytearray(f.read())
    if len(xb) != 4 * n * per_sample or len(yb) != n:
        fail(f"{spec}: expected {n} windows of {per_sample} values and {n} labels")
    x = torch.frombuffer(xb, dtype=torch.float32).reshape([n] + input_shape).clone()
    y = torch.frombuffer(yb, dtype=torch.uint8).to(torch.int64)
    return x, y


def random_split(n, generator):
    y = torch.arange(n) % 2
    x = torch.rand([n] + input_shape, generator=generator) - 0.5
    x[y == 1, :2, :4] += 1.5
    return x, y


with open(args.model, "rb") as f:
    model_ir = json.loads(f.read())
input_shape = list(model_ir["input"])
net, out_shape = build(model_ir)
if args.weights:
    weights = read_safetensors(args.weights)
    state = net.state_dict()
    missing = [k for k in state if not k.endswith("num_batches_tracked") and k not in weights]
    if missing:
        fail(f"weights: no tensors for {missing}")
    for k in state:
        if k in weights:
            if tuple(weights[k].shape) != tuple(state[k].shape):
                fail(f"weights: `{k}` has shape {list(weights[k].shape)}, the module {list(state[k].shape)}")
            state[k] = weights[k]
    net.load_state_dict(state)
dtype = torch.float64 if args.numerics == "float64" else torch.float32
net = net.to(dtype)
if args.perturb:
    noise = torch.Generator().manual_seed(args.seed + 2)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1 + args.perturb * torch.randn(p.shape, generator=noise, dtype=dtype))
net.train()

per_sample = 1
for v in input_shape:
    per_sample *= v
data_gen = torch.Generator().manual_seed(args.seed + 1)
train_x, train_y = load_split(args.train, per_sample) if args.train else random_split(args.samples, data_gen)
val_x, val_y = load_split(args.val, per_sample) if args.val else random_split(args.val_samples, data_gen)
train_x, val_x = train_x.to(dtype), val_x.to(dtype)


def load_order(path, n):
    """[epochs, n] int64 permutations from a raw uint32 file."""
    with open(path, "rb") as f:
        raw = bytearray(f.read())
    if n == 0 or not raw or len(raw) % (4 * n) != 0:
        fail(f"--order {path}: {len(raw)} bytes is not a whole number of permutations of {n} windows")
    # uint32 is read as int32: n < 2^31, so every index fits.
    rows = torch.frombuffer(raw, dtype=torch.int32).to(torch.int64).reshape(-1, n)
    if not torch.equal(rows.sort(dim=1).values, torch.arange(n).expand_as(rows)):
        fail(f"--order {path}: a row is not a permutation of 0..{n - 1}")
    return rows


orders = load_order(args.order, len(train_y)) if args.order else None

implementation = {
    "default": {},
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}[args.adamw]
optimizer = torch.optim.AdamW(
    net.parameters(),
    lr=args.lr,
    betas=(args.beta1, args.beta2),
    eps=args.eps,
    weight_decay=args.weight_decay,
    **implementation,
)
shuffle = torch.Generator().manual_seed(args.seed)

emit(
    {
        "event": "ready",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "adamw": args.adamw,
        "numerics": args.numerics + (f" perturbed {args.perturb:g}" if args.perturb else ""),
        "pid": os.getpid(),
        "tensors": {k: list(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")},
        "trainable": sum(p.numel() for p in net.parameters()),
        "output": out_shape,
        "train_samples": len(train_y),
        "val_samples": len(val_y),
        "order": "given" if orders is not None else "randperm",
        "order_epochs": len(orders) if orders is not None else None,
    }
)

EVAL_BATCH = 256
epoch = 0


def run_epoch():
    global epoch
    epoch += 1
    cpu0, wall0 = time.process_time(), time.perf_counter()
    n = len(train_y)
    if orders is None:
        order = torch.randperm(n, generator=shuffle)
    elif epoch <= len(orders):
        order = orders[epoch - 1]
    else:
        fail(f"--order has {len(orders)} epochs; epoch {epoch} was asked for")
    loss_sum, samples = 0.0, 0
    for start in range(0, n, args.batch_size):
        idx = order[start : start + args.batch_size]
        if len(idx) < 2:
            continue
        xb, yb = train_x[idx], train_y[idx]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(idx)
        samples += len(idx)
    # Validation in evaluation mode (running BatchNorm statistics).
    net.eval()
    val_loss, tp, fp, fn = 0.0, 0, 0, 0
    with torch.no_grad():
        for start in range(0, len(val_y), EVAL_BATCH):
            xb, yb = val_x[start : start + EVAL_BATCH], val_y[start : start + EVAL_BATCH]
            logits = net(xb)
            val_loss += F.cross_entropy(logits, yb, reduction="sum").item()
            pred = logits.argmax(dim=1)
            tp += int(((pred == 1) & (yb == 1)).sum())
            fp += int(((pred == 1) & (yb != 1)).sum())
            fn += int(((pred != 1) & (yb == 1)).sum())
    net.train()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    emit(
        {
            "event": "epoch",
            "epoch": epoch,
            "samples": samples,
            "seconds": wall,
            "cpu_seconds": cpu,
            "samples_per_second": samples / wall,
            "train_loss": loss_sum / samples,
            "val_loss": val_loss / len(val_y),
            "val_f1": (2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else 0.0,
        }
    )


if args.epochs is not None:
    for _ in range(args.epochs):
        run_epoch()
else:
    for line in sys.stdin:
        command = line.strip()
        if command == "epoch":
            run_epoch()
        elif command == "quit":
            break
        elif command:
            fail(f"unknown command `{command}` (expected `epoch` or `quit`)")
