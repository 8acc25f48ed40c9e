// SPDX-License-Identifier: MIT
/*
 * The library's internal pieces the daemon shares with it: the wire
 * protocol and secmem. The daemon links the shared library, which exports
 * the public API alone, so these few files are compiled in here.
 */
#include "proto.c"
#include "proto_msg.c"
#include "secmem.c"
