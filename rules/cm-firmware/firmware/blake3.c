#include "blake3.h"

#define CHUNK_START 1u
#define CHUNK_END 2u
#define PARENT 4u
#define ROOT 8u
#define CHUNK_LEN 1024u
#define BLOCK_LEN 64u

static const uint32_t IV[8] = {0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
                               0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u};

/* The message word order of each round, the spec's permutation applied
 * r times (precomputed so that the round needs no copy). */
static const uint8_t SCHEDULE[7][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8},
    {3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1},
    {10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6},
    {12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4},
    {9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7},
    {11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13},
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32u - n)); }

static void g(uint32_t *v, int a, int b, int c, int d, uint32_t x, uint32_t y)
{
    v[a] = v[a] + v[b] + x;
    v[d] = rotr(v[d] ^ v[a], 16);
    v[c] = v[c] + v[d];
    v[b] = rotr(v[b] ^ v[c], 12);
    v[a] = v[a] + v[b] + y;
    v[d] = rotr(v[d] ^ v[a], 8);
    v[c] = v[c] + v[d];
    v[b] = rotr(v[b] ^ v[c], 7);
}

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The compression function, keeping only the first 8 output words (the
 * chaining value; a 32-byte root output needs no more). */
static void compress(uint32_t cv[8], const uint8_t block[BLOCK_LEN], uint32_t block_len, uint64_t counter,
                     uint32_t flags)
{
    uint32_t m[16], v[16];
    int i, r;
    for (i = 0; i < 16; i++)
        m[i] = load32(block + 4 * i);
    for (i = 0; i < 8; i++) {
        v[i] = cv[i];
        v[i + 8] = i < 4 ? IV[i] : 0;
    }
    v[12] = (uint32_t)counter;
    v[13] = (uint32_t)(counter >> 32);
    v[14] = block_len;
    v[15] = flags;
    for (r = 0; r < 7; r++) {
        const uint8_t *s = SCHEDULE[r];
        g(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
        g(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
        g(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
        g(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
        g(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
        g(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
        g(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
        g(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (i = 0; i < 8; i++)
        cv[i] = v[i] ^ v[i + 8];
}

/* The chaining value of one chunk (up to 1024 bytes; the empty input is
 * one empty chunk). `root` marks its last block as the root when the
 * whole input is this one chunk. */
static void chunk_cv(const uint8_t *data, uint32_t len, uint64_t index, int root, uint32_t cv[8])
{
    uint8_t block[BLOCK_LEN];
    uint32_t flags = CHUNK_START, i, n;
    for (i = 0; i < 8; i++)
        cv[i] = IV[i];
    do {
        n = len > BLOCK_LEN ? BLOCK_LEN : len;
        for (i = 0; i < BLOCK_LEN; i++)
            block[i] = i < n ? data[i] : 0;
        data += n;
        len -= n;
        if (len == 0)
            flags |= CHUNK_END | (root ? ROOT : 0u);
        compress(cv, block, n, index, flags);
        flags = 0;
    } while (len > 0);
}

static void parent_cv(const uint32_t left[8], const uint32_t right[8], int root, uint32_t out[8])
{
    uint8_t block[BLOCK_LEN];
    uint32_t cv[8];
    int i;
    for (i = 0; i < 8; i++) {
        uint32_t l = left[i], r = right[i];
        block[4 * i] = (uint8_t)l;
        block[4 * i + 1] = (uint8_t)(l >> 8);
        block[4 * i + 2] = (uint8_t)(l >> 16);
        block[4 * i + 3] = (uint8_t)(l >> 24);
        block[32 + 4 * i] = (uint8_t)r;
        block[32 + 4 * i + 1] = (uint8_t)(r >> 8);
        block[32 + 4 * i + 2] = (uint8_t)(r >> 16);
        block[32 + 4 * i + 3] = (uint8_t)(r >> 24);
        cv[i] = IV[i];
    }
    compress(cv, block, BLOCK_LEN, 0, PARENT | (root ? ROOT : 0u));
    for (i = 0; i < 8; i++)
        out[i] = cv[i];
}

void kf_blake3(const uint8_t *data, uint32_t len, uint8_t out[32])
{
    /* The spec's incremental tree: after chunk k (k >= 1 chunks done),
     * merge as many stack entries as k has trailing zero bits. The last
     * chunk is kept out of the merges so that the final fold can mark the
     * root. 2^32 bytes are 2^22 chunks: 23 entries suffice. */
    uint32_t stack[24][8], cv[8];
    uint32_t depth = 0, i;
    uint64_t chunks = 0;
    while (len > CHUNK_LEN) {
        chunk_cv(data, CHUNK_LEN, chunks, 0, cv);
        data += CHUNK_LEN;
        len -= CHUNK_LEN;
        chunks++;
        uint64_t total = chunks;
        while ((total & 1u) == 0) {
            depth--;
            parent_cv(stack[depth], cv, 0, cv);
            total >>= 1;
        }
        for (i = 0; i < 8; i++)
            stack[depth][i] = cv[i];
        depth++;
    }
    chunk_cv(data, len, chunks, depth == 0, cv);
    while (depth > 0) {
        depth--;
        parent_cv(stack[depth], cv, depth == 0, cv);
    }
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)cv[i];
        out[4 * i + 1] = (uint8_t)(cv[i] >> 8);
        out[4 * i + 2] = (uint8_t)(cv[i] >> 16);
        out[4 * i + 3] = (uint8_t)(cv[i] >> 24);
    }
}
