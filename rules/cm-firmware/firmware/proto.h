/* The board side of kflow's device protocol (rules/device: frame.rs,
 * message.rs, serve.rs), free of hardware access so that the host can
 * compile it too. The platform supplies the byte stream and the board
 * (the hooks below); kf_serve never returns. */
#ifndef KF_PROTO_H
#define KF_PROTO_H

#include <stdint.h>

#define KF_VERSION 2u
#define KF_HEADER_LEN 16u
#define KF_TRAILER_LEN 4u
#define KF_MAX_PAYLOAD (64u * 1024u)
#define KF_SMALL_PAYLOAD (2u * 1024u)
#define KF_MAX_FRAME (KF_HEADER_LEN + KF_MAX_PAYLOAD + KF_TRAILER_LEN)
#define KF_MAX_TEXT 128u
#define KF_MAX_ERROR_TEXT 1024u
#define KF_MAX_DATA (60u * 1024u)
#define KF_MAX_TENSOR_BYTES (4u * 1024u * 1024u)
#define KF_MAX_MODEL_BYTES (16u * 1024u * 1024u)

/* ErrorCode of message.rs. */
enum kf_error_code {
    KF_CORRUPT_FRAME = 1,
    KF_MALFORMED = 2,
    KF_UNSUPPORTED = 3,
    KF_TOO_LARGE = 4,
    KF_OUT_OF_ORDER = 5,
    KF_NO_MODEL = 6,
    KF_NO_INPUT = 7,
    KF_DIGEST_MISMATCH = 8,
    KF_REFUSED = 9,
    KF_INTERNAL = 10
};

/* DeviceInfo of message.rs. */
typedef struct {
    const char *board;
    const char *accelerator;
    uint32_t kernel_memory_bytes;
    uint32_t bias_memory_bytes;
    uint32_t data_memory_bytes;
    uint64_t clock_hz;
    const char *firmware_version;
    const char *identity;
    uint32_t max_model_bytes;
    uint32_t max_chunk_bytes;
} kf_info;

/* RunStatistics of message.rs: each field is an Option<u64>. */
typedef struct {
    int has_cycles, has_time_us, has_instructions;
    uint64_t cycles, time_us, instructions;
} kf_stats;

/* ---- supplied by the platform ---- */

/* The next received byte. With `partial` set, -1 when none arrived within
 * the partial-frame timeout; otherwise waits as long as it takes. */
int kf_port_read(int partial);
void kf_port_write(const uint8_t *data, uint32_t len);

/* ---- supplied by the board ---- */

const kf_info *kf_board_info(void);
/* Two buffers of info.max_model_bytes each (4-byte aligned): one holds
 * the loaded model while the other takes an upload, as serve.rs keeps the
 * loaded model until an upload has ended. */
uint8_t *kf_board_model_buffer(int which);
/* KF_MAX_TENSOR_BYTES for an input arriving in chunks. */
uint8_t *kf_board_staging_buffer(void);
/* 0 when the board can run this model; else writes why into `why`. */
int kf_board_check_model(const uint8_t *model, uint32_t len, char *why, uint32_t why_len);
uint32_t kf_board_input_len(void);
uint32_t kf_board_output_len(void);
/* Runs one inference; `input` and `output` are the board's own buffers
 * (kf_board_input, kf_board_output). */
void kf_board_run(const uint8_t *model, kf_stats *stats);
uint8_t *kf_board_input(void);
uint8_t *kf_board_output(void);

/* Serves requests for ever. */
void kf_serve(void);

#endif
