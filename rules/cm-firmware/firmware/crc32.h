/* CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as the frame
 * trailer and header check of kflow's device protocol use it. */
#ifndef KF_CRC32_H
#define KF_CRC32_H

#include <stdint.h>

/* Fills the lookup table; call once before kf_crc32_update. */
void kf_crc32_init(void);
/* Continues a CRC: start with crc = 0, feed the bytes in order. */
uint32_t kf_crc32_update(uint32_t crc, const uint8_t *data, uint32_t len);

#endif
