/* Drives the generated driver against an array-backed memory and prints
 * every access, one per line:
 *   "# NAME" before a call, "rc NAME VALUE" after it,
 *   "w32 ADDR VALUE", "w8 ADDR VALUE", "out INDEX BYTE".
 * SHIM_CTL_BASE and SHIM_QUADRANT_STRIDE locate the quadrant control
 * registers whose status bits the driver polls. */
#include <stdio.h>
#include <stdlib.h>

#include "cnn_model.h"

#define SLOTS (1u << 16)

static uint32_t slot_addr[SLOTS];
static uint32_t slot_val[SLOTS];
static uint8_t slot_used[SLOTS];

static uint32_t *slot(uint32_t addr, int create)
{
    uint32_t h = (addr * 2654435761u) >> 16;

    while (slot_used[h] && slot_addr[h] != addr) {
        h = (h + 1u) & (SLOTS - 1u);
    }
    if (!slot_used[h]) {
        if (!create) {
            return NULL;
        }
        slot_used[h] = 1;
        slot_addr[h] = addr;
    }
    return &slot_val[h];
}

void shim_write32(uint32_t addr, uint32_t val)
{
    printf("w32 %08x %08x\n", (unsigned)addr, (unsigned)val);
    *slot(addr, 1) = val;
}

void shim_write8(uint32_t addr, uint8_t val)
{
    printf("w8 %08x %02x\n", (unsigned)addr, (unsigned)val);
}

/* The last value written, or a pattern of the address; plus the status
 * bits the driver waits for: memory cleared (SRAM_TEST bit 25) and
 * inference done (CTL bit 12). */
uint32_t shim_read32(uint32_t addr)
{
    const uint32_t *known = slot(addr, 0);
    uint32_t val = known ? *known : addr * 2654435761u;
    uint32_t q;

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
    static uint32_t words[1u << 20];
    static uint32_t input[CNN_MODEL_INPUT_WORDS + 1u];
    static uint32_t out[CNN_MODEL_OUTPUT_WORDS];
    unsigned char b[4];
    uint32_t n = 0u;
    uint32_t i;
    uint32_t first;
    FILE *f;

    if (argc != 2 || (f = fopen(argv[1], "rb")) == NULL) {
        fprintf(stderr, "usage: host_main cnn_model.bin\n");
        return 2;
    }
    while (n < (1u << 20) && fread(b, 1, 4, f) == 4) {
        words[n++] = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    }
    fclose(f);
    if (n != CNN_MODEL_BLOB_WORDS) {
        fprintf(stderr, "cnn_model.bin has %u words, the header says %u\n", (unsigned)n, (unsigned)CNN_MODEL_BLOB_WORDS);
        return 2;
    }

    CALL("init", cnn_init());
#ifdef CNN_MODEL_EMBED_WEIGHTS
    CALL("load_weights", cnn_load_weights());
#else
    CALL("load_model", cnn_load_model(words, n));
#endif
    CALL("load_bias", cnn_load_bias());
    CALL("configure", cnn_configure());
    for (i = 0u; i < CNN_MODEL_INPUT_WORDS; i++) {
        input[i] = 0xA1B2C3D4u + i;
    }
    /* Two chunks, as KZR sends them: 31 words (124 bytes), then the rest. */
    first = CNN_MODEL_INPUT_WORDS < 31u ? CNN_MODEL_INPUT_WORDS : 31u;
    CALL("load_input_0", cnn_load_input(input, 0u, first));
    CALL("load_input_1", cnn_load_input(input + first, 4u * first, CNN_MODEL_INPUT_WORDS - first));
    CALL("load_input_unaligned", cnn_load_input(input, 2u, 1u));
    CALL("load_input_overflow", cnn_load_input(input, 0u, CNN_MODEL_INPUT_WORDS + 1u));
    CALL("start", cnn_start());
    CALL("wait", cnn_wait(10u));
    CALL("unload", cnn_unload(out));
    for (i = 0u; i < CNN_MODEL_OUTPUT_BYTES; i++) {
        printf("out %u %02x\n", (unsigned)i, (unsigned)((const uint8_t *)out)[i]);
    }
    CALL("load_model_truncated", cnn_load_model(words, n - 1u));
    words[0] = 0x12345678u;
    CALL("load_model_bad_address", cnn_load_model(words, n));
    return 0;
}
