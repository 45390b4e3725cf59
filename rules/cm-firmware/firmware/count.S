/* Instruction counting (see README.md): TIMER0 of the CMSDK APB timer
 * counts down at 25 MHz of QEMU's virtual time, which -icount advances by
 * exactly 2^shift ns per instruction. These routines are in assembly so
 * that the instructions between starting and reading the timer are fixed. */
    .file "count.S"     @ else the symbol table names a random temporary file
    .syntax unified
    .thumb
    .text

/* uint64_t kf_timed_call(void *fn, uint32_t a0, uint32_t a1, uint32_t a2)
 * Calls fn(a0, a1, a2) with TIMER0 running from 0xFFFFFFFF; returns the
 * ticks elapsed in the low word and 1 in the high word if the timer
 * wrapped (its interrupt status), which makes the count unusable. */
    .global kf_timed_call
    .type kf_timed_call, %function
    .thumb_func
kf_timed_call:
    push {r4, r5, r6, lr}
    mov r5, r0
    mov r0, r1
    mov r1, r2
    mov r2, r3
    ldr r4, =0x40000000
    movs r6, #0
    str r6, [r4]            @ CTRL: stopped
    mvn r6, #0
    str r6, [r4, #8]        @ RELOAD
    str r6, [r4, #4]        @ VALUE: restarts the count at a known phase
    movs r6, #1
    str r6, [r4, #12]       @ INTCLEAR
    str r6, [r4]            @ CTRL: enabled, counting from here
    blx r5
    ldr r1, [r4, #4]        @ VALUE
    ldr r2, [r4, #12]       @ INTSTATUS
    movs r3, #0
    str r3, [r4]            @ CTRL: stopped, so that it sets no deadlines
    mvns r0, r1             @ ticks = 0xFFFFFFFF - VALUE
    ands r1, r2, #1
    pop {r4, r5, r6, pc}
    .size kf_timed_call, . - kf_timed_call
    .pool

/* void kf_spin(uint32_t n), n >= 1: exactly 2n + 1 instructions. */
    .global kf_spin
    .type kf_spin, %function
    .thumb_func
kf_spin:
1:  subs r0, r0, #1
    bne 1b
    bx lr
    .size kf_spin, . - kf_spin

/* void kf_empty(void): one instruction, the baseline of kf_timed_call. */
    .global kf_empty
    .type kf_empty, %function
    .thumb_func
kf_empty:
    bx lr
    .size kf_empty, . - kf_empty
