/* SPDX-License-Identifier: MIT */
/*
 * The CUDA driver API, found at run time. libcuda.so.1 is dlopen()ed on
 * first use and every entry point is resolved by its versioned ABI name
 * (cuMemAlloc_v2, cuCtxCreate_v2, ...), so the library links without CUDA
 * and runs where no driver is installed. Built only when HAVE_CUDA (cuda.h
 * supplies the types); the member names drop the "cu" prefix so that the
 * header's #defines (cuMemAlloc -> cuMemAlloc_v2) cannot rename them.
 */
#ifndef ORTHO_CUDA_LOADER_H
#define ORTHO_CUDA_LOADER_H

#include "config.h"

#ifdef HAVE_CUDA
#include <stdarg.h>
#include <stddef.h>

#include <cuda.h>

struct ortho_ctx;

struct cuda_api {
	int driver_version;		/* cuDriverGetVersion(): 13000 = 13.0 */

	CUresult (*init)(unsigned int flags);
	CUresult (*driver_get_version)(int *version);
	CUresult (*get_error_name)(CUresult err, const char **str);
	CUresult (*get_error_string)(CUresult err, const char **str);

	CUresult (*device_get_count)(int *count);
	CUresult (*device_get)(CUdevice *dev, int ordinal);
	CUresult (*device_get_name)(char *name, int len, CUdevice dev);
	CUresult (*device_get_attribute)(int *v, CUdevice_attribute attr,
					 CUdevice dev);
	CUresult (*device_total_mem)(size_t *bytes, CUdevice dev);

	/* One of the two, the first when the driver has it. */
	CUresult (*ctx_create)(CUcontext *c, unsigned int flags,
			       CUdevice dev);
	CUresult (*ctx_create_v4)(CUcontext *c, CUctxCreateParams *params,
				  unsigned int flags, CUdevice dev);
	CUresult (*ctx_destroy)(CUcontext c);
	CUresult (*ctx_push_current)(CUcontext c);
	CUresult (*ctx_pop_current)(CUcontext *c);

	CUresult (*stream_create)(CUstream *s, unsigned int flags);
	CUresult (*stream_destroy)(CUstream s);
	CUresult (*stream_synchronize)(CUstream s);

	CUresult (*event_create)(CUevent *e, unsigned int flags);
	CUresult (*event_destroy)(CUevent e);
	CUresult (*event_record)(CUevent e, CUstream s);
	CUresult (*event_synchronize)(CUevent e);
	CUresult (*event_query)(CUevent e);
	CUresult (*event_elapsed_time)(float *ms, CUevent start,
				       CUevent end);

	CUresult (*module_load_data)(CUmodule *m, const void *image);
	CUresult (*module_unload)(CUmodule m);
	CUresult (*module_get_function)(CUfunction *f, CUmodule m,
					const char *name);
	CUresult (*launch_kernel)(CUfunction f, unsigned int gx,
				  unsigned int gy, unsigned int gz,
				  unsigned int bx, unsigned int by,
				  unsigned int bz, unsigned int shmem,
				  CUstream s, void **params, void **extra);

	CUresult (*mem_alloc)(CUdeviceptr *p, size_t bytes);
	CUresult (*mem_free)(CUdeviceptr p);
	CUresult (*mem_get_info)(size_t *free_bytes, size_t *total);
	CUresult (*memcpy_htod)(CUdeviceptr dst, const void *src,
				size_t bytes);
	CUresult (*memcpy_dtoh)(void *dst, CUdeviceptr src, size_t bytes);
	CUresult (*memcpy_htod_async)(CUdeviceptr dst, const void *src,
				      size_t bytes, CUstream s);
	CUresult (*memcpy_dtoh_async)(void *dst, CUdeviceptr src,
				      size_t bytes, CUstream s);
	CUresult (*memcpy_dtod_async)(CUdeviceptr dst, CUdeviceptr src,
				      size_t bytes, CUstream s);
	CUresult (*memset_d8_async)(CUdeviceptr dst, unsigned char v,
				    size_t bytes, CUstream s);
	CUresult (*mem_host_register)(void *p, size_t bytes,
				      unsigned int flags);
	CUresult (*mem_host_unregister)(void *p);

	/* Virtual memory management (the Ortho pool). */
	CUresult (*mem_get_allocation_granularity)(size_t *g,
			const CUmemAllocationProp *prop,
			CUmemAllocationGranularity_flags option);
	CUresult (*mem_address_reserve)(CUdeviceptr *p, size_t size,
					size_t align, CUdeviceptr addr,
					unsigned long long flags);
	CUresult (*mem_address_free)(CUdeviceptr p, size_t size);
	CUresult (*mem_create)(CUmemGenericAllocationHandle *h, size_t size,
			       const CUmemAllocationProp *prop,
			       unsigned long long flags);
	CUresult (*mem_release)(CUmemGenericAllocationHandle h);
	CUresult (*mem_map)(CUdeviceptr p, size_t size, size_t offset,
			    CUmemGenericAllocationHandle h,
			    unsigned long long flags);
	CUresult (*mem_unmap)(CUdeviceptr p, size_t size);
	CUresult (*mem_set_access)(CUdeviceptr p, size_t size,
				   const CUmemAccessDesc *desc, size_t count);
	CUresult (*mem_retain_allocation_handle)(
			CUmemGenericAllocationHandle *h, void *addr);
};

/**
 * cuda_api_get() - load the driver (once per process) and initialise it.
 * @ctx: for messages (may be NULL).
 * @prio: the log priority of "no driver" and "no device" (ORTHO_LOG_ERR
 *        when the caller asked for CUDA, lower when it only probes).
 * @out: the entry points, valid for the life of the process.
 *
 * A success is kept for the process; a failure is not, so a later call
 * tries again. The library is never unloaded: contexts may outlive any
 * one caller, and unloading a driver under them is fatal.
 *
 * Return: 0, -ENODEV when libcuda.so.1 is missing, lacks an entry point,
 * is a stub, or finds no device; -EIO for other driver failures.
 */
int cuda_api_get(struct ortho_ctx *ctx, int prio,
		 const struct cuda_api **out);

/**
 * cuda_errname() - the symbolic name of a driver result.
 * @api: the driver (may be NULL).
 * @err: the result.
 *
 * Return: "CUDA_ERROR_OUT_OF_MEMORY" and the like; "CUDA_ERROR_?" when
 * the driver does not know it.
 */
const char *cuda_errname(const struct cuda_api *api, CUresult err);

/**
 * cuda_errno() - the negative errno for a driver result.
 * @err: the result.
 *
 * Return: 0 for CUDA_SUCCESS, -ENOMEM, -ENODEV, -EINVAL, -EOPNOTSUPP,
 * -EBUSY, or -EIO for everything else.
 */
int cuda_errno(CUresult err);

/**
 * cuda_ck() - check a driver result; on failure log "CUDA <what>: <name>
 * (<description>)" at ORTHO_LOG_ERR.
 * @ctx: for the message.
 * @api: the driver.
 * @err: the result.
 * @fmt: printf format naming the call and its object.
 *
 * Return: cuda_errno(@err).
 */
int cuda_ck(struct ortho_ctx *ctx, const struct cuda_api *api, CUresult err,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif /* HAVE_CUDA */
#endif
