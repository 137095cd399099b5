/* Byte and word helpers of the parsers: words built from characters, SWAR tests, branch-free
 * arithmetic that the verifier walks once. */

/* Little-endian words built from characters, to compare up to 8 bytes at once
 * (byte loops over many prefixes make the verifier's job explode). */
#define C(x, i) ((u64)(u8)(x) << (8 * (i)))
#define W2(a, b) (C(a, 0) | C(b, 1))
#define W3(a, b, c) (W2(a, b) | C(c, 2))
#define W4(a, b, c, d) (W3(a, b, c) | C(d, 3))
#define W5(a, b, c, d, e) (W4(a, b, c, d) | C(e, 4))
#define W6(a, b, c, d, e, f) (W5(a, b, c, d, e) | C(f, 5))
#define W7(a, b, c, d, e, f, g) (W6(a, b, c, d, e, f) | C(g, 6))
#define W8(a, b, c, d, e, f, g, h) (W7(a, b, c, d, e, f, g) | C(h, 7))
#define LOW(w, n) ((w) & ((n) == 8 ? ~0ULL : ((1ULL << (8 * (n))) - 1)))

/* Method from the request line's first 8 bytes; *path_off is where the path begins. */
/* 1 when v == 0, 0 otherwise, without a branch: BPF has no set-on-condition
 * instruction, so a compare becomes a jump, and every jump in a long loop is
 * a state the verifier must keep. The barrier stops clang from turning the
 * arithmetic back into a compare. */
static __always_inline u64 is_zero(u64 v)
{
    u64 t = v | -v;
    asm volatile("" : "+r"(t));
    t = (t >> 63) ^ 1;
    asm volatile("" : "+r"(t));  /* nor may clang know it is 0 or 1 (it would turn masks into branches) */
    return t;
}

/* SWAR: the high bit of each byte of w that is 0 is set (and maybe that of a 0x01 byte above a 0;
 * every candidate is checked exactly afterwards). */
#define ZERO_BYTES(w) (((w) - 0x0101010101010101ULL) & ~(w) & 0x8080808080808080ULL)
#define EVERY_BYTE(c) (0x0101010101010101ULL * (u8)(c))

/* n at most max, bounded where the verifier can see it (clang may otherwise fold the bound into a form
 * the verifier cannot follow). */
static __always_inline u64 bounded(u64 n, u64 max)
{
    if (n > max)
        n = max;
    asm volatile("" : "+r"(n));
    if (n > max)
        n = max;
    return n;
}
