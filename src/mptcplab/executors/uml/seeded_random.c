/*
 * mptcplab: a seeded getrandom() for a User-Mode Linux kernel (LD_PRELOAD on the `linux` process only).
 *
 * A UML kernel seeds its random number generator from the host: getrandom() (and getentropy(), which
 * glibc builds on it). With time travel everything else a run depends on is already fixed (the kernel
 * command line, no address randomisation, simulated time), so returning a stream derived from
 * MPTCPLAB_UML_SEED here makes two boots with the same seed draw the same random numbers: the same
 * initial sequence numbers, ports, MPTCP keys, netem and wire losses, to the bit.
 *
 * The stream is SplitMix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators",
 * OOPSLA 2014), one 64-bit state advanced per 8 bytes; not cryptographic, and not meant to be.
 * Without MPTCPLAB_UML_SEED the host's getrandom() is called (independent draws).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static uint64_t state;
static int seeded = -1; /* -1: not looked at yet, 0: no seed (pass through), 1: seeded */

static void init(void)
{
    const char *s = getenv("MPTCPLAB_UML_SEED");
    if (s && *s) {
        state = strtoull(s, NULL, 10) ^ 0x6d707463706c6162ULL; /* "mptcplab" */
        seeded = 1;
    } else {
        seeded = 0;
    }
}

static uint64_t next(void)
{
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
    if (seeded < 0)
        init();
    if (!seeded) {
        ssize_t (*real)(void *, size_t, unsigned int) = (ssize_t (*)(void *, size_t, unsigned int))dlsym(RTLD_NEXT, "getrandom");
        if (!real) {
            errno = ENOSYS;
            return -1;
        }
        return real(buf, len, flags);
    }
    unsigned char *out = buf;
    size_t done = 0;
    while (done < len) {
        uint64_t v = next();
        size_t n = len - done < sizeof v ? len - done : sizeof v;
        memcpy(out + done, &v, n);
        done += n;
    }
    return (ssize_t)len;
}

int getentropy(void *buf, size_t len)
{
    if (len > 256) {
        errno = EIO;
        return -1;
    }
    return getrandom(buf, len, 0) == (ssize_t)len ? 0 : -1;
}
