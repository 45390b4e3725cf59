#include "crc32.h"

/* A 1 KiB table in RAM: a byte per table step is about 5 instructions,
 * against 40 bitwise, and every received byte is checked. */
static uint32_t table[256];

void kf_crc32_init(void)
{
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++)
            c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        table[i] = c;
    }
}

uint32_t kf_crc32_update(uint32_t crc, const uint8_t *data, uint32_t len)
{
    uint32_t c = ~crc;
    while (len--)
        c = table[(c ^ *data++) & 0xFFu] ^ (c >> 8);
    return ~c;
}
