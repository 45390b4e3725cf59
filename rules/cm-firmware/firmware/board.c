/* The MPS2 board side (mps2-an386 and mps2-an500 share it): reset, UART0,
 * timers, instruction counting and the board hooks of proto.h around the generated model (model.h). */
#include <stdint.h>
#include <string.h>

#include "model.h"
#include "proto.h"

/* The build names the firmware ("kflow-cm4 0.1.0") and the board. */
#ifndef KF_FIRMWARE_VERSION
#define KF_FIRMWARE_VERSION "kflow-cm4 0"
#endif
#ifndef KF_BOARD
#define KF_BOARD "mps2-an386"
#endif

#define REG(addr) (*(volatile uint32_t *)(addr))

/* CMSDK APB UART0 (RX interrupt 0, TX interrupt 1). */
#define UART0_DATA REG(0x40004000u)
#define UART0_STATE REG(0x40004004u)
#define UART0_CTRL REG(0x40004008u)
#define UART0_INTCLEAR REG(0x4000400Cu)
#define UART0_BAUDDIV REG(0x40004010u)
#define UART_TX_FULL 1u
#define UART_RX_FULL 2u

/* CMSDK APB TIMER1 (interrupt 9): the partial-frame timeout. TIMER0
 * counts instructions (count.S). */
#define TIMER1_CTRL REG(0x40001000u)
#define TIMER1_VALUE REG(0x40001004u)
#define TIMER1_RELOAD REG(0x40001008u)
#define TIMER1_INT REG(0x4000100Cu)

#define NVIC_ISER0 REG(0xE000E100u)
#define NVIC_ICPR0 REG(0xE000E280u)
#define SCB_AIRCR REG(0xE000ED0Cu)
#define IRQ_UART0_RX 0
#define IRQ_TIMER1 9

#define SYSCLK_HZ 25000000u
#ifndef SPIN_POLLS
#define SPIN_POLLS 20000u
#endif
/* serve.rs's default partial_frame_timeout. */
#define PARTIAL_TIMEOUT_TICKS (SYSCLK_HZ / 2u)

/* Two model buffers and the input staging area fill the 16 MiB PSRAM. */
#define MODEL_BUFFER_BYTES (6u * 1024u * 1024u)

static uint8_t model_a[MODEL_BUFFER_BYTES] __attribute__((section(".psram.a"), aligned(8)));
static uint8_t model_b[MODEL_BUFFER_BYTES] __attribute__((section(".psram.b"), aligned(8)));
static uint8_t staging[KF_MAX_TENSOR_BYTES] __attribute__((section(".psram.c"), aligned(8)));

#define OUTPUT_BYTES (KFLOW_OUTPUT_LEN * (KFLOW_OUTPUT_INT32 ? 4u : 1u))
static uint32_t input_words[(KFLOW_INPUT_LEN + 3u) / 4u];
static uint32_t output_words[(OUTPUT_BYTES + 3u) / 4u];

#ifdef KFLOW_ARENA_BYTES
#define ARENA_BYTES KFLOW_ARENA_BYTES
#else
#define ARENA_BYTES 0u
#endif

static const kf_info info = {
    KF_BOARD,
    "none",
    0,
    0,
    (uint32_t)(ARENA_BYTES + sizeof input_words + sizeof output_words),
    SYSCLK_HZ,
    KF_FIRMWARE_VERSION " model " KFLOW_MODEL_ID,
    "qemu-" KF_BOARD,
    MODEL_BUFFER_BYTES,
    KF_MAX_DATA,
};

/* ------------------------------------------------------------- counting */

uint64_t kf_timed_call(void *fn, uint32_t a0, uint32_t a1, uint32_t a2);
void kf_spin(uint32_t n);
void kf_empty(void);

/* -icount's shift (ns per instruction = 2^shift), or -1 when the timer
 * does not advance by a power of two of at least 2 ticks per instruction
 * (QEMU without -icount): then no count is reported. */
static int icount_shift = -1;
static uint32_t baseline_ticks;

/* Instructions in `ticks` (exact, see README.md): ticks * 40 ns / 2^shift,
 * rounded. */
static uint64_t to_instructions(uint32_t ticks)
{
    return ((uint64_t)ticks * 40u + (1u << (icount_shift - 1))) >> icount_shift;
}

static void calibrate(void)
{
    /* kf_spin(n) is 2n + 1 instructions: the difference of n = 2^21 and
     * n = 2^20 is exactly 2^21 instructions, whatever the call costs. */
    uint64_t t1 = kf_timed_call((void *)kf_spin, 1u << 20, 0, 0);
    uint64_t t2 = kf_timed_call((void *)kf_spin, 1u << 21, 0, 0);
    uint64_t ticks, ns;
    int s;
    if ((t1 >> 32) || (t2 >> 32) || (uint32_t)t2 <= (uint32_t)t1)
        return;
    ticks = (uint32_t)t2 - (uint32_t)t1;
    /* ns per instruction, times 2^21. */
    ns = ticks * 40u;
    /* 2^7 ns is 3.2 ticks per instruction: a tick of error is less than
     * half an instruction from there on. */
    for (s = 7; s <= 20; s++) {
        uint64_t want = (uint64_t)1u << (s + 21);
        uint64_t diff = ns > want ? ns - want : want - ns;
        if (diff * 1000u < want) {
            icount_shift = s;
            break;
        }
    }
    if (icount_shift >= 0)
        baseline_ticks = (uint32_t)kf_timed_call((void *)kf_empty, 0, 0, 0);
}

/* ------------------------------------------------------------ the board */

const kf_info *kf_board_info(void) { return &info; }

uint8_t *kf_board_model_buffer(int which) { return which ? model_b : model_a; }

uint8_t *kf_board_staging_buffer(void) { return staging; }

uint32_t kf_board_input_len(void) { return KFLOW_INPUT_LEN; }

uint32_t kf_board_output_len(void) { return OUTPUT_BYTES; }

uint8_t *kf_board_input(void) { return (uint8_t *)input_words; }

uint8_t *kf_board_output(void) { return (uint8_t *)output_words; }

static void append(char *why, uint32_t cap, uint32_t *n, const char *s)
{
    while (*s && *n + 1 < cap)
        why[(*n)++] = *s++;
    why[*n] = 0;
}

static void append_u32(char *why, uint32_t cap, uint32_t *n, uint32_t v)
{
    char d[11];
    int i = 10;
    d[10] = 0;
    do {
        d[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    append(why, cap, n, d + i);
}

int kf_board_check_model(const uint8_t *model, uint32_t len, char *why, uint32_t cap)
{
    uint32_t n = 0;
    if (len != KFLOW_WEIGHTS_BYTES) {
        append(why, cap, &n, "the model image is ");
        append_u32(why, cap, &n, len);
        append(why, cap, &n, " bytes; this firmware runs model " KFLOW_MODEL_ID ", whose weights are ");
        append_u32(why, cap, &n, KFLOW_WEIGHTS_BYTES);
        append(why, cap, &n, " bytes");
        return 1;
    }
    if (kflow_check_weights(model, len) != 0) {
        append(why, cap, &n, "the model image is not the weights of model " KFLOW_MODEL_ID
                             ", the network this firmware was built for");
        return 1;
    }
    return 0;
}

void kf_board_run(const uint8_t *model, kf_stats *stats)
{
    uint64_t t = kf_timed_call((void *)kflow_infer, (uint32_t)model, (uint32_t)input_words, (uint32_t)output_words);
    if (icount_shift >= 0 && !(t >> 32)) {
        /* kflow_infer's own instructions, its return included: the
         * baseline's callee is one instruction. */
        stats->has_instructions = 1;
        stats->instructions = to_instructions((uint32_t)t) - to_instructions(baseline_ticks) + 1u;
    }
}

/* ----------------------------------------------------------------- UART */

int kf_port_read(int partial)
{
    int c = -1;
    uint32_t spin;
    /* Bytes of a frame follow each other closely: poll a while before the
     * timer and wfi, whose wake-up costs more than a byte's arrival. */
    for (spin = 0; spin < SPIN_POLLS; spin++)
        if (UART0_STATE & UART_RX_FULL)
            return (int)(UART0_DATA & 0xFFu);
    if (partial) {
        TIMER1_CTRL = 0;
        TIMER1_RELOAD = PARTIAL_TIMEOUT_TICKS;
        TIMER1_VALUE = PARTIAL_TIMEOUT_TICKS;
        TIMER1_INT = 1;
        TIMER1_CTRL = 1u | 8u; /* enabled, interrupt enabled */
    }
    /* Forget interrupts latched by earlier bytes, or wfi would return at
     * once for ever; one that arrives from here on ends the wait. */
    UART0_INTCLEAR = 2u;
    NVIC_ICPR0 = (1u << IRQ_UART0_RX) | (1u << IRQ_TIMER1);
    for (;;) {
        if (UART0_STATE & UART_RX_FULL) {
            c = (int)(UART0_DATA & 0xFFu);
            break;
        }
        if (partial && (TIMER1_INT & 1u))
            break;
        /* Interrupts stay masked (PRIMASK): a pending one only ends the
         * wait. Idle here, QEMU's virtual clock follows real time
         * (-icount sleep=on), so the timeout is real time too. */
        __asm__ volatile("wfi");
    }
    if (partial) {
        TIMER1_CTRL = 0;
        TIMER1_INT = 1;
    }
    return c;
}

void kf_port_write(const uint8_t *data, uint32_t len)
{
    while (len--) {
        while (UART0_STATE & UART_TX_FULL)
            ;
        UART0_DATA = *data++;
    }
}

/* ---------------------------------------------------------------- reset */

extern uint32_t __bss_start, __bss_end, __stack_top;

void kf_reset(void);
void kf_fault(void);

__attribute__((noreturn)) void kf_reset(void)
{
    uint32_t *p;
    __asm__ volatile("cpsid i");
    for (p = &__bss_start; p < &__bss_end; p++)
        *p = 0;
    UART0_BAUDDIV = 16;
    UART0_CTRL = 1u | 2u | 8u; /* TX, RX, RX interrupt (wakes WFI) */
    NVIC_ISER0 = (1u << IRQ_UART0_RX) | (1u << IRQ_TIMER1);
    calibrate();
    kf_serve();
    for (;;)
        ;
}

/* Any fault restarts the board (the host's retry then finds no model and
 * flashes again) rather than leaving it hung. */
__attribute__((noreturn)) void kf_fault(void)
{
    SCB_AIRCR = 0x05FA0004u; /* VECTKEY | SYSRESETREQ */
    for (;;)
        ;
}

typedef void (*vector)(void);

__attribute__((section(".vectors"), used)) static const vector vectors[16 + 32] = {
    (vector)(uintptr_t)&__stack_top,
    kf_reset,
    kf_fault, /* NMI */
    kf_fault, /* HardFault */
    kf_fault, /* MemManage */
    kf_fault, /* BusFault */
    kf_fault, /* UsageFault */
    0, 0, 0, 0,
    kf_fault, /* SVCall */
    kf_fault, /* DebugMonitor */
    0,
    kf_fault, /* PendSV */
    kf_fault, /* SysTick */
    /* External interrupts: masked throughout; never taken. */
    kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault,
    kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault,
    kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault,
    kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault, kf_fault,
};
