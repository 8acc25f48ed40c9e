// SPDX-License-Identifier: MIT
/*
 * Finding the CUDA driver at run time (see cuda_loader.h). Locking:
 * load_lock serialises the first load; afterwards the table is read-only
 * and api_ready (acquire/release) publishes it without the lock.
 */
#include "config.h"

#ifdef HAVE_CUDA
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "cuda_loader.h"
#include "log.h"

#define CUDA_DRIVER_LIB "libcuda.so.1"

struct cuda_sym {
	size_t off;		/* of the member in struct cuda_api */
	const char *name;	/* the versioned ABI name cuda.h maps to */
	const char *alt;	/* an older name with the same signature */
	int optional;		/* NULL when missing */
};

#define SYM(m, n) { offsetof(struct cuda_api, m), n, NULL, 0 }
#define SYM2(m, n, a) { offsetof(struct cuda_api, m), n, a, 0 }
#define SYM_OPT(m, n) { offsetof(struct cuda_api, m), n, NULL, 1 }

/*
 * The _v2 names are those cuda.h's macros select (cuMemAlloc ->
 * cuMemAlloc_v2, ...); naming them here keeps the ABI we compiled against
 * even where a newer driver exports a newer version under the plain name.
 */
static const struct cuda_sym cuda_syms[] = {
	SYM(init, "cuInit"),
	SYM(driver_get_version, "cuDriverGetVersion"),
	SYM(get_error_name, "cuGetErrorName"),
	SYM(get_error_string, "cuGetErrorString"),
	SYM(device_get_count, "cuDeviceGetCount"),
	SYM(device_get, "cuDeviceGet"),
	SYM(device_get_name, "cuDeviceGetName"),
	SYM(device_get_attribute, "cuDeviceGetAttribute"),
	SYM(device_total_mem, "cuDeviceTotalMem_v2"),
	SYM_OPT(ctx_create, "cuCtxCreate_v2"),
	SYM_OPT(ctx_create_v4, "cuCtxCreate_v4"),
	SYM(ctx_destroy, "cuCtxDestroy_v2"),
	SYM(ctx_push_current, "cuCtxPushCurrent_v2"),
	SYM(ctx_pop_current, "cuCtxPopCurrent_v2"),
	SYM(stream_create, "cuStreamCreate"),
	SYM(stream_destroy, "cuStreamDestroy_v2"),
	SYM(stream_synchronize, "cuStreamSynchronize"),
	SYM(event_create, "cuEventCreate"),
	SYM(event_destroy, "cuEventDestroy_v2"),
	SYM(event_record, "cuEventRecord"),
	SYM(event_synchronize, "cuEventSynchronize"),
	SYM(event_query, "cuEventQuery"),
	SYM2(event_elapsed_time, "cuEventElapsedTime_v2",
	     "cuEventElapsedTime"),
	SYM(module_load_data, "cuModuleLoadData"),
	SYM(module_unload, "cuModuleUnload"),
	SYM(module_get_function, "cuModuleGetFunction"),
	SYM(launch_kernel, "cuLaunchKernel"),
	SYM(mem_alloc, "cuMemAlloc_v2"),
	SYM(mem_free, "cuMemFree_v2"),
	SYM(mem_get_info, "cuMemGetInfo_v2"),
	SYM(memcpy_htod, "cuMemcpyHtoD_v2"),
	SYM(memcpy_dtoh, "cuMemcpyDtoH_v2"),
	SYM(memcpy_htod_async, "cuMemcpyHtoDAsync_v2"),
	SYM(memcpy_dtoh_async, "cuMemcpyDtoHAsync_v2"),
	SYM(memcpy_dtod_async, "cuMemcpyDtoDAsync_v2"),
	SYM(memset_d8_async, "cuMemsetD8Async"),
	SYM(mem_host_register, "cuMemHostRegister_v2"),
	SYM(mem_host_unregister, "cuMemHostUnregister"),
	SYM(mem_get_allocation_granularity, "cuMemGetAllocationGranularity"),
	SYM(mem_address_reserve, "cuMemAddressReserve"),
	SYM(mem_address_free, "cuMemAddressFree"),
	SYM(mem_create, "cuMemCreate"),
	SYM(mem_release, "cuMemRelease"),
	SYM(mem_map, "cuMemMap"),
	SYM(mem_unmap, "cuMemUnmap"),
	SYM(mem_set_access, "cuMemSetAccess"),
	SYM(mem_retain_allocation_handle, "cuMemRetainAllocationHandle"),
};

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cuda_api api_store;
static int api_ready;

const char *cuda_errname(const struct cuda_api *api, CUresult err)
{
	const char *s = NULL;

	if (api && api->get_error_name && !api->get_error_name(err, &s) && s)
		return s;
	return "CUDA_ERROR_?";
}

static const char *cuda_errstr(const struct cuda_api *api, CUresult err)
{
	const char *s = NULL;

	if (api && api->get_error_string &&
	    !api->get_error_string(err, &s) && s)
		return s;
	return "unknown error";
}

int cuda_errno(CUresult err)
{
	switch (err) {
	case CUDA_SUCCESS:
		return 0;
	case CUDA_ERROR_OUT_OF_MEMORY:
		return -ENOMEM;
	case CUDA_ERROR_NO_DEVICE:
	case CUDA_ERROR_INVALID_DEVICE:
	case CUDA_ERROR_NOT_INITIALIZED:
	case CUDA_ERROR_DEINITIALIZED:
	case CUDA_ERROR_STUB_LIBRARY:
	case CUDA_ERROR_DEVICE_UNAVAILABLE:
	case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
		return -ENODEV;
	case CUDA_ERROR_INVALID_VALUE:
	case CUDA_ERROR_INVALID_HANDLE:
		return -EINVAL;
	case CUDA_ERROR_NOT_SUPPORTED:
	case CUDA_ERROR_NO_BINARY_FOR_GPU:
	case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
		return -EOPNOTSUPP;
	case CUDA_ERROR_NOT_READY:
		return -EBUSY;
	case CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED:
		return -EEXIST;
	case CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED:
		return -ENOENT;
	default:
		return -EIO;
	}
}

int cuda_ck(struct ortho_ctx *ctx, const struct cuda_api *api, CUresult err,
	    const char *fmt, ...)
{
	char what[160];
	va_list ap;

	if (err == CUDA_SUCCESS)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	olog_err(ctx, "CUDA %s: %s (%s)", what, cuda_errname(api, err),
		 cuda_errstr(api, err));
	return cuda_errno(err);
}

static int resolve(struct ortho_ctx *ctx, int prio, void *h,
		   struct cuda_api *a)
{
	unsigned int i;
	void *p;

	for (i = 0; i < sizeof(cuda_syms) / sizeof(cuda_syms[0]); i++) {
		const struct cuda_sym *s = &cuda_syms[i];

		p = dlsym(h, s->name);
		if (!p && s->alt)
			p = dlsym(h, s->alt);
		if (!p && s->optional)
			continue;
		if (!p) {
			olog(ctx, prio, "CUDA driver %s has no %s: the driver "
			     "is too old for ortho", CUDA_DRIVER_LIB, s->name);
			return -ENODEV;
		}
		/* dlsym() hands out data pointers; POSIX makes this valid. */
		memcpy((char *)a + s->off, &p, sizeof(p));
	}
	if (!a->ctx_create && !a->ctx_create_v4) {
		olog(ctx, prio, "CUDA driver %s has no cuCtxCreate_v2 or _v4",
		     CUDA_DRIVER_LIB);
		return -ENODEV;
	}
	return 0;
}

static int api_load(struct ortho_ctx *ctx, int prio, struct cuda_api *a)
{
	CUresult r;
	void *h;
	int ret;

	h = dlopen(CUDA_DRIVER_LIB, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		olog(ctx, prio, "no CUDA driver: %s", dlerror());
		return -ENODEV;
	}
	memset(a, 0, sizeof(*a));
	ret = resolve(ctx, prio, h, a);
	if (ret) {
		dlclose(h);
		return ret;
	}
	/*
	 * From here on the handle stays open even on failure: cuInit may
	 * have started driver threads that must not lose their code.
	 */
	r = a->init(0);
	if (r != CUDA_SUCCESS) {
		ret = cuda_errno(r);
		olog(ctx, ret == -ENODEV ? prio : ORTHO_LOG_ERR,
		     "CUDA driver: cuInit: %s (%s)", cuda_errname(a, r),
		     cuda_errstr(a, r));
		return ret == -ENODEV ? -ENODEV : -EIO;
	}
	r = a->driver_get_version(&a->driver_version);
	if (r != CUDA_SUCCESS)
		return cuda_ck(ctx, a, r, "cuDriverGetVersion") ? -EIO : 0;
	return 0;
}

int cuda_api_get(struct ortho_ctx *ctx, int prio,
		 const struct cuda_api **out)
{
	struct cuda_api a;
	int ret = 0;

	if (!__atomic_load_n(&api_ready, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&load_lock);
		if (!api_ready) {
			ret = api_load(ctx, prio, &a);
			if (!ret) {
				api_store = a;
				__atomic_store_n(&api_ready, 1,
						 __ATOMIC_RELEASE);
			}
		}
		pthread_mutex_unlock(&load_lock);
	}
	*out = ret ? NULL : &api_store;
	return ret;
}
#endif /* HAVE_CUDA */
