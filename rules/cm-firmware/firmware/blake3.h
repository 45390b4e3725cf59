/* BLAKE3 (default hash mode, 32-byte output) of a buffer held whole in
 * memory, written from the BLAKE3 specification: the model digest of
 * kflow's device protocol. */
#ifndef KF_BLAKE3_H
#define KF_BLAKE3_H

#include <stdint.h>

void kf_blake3(const uint8_t *data, uint32_t len, uint8_t out[32]);

#endif
