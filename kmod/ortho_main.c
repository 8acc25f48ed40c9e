// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * ortho.ko: /dev/ortho, the kernel's key authority for ortho shards.
 *
 * This file holds the module glue: parameters, the misc device, the file
 * operations and the ioctl dispatcher that copies every argument struct in
 * and out. The key table and policy are in ortho_keys.c, revocation and
 * its enforcement in ortho_revoke.c, policy updates and the listings in
 * ortho_admin.c, fdinfo in ortho_fdinfo.c. The locking rules are at the
 * top of ortho_internal.h.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pid.h>
#include <linux/poll.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "ortho_internal.h"

#define ORTHO_GRACE_MS_MAX	600000u

DEFINE_MUTEX(ortho_lock);

static unsigned int grace_ms = 2000;
static unsigned int max_keys = 4096;
static atomic64_t ortho_client_ids = ATOMIC64_INIT(0);

static int grace_ms_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int ret;

	ret = kstrtouint(val, 0, &v);
	if (ret)
		return ret;
	if (!v || v > ORTHO_GRACE_MS_MAX)
		return -EINVAL;
	WRITE_ONCE(grace_ms, v);
	return 0;
}

static const struct kernel_param_ops grace_ms_ops = {
	.set = grace_ms_set,
	.get = param_get_uint,
};

module_param_cb(grace_ms, &grace_ms_ops, &grace_ms, 0644);
MODULE_PARM_DESC(grace_ms,
		 "time a holder has to acknowledge a revocation before it is killed (1-600000 ms, default 2000)");
module_param(max_keys, uint, 0444);
MODULE_PARM_DESC(max_keys, "most keys kept, live and revoked (default 4096)");

unsigned int ortho_grace_ms(void)
{
	return READ_ONCE(grace_ms);
}

unsigned int ortho_max_keys(void)
{
	return max_keys;
}

static int ortho_open(struct inode *inode, struct file *file)
{
	struct ortho_file *of;

	of = kzalloc(sizeof(*of), GFP_KERNEL);
	if (!of)
		return -ENOMEM;
	INIT_LIST_HEAD(&of->holds);
	init_waitqueue_head(&of->wq);
	of->client_id = atomic64_inc_return(&ortho_client_ids);
	of->opener = get_pid(task_tgid(current));
	of->uid = file->f_cred->euid;
	of->gid = file->f_cred->egid;
	file->private_data = of;
	/* Keys are never read or written through the file offset. */
	return stream_open(inode, file);
}

static int ortho_release(struct inode *inode, struct file *file)
{
	struct ortho_file *of = file->private_data;

	ortho_file_release_holds(of);
	put_pid(of->opener);
	kfree(of);
	return 0;
}

static __poll_t ortho_poll(struct file *file, struct poll_table_struct *pt)
{
	struct ortho_file *of = file->private_data;

	poll_wait(file, &of->wq, pt);
	return READ_ONCE(of->pending) ? EPOLLPRI : 0;
}

/* Every argument struct, so that one stack buffer fits any of them. */
union ortho_ioc_buf {
	u32 size;
	struct ortho_ioc_add add;
	struct ortho_ioc_get get;
	struct ortho_ioc_revoke revoke;
	struct ortho_ioc_ack ack;
	struct ortho_ioc_resident resident;
	struct ortho_ioc_status status;
	struct ortho_ioc_pending pending;
	struct ortho_ioc_policy policy;
	struct ortho_ioc_list list;
	struct ortho_ioc_holders holders;
};

struct ortho_ioc_desc {
	unsigned int cmd;
	int (*fn)(struct ortho_file *of, void *data);
};

#define ORTHO_IOC_DESC(c, f) [_IOC_NR(c)] = { .cmd = (c), .fn = (f) }

static const struct ortho_ioc_desc ortho_iocs[] = {
	ORTHO_IOC_DESC(ORTHO_IOC_ADD, ortho_ioc_add),
	ORTHO_IOC_DESC(ORTHO_IOC_GET, ortho_ioc_get),
	ORTHO_IOC_DESC(ORTHO_IOC_REVOKE, ortho_ioc_revoke),
	ORTHO_IOC_DESC(ORTHO_IOC_ACK, ortho_ioc_ack),
	ORTHO_IOC_DESC(ORTHO_IOC_RESIDENT, ortho_ioc_resident),
	ORTHO_IOC_DESC(ORTHO_IOC_STATUS, ortho_ioc_status),
	ORTHO_IOC_DESC(ORTHO_IOC_PENDING, ortho_ioc_pending),
	ORTHO_IOC_DESC(ORTHO_IOC_SET_POLICY, ortho_ioc_set_policy),
	ORTHO_IOC_DESC(ORTHO_IOC_LIST, ortho_ioc_list),
	ORTHO_IOC_DESC(ORTHO_IOC_HOLDERS, ortho_ioc_holders),
};

static const struct ortho_ioc_desc *ortho_ioc_lookup(unsigned int cmd)
{
	const struct ortho_ioc_desc *d;
	unsigned int nr = _IOC_NR(cmd);

	if (_IOC_TYPE(cmd) != ORTHO_IOC_MAGIC || nr >= ARRAY_SIZE(ortho_iocs))
		return NULL;
	d = &ortho_iocs[nr];
	if (!d->fn || _IOC_DIR(cmd) != _IOC_DIR(d->cmd))
		return NULL;
	return d;
}

static long ortho_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct ortho_file *of = file->private_data;
	void __user *uarg = (void __user *)arg;
	const struct ortho_ioc_desc *d;
	union ortho_ioc_buf buf;
	size_t usize = _IOC_SIZE(cmd);
	size_t ksize;
	int ret;

	d = ortho_ioc_lookup(cmd);
	if (!d)
		return -ENOTTY;
	ksize = _IOC_SIZE(d->cmd);
	/* Every struct is at its first version: none is shorter. */
	if (usize < ksize)
		return -EINVAL;
	ret = copy_struct_from_user(&buf, ksize, uarg, usize);
	if (ret)
		return ret;
	if (buf.size != usize) {
		ret = -EINVAL;
		goto out;
	}
	ret = d->fn(of, &buf);
	if (!ret && (_IOC_DIR(cmd) & _IOC_READ) &&
	    copy_to_user(uarg, &buf, ksize))
		ret = -EFAULT;
out:
	/* The buffer may have carried a key. */
	memzero_explicit(&buf, sizeof(buf));
	return ret;
}

static const struct file_operations ortho_fops = {
	.owner = THIS_MODULE,
	.open = ortho_open,
	.release = ortho_release,
	.poll = ortho_poll,
	.unlocked_ioctl = ortho_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.show_fdinfo = ortho_show_fdinfo,
	.llseek = no_llseek,
};

static struct miscdevice ortho_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ortho",
	.fops = &ortho_fops,
	/* Anyone may ask; the policy of each key decides. */
	.mode = 0666,
};

static int __init ortho_init(void)
{
	int ret;

	if (!max_keys) {
		pr_err("max_keys must be at least 1\n");
		return -EINVAL;
	}
	ret = misc_register(&ortho_misc);
	if (ret) {
		pr_err("cannot register /dev/ortho: %d\n", ret);
		return ret;
	}
	pr_info("/dev/ortho ready (grace_ms=%u max_keys=%u)\n",
		ortho_grace_ms(), max_keys);
	return 0;
}

static void __exit ortho_exit(void)
{
	misc_deregister(&ortho_misc);
	ortho_keys_exit();
}

module_init(ortho_init);
module_exit(ortho_exit);

MODULE_DESCRIPTION("ortho: revocable shard keys with kernel-enforced revocation");
MODULE_AUTHOR("ortho developers");
MODULE_LICENSE("Dual MIT/GPL");
