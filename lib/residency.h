/* SPDX-License-Identifier: MIT */
/*
 * The residency manager: which Ortho units (a shard, or one tensor of a
 * shard too large for the budget) are resident, in a pool of secmem slots
 * bounded by a byte budget. Backend-neutral: the owner's callbacks fill a
 * slot (stream, parse, upload) and release a unit's device copies; the
 * manager decides what is resident, pins units while an op uses them,
 * evicts the least recently used ones, wipes every slot before it is
 * reused or unmapped, and loads ahead in a background thread.
 *
 * The budget is an account that several managers may share (one per
 * model, the account the context's): the slots of all of them together
 * stay within it. A manager short of room evicts its own units first,
 * then other managers' (never a pinned one, and for a prefetch never one
 * inside the other manager's prefetch window); when every byte is pinned
 * or loading, an op waits as it does for its own units.
 *
 * Unit states are enum ortho_shard_state: ABSENT, LOADING, RESIDENT,
 * EVICTING, then FAILED (the load failed: error and bad chunk kept),
 * DROPPED or REVOKED (for good).
 */
#ifndef ORTHO_RESIDENCY_H
#define ORTHO_RESIDENCY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct ortho_ctx;
struct residency;
struct res_account;

struct res_ops {
	/*
	 * Fill @mem (@size bytes, zeroed, page-aligned) with unit @u and make
	 * it usable; stop with -ECANCELED when *@cancel becomes non-zero.
	 * Called without the manager's lock, possibly from its prefetch
	 * thread, never twice at once for one unit. @urgent: an op waits.
	 * Return 0, or a negative errno with @bad_chunk set for -EBADMSG;
	 * the manager then wipes @mem.
	 */
	int (*load)(void *owner, unsigned int u, void *mem, uint64_t size,
		    int urgent, const atomic_int *cancel, uint32_t *bad_chunk);
	/*
	 * Make @u unusable (release device copies); @mem is wiped next. Any
	 * manager sharing the budget may call it, from an op or prefetch
	 * thread of its own.
	 */
	void (*unload)(void *owner, unsigned int u, void *mem);
	/* Optional: @u's slot is wiped, the eviction done (same threads). */
	void (*evicted)(void *owner, unsigned int u);
	/* Name @u in messages ("shard 0123... tensor layers.0.wq"). */
	void (*name)(void *owner, unsigned int u, char *buf, size_t len);
};

/**
 * res_account_new() - a budget managers can share.
 * @budget: bytes of slots at most (page-rounded unit sizes), all managers
 *	together; 0: no limit.
 * @out: the account, with one reference (the caller's).
 *
 * Return: 0 or -ENOMEM.
 */
int res_account_new(uint64_t budget, struct res_account **out);

/**
 * res_account_put() - drop a reference; the account goes with the last
 * (each manager holds one).
 * @a: the account, or NULL.
 */
void res_account_put(struct res_account *a);

/**
 * res_account_get_stats() - slot bytes of every manager sharing @a.
 * @a: the account.
 * @used: set to the bytes mapped or reserved now.
 * @peak: set to the most there ever were.
 */
void res_account_get_stats(struct res_account *a, uint64_t *used,
			   uint64_t *peak);

/**
 * residency_new_shared() - an empty manager drawing on account @a.
 * @ctx: for messages and the device name.
 * @a: the budget it shares (it takes a reference).
 * @ops: the owner's callbacks.
 * @owner: passed to them.
 * @out: the manager.
 *
 * Return: 0, -ENOMEM, or -errno of starting the prefetch thread.
 */
int residency_new_shared(struct ortho_ctx *ctx, struct res_account *a,
			 const struct res_ops *ops, void *owner,
			 struct residency **out);

/**
 * residency_new() - an empty manager with a budget of its own.
 * @ctx: for messages and the device name.
 * @budget: bytes of slots at most (page-rounded unit sizes); 0: no limit.
 * @ops: the owner's callbacks.
 * @owner: passed to them.
 * @out: the manager.
 *
 * Return: 0, -ENOMEM, or -errno of starting the prefetch thread.
 */
int residency_new(struct ortho_ctx *ctx, uint64_t budget,
		  const struct res_ops *ops, void *owner,
		  struct residency **out);

/**
 * residency_free() - unload every unit, wipe and unmap every slot, stop
 * the prefetch thread; waits for evictions of its units that other
 * managers have in flight.
 * @r: the manager, or NULL; no unit may be pinned.
 */
void residency_free(struct residency *r);

/**
 * residency_add() - a new unit of @size bytes, ABSENT. Every unit is added
 * before the first residency_pin() or residency_prefetch().
 * @r: the manager.
 * @size: bytes its slot needs (at least 1).
 * @u: set to its number (0, 1, ...).
 *
 * Return: 0, -EINVAL (@size 0), -ENOMEM.
 */
int residency_add(struct residency *r, uint64_t size, unsigned int *u);

/**
 * residency_pin() - make units @u[0..n) resident (loading them now, on the
 * caller's thread, when needed) and pin them until residency_unpin().
 * @r: the manager.
 * @u: units.
 * @n: how many.
 * @mem: set per unit to its bytes, or NULL when it cannot be used (failed,
 *	dropped, larger than the budget): the op goes on without it.
 *
 * Waits while a unit it needs is loading or evicting, and while pinned
 * units (of any manager sharing the budget) leave no room; never while
 * holding pins of its own, so threads pinning sets of units cannot
 * deadlock. A prefetch in progress (of any of them) that holds the room
 * it needs is cancelled. Units that do not fit the budget
 * together are left out (one warning each).
 *
 * Return: the number pinned.
 */
unsigned int residency_pin(struct residency *r, const unsigned int *u,
			   unsigned int n, void **mem);

/**
 * residency_unpin() - end an op's use of the units residency_pin() gave.
 * @r: the manager.
 * @u: the units, as given to residency_pin().
 * @n: how many.
 * @mem: as set by residency_pin() (units with NULL were not pinned).
 */
void residency_unpin(struct residency *r, const unsigned int *u,
		     unsigned int n, void *const *mem);

/**
 * residency_prefetch() - the units ops will want next, soonest first (a
 * window that replaces the previous one). The prefetch thread loads them
 * in that order as far as the budget allows, evicting only units no op
 * holds: outside the window the least recently used, inside it only those
 * needed after the one it loads, furthest first (for cyclic use, such as
 * the layers of a forward pass, that is the best choice there is), then
 * other managers' units outside their own windows. A load in progress for
 * a unit that left the window is not stopped. Returns at once.
 * @r: the manager.
 * @u: units (copied).
 * @n: how many; 0 clears the window.
 *
 * Return: 0, or -ENOMEM.
 */
int residency_prefetch(struct residency *r, const unsigned int *u,
		       unsigned int n);

/**
 * residency_wait_idle() - wait until the prefetch thread has nothing left
 * to do for the current window (tests and benchmarks).
 * @r: the manager.
 */
void residency_wait_idle(struct residency *r);

/**
 * residency_drop() - take @u out of use for good: new ops do not get it,
 * ops holding it finish first, then its device copies are released and
 * its slot wiped.
 * @r: the manager.
 * @u: the unit.
 * @state: ORTHO_SHARD_DROPPED, ORTHO_SHARD_REVOKED, or ORTHO_SHARD_FAILED
 *	(a unit whose sibling failed).
 *
 * Return: 0 when it was resident, -EALREADY when it was not (its state is
 * set all the same), -EINVAL for a bad @state.
 */
int residency_drop(struct residency *r, unsigned int u, uint32_t state);

/**
 * residency_evict() - evict @u now if it is resident and no op holds it
 * (tests, and an application making room).
 * @r: the manager.
 * @u: the unit.
 *
 * Return: 0, -EBUSY (pinned or loading), -EALREADY (not resident).
 */
int residency_evict(struct residency *r, unsigned int u);

struct res_unit_info {
	uint32_t state;			/* enum ortho_shard_state */
	int error;			/* FAILED: negative errno */
	uint32_t bad_chunk;		/* or UINT32_MAX */
	uint64_t bytes;			/* resident bytes (the unit's size) */
	uint64_t since_ns;		/* CLOCK_REALTIME it became resident */
	unsigned int pins;
};

/**
 * residency_unit_info() - a unit's state.
 * @r: the manager.
 * @u: the unit.
 * @info: filled in.
 *
 * Return: 0, or -ERANGE for a bad unit.
 */
int residency_unit_info(struct residency *r, unsigned int u,
			struct res_unit_info *info);

struct res_stats {
	uint64_t budget;		/* 0: no limit */
	uint64_t used;			/* slot bytes mapped or reserved */
	uint64_t peak;			/* most .used ever */
	/* Of all the managers sharing the budget: */
	uint64_t shared_used;		/* slot bytes mapped or reserved */
	uint64_t shared_peak;		/* most .shared_used ever */
	uint64_t resident;		/* bytes of resident units */
	uint64_t loads;			/* loads that succeeded */
	uint64_t prefetched;		/* of which by the prefetch thread */
	uint64_t evictions;
	uint64_t failures;
	uint64_t cancelled;		/* prefetches cancelled for an op */
	unsigned int units;
};

/**
 * residency_get_stats() - counters, for tests, benchmarks and tools.
 * @r: the manager.
 * @st: filled in.
 */
void residency_get_stats(struct residency *r, struct res_stats *st);

/**
 * residency_for_each_slot() - tests: call @fn on every slot, resident or
 * free (free slots are wiped).
 * @r: the manager.
 * @fn: called with each slot's memory and length.
 * @user: passed to @fn.
 */
void residency_for_each_slot(struct residency *r,
			     void (*fn)(void *user, const void *p, size_t len),
			     void *user);

/*
 * Tests: when set, called by an eviction after the owner's unload and
 * before the wipe, with no lock held. NULL in normal use.
 */
extern void (*residency_test_evict_hook)(void *owner, unsigned int u);

#endif
