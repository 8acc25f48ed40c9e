/* SPDX-License-Identifier: MIT */
/*
 * ortho-bench gemv: what the CPU run (ortho-bench-gemv.c) and the device
 * run (ortho-bench-gemv-cuda.c) share: the options, the set of INT8
 * matrices with their Ortho deltas, and the working-set rule both follow.
 */
#ifndef ORTHO_BENCH_GEMV_H
#define ORTHO_BENCH_GEMV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* The seed of x, the same on every backend. */
#define GEMV_SEED_X 0x5eed00

/* Variants timed: plain INT8, fused with no Ortho, fused with Ortho. */
enum { V_INT8, V_BASE, V_ORTHO, NVAR };

struct gemv_opts {
	uint32_t rows, cols, group, threads, iters, ntok;
	double density;
	int json;
	const char *backend;	/* NULL: the CPU, as "cpu" */
};

/* One set of INT8 matrices (and their Ortho) in two big mappings. */
struct q8_set {
	uint32_t n;
	size_t base_bytes;	/* one matrix: weights and scales */
	size_t ortho_bytes;	/* one matrix's Ortho, all arrays */
	uint64_t nnz;		/* all matrices */
	void *map;
	size_t map_len;
	struct ok_q8 *m;
	struct ok_ortho *o;
	uint32_t *rowptr;
	void *col;
	uint16_t *val;
};

/**
 * gemv_randf() - the benchmark's random numbers, uniform in [-1, 1).
 * @s: the generator's state.
 *
 * Return: the next number.
 */
float gemv_randf(uint64_t *s);

/**
 * gemv_setup() - fill a set of matrices (and one Ortho each) whose working
 * set is at least 4x @llc (a cache: the CPU's last level or the device's
 * L2), within @cap bytes; prints why on failure.
 * @op: the options.
 * @llc: the cache the set must not fit in.
 * @cap: the most bytes the set may take.
 * @set: filled in; gemv_set_free() it, also on failure.
 * @capped: set to 1 when the count was capped (by @cap or a fixed most).
 *
 * Return: 0, -ENOMEM, -E2BIG.
 */
int gemv_setup(const struct gemv_opts *op, uint64_t llc, uint64_t cap,
	       struct q8_set *set, int *capped);

/**
 * gemv_set_free() - unmap and free what gemv_setup() made.
 * @set: the set (zeroed on return).
 */
void gemv_set_free(struct q8_set *set);

/**
 * gemv_passes() - timed passes over @n matrices: --iters calls, or 3
 * passes and at least 64 calls.
 * @op: the options.
 * @n: matrices in the set.
 *
 * Return: passes (at least 1).
 */
uint32_t gemv_passes(const struct gemv_opts *op, uint32_t n);

/**
 * gemv_host_cap() - the most bytes one set may take in host memory: half
 * of what is available, 8 GiB at most.
 *
 * Return: bytes.
 */
uint64_t gemv_host_cap(void);

/**
 * gemv_device() - the run on a device, when @op->backend asks for one.
 * @op: the options (threads already resolved).
 * @pool: compute threads for the CPU twin the outputs are checked against.
 * @ran: set to 1 when it ran (or failed) on a device, 0 when the CPU path
 *       is to run instead ("cpu", or "auto" without a usable device).
 *
 * Return: the process exit status when @ran, else BENCH_EXIT_OK.
 */
int gemv_device(const struct gemv_opts *op, struct ok_pool *pool, int *ran);

#endif
