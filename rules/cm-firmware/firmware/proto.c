#include <string.h>

#include "blake3.h"
#include "crc32.h"
#include "proto.h"

/* Message types of frame.rs; a response is its request | 0x80. */
enum {
    T_PING = 0x01, T_GET_INFO, T_LOAD_MODEL_BEGIN, T_LOAD_MODEL_CHUNK, T_LOAD_MODEL_END, T_VERIFY,
    T_LOAD_INPUT, T_RUN, T_READ_OUTPUT, T_READ_STATISTICS, T_RESET,
    T_ERROR = 0xFF
};

static const char *const REQUEST_NAMES[12] = {
    "", "Ping", "GetInfo", "LoadModelBegin", "LoadModelChunk", "LoadModelEnd", "Verify",
    "LoadInput", "Run", "ReadOutput", "ReadStatistics", "Reset"};
static const char *const RESPONSE_NAMES[12] = {
    "", "Pong", "Info", "UploadStarted", "ChunkAccepted", "ModelLoaded", "Verified",
    "InputLoaded", "RunComplete", "Output", "Statistics", "ResetDone"};

static int known_type(uint32_t t)
{
    return (t >= 0x01 && t <= 0x0B) || (t >= 0x81 && t <= 0x8B) || t == T_ERROR;
}

static const char *type_name(uint32_t t)
{
    if (t == T_ERROR)
        return "Error";
    return t & 0x80u ? RESPONSE_NAMES[t & 0x7Fu] : REQUEST_NAMES[t];
}

static uint32_t max_payload(uint32_t t)
{
    return t == T_LOAD_MODEL_CHUNK || t == T_LOAD_INPUT || t == (0x80u | T_READ_OUTPUT) ? KF_MAX_PAYLOAD
                                                                                          : KF_SMALL_PAYLOAD;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---------------------------------------------------------------- text */

/* An error message under construction, cut at KF_MAX_ERROR_TEXT as
 * DeviceError::new cuts it (all text here is ASCII). */
typedef struct {
    char s[KF_MAX_ERROR_TEXT];
    uint32_t n;
} text;

static void t_str(text *t, const char *s)
{
    while (*s && t->n < KF_MAX_ERROR_TEXT)
        t->s[t->n++] = *s++;
}

static void t_u64(text *t, uint64_t v)
{
    char d[20];
    int i = 0;
    do {
        d[i++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (i > 0 && t->n < KF_MAX_ERROR_TEXT)
        t->s[t->n++] = d[--i];
}

static void t_hex(text *t, const uint8_t *b, uint32_t len)
{
    static const char H[] = "0123456789abcdef";
    uint32_t i;
    for (i = 0; i < len && t->n + 2 <= KF_MAX_ERROR_TEXT; i++) {
        t->s[t->n++] = H[b[i] >> 4];
        t->s[t->n++] = H[b[i] & 15u];
    }
}

static void t_hex8(text *t, uint32_t v)
{
    uint8_t b = (uint8_t)v;
    t_str(t, "0x");
    t_hex(t, &b, 1);
}

static void t_hex32(text *t, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    t_hex(t, b, 4);
}

/* ------------------------------------------------------------- postcard */

/* A payload being read. Any read past the end or a bad varint sets
 * `bad` (and a reason) and yields zeros, so that decoders read straight
 * through and check once. */
typedef struct {
    const uint8_t *p;
    uint32_t n, at;
    const char *bad;
} reader;

/* postcard's varint: LEB128 of at most `max_bytes` bytes, whose last byte
 * may carry only the bits the type has left. */
static uint64_t r_varint(reader *r, uint32_t max_bytes, uint32_t last_max)
{
    uint64_t v = 0;
    uint32_t i;
    for (i = 0; i < max_bytes; i++) {
        uint8_t b;
        if (r->at >= r->n) {
            if (!r->bad)
                r->bad = "the payload ended early";
            return 0;
        }
        b = r->p[r->at++];
        v |= (uint64_t)(b & 0x7Fu) << (7 * i);
        if (!(b & 0x80u)) {
            if (i == max_bytes - 1 && b > last_max && !r->bad)
                r->bad = "a varint is too large for its type";
            return v;
        }
    }
    if (!r->bad)
        r->bad = "a varint does not end";
    return 0;
}

static uint32_t r_u32(reader *r) { return (uint32_t)r_varint(r, 5, 0x0F); }
static uint64_t r_u64(reader *r) { return r_varint(r, 10, 0x01); }

/* Bytes with a varint length (a usize: up to 10 bytes on the 64-bit host). */
static const uint8_t *r_bytes(reader *r, uint32_t *len)
{
    uint64_t n = r_varint(r, 10, 0x01);
    const uint8_t *p = r->p + r->at;
    *len = 0;
    if (r->bad)
        return p;
    if (n > r->n - r->at) {
        r->bad = "the payload ended early";
        return p;
    }
    *len = (uint32_t)n;
    r->at += (uint32_t)n;
    return p;
}

static const uint8_t *r_raw(reader *r, uint32_t len)
{
    const uint8_t *p = r->p + r->at;
    if (r->bad)
        return p;
    if (len > r->n - r->at) {
        r->bad = "the payload ended early";
        return p;
    }
    r->at += len;
    return p;
}

/* A payload being written; callers stay far below its capacity, except
 * for output data, whose length is checked first. */
typedef struct {
    uint8_t *p;
    uint32_t n;
} writer;

static void w_varint(writer *w, uint64_t v)
{
    while (v >= 0x80u) {
        w->p[w->n++] = (uint8_t)(v | 0x80u);
        v >>= 7;
    }
    w->p[w->n++] = (uint8_t)v;
}

static void w_raw(writer *w, const void *data, uint32_t len)
{
    memcpy(w->p + w->n, data, len);
    w->n += len;
}

static void w_str(writer *w, const char *s)
{
    uint32_t len = (uint32_t)strlen(s);
    if (len > KF_MAX_TEXT)
        len = KF_MAX_TEXT;
    w_varint(w, len);
    w_raw(w, s, len);
}

static void w_opt_u64(writer *w, int has, uint64_t v)
{
    w->p[w->n++] = has ? 1 : 0;
    if (has)
        w_varint(w, v);
}

/* ---------------------------------------------------------------- frames */

static uint8_t rx[KF_MAX_FRAME];
static uint32_t rx_start, rx_end;
/* Garbage skipped but not yet answered (see next_event). */
static uint32_t garbage;

/* The answer to the last intact request, kept whole for a RETRY. */
static uint8_t answer_buf[KF_MAX_FRAME];
static uint32_t answer_len;
static uint8_t last_payload[KF_MAX_PAYLOAD];
static uint32_t last_payload_len, last_seq;
static uint8_t last_kind;
static int have_last;

/* Answers to unreadable bytes (an error frame is small). */
static uint8_t reject_buf[KF_HEADER_LEN + KF_SMALL_PAYLOAD + KF_TRAILER_LEN];

static uint32_t header_check(const uint8_t *h) { return kf_crc32_update(0, h, 14) & 0xFFFFu; }

/* Completes the frame around a payload already at buf + 16. */
static uint32_t finish_frame(uint8_t *buf, uint32_t kind, uint32_t seq, uint32_t payload_len)
{
    uint32_t check, crc;
    buf[0] = 'K';
    buf[1] = 'F';
    buf[2] = KF_VERSION;
    buf[3] = (uint8_t)kind;
    buf[4] = 0;
    buf[5] = 0;
    put32(buf + 6, seq);
    put32(buf + 10, payload_len);
    check = header_check(buf);
    buf[14] = (uint8_t)check;
    buf[15] = (uint8_t)(check >> 8);
    crc = kf_crc32_update(0, buf, KF_HEADER_LEN + payload_len);
    put32(buf + KF_HEADER_LEN + payload_len, crc);
    return KF_HEADER_LEN + payload_len + KF_TRAILER_LEN;
}

static uint32_t error_frame(uint8_t *buf, uint32_t seq, uint32_t code, const text *msg)
{
    writer w = {buf + KF_HEADER_LEN, 0};
    w_varint(&w, code);
    w_varint(&w, msg->n);
    w_raw(&w, msg->s, msg->n);
    return finish_frame(buf, T_ERROR, seq, w.n);
}

/* Sends an error frame for bytes that were not a readable frame. */
static void reject(int has_seq, uint32_t seq, uint32_t code, const text *msg)
{
    uint32_t len = error_frame(reject_buf, has_seq ? seq : 0, code, msg);
    kf_port_write(reject_buf, len);
}

/* Where a frame could start: the first "KF", or a final 'K' that the next
 * byte may complete; n when there is neither. */
static uint32_t find_frame_start(const uint8_t *d, uint32_t n)
{
    uint32_t i;
    for (i = 0; i + 1 < n; i++)
        if (d[i] == 'K' && d[i + 1] == 'F')
            return i;
    return n > 0 && d[n - 1] == 'K' ? n - 1 : n;
}

enum { H_NOT_A_HEADER, H_REJECTED, H_OK };

/* Header::parse: magic and check first (a header failing them is not a
 * header), then version, type, flags, reserved byte and length. */
static int parse_header(const uint8_t *h, uint32_t *code, text *why)
{
    uint32_t check = (uint32_t)h[14] | (uint32_t)h[15] << 8;
    uint32_t len = le32(h + 10);
    if (h[0] != 'K' || h[1] != 'F' || check != header_check(h))
        return H_NOT_A_HEADER;
    *code = KF_UNSUPPORTED;
    if (h[2] != KF_VERSION) {
        t_str(why, "protocol version ");
        t_u64(why, h[2]);
        t_str(why, " (this side speaks 2)");
        return H_REJECTED;
    }
    if (!known_type(h[3])) {
        t_str(why, "unknown message type ");
        t_hex8(why, h[3]);
        return H_REJECTED;
    }
    if (h[4] & ~1u) {
        t_str(why, "unknown flag bits ");
        t_hex8(why, h[4]);
        return H_REJECTED;
    }
    if (h[5] != 0) {
        t_str(why, "reserved header byte is ");
        t_hex8(why, h[5]);
        t_str(why, ", not 0");
        return H_REJECTED;
    }
    if (len > max_payload(h[3])) {
        *code = KF_TOO_LARGE;
        t_str(why, type_name(h[3]));
        t_str(why, " frame announces a ");
        t_u64(why, len);
        t_str(why, "-byte payload; the limit is ");
        t_u64(why, max_payload(h[3]));
        return H_REJECTED;
    }
    return H_OK;
}

static void answer_frame(uint32_t kind, uint32_t flags, uint32_t seq, const uint8_t *payload, uint32_t len);

static void answer_garbage(void)
{
    text t = {{0}, 0};
    t_u64(&t, garbage);
    t_str(&t, " bytes without a frame header skipped");
    garbage = 0;
    reject(0, 0, KF_CORRUPT_FRAME, &t);
}

/* FrameDecoder::decode_next over rx[rx_start..rx_end]: answers one frame
 * or one piece of unreadable bytes and returns 1, or returns 0 with *want
 * set to the bytes (from rx_start) it needs before it can go on.
 *
 * Garbage is answered once a header follows it or the line goes quiet,
 * not per byte: bytes arrive here one at a time, and one answer per
 * skipped byte would flood the host. */
static int decode_next(uint32_t *want)
{
    for (;;) {
        uint8_t *d = rx + rx_start;
        uint32_t n = rx_end - rx_start, cand, code = 0, need, crc;
        text why = {{0}, 0};
        int h;
        cand = find_frame_start(d, n);
        if (cand > 0) {
            garbage += cand;
            rx_start += cand;
            continue;
        }
        if (garbage >= KF_MAX_FRAME) {
            /* A stream of nothing but garbage is still answered now and then. */
            answer_garbage();
            return 1;
        }
        if (n < KF_HEADER_LEN) {
            *want = KF_HEADER_LEN;
            return 0;
        }
        h = parse_header(d, &code, &why);
        if (h == H_NOT_A_HEADER) {
            /* The magic was noise. */
            garbage++;
            rx_start++;
            continue;
        }
        if (garbage > 0) {
            answer_garbage();
            return 1;
        }
        if (h == H_REJECTED) {
            rx_start += KF_HEADER_LEN;
            reject(1, le32(d + 6), code, &why);
            return 1;
        }
        need = KF_HEADER_LEN + le32(d + 10) + KF_TRAILER_LEN;
        if (n < need) {
            *want = need;
            return 0;
        }
        crc = kf_crc32_update(0, d, need - KF_TRAILER_LEN);
        if (crc != le32(d + need - KF_TRAILER_LEN)) {
            /* Only the header is given up: a real frame may hide in what
             * looked like this one's payload. */
            rx_start += KF_HEADER_LEN;
            t_str(&why, "frame CRC mismatch (computed ");
            t_hex32(&why, crc);
            t_str(&why, ", frame says ");
            t_hex32(&why, le32(d + need - KF_TRAILER_LEN));
            t_str(&why, ")");
            reject(1, le32(d + 6), KF_CORRUPT_FRAME, &why);
            return 1;
        }
        rx_start += need;
        answer_frame(d[3], d[4], le32(d + 6), d + KF_HEADER_LEN, need - KF_HEADER_LEN - KF_TRAILER_LEN);
        return 1;
    }
}

/* FrameDecoder::give_up_partial, after the line went quiet mid-frame. */
static void give_up_partial(void)
{
    uint8_t *d = rx + rx_start;
    uint32_t n = rx_end - rx_start;
    text why = {{0}, 0};
    t_str(&why, "frame truncated: ");
    t_u64(&why, n);
    t_str(&why, " of ");
    if (n >= KF_HEADER_LEN) {
        /* decode_next leaves a whole header here only when it is intact. */
        t_u64(&why, KF_HEADER_LEN + le32(d + 10) + KF_TRAILER_LEN);
        t_str(&why, " bytes arrived");
        rx_start += KF_HEADER_LEN;
        reject(1, le32(d + 6), KF_CORRUPT_FRAME, &why);
    } else {
        t_u64(&why, KF_HEADER_LEN);
        t_str(&why, " bytes arrived");
        rx_start = rx_end;
        reject(0, 0, KF_CORRUPT_FRAME, &why);
    }
}

/* ------------------------------------------------------------ the board */

typedef struct {
    uint32_t len;
    uint8_t digest[32];
} summary;

static struct {
    /* Upload in progress. */
    int uploading;
    summary upload;
    uint32_t upload_received;
    int upload_buf;
    /* Loaded model. */
    int loaded;
    summary model;
    int model_buf;
    /* Input arriving in chunks. */
    int staging;
    uint32_t staged_total, staged_received;
    /* The board's input and output. */
    int input_loaded, output_valid;
    int have_stats;
    kf_stats stats;
} st;

/* A request's outcome: an error (code != 0, message in `msg`) or a
 * response payload of type `kind` in `w`. */
typedef struct {
    uint32_t code;
    text msg;
    uint32_t kind;
    writer w;
} outcome;

static void fail(outcome *o, uint32_t code, const char *msg)
{
    o->code = code;
    t_str(&o->msg, msg);
}

static void w_summary(writer *w, const summary *s)
{
    w_varint(w, s->len);
    w_raw(w, s->digest, 32);
}

static int same_summary(const summary *a, const summary *b)
{
    return a->len == b->len && memcmp(a->digest, b->digest, 32) == 0;
}

/* append_chunk of serve.rs: in order, a resent chunk may overlap what
 * arrived but must agree with it. */
static int append_chunk(outcome *o, uint8_t *bytes, uint32_t *received, uint32_t total, uint32_t offset,
                        const uint8_t *data, uint32_t len, const char *what)
{
    uint64_t end = (uint64_t)offset + len;
    uint32_t overlap;
    if (end > total) {
        o->code = KF_TOO_LARGE;
        t_str(&o->msg, what);
        t_str(&o->msg, " chunk at offset ");
        t_u64(&o->msg, offset);
        t_str(&o->msg, " ends at ");
        t_u64(&o->msg, end);
        t_str(&o->msg, ", past the announced ");
        t_u64(&o->msg, total);
        t_str(&o->msg, " bytes");
        return -1;
    }
    if (offset > *received) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, what);
        t_str(&o->msg, " chunk at offset ");
        t_u64(&o->msg, offset);
        t_str(&o->msg, "; the board has ");
        t_u64(&o->msg, *received);
        t_str(&o->msg, " bytes and expects offset ");
        t_u64(&o->msg, *received);
        return -1;
    }
    overlap = (uint32_t)end < *received ? (uint32_t)end : *received;
    if (memcmp(bytes + offset, data, overlap - offset) != 0) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, what);
        t_str(&o->msg, " chunk at offset ");
        t_u64(&o->msg, offset);
        t_str(&o->msg, " differs from the bytes already received there");
        return -1;
    }
    memcpy(bytes + *received, data + (overlap - offset), (uint32_t)end - overlap);
    if ((uint32_t)end > *received)
        *received = (uint32_t)end;
    return 0;
}

static void do_info(outcome *o)
{
    const kf_info *i = kf_board_info();
    o->kind = 0x82;
    w_str(&o->w, i->board);
    w_str(&o->w, i->accelerator);
    w_varint(&o->w, i->kernel_memory_bytes);
    w_varint(&o->w, i->bias_memory_bytes);
    w_varint(&o->w, i->data_memory_bytes);
    w_varint(&o->w, i->clock_hz);
    w_str(&o->w, i->firmware_version);
    w_str(&o->w, i->identity);
    w_varint(&o->w, i->max_model_bytes);
    w_varint(&o->w, i->max_chunk_bytes);
}

static void begin_upload(outcome *o, const summary *s)
{
    uint32_t limit = kf_board_info()->max_model_bytes;
    if (limit > KF_MAX_MODEL_BYTES)
        limit = KF_MAX_MODEL_BYTES;
    if (s->len > limit) {
        o->code = KF_TOO_LARGE;
        t_str(&o->msg, "a model of ");
        t_u64(&o->msg, s->len);
        t_str(&o->msg, " bytes does not fit: this board takes at most ");
        t_u64(&o->msg, limit);
        return;
    }
    st.uploading = 1;
    st.upload = *s;
    st.upload_received = 0;
    /* Into the buffer the loaded model is not in. */
    st.upload_buf = st.loaded ? 1 - st.model_buf : 0;
    o->kind = 0x83;
}

static void take_chunk(outcome *o, uint32_t offset, const uint8_t *data, uint32_t len)
{
    if (!st.uploading) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, "chunk at offset ");
        t_u64(&o->msg, offset);
        t_str(&o->msg, " without an upload in progress (begin one first)");
        return;
    }
    if (append_chunk(o, kf_board_model_buffer(st.upload_buf), &st.upload_received, st.upload.len, offset, data,
                     len, "model"))
        return;
    o->kind = 0x84;
    w_varint(&o->w, st.upload_received);
}

static void end_upload(outcome *o, const summary *s)
{
    uint8_t digest[32];
    const uint8_t *bytes;
    char why[KF_MAX_ERROR_TEXT];
    if (!st.uploading) {
        if (st.loaded && same_summary(&st.model, s)) {
            /* The answer to this end was lost and the host asks again. */
            o->kind = 0x85;
            w_summary(&o->w, s);
            return;
        }
        fail(o, KF_OUT_OF_ORDER, "end of an upload that was not begun");
        return;
    }
    if (!same_summary(&st.upload, s)) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, "upload end names ");
        t_u64(&o->msg, s->len);
        t_str(&o->msg, " bytes with digest ");
        t_hex(&o->msg, s->digest, 32);
        t_str(&o->msg, "; it began with ");
        t_u64(&o->msg, st.upload.len);
        t_str(&o->msg, " bytes, digest ");
        t_hex(&o->msg, st.upload.digest, 32);
        return;
    }
    if (st.upload_received < s->len) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, "upload ended after ");
        t_u64(&o->msg, st.upload_received);
        t_str(&o->msg, " of ");
        t_u64(&o->msg, s->len);
        t_str(&o->msg, " bytes");
        return;
    }
    st.uploading = 0;
    bytes = kf_board_model_buffer(st.upload_buf);
    kf_blake3(bytes, s->len, digest);
    if (memcmp(digest, s->digest, 32) != 0) {
        o->code = KF_DIGEST_MISMATCH;
        t_str(&o->msg, "the ");
        t_u64(&o->msg, s->len);
        t_str(&o->msg, " bytes received hash to ");
        t_hex(&o->msg, digest, 32);
        t_str(&o->msg, "; the upload announced ");
        t_hex(&o->msg, s->digest, 32);
        return;
    }
    /* Board::load_model: the old model, input and output are gone. */
    st.loaded = 0;
    st.have_stats = 0;
    st.input_loaded = 0;
    st.output_valid = 0;
    why[0] = 0;
    if (kf_board_check_model(bytes, s->len, why, sizeof why) != 0) {
        why[sizeof why - 1] = 0;
        fail(o, KF_REFUSED, why);
        return;
    }
    st.loaded = 1;
    st.model = *s;
    st.model_buf = st.upload_buf;
    o->kind = 0x85;
    w_summary(&o->w, s);
}

static void board_load_input(outcome *o, const uint8_t *input, uint32_t len)
{
    if (!st.loaded) {
        fail(o, KF_NO_MODEL, "flash a model first");
        return;
    }
    if (len != kf_board_input_len()) {
        o->code = KF_REFUSED;
        t_str(&o->msg, "the input is ");
        t_u64(&o->msg, len);
        t_str(&o->msg, " bytes; this model takes ");
        t_u64(&o->msg, kf_board_input_len());
        t_str(&o->msg, " (int8, CHW)");
        return;
    }
    memcpy(kf_board_input(), input, len);
    st.input_loaded = 1;
    st.output_valid = 0;
}

static void take_input_chunk(outcome *o, uint32_t total, uint32_t offset, const uint8_t *data, uint32_t len)
{
    uint8_t *staged = kf_board_staging_buffer();
    if (offset == 0) {
        st.staging = 1;
        st.staged_total = total;
        st.staged_received = 0;
    }
    if (!st.staging || st.staged_total != total) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, "input chunk at offset ");
        t_u64(&o->msg, offset);
        t_str(&o->msg, " of ");
        t_u64(&o->msg, total);
        t_str(&o->msg, " bytes without an input begun at offset 0");
        return;
    }
    if (append_chunk(o, staged, &st.staged_received, total, offset, data, len, "input"))
        return;
    if (st.staged_received == total) {
        st.staging = 0;
        board_load_input(o, staged, total);
        if (o->code)
            return;
    }
    o->kind = 0x87;
    w_varint(&o->w, st.staged_received == total ? total : st.staged_received);
}

static void w_stats(writer *w, const kf_stats *s)
{
    w_opt_u64(w, s->has_cycles, s->cycles);
    w_opt_u64(w, s->has_time_us, s->time_us);
    w_opt_u64(w, s->has_instructions, s->instructions);
}

static void run(outcome *o)
{
    if (!st.loaded) {
        fail(o, KF_NO_MODEL, "flash a model first");
        return;
    }
    if (!st.input_loaded) {
        fail(o, KF_NO_INPUT, "load an input first");
        return;
    }
    memset(&st.stats, 0, sizeof st.stats);
    kf_board_run(kf_board_model_buffer(st.model_buf), &st.stats);
    st.have_stats = 1;
    st.output_valid = 1;
    o->kind = 0x88;
    w_varint(&o->w, kf_board_output_len());
    w_stats(&o->w, &st.stats);
}

static void read_output(outcome *o, uint32_t offset)
{
    uint32_t len = kf_board_output_len(), n;
    if (!st.output_valid) {
        fail(o, KF_OUT_OF_ORDER, "no output: nothing has run since the last load");
        return;
    }
    if (offset > len) {
        o->code = KF_OUT_OF_ORDER;
        t_str(&o->msg, "output read at offset ");
        t_u64(&o->msg, offset);
        t_str(&o->msg, "; the output is ");
        t_u64(&o->msg, len);
        t_str(&o->msg, " bytes");
        return;
    }
    n = len - offset < KF_MAX_DATA ? len - offset : KF_MAX_DATA;
    o->kind = 0x89;
    w_varint(&o->w, len);
    w_varint(&o->w, n);
    w_raw(&o->w, kf_board_output() + offset, n);
}

/* Request::decode then Server::respond. */
static void respond(outcome *o, uint32_t kind, const uint8_t *payload, uint32_t len)
{
    reader r = {payload, len, 0, 0};
    summary s = {0, {0}};
    uint32_t u = 0, total = 0, n = 0;
    uint64_t nonce = 0;
    const uint8_t *data = payload;
    if (kind & 0x80u) {
        o->code = KF_UNSUPPORTED;
        t_str(&o->msg, type_name(kind));
        t_str(&o->msg, " request: ");
        t_str(&o->msg, type_name(kind));
        t_str(&o->msg, " is a response, not a request");
        return;
    }
    /* Decode every field first, as postcard does, then check what is left. */
    switch (kind) {
    case T_PING:
        nonce = r_u64(&r);
        break;
    case T_LOAD_MODEL_BEGIN:
    case T_LOAD_MODEL_END:
        s.len = r_u32(&r);
        memcpy(s.digest, r_raw(&r, 32), r.bad ? 0 : 32);
        break;
    case T_LOAD_MODEL_CHUNK:
        u = r_u32(&r);
        data = r_bytes(&r, &n);
        break;
    case T_LOAD_INPUT:
        total = r_u32(&r);
        u = r_u32(&r);
        data = r_bytes(&r, &n);
        break;
    case T_READ_OUTPUT:
        u = r_u32(&r);
        break;
    default:
        break;
    }
    if (r.bad || r.at != r.n) {
        o->code = KF_MALFORMED;
        t_str(&o->msg, type_name(kind));
        t_str(&o->msg, " request: ");
        t_str(&o->msg, type_name(kind));
        if (r.bad) {
            t_str(&o->msg, " payload is not valid: ");
            t_str(&o->msg, r.bad);
        } else {
            t_str(&o->msg, " payload has ");
            t_u64(&o->msg, r.n - r.at);
            t_str(&o->msg, " bytes after the message");
        }
        return;
    }
    /* Request::check: the limits of message.rs. */
    {
        const char *field = 0;
        uint64_t flen = 0, fmax = 0;
        if (kind == T_LOAD_MODEL_CHUNK && n > KF_MAX_DATA)
            field = "model chunk", flen = n, fmax = KF_MAX_DATA;
        else if (kind == T_LOAD_INPUT && n > KF_MAX_DATA)
            field = "input chunk", flen = n, fmax = KF_MAX_DATA;
        else if (kind == T_LOAD_INPUT && total > KF_MAX_TENSOR_BYTES)
            field = "input", flen = total, fmax = KF_MAX_TENSOR_BYTES;
        else if ((kind == T_LOAD_MODEL_BEGIN || kind == T_LOAD_MODEL_END) && s.len > KF_MAX_MODEL_BYTES)
            field = "model", flen = s.len, fmax = KF_MAX_MODEL_BYTES;
        if (field) {
            o->code = KF_TOO_LARGE;
            t_str(&o->msg, type_name(kind));
            t_str(&o->msg, " request: ");
            t_str(&o->msg, field);
            t_str(&o->msg, " is ");
            t_u64(&o->msg, flen);
            t_str(&o->msg, " bytes; the limit is ");
            t_u64(&o->msg, fmax);
            return;
        }
    }
    switch (kind) {
    case T_PING:
        o->kind = 0x81;
        w_varint(&o->w, nonce);
        break;
    case T_GET_INFO:
        do_info(o);
        break;
    case T_LOAD_MODEL_BEGIN:
        begin_upload(o, &s);
        break;
    case T_LOAD_MODEL_CHUNK:
        take_chunk(o, u, data, n);
        break;
    case T_LOAD_MODEL_END:
        end_upload(o, &s);
        break;
    case T_VERIFY:
        o->kind = 0x86;
        o->w.p[o->w.n++] = st.loaded ? 1 : 0;
        if (st.loaded)
            w_summary(&o->w, &st.model);
        break;
    case T_LOAD_INPUT:
        take_input_chunk(o, total, u, data, n);
        break;
    case T_RUN:
        run(o);
        break;
    case T_READ_OUTPUT:
        read_output(o, u);
        break;
    case T_READ_STATISTICS:
        if (!st.have_stats) {
            fail(o, KF_OUT_OF_ORDER, "no statistics: nothing has run yet");
            break;
        }
        o->kind = 0x8A;
        w_stats(&o->w, &st.stats);
        break;
    case T_RESET:
        st.input_loaded = 0;
        st.output_valid = 0;
        st.uploading = 0;
        st.staging = 0;
        st.have_stats = 0;
        o->kind = 0x8B;
        break;
    default:
        fail(o, KF_INTERNAL, "unknown request");
        break;
    }
}

/* Server::answer: a RETRY of the last request is answered from memory;
 * anything else is decoded and done, and its answer remembered. */
static void answer_frame(uint32_t kind, uint32_t flags, uint32_t seq, const uint8_t *payload, uint32_t len)
{
    static outcome o;
    if ((flags & 1u) && have_last && last_seq == seq && last_kind == kind && last_payload_len == len &&
        memcmp(last_payload, payload, len) == 0) {
        kf_port_write(answer_buf, answer_len);
        return;
    }
    /* The payload lives in rx, which the next read may overwrite. */
    memcpy(last_payload, payload, len);
    last_payload_len = len;
    last_kind = (uint8_t)kind;
    last_seq = seq;
    have_last = 1;
    o.code = 0;
    o.msg.n = 0;
    o.kind = 0;
    o.w.p = answer_buf + KF_HEADER_LEN;
    o.w.n = 0;
    respond(&o, kind, last_payload, len);
    if (o.code)
        answer_len = error_frame(answer_buf, seq, o.code, &o.msg);
    else
        answer_len = finish_frame(answer_buf, o.kind, seq, o.w.n);
    kf_port_write(answer_buf, answer_len);
}

void kf_serve(void)
{
    kf_crc32_init();
    for (;;) {
        uint32_t want = 0;
        int c = 0;
        if (decode_next(&want))
            continue;
        if (rx_start > 0) {
            memmove(rx, rx + rx_start, rx_end - rx_start);
            rx_end -= rx_start;
            rx_start = 0;
        }
        /* Take the bytes the decoder asked for in one go. A partial frame
         * (or unanswered garbage) gives up after the line is quiet for the
         * partial-frame timeout; an empty line waits for ever. */
        while (rx_end < want) {
            c = kf_port_read(rx_end > 0 || garbage > 0);
            if (c < 0)
                break;
            rx[rx_end++] = (uint8_t)c;
        }
        if (rx_end < want && c < 0) {
            if (garbage > 0)
                answer_garbage();
            else
                give_up_partial();
        }
    }
}
