// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// The floor of an sk_msg hop, for the data-plane benchmark: every send on a socket in `socks`
// is redirected into the receive queue of the socket its local port names in `peer`, with no
// other work. SPROXY's routing, checks, counters and queue bound are what a real hop adds.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

// Local port of a sender -> the local port (key in `socks`) of the socket its sends go to.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u32);
} peer SEC(".maps");

SEC("sk_msg")
int floor_redirect(struct sk_msg_md *msg)
{
	__u32 port = msg->local_port;
	__u32 *to = bpf_map_lookup_elem(&peer, &port);

	if (!to)
		return SK_PASS;
	return bpf_msg_redirect_hash(msg, &socks, to, BPF_F_INGRESS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
