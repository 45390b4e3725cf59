"""numpy peer for benches/simulate.rs: the same 3x3 pad-1 conv2d in exact
integer arithmetic (int32 matmul per tap, then the accelerator's rounding
shift and clamp), on the input and weights the bench wrote.

usage: numpy_conv.py DIR CIN COUT H W SHIFT REPS
Reads DIR/input.bin (int8 CHW) and DIR/weight.bin (int8 [out,in,3,3]),
writes DIR/numpy_out.bin (int8 CHW) and prints "seconds <best>".
"""
import sys
import time

import numpy as np


def conv(x, w, shift):
    cin, h, wd = x.shape
    cout = w.shape[0]
    xp = np.zeros((cin, h + 2, wd + 2), dtype=np.int32)
    xp[:, 1:-1, 1:-1] = x
    acc = np.zeros((cout, h * wd), dtype=np.int32)
    for ky in range(3):
        for kx in range(3):
            taps = np.ascontiguousarray(w[:, :, ky, kx], dtype=np.int32)
            cols = np.ascontiguousarray(xp[:, ky:ky + h, kx:kx + wd]).reshape(cin, h * wd)
            acc += taps @ cols
    n = 7 - shift
    acc = acc.astype(np.int64)
    y = (acc + (1 << (n - 1))) >> n if n > 0 else acc << (-n)
    return np.clip(y, -128, 127).astype(np.int8).reshape(cout, h, wd)


def main():
    folder, cin, cout, h, wd, shift, reps = sys.argv[1], *map(int, sys.argv[2:])
    x = np.fromfile(f"{folder}/input.bin", dtype=np.int8).reshape(cin, h, wd)
    w = np.fromfile(f"{folder}/weight.bin", dtype=np.int8).reshape(cout, cin, 3, 3)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        y = conv(x, w, shift)
        best = min(best, time.perf_counter() - start)
    y.tofile(f"{folder}/numpy_out.bin")
    print(f"seconds {best}")


main()
