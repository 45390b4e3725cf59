/* Register shim for host tests: cnn_model.c's accesses go to functions
 * that record them instead of to the accelerator. */
#ifndef SHIM_H
#define SHIM_H

#include <stdint.h>

void shim_write32(uint32_t addr, uint32_t val);
void shim_write8(uint32_t addr, uint8_t val);
uint32_t shim_read32(uint32_t addr);

#define CNN_WRITE32(addr, val) shim_write32((addr), (val))
#define CNN_WRITE8(addr, val) shim_write8((addr), (uint8_t)(val))
#define CNN_READ32(addr) shim_read32((addr))

#endif
