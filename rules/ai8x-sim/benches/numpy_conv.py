"""numpy peer for benches/simulate.rs: the same 3x3 pad-1 conv2d as one
float32 GEMM through numpy's BLAS (im2col by stride tricks), then the
accelerator's rounding shift and clamp. Every sum of int8 products here stays
below 2^24 in magnitude, so float32 holds it exactly and the output must be
byte-identical to the simulator's.

usage: numpy_conv.py DIR CIN COUT H W SHIFT REPS
Reads DIR/input.bin (int8 CHW) and DIR/weight.bin (int8 [out,in,3,3]),
writes DIR/numpy_out.bin (int8 CHW) and prints "seconds <best>". The thread
count is BLAS's (OPENBLAS_NUM_THREADS).
"""
import sys
import time

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv(x, w, shift):
    cin, h, wd = x.shape
    cout = w.shape[0]
    xp = np.zeros((cin, h + 2, wd + 2), dtype=np.float32)
    xp[:, 1:-1, 1:-1] = x
    sc, sy, sx = xp.strides
    # (cin, ky, kx, y, x) views of the padded planes; reshape copies them into im2col.
    cols = as_strided(xp, shape=(cin, 3, 3, h, wd), strides=(sc, sy, sx, sy, sx)).reshape(cin * 9, h * wd)
    acc = w.reshape(cout, cin * 9) @ cols
    n = 7 - shift
    acc = acc.astype(np.int64)
    y = (acc + (1 << (n - 1))) >> n if n > 0 else acc << (-n)
    return np.clip(y, -128, 127).astype(np.int8).reshape(cout, h, wd)


def main():
    folder, cin, cout, h, wd, shift, reps = sys.argv[1], *map(int, sys.argv[2:])
    x = np.fromfile(f"{folder}/input.bin", dtype=np.int8).reshape(cin, h, wd)
    w = np.fromfile(f"{folder}/weight.bin", dtype=np.int8).reshape(cout, cin, 3, 3).astype(np.float32)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        y = conv(x, w, shift)
        best = min(best, time.perf_counter() - start)
    y.tofile(f"{folder}/numpy_out.bin")
    print(f"seconds {best}")


main()
