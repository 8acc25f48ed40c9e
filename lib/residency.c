// SPDX-License-Identifier: MIT
/*
 * The residency manager (lib/residency.h). Each resident unit owns a slot:
 * a secmem mapping of its page-rounded size. An evicted unit's slot is
 * wiped at once and kept on its manager's free list for a unit of the
 * same size (shards of one model come in a few sizes), or unmapped when
 * room is needed. The managers of one context share an account: the slot
 * bytes of all of them, mapped or reserved for a load in progress, never
 * exceed its budget. A manager short of room takes, in this order: a free
 * slot of the size it needs (its own, then another's), unreserved budget,
 * free slots unmapped (its own first), one of its own units evicted, one
 * of another manager's units evicted.
 *
 * Locking: the account's lock (a->lock) guards every unit's state, pins,
 * LRU tick and window position, the free lists, the counters and the
 * prefetch windows of every manager sharing it, and the list of those
 * managers, so that one manager can evict another's units. The owners
 * never hold a lock of theirs when they call in, and their callbacks run
 * with a->lock released: loads, unloads and wipes happen while the unit
 * is LOADING or EVICTING, states that keep everyone else off the unit.
 * a->cond is broadcast on every state change and every unpin, in any
 * manager; waiters re-check. A thread never waits on a->cond while it
 * holds pins from an unfinished residency_pin(), which is what keeps sets
 * of pins deadlock-free, across managers too. residency_free() takes its
 * manager off the list first, then waits for the evictions other
 * managers' threads have in flight on its units.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "ortho.h"
#include "residency.h"
#include "secmem.h"
#include "stream.h"

#define RES_PIN_MAX 64u

void (*residency_test_evict_hook)(void *owner, unsigned int u);

struct res_slot {
	struct res_slot *next;
	void *mem;
	size_t cap;
};

struct res_unit {
	uint64_t size;
	size_t cap;			/* size rounded up to a page */
	uint32_t state;
	int error;
	uint32_t bad_chunk;
	unsigned int pins;
	uint64_t tick;			/* last use, for LRU */
	uint64_t since_ns;
	uint64_t win_gen;		/* in the window when == r->gen */
	unsigned int win_pos;
	struct res_slot *slot;
	uint32_t dropping;		/* final state asked for, or 0 */
	int warned;
	int by_prefetch;
	atomic_int cancel;
};

struct res_account {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t budget;		/* 0: no limit */
	uint64_t used;			/* slot bytes of every manager */
	uint64_t peak;
	uint64_t tick;			/* the LRU clock of every unit */
	struct residency *list;		/* the managers sharing it */
	unsigned int refs;
};

struct residency {
	struct ortho_ctx *ctx;
	const struct res_ops *ops;
	void *owner;
	struct res_account *a;
	struct residency *next;		/* on a->list */
	size_t page;
	pthread_cond_t pf_cond;
	struct res_unit *units;
	unsigned int nunits, ucap;
	struct res_slot *free_slots;
	uint64_t used;			/* slot bytes of this manager */
	unsigned int *win;
	unsigned int nwin;
	uint64_t gen, pf_done_gen;
	int pf_busy;
	int stop;
	int pf_started;
	pthread_t pf_thread;
	struct res_stats st;
};

/* make_room() for an op, rather than for a prefetch at a window position. */
#define ROOM_DEMAND (-1)
/* pick_victim() for another manager's prefetch: outside the window only. */
#define ROOM_OTHER (-2)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void unit_name(struct residency *r, unsigned int u, char *buf,
		      size_t len)
{
	if (r->ops->name)
		r->ops->name(r->owner, u, buf, len);
	else
		snprintf(buf, len, "unit %u", u);
}

/* ---- the account ---- */

/* @cap more slot bytes for @r (a->lock held). */
static void used_add(struct residency *r, size_t cap)
{
	struct res_account *a = r->a;

	r->used += cap;
	if (r->used > r->st.peak)
		r->st.peak = r->used;
	a->used += cap;
	if (a->used > a->peak)
		a->peak = a->used;
}

static void used_sub(struct residency *r, size_t cap)
{
	r->used -= cap;
	r->a->used -= cap;
}

int res_account_new(uint64_t budget, struct res_account **out)
{
	struct res_account *a;

	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->budget = budget;
	a->refs = 1;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	*out = a;
	return 0;
}

void res_account_put(struct res_account *a)
{
	int last;

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	last = !--a->refs;
	pthread_mutex_unlock(&a->lock);
	if (!last)
		return;
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

void res_account_get_stats(struct res_account *a, uint64_t *used,
			   uint64_t *peak)
{
	pthread_mutex_lock(&a->lock);
	*used = a->used;
	*peak = a->peak;
	pthread_mutex_unlock(&a->lock);
}

/* ---- slots (a->lock held) ---- */

/* Unmap a slot its owner already wiped. */
static void slot_unmap(struct res_slot *s)
{
	if (ortho_test_unmap_hook)
		ortho_test_unmap_hook(s->mem, s->cap);
	secmem_free(s->mem, s->cap);
	free(s);
}

/* A wiped slot back to @r's pool. */
static void slot_release(struct residency *r, struct res_slot *s)
{
	if (!r->a->budget) {
		used_sub(r, s->cap);
		slot_unmap(s);
		return;
	}
	s->next = r->free_slots;
	r->free_slots = s;
}

static struct res_slot *slot_take_free(struct residency *r, size_t cap)
{
	struct res_slot **pp, *s;

	for (pp = &r->free_slots; (s = *pp); pp = &s->next) {
		if (s->cap == cap) {
			*pp = s->next;
			s->next = NULL;
			return s;
		}
	}
	return NULL;
}

/* A free slot of @cap bytes, @r's own or another manager's (now @r's). */
static struct res_slot *slot_take_any(struct residency *r, size_t cap)
{
	struct res_slot *s = slot_take_free(r, cap);
	struct residency *o;

	for (o = r->a->list; !s && o; o = o->next) {
		if (o == r || !(s = slot_take_free(o, cap)))
			continue;
		used_sub(o, cap);
		used_add(r, cap);
	}
	return s;
}

static int unmap_one_free(struct residency *r)
{
	struct res_slot *s = r->free_slots;

	if (!s)
		return 0;
	r->free_slots = s->next;
	used_sub(r, s->cap);
	slot_unmap(s);
	return 1;
}

/* Unmap a free slot, @r's own first. Return: 1 if there was one. */
static int unmap_any_free(struct residency *r)
{
	struct residency *o;

	if (unmap_one_free(r))
		return 1;
	for (o = r->a->list; o; o = o->next)
		if (o != r && unmap_one_free(o))
			return 1;
	return 0;
}

/* ---- eviction (a->lock held) ---- */

static int in_window(const struct residency *r, const struct res_unit *u)
{
	return r->nwin && u->win_gen == r->gen;
}

/*
 * The unit of @r to evict: the least recently used outside the prefetch
 * window, else the one needed furthest ahead in it. A prefetch for window
 * position @pos only takes units needed after it; an op (@pos ROOM_DEMAND)
 * any; another manager's prefetch (@pos ROOM_OTHER) none in the window.
 * *@outside (if not NULL): whether the unit is outside the window.
 */
static int pick_victim(struct residency *r, int pos, int *outside)
{
	int best = -1, best_win = -1;
	unsigned int i;

	for (i = 0; i < r->nunits; i++) {
		struct res_unit *u = &r->units[i];

		if (u->state != ORTHO_SHARD_RESIDENT || u->pins)
			continue;
		if (!in_window(r, u)) {
			if (best < 0 || u->tick < r->units[best].tick)
				best = (int)i;
		} else if (pos != ROOM_OTHER && (int)u->win_pos > pos &&
			   (best_win < 0 ||
			    u->win_pos > r->units[best_win].win_pos)) {
			best_win = (int)i;
		}
	}
	if (outside)
		*outside = best >= 0;
	return best >= 0 ? best : best_win;
}

/*
 * A unit of another manager to evict for @r: each offers the one it would
 * evict itself (for a prefetch of @r, only units outside its own window);
 * of those, units outside their window go first, then the least recently
 * used. *@vr: its manager.
 */
static int pick_other(struct residency *r, int pos, struct residency **vr)
{
	int best = -1, best_out = 0, v, out;
	struct residency *o;

	*vr = NULL;
	for (o = r->a->list; o; o = o->next) {
		if (o == r)
			continue;
		v = pick_victim(o, pos == ROOM_DEMAND ? ROOM_DEMAND :
						    ROOM_OTHER, &out);
		if (v < 0)
			continue;
		if (best < 0 || out > best_out ||
		    (out == best_out &&
		     o->units[v].tick < (*vr)->units[best].tick)) {
			best = v;
			best_out = out;
			*vr = o;
		}
	}
	return best;
}

/* Unload and wipe a resident, unpinned unit of @r (a->lock dropped inside). */
static void evict_one(struct residency *r, unsigned int i, int count)
{
	struct res_account *a = r->a;
	struct res_unit *u = &r->units[i];
	struct res_slot *s = u->slot;

	u->state = ORTHO_SHARD_EVICTING;
	pthread_mutex_unlock(&a->lock);
	if (r->ops->unload)
		r->ops->unload(r->owner, i, s->mem);
	if (residency_test_evict_hook)
		residency_test_evict_hook(r->owner, i);
	secmem_wipe(s->mem, s->cap);
	if (r->ops->evicted)
		r->ops->evicted(r->owner, i);
	pthread_mutex_lock(&a->lock);
	u->slot = NULL;
	u->state = u->dropping ? u->dropping : ORTHO_SHARD_ABSENT;
	u->since_ns = 0;
	r->st.resident -= u->size;
	if (count)
		r->st.evictions++;
	slot_release(r, s);
	pthread_cond_broadcast(&a->cond);
}

/* Ask @r's prefetch thread's load to stop. Return: 1 if there was one. */
static int cancel_prefetch(struct residency *r)
{
	unsigned int i;

	for (i = 0; i < r->nunits; i++) {
		struct res_unit *u = &r->units[i];

		if (u->state == ORTHO_SHARD_LOADING && u->by_prefetch) {
			if (!atomic_exchange(&u->cancel, 1))
				r->st.cancelled++;
			return 1;
		}
	}
	return 0;
}

/* Cancel a prefetch holding room: @r's own, else another manager's. */
static void cancel_any_prefetch(struct residency *r)
{
	struct residency *o;

	if (cancel_prefetch(r))
		return;
	for (o = r->a->list; o; o = o->next)
		if (o != r && cancel_prefetch(o))
			return;
}

/*
 * Find room for @cap bytes: a free slot of that size, unreserved budget,
 * unmapped free slots, then evictions, @r's own units first. Return: 0
 * with *@slot set to a reused slot or NULL (bytes reserved: map one), or
 * -EAGAIN when the room is held by pinned or loading units (a->lock
 * dropped inside).
 */
static int make_room(struct residency *r, size_t cap, int pos,
		     struct res_slot **slot)
{
	struct res_account *a = r->a;
	struct residency *vr;
	int v;

	*slot = NULL;
	for (;;) {
		if (a->budget) {
			*slot = slot_take_any(r, cap);
			if (*slot)
				return 0;
		}
		if (!a->budget || a->used + cap <= a->budget) {
			used_add(r, cap);
			return 0;
		}
		if (unmap_any_free(r))
			continue;
		v = pick_victim(r, pos, NULL);
		if (v >= 0) {
			evict_one(r, (unsigned int)v, 1);
			continue;
		}
		v = pick_other(r, pos, &vr);
		if (v >= 0) {
			evict_one(vr, (unsigned int)v, 1);
			continue;
		}
		if (pos == ROOM_DEMAND)
			cancel_any_prefetch(r);
		return -EAGAIN;
	}
}

/* ---- loading ---- */

static int load_run(struct residency *r, unsigned int i, struct res_slot **sp,
		    int urgent, uint32_t *bad)
{
	struct res_unit *u = &r->units[i];
	struct res_slot *s = *sp;

	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -ENOMEM;
		s->cap = u->cap;
		s->mem = secmem_alloc(u->cap);
		if (!s->mem) {
			free(s);
			return -ENOMEM;
		}
		*sp = s;
	}
	return r->ops->load(r->owner, i, s->mem, u->size, urgent, &u->cancel,
			    bad);
}

static void load_done(struct residency *r, unsigned int i, struct res_slot *s,
		      int ret, uint32_t bad)
{
	struct res_unit *u = &r->units[i];

	if (!ret) {
		u->slot = s;
		u->state = ORTHO_SHARD_RESIDENT;
		u->error = 0;
		u->bad_chunk = UINT32_MAX;
		u->since_ns = now_ns();
		u->tick = ++r->a->tick;
		r->st.resident += u->size;
		r->st.loads++;
		if (u->by_prefetch)
			r->st.prefetched++;
		return;
	}
	if (s)
		slot_release(r, s);
	else
		used_sub(r, u->cap);
	if (ret == -ECANCELED) {
		u->state = ORTHO_SHARD_ABSENT;
	} else {
		u->state = ORTHO_SHARD_FAILED;
		u->error = ret;
		u->bad_chunk = ret == -EBADMSG ? bad : UINT32_MAX;
		r->st.failures++;
	}
	if (u->dropping)
		u->state = u->dropping;
}

/*
 * Load unit @i, ABSENT now, for an op (@pos ROOM_DEMAND) or the prefetch
 * window's position @pos (a->lock held, dropped inside). Return: 0 (the
 * unit is RESIDENT, FAILED or ABSENT again after a cancel), or -EAGAIN
 * when there is no room yet.
 */
static int load_unit(struct residency *r, unsigned int i, int pos)
{
	int by_prefetch = pos != ROOM_DEMAND;
	struct res_unit *u = &r->units[i];
	uint32_t bad = UINT32_MAX;
	struct res_slot *s;
	int ret;

	u->state = ORTHO_SHARD_LOADING;
	u->by_prefetch = by_prefetch;
	atomic_store(&u->cancel, 0);
	ret = make_room(r, u->cap, pos, &s);
	if (ret) {
		u->state = ORTHO_SHARD_ABSENT;
		pthread_cond_broadcast(&r->a->cond);
		return ret;
	}
	pthread_mutex_unlock(&r->a->lock);
	ret = load_run(r, i, &s, !by_prefetch, &bad);
	if (ret && s)
		secmem_wipe(s->mem, s->cap);
	pthread_mutex_lock(&r->a->lock);
	load_done(r, i, s, ret, bad);
	pthread_cond_broadcast(&r->a->cond);
	return 0;
}

/* ---- pinning ---- */

/*
 * Pin unit @i for an op, loading it if needed (a->lock held, may be
 * dropped inside). Return: 1 pinned, 0 not usable, -EAGAIN to wait.
 */
static int pin_one(struct residency *r, unsigned int i, void **mem)
{
	struct res_unit *u = &r->units[i];
	char name[128];
	int ret;

	for (;;) {
		if (u->dropping)
			return 0;
		switch (u->state) {
		case ORTHO_SHARD_RESIDENT:
			u->pins++;
			u->tick = ++r->a->tick;
			*mem = u->slot->mem;
			return 1;
		case ORTHO_SHARD_LOADING:
		case ORTHO_SHARD_EVICTING:
			return -EAGAIN;
		case ORTHO_SHARD_ABSENT:
			if (r->a->budget && u->cap > r->a->budget) {
				if (!u->warned++) {
					unit_name(r, i, name, sizeof(name));
					olog_warn(r->ctx, "%s: %" PRIu64 " bytes, "
						  "more than the Ortho budget of %"
						  PRIu64 " bytes: not used", name,
						  u->size, r->a->budget);
				}
				return 0;
			}
			ret = load_unit(r, i, ROOM_DEMAND);
			if (ret)
				return ret;
			continue;
		default:
			return 0;
		}
	}
}

static void unpin_locked(struct residency *r, const unsigned int *u,
			 unsigned int n, void **mem)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (!mem[i])
			continue;
		r->units[u[i]].pins--;
		mem[i] = NULL;
	}
	pthread_cond_broadcast(&r->a->cond);
}

/* Leave out units that would not fit the budget together with the others. */
static void fit_set(struct residency *r, const unsigned int *u,
		    unsigned int n, unsigned char *skip)
{
	uint64_t sum = 0;
	char name[128];
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct res_unit *x = &r->units[u[i]];

		skip[i] = 0;
		if (!r->a->budget || x->cap > r->a->budget)
			continue;	/* pin_one() judges these */
		if (sum + x->cap > r->a->budget) {
			skip[i] = 1;
			if (!x->warned++) {
				unit_name(r, u[i], name, sizeof(name));
				olog_warn(r->ctx, "%s: does not fit the Ortho "
					  "budget of %" PRIu64 " bytes with the "
					  "other units the same op needs: not "
					  "used", name, r->a->budget);
			}
			continue;
		}
		sum += x->cap;
	}
}

unsigned int residency_pin(struct residency *r, const unsigned int *u,
			   unsigned int n, void **mem)
{
	unsigned char skip[RES_PIN_MAX];
	unsigned int i, got;
	int ret;

	for (i = 0; i < n; i++)
		mem[i] = NULL;
	if (n > RES_PIN_MAX)
		return 0;
	pthread_mutex_lock(&r->a->lock);
	fit_set(r, u, n, skip);
restart:
	got = 0;
	for (i = 0; i < n; i++) {
		if (skip[i] || u[i] >= r->nunits)
			continue;
		ret = pin_one(r, u[i], &mem[i]);
		if (ret == -EAGAIN) {
			unpin_locked(r, u, n, mem);
			pthread_cond_wait(&r->a->cond, &r->a->lock);
			goto restart;
		}
		got += (unsigned int)ret;
	}
	pthread_mutex_unlock(&r->a->lock);
	return got;
}

void residency_unpin(struct residency *r, const unsigned int *u,
		     unsigned int n, void *const *mem)
{
	unsigned int i;

	pthread_mutex_lock(&r->a->lock);
	for (i = 0; i < n; i++)
		if (mem[i])
			r->units[u[i]].pins--;
	pthread_cond_broadcast(&r->a->cond);
	pthread_mutex_unlock(&r->a->lock);
}

/* ---- prefetch ---- */

/* Load the window in order while it fits (a->lock held, dropped inside). */
static void pf_window(struct residency *r, uint64_t gen)
{
	unsigned int pos;
	struct res_unit *u;

	for (pos = 0; pos < r->nwin && r->gen == gen && !r->stop; pos++) {
		unsigned int i = r->win[pos];

		u = &r->units[i];
		if (u->state != ORTHO_SHARD_ABSENT || u->dropping ||
		    (r->a->budget && u->cap > r->a->budget))
			continue;
		if (load_unit(r, i, (int)pos))
			break;		/* as far ahead as the budget allows */
		if (u->state == ORTHO_SHARD_ABSENT)
			break;		/* cancelled for an op: it goes first */
	}
}

static void *pf_main(void *arg)
{
	struct residency *r = arg;
	uint64_t gen;

	pthread_mutex_lock(&r->a->lock);
	for (;;) {
		while (!r->stop && r->pf_done_gen == r->gen)
			pthread_cond_wait(&r->pf_cond, &r->a->lock);
		if (r->stop)
			break;
		gen = r->gen;
		r->pf_busy = 1;
		pf_window(r, gen);
		r->pf_busy = 0;
		if (r->gen == gen)
			r->pf_done_gen = gen;
		pthread_cond_broadcast(&r->a->cond);
	}
	r->pf_busy = 0;
	pthread_cond_broadcast(&r->a->cond);
	pthread_mutex_unlock(&r->a->lock);
	return NULL;
}

int residency_prefetch(struct residency *r, const unsigned int *u,
		       unsigned int n)
{
	unsigned int *win = NULL, i;

	if (n) {
		win = malloc(n * sizeof(*win));
		if (!win)
			return -ENOMEM;
		memcpy(win, u, n * sizeof(*win));
	}
	pthread_mutex_lock(&r->a->lock);
	free(r->win);
	r->win = win;
	r->nwin = 0;
	r->gen++;
	for (i = 0; i < n; i++) {
		struct res_unit *x;

		if (win[i] >= r->nunits)
			continue;
		x = &r->units[win[i]];
		if (x->win_gen != r->gen) {
			x->win_gen = r->gen;
			x->win_pos = r->nwin;
		}
		win[r->nwin++] = win[i];
	}
	pthread_cond_signal(&r->pf_cond);
	pthread_mutex_unlock(&r->a->lock);
	return 0;
}

void residency_wait_idle(struct residency *r)
{
	pthread_mutex_lock(&r->a->lock);
	while (r->pf_started && !r->stop &&
	       (r->pf_busy || r->pf_done_gen != r->gen))
		pthread_cond_wait(&r->a->cond, &r->a->lock);
	pthread_mutex_unlock(&r->a->lock);
}

/* ---- dropping and evicting ---- */

int residency_drop(struct residency *r, unsigned int i, uint32_t state)
{
	struct res_unit *u;
	int was;

	if (state != ORTHO_SHARD_DROPPED && state != ORTHO_SHARD_REVOKED &&
	    state != ORTHO_SHARD_FAILED)
		return -EINVAL;
	pthread_mutex_lock(&r->a->lock);
	if (i >= r->nunits) {
		pthread_mutex_unlock(&r->a->lock);
		return -ERANGE;
	}
	u = &r->units[i];
	u->dropping = state;
	/* New ops no longer get it; the ones holding it finish first. */
	while (u->state == ORTHO_SHARD_LOADING ||
	       u->state == ORTHO_SHARD_EVICTING || u->pins) {
		atomic_store(&u->cancel, 1);
		pthread_cond_wait(&r->a->cond, &r->a->lock);
	}
	was = u->state == ORTHO_SHARD_RESIDENT;
	if (was)
		evict_one(r, i, 0);
	u->state = state;
	pthread_cond_broadcast(&r->a->cond);
	pthread_mutex_unlock(&r->a->lock);
	return was ? 0 : -EALREADY;
}

int residency_evict(struct residency *r, unsigned int i)
{
	struct res_unit *u;
	int ret = 0;

	pthread_mutex_lock(&r->a->lock);
	if (i >= r->nunits) {
		ret = -ERANGE;
		goto out;
	}
	u = &r->units[i];
	if (u->state == ORTHO_SHARD_LOADING ||
	    u->state == ORTHO_SHARD_EVICTING || u->pins)
		ret = -EBUSY;
	else if (u->state != ORTHO_SHARD_RESIDENT)
		ret = -EALREADY;
	else
		evict_one(r, i, 1);
out:
	pthread_mutex_unlock(&r->a->lock);
	return ret;
}

/* ---- introspection ---- */

int residency_unit_info(struct residency *r, unsigned int i,
			struct res_unit_info *info)
{
	struct res_unit *u;

	memset(info, 0, sizeof(*info));
	pthread_mutex_lock(&r->a->lock);
	if (i >= r->nunits) {
		pthread_mutex_unlock(&r->a->lock);
		return -ERANGE;
	}
	u = &r->units[i];
	info->state = u->state;
	info->error = u->error;
	info->bad_chunk = u->bad_chunk;
	info->bytes = u->state == ORTHO_SHARD_RESIDENT ? u->size : 0;
	info->since_ns = u->since_ns;
	info->pins = u->pins;
	pthread_mutex_unlock(&r->a->lock);
	return 0;
}

void residency_get_stats(struct residency *r, struct res_stats *st)
{
	pthread_mutex_lock(&r->a->lock);
	*st = r->st;
	st->budget = r->a->budget;
	st->used = r->used;
	st->shared_used = r->a->used;
	st->shared_peak = r->a->peak;
	st->units = r->nunits;
	pthread_mutex_unlock(&r->a->lock);
}

void residency_for_each_slot(struct residency *r,
			     void (*fn)(void *user, const void *p, size_t len),
			     void *user)
{
	struct res_slot *s;
	unsigned int i;

	pthread_mutex_lock(&r->a->lock);
	for (i = 0; i < r->nunits; i++)
		if (r->units[i].slot)
			fn(user, r->units[i].slot->mem, r->units[i].slot->cap);
	for (s = r->free_slots; s; s = s->next)
		fn(user, s->mem, s->cap);
	pthread_mutex_unlock(&r->a->lock);
}

/* ---- setup ---- */

int residency_new_shared(struct ortho_ctx *ctx, struct res_account *a,
			 const struct res_ops *ops, void *owner,
			 struct residency **out)
{
	struct residency *r;
	int ret;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->ctx = ctx;
	r->ops = ops;
	r->owner = owner;
	r->a = a;
	r->page = (size_t)sysconf(_SC_PAGESIZE);
	pthread_cond_init(&r->pf_cond, NULL);
	pthread_mutex_lock(&a->lock);
	a->refs++;
	r->next = a->list;
	a->list = r;
	pthread_mutex_unlock(&a->lock);
	ret = -pthread_create(&r->pf_thread, NULL, pf_main, r);
	if (ret) {
		olog_err(ctx, "residency: cannot start the prefetch thread: %s",
			 strerror(-ret));
		residency_free(r);
		return ret;
	}
	r->pf_started = 1;
	*out = r;
	return 0;
}

int residency_new(struct ortho_ctx *ctx, uint64_t budget,
		  const struct res_ops *ops, void *owner,
		  struct residency **out)
{
	struct res_account *a;
	int ret;

	*out = NULL;
	ret = res_account_new(budget, &a);
	if (ret)
		return ret;
	ret = residency_new_shared(ctx, a, ops, owner, out);
	res_account_put(a);		/* the manager holds it now */
	return ret;
}

int residency_add(struct residency *r, uint64_t size, unsigned int *out)
{
	struct res_unit *u;
	unsigned int nc;

	if (!size || size > SIZE_MAX - r->page)
		return -EINVAL;
	pthread_mutex_lock(&r->a->lock);
	if (r->nunits == r->ucap) {
		nc = r->ucap ? r->ucap * 2 : 16;
		u = realloc(r->units, nc * sizeof(*u));
		if (!u) {
			pthread_mutex_unlock(&r->a->lock);
			return -ENOMEM;
		}
		r->units = u;
		r->ucap = nc;
	}
	u = &r->units[r->nunits];
	memset(u, 0, sizeof(*u));
	u->size = size;
	u->cap = (size_t)((size + r->page - 1) & ~(uint64_t)(r->page - 1));
	u->state = ORTHO_SHARD_ABSENT;
	u->bad_chunk = UINT32_MAX;
	atomic_init(&u->cancel, 0);
	*out = r->nunits++;
	pthread_mutex_unlock(&r->a->lock);
	return 0;
}

static void stop_prefetch(struct residency *r)
{
	unsigned int i;

	pthread_mutex_lock(&r->a->lock);
	r->stop = 1;
	for (i = 0; i < r->nunits; i++)
		atomic_store(&r->units[i].cancel, 1);
	pthread_cond_broadcast(&r->pf_cond);
	pthread_mutex_unlock(&r->a->lock);
	if (r->pf_started)
		pthread_join(r->pf_thread, NULL);
	r->pf_started = 0;
}

/* Is a unit of @r in flight (another manager's thread evicting it)? */
static int units_busy(const struct residency *r)
{
	unsigned int i;

	for (i = 0; i < r->nunits; i++)
		if (r->units[i].state == ORTHO_SHARD_EVICTING ||
		    r->units[i].state == ORTHO_SHARD_LOADING)
			return 1;
	return 0;
}

void residency_free(struct residency *r)
{
	struct res_account *a;
	struct residency **pp;
	unsigned int i;

	if (!r)
		return;
	a = r->a;
	stop_prefetch(r);
	pthread_mutex_lock(&a->lock);
	/* Off the list, then no one else starts on its units. */
	for (pp = &a->list; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	while (units_busy(r))
		pthread_cond_wait(&a->cond, &a->lock);
	for (i = 0; i < r->nunits; i++)
		if (r->units[i].state == ORTHO_SHARD_RESIDENT)
			evict_one(r, i, 0);
	while (unmap_one_free(r))
		;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	res_account_put(a);
	pthread_cond_destroy(&r->pf_cond);
	free(r->win);
	free(r->units);
	free(r);
}
