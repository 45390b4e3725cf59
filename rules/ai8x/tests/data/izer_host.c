/* Drives a generated cnn_model.c in the order of the izer's main():
 * init, kernels, bias, configure, input, start, (ISR, stop, continue),
 * unload; and prints every accelerator write, one per line:
 *   "# PHASE" before a call, "rc PHASE VALUE" after it,
 *   "w32 ADDR VALUE", "w8 ADDR VALUE", "out INDEX ADDR",
 *   and "r32 ADDR" for every register init reads (its polls).
 * The input words are read from argv[1] (little-endian, as
 * cnn_load_input() takes them). cnn_unload() runs four times on a memory
 * whose byte at address A reads as byte k of A in round k, so that "out"
 * gives the address every output byte was read from.
 * SHIM_CTL_BASE and SHIM_QUADRANT_STRIDE locate the quadrant control
 * registers whose status bits the driver polls. */
#include <stdio.h>

#include "cnn_model.h"

static int unload_round = -1;
/* What every register reads as during the read-modify-write phases (ISR,
 * stop, continue), so that "&= mask" writes the mask and "|= bits" the
 * bits; and whether reads are printed ("r32 ADDR", the polls of init). */
static int rmw_reads = -1;
static int print_reads = 0;

void shim_write32(uint32_t addr, uint32_t val)
{
    printf("w32 %08x %08x\n", (unsigned)addr, (unsigned)val);
}

void shim_write8(uint32_t addr, uint8_t val)
{
    printf("w8 %08x %02x\n", (unsigned)addr, (unsigned)val);
}

/* Status bits the driver waits for are always set: memory cleared
 * (SRAM_TEST bit 25) and inference done (CTL bit 12). */
uint32_t shim_read32(uint32_t addr)
{
    uint32_t val = 0u;
    uint32_t q;
    uint32_t b;

    if (print_reads) {
        printf("r32 %08x\n", (unsigned)addr);
    }
    if (rmw_reads >= 0) {
        return rmw_reads ? 0xffffffffu : 0u;
    }
    if (unload_round >= 0) {
        for (b = 0u; b < 4u; b++) {
            val |= (((addr + b) >> (8u * (uint32_t)unload_round)) & 0xffu) << (8u * b);
        }
        return val;
    }
    for (q = 0u; q < 4u; q++) {
        if (addr == SHIM_CTL_BASE + q * SHIM_QUADRANT_STRIDE) {
            val |= 1u << 12;
        }
        if (addr == SHIM_CTL_BASE + q * SHIM_QUADRANT_STRIDE + 12u) {
            val |= 1u << 25;
        }
    }
    return val;
}

#define CALL(name, expr)                            \
    do {                                            \
        printf("# %s\n", name);                     \
        printf("rc %s %d\n", name, (int)(expr));    \
    } while (0)

int main(int argc, char **argv)
{
    static uint32_t input[CNN_MODEL_INPUT_WORDS];
    static uint32_t out[4][CNN_MODEL_OUTPUT_WORDS];
    unsigned char b[4];
    uint32_t n = 0u;
    uint32_t i;
    FILE *f;

    if (argc != 2 || (f = fopen(argv[1], "rb")) == NULL) {
        fprintf(stderr, "usage: izer_host input.bin\n");
        return 2;
    }
    while (n < CNN_MODEL_INPUT_WORDS && fread(b, 1, 4, f) == 4) {
        input[n++] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    }
    fclose(f);
    if (n != CNN_MODEL_INPUT_WORDS) {
        fprintf(stderr, "input has %u words, the header says %u\n", (unsigned)n, (unsigned)CNN_MODEL_INPUT_WORDS);
        return 2;
    }
    print_reads = 1;
    CALL("init", cnn_init());
    print_reads = 0;
    CALL("kernels", cnn_load_weights());
    CALL("bias", cnn_load_bias());
    CALL("configure", cnn_configure());
    CALL("input", cnn_load_input(input, 0u, n));
    CALL("start", cnn_start());
    rmw_reads = 1;
    printf("# isr\n");
    cnn_isr();
    printf("# stop\n");
    cnn_stop();
    rmw_reads = 0;
    printf("# continue\n");
    cnn_continue();
    rmw_reads = -1;
    for (unload_round = 0; unload_round < 4; unload_round++) {
        CALL("unload", cnn_unload(out[unload_round]));
    }
    for (i = 0u; i < CNN_MODEL_OUTPUT_BYTES; i++) {
        uint32_t addr = 0u;
        int r;

        for (r = 0; r < 4; r++) {
            addr |= (uint32_t)((const uint8_t *)out[r])[i] << (8 * r);
        }
        printf("out %u %08x\n", (unsigned)i, (unsigned)addr);
    }
    return 0;
}
