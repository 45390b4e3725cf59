#!/usr/bin/env python3
"""What ADI's izer's generated C writes, as tests/data/izer-reference's izer.json.

Usage: izer_extract.py RUN_DIR

RUN_DIR is an `--out` directory of the izer harness (../shared/tools/izer-harness,
run_izer.py) for an accepted network. Reads the izer's cnn.c, weights.h, main.c and
sampledata.h under RUN_DIR/work/izer-out/net/ and writes RUN_DIR/izer.json with the fields
the reference comparison reads (izer/compare.rs): `device`, `registers.{init,configure,start}`
(the literal `*((volatile uint32_t *) A) = V;` statements of cnn_init, cnn_configure and
cnn_start, in order), `polls.init` (cnn_init's busy-waits), `read_modify_write.{isr,stop,continue}`
(the `&=`/`|=` statements of CNN_ISR, cnn_stop and cnn_continue), `kernels` (the KERNELS chunk stream), `bias` (cnn_load_bias's copies),
`input` (load_input's copies) and `unload` (the data-memory address of every byte of
output.npy, found by compiling the izer's cnn_unload() on the host over a memory whose bytes
spell their own addresses). Every statement of those functions that touches the accelerator
must be one of the recognised forms, or the script fails.

Needs only the Python standard library and gcc. Works on Linux x86-64 (every page cnn_unload()
reads is mapped at its device address when it first faults).
"""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile

WRITE = re.compile(r'^\*\(\(volatile uint32_t \*\) (0x[0-9a-f]+)\) = (0x[0-9a-f]+);')
POLL = re.compile(r'^while \(\(\*\(\(volatile uint32_t \*\) 0x[0-9a-f]+\) & 0x[0-9a-f]+\) != 0x[0-9a-f]+\);')
POLLED = re.compile(r'^while \(\(\*\(\(volatile uint32_t \*\) (0x[0-9a-f]+)\) & (0x[0-9a-f]+)\) != (0x[0-9a-f]+)\);')
RMW = re.compile(r'^\*\(\(volatile uint32_t \*\) (0x[0-9a-f]+)\) (&=|\|=) ([0-9a-fx()<|~ ]+);')
COPY = re.compile(r'^(memcpy32|memcpy_8to32)\(\(uint32_t \*\) (0x[0-9a-f]+), (\w+), (?:sizeof\(uint8_t\) \* )?(\d+)\);')


def function(text, name):
    """The body lines of `name` in `text`, stripped, without comments and blank lines."""
    m = re.search(r'^\w[^\n]*\b' + name + r'\([^)]*\)\n\{\n(.*?)^\}', text, re.S | re.M)
    if not m:
        sys.exit(f'izer_extract: no function {name}')
    lines = []
    for line in m.group(1).splitlines():
        line = line.split('//')[0].strip()
        if line:
            lines.append(line)
    return lines


def registers(cnn, name):
    writes = []
    for line in function(cnn, name):
        m = WRITE.match(line)
        if m:
            writes.append([f'0x{int(m.group(1), 16):08x}', f'0x{int(m.group(2), 16):08x}'])
        elif 'volatile' in line and not POLL.match(line):
            sys.exit(f'izer_extract: {name}: unrecognised statement `{line}`')
    return writes


def polls(cnn, name):
    """The `while ((REG & MASK) != VALUE);` busy-waits of `name`, in order."""
    found = []
    for line in function(cnn, name):
        m = POLLED.match(line)
        if m:
            found.append([f'0x{int(g, 16):08x}' for g in m.groups()])
    return found


def read_modify_write(cnn, name):
    """The `REG &= EXPR;` and `REG |= EXPR;` statements of `name`, with EXPR
    (an integer expression of shifts, ors and complements) evaluated to 32 bits."""
    found = []
    for line in function(cnn, name):
        m = RMW.match(line)
        if m:
            value = eval(m.group(3), {'__builtins__': {}}) & 0xffffffff
            found.append([f'0x{int(m.group(1), 16):08x}', m.group(2), f'0x{value:08x}'])
        elif 'volatile' in line:
            sys.exit(f'izer_extract: {name}: unrecognised statement `{line}`')
    return found


def arrays(text):
    """`#define NAME { a, b, ... }` as NAME -> [ints]."""
    out = {}
    for m in re.finditer(r'#define (\w+) \{(.*?)\}', text, re.S):
        body = m.group(2).replace('\\', ' ')
        out[m.group(1)] = [int(v, 0) for v in re.findall(r'0x[0-9a-fA-F]+|\d+', body)]
    return out


def statics(text):
    """`static const uint..._t name[] = DEFINE;` as name -> DEFINE."""
    return dict(re.findall(r'static const uint(?:8|32)_t (\w+)\[\] = (\w+);', text))


def copies(text, name, defines, names):
    out = []
    for line in function(text, name):
        m = COPY.match(line)
        if m:
            address, array, count = int(m.group(2), 16), m.group(3), int(m.group(4))
            values = defines[names[array]][:count]
            assert len(values) == count, line
            out.append([f'0x{address:08x}', [f'0x{v & 0xffffffff:08x}' for v in values]])
        elif 'volatile' in line or 'memcpy' in line:
            sys.exit(f'izer_extract: {name}: unrecognised statement `{line}`')
    return out


def kernels(defines):
    stream = defines.get('KERNELS', [0])
    chunks, i = [], 0
    while stream[i] != 0:
        address, n = stream[i], stream[i + 1]
        chunks.append([f'0x{address:08x}', [f'0x{w:08x}' for w in stream[i + 2:i + 2 + n]]])
        i += 2 + n
    return chunks


HOST = r'''
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#define CNN_OK 1
%s
/* Every page cnn_unload() touches is mapped when it first faults and filled
   so that the byte at address A reads as byte `round` of A. */
static int round_;
static uintptr_t pages[4096];
static int npages;
static void fault(int sig, siginfo_t *si, void *ctx)
{
    uintptr_t page = (uintptr_t)si->si_addr & ~(uintptr_t)4095, a;
    (void)sig; (void)ctx;
    if (npages == 4096 || page >= ((uintptr_t)1 << 32) ||
        mmap((void *)page, 4096, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != (void *)page)
        _exit(3);
    pages[npages++] = page;
    for (a = page; a < page + 4096; a++)
        *(uint8_t *)a = (uint8_t)(a >> (8 * round_));
}
static uint32_t buf[1 << 20];
int main(int argc, char **argv)
{
    uint32_t n = (uint32_t)strtoul(argv[1], 0, 0), a;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, 0);
    for (round_ = 0; round_ < 4; round_++) {
        while (npages > 0)
            munmap((void *)pages[--npages], 4096);
        cnn_unload(buf);
        for (a = 0; a < n; a++) printf("%%02x\n", ((uint8_t *)buf)[a]);
    }
    return 0;
}
'''


def unload(cnn, out_bytes):
    """The address of each byte of the buffer cnn_unload() writes, first `out_bytes`."""
    body = re.search(r'^int cnn_unload\(uint32_t \*out_buf(?:32)?\)\n\{\n.*?^\}', cnn, re.S | re.M)
    if not body:
        sys.exit('izer_extract: no cnn_unload')
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, 'unload.c'), os.path.join(d, 'unload')
        with open(src, 'w') as f:
            f.write(HOST % body.group(0))
        subprocess.run(['gcc', '-O2', '-w', '-D_GNU_SOURCE', src, '-o', exe], check=True)
        out = subprocess.run([exe, str(out_bytes)],
                             check=True, capture_output=True, text=True).stdout.split()
    rounds = [[int(v, 16) for v in out[k * out_bytes:(k + 1) * out_bytes]] for k in range(4)]
    return [sum(rounds[k][j] << (8 * k) for k in range(4)) for j in range(out_bytes)]


def npy_shape(path):
    with open(path, 'rb') as f:
        data = f.read(256)
    n = struct.unpack('<H', data[8:10])[0]
    header = data[10:10 + n].decode()
    shape = tuple(int(v) for v in re.search(r"'shape': \(([^)]*)\)", header).group(1).split(',')
                  if v.strip())
    width = 4 if "'<i4'" in header else 1
    return shape, width


def word_order(log_text, channels, pixels):
    """For a 32-bit output: the (channel, pixel) of each word of cnn_unload()'s buffer, in the
    izer's order (izer/unload.py:164-309): per pass, memory instance by instance of the output
    map, pixel by pixel, the instance's channels."""
    maps = re.search(r'^Output processors\s*= \[([^]]*)\]', log_text, re.M).group(1).split(',')
    procs = int(maps[-1], 16)
    expand = (channels + 63) // 64
    thresh = (channels + expand - 1) // expand
    if channels > 64:
        thresh = min((thresh + 3) & ~3, 64)
    start = (procs & -procs).bit_length() - 1 & ~3
    init = procs >> start
    order, c, m = [], 0, init
    while c < channels:
        if c % thresh == 0:
            m = init
        n = bin(m & 0xf).count('1')
        for p in range(pixels):
            for k in range(n):
                order.append((c + k, p))
        c += n
        m >>= 4
    return order


def main():
    run = sys.argv[1]
    net = os.path.join(run, 'work', 'izer-out', 'net')
    read = lambda name: open(os.path.join(net, name)).read()
    cnn, main_c = read('cnn.c'), read('main.c')
    defines = arrays(read('weights.h'))
    defines.update(arrays(read('sampledata.h')))
    names = statics(cnn)
    names.update(statics(main_c))
    verdict = json.load(open(os.path.join(run, 'verdict.json')))
    device = verdict['device']
    shape, width = npy_shape(os.path.join(run, 'output.npy'))
    count = 1
    for d in shape:
        count *= d
    out_bytes = count * width
    if width == 4:
        pixels = count // shape[0]
        order = word_order(read('log.txt'), shape[0], pixels)
        raw = unload(cnn, 4 * len(order))
        addresses = [0] * out_bytes
        for i, (c, p) in enumerate(order):
            if c < shape[0]:
                for b in range(4):
                    addresses[4 * (c * pixels + p) + b] = raw[4 * i + b]
    else:
        addresses = unload(cnn, out_bytes)
    izer = {
        'format': 'ai8x-reference-izer/1',
        'device': device,
        'registers': {phase: registers(cnn, 'cnn_' + phase) for phase in ('init', 'configure', 'start')},
        'polls': {'init': polls(cnn, 'cnn_init')},
        'read_modify_write': {
            phase: read_modify_write(cnn, name)
            for phase, name in (('isr', 'CNN_ISR'), ('stop', 'cnn_stop'), ('continue', 'cnn_continue'))
        },
        'kernels': kernels(defines),
        'bias': copies(cnn, 'cnn_load_bias', defines, names),
        'input': copies(main_c, 'load_input', defines, names),
        'unload': {
            'output_bytes': out_bytes,
            'map': [[j, f'0x{a:08x}', 1, 1] for j, a in enumerate(addresses)],
        },
        'output': {'shape': list(shape), 'dtype': 'int32' if width == 4 else 'int8'},
    }
    with open(os.path.join(run, 'izer.json'), 'w') as f:
        json.dump(izer, f)


if __name__ == '__main__':
    main()
