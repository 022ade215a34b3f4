// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// EPROXY: the chain's L3 metrics, two tc programs on the interfaces of the chain's external
// traffic: those the gateway listens on, and a function container's own.
//
// On the gateway's interfaces, eproxy_ingress runs on an interface's ingress hook and counts a packet as "in" when its
// destination is the gateway's listening address; eproxy_egress runs on the egress hook and
// counts a packet as "out" when its source is. On lo every packet passes egress and then
// ingress, and this rule still counts each exactly once, in the right direction: a request is
// only "in" (its source is the client), a response only "out".
//
// On a function container's interfaces (all_traffic set) every IP packet is the function's own
// external traffic: each is counted, "in" at ingress and "out" at egress, whatever its protocol.
//
// What is counted of the gateway's: TCP over IPv4 (any header length; of a fragmented datagram only the first
// fragment, the only one with a TCP header) or over IPv6 when TCP is the first next header (no
// extension-header walk: the gateway's traffic carries none). Frames are parsed as Ethernet,
// so the loader attaches only to Ethernet and loopback interfaces (lo has a zeroed Ethernet
// header at tc); VLAN tags are not walked (a VLAN interface's own hooks see untagged frames).
//
// Both programs only observe: they always return TCX_NEXT, never drop or alter a packet.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// TCX_NEXT, which these headers predate: let the next program, then the stack, decide.
#define EPROXY_NEXT TC_ACT_UNSPEC

#define DIRECTION_IN 0
#define DIRECTION_OUT 1

#define FAMILY_ANY 0
#define FAMILY_IPV4 4
#define FAMILY_IPV6 6

#define PROTO_TCP 6 // IPPROTO_TCP
#define IP_FRAGMENT_OFFSET 0x1fff

// What to count, written by user space: the gateway's listening address (it may change at run
// time, when the gateway's real port is learnt; port 0: not configured, count nothing), or all
// IP traffic.
struct eproxy_config {
	__u16 port; // host order
	__u8 family; // FAMILY_*
	__u8 match_addr; // 1: the address must match too; 0: any address of the family
	__u8 addr[16]; // network order; IPv4 in the first 4 bytes
	__u32 all_traffic; // 1: every IP packet, the fields above unused
};

_Static_assert(sizeof(struct eproxy_config) == 24, "eproxy_config ABI is 24 bytes");

struct eproxy_key {
	__u32 ifindex;
	__u32 direction; // DIRECTION_*
};

struct eproxy_count {
	__u64 packets;
	__u64 bytes; // L3: the frame less its Ethernet header
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct eproxy_config);
} eproxy_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 128);
	__type(key, struct eproxy_key);
	__type(value, struct eproxy_count);
} eproxy_counts SEC(".maps");

static __always_inline void count(struct __sk_buff *skb, __u32 direction)
{
	struct eproxy_key key = { .ifindex = skb->ifindex, .direction = direction };
	struct eproxy_count *c = bpf_map_lookup_elem(&eproxy_counts, &key);

	if (!c) {
		struct eproxy_count fresh = {};

		// Another CPU may insert the same key first: either insert leaves a zero entry.
		bpf_map_update_elem(&eproxy_counts, &key, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&eproxy_counts, &key);
		if (!c)
			return; // the map is full
	}
	// A GSO/GRO packet stands for gso_segs packets on the wire.
	c->packets += skb->gso_segs > 1 ? skb->gso_segs : 1;
	c->bytes += skb->len - ETH_HLEN;
}

// The gateway's side of the packet is its destination going in, its source going out.
static __always_inline int observe(struct __sk_buff *skb, __u32 direction)
{
	__u32 zero = 0;
	struct eproxy_config *cfg = bpf_map_lookup_elem(&eproxy_config, &zero);
	__u32 addr[4] = {};
	__u8 family;
	__u32 l4;
	__be16 proto;
	__be16 ports[2]; // source, destination

	if (!cfg || (cfg->port == 0 && !cfg->all_traffic))
		return EPROXY_NEXT;
	// bpf_skb_load_bytes rather than direct access: it also reads headers outside the
	// linear part of the skb.
	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return EPROXY_NEXT;
	if (cfg->all_traffic) {
		if (proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6))
			count(skb, direction);
		return EPROXY_NEXT;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return EPROXY_NEXT;
		if (ip.version != 4 || ip.ihl < 5 || ip.protocol != PROTO_TCP)
			return EPROXY_NEXT;
		if (ip.frag_off & bpf_htons(IP_FRAGMENT_OFFSET))
			return EPROXY_NEXT;
		addr[0] = direction == DIRECTION_IN ? ip.daddr : ip.saddr;
		family = FAMILY_IPV4;
		l4 = ETH_HLEN + ip.ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return EPROXY_NEXT;
		if (ip6.version != 6 || ip6.nexthdr != PROTO_TCP)
			return EPROXY_NEXT;
		if (direction == DIRECTION_IN)
			__builtin_memcpy(addr, &ip6.daddr, sizeof(addr));
		else
			__builtin_memcpy(addr, &ip6.saddr, sizeof(addr));
		family = FAMILY_IPV6;
		l4 = ETH_HLEN + sizeof(ip6);
	} else {
		return EPROXY_NEXT;
	}

	if (cfg->family != FAMILY_ANY && cfg->family != family)
		return EPROXY_NEXT;
	if (bpf_skb_load_bytes(skb, l4, ports, sizeof(ports)))
		return EPROXY_NEXT;
	if (ports[direction == DIRECTION_IN ? 1 : 0] != bpf_htons(cfg->port))
		return EPROXY_NEXT;
	// With no family there is no address to compare.
	if (cfg->match_addr && cfg->family != FAMILY_ANY) {
		__u32 want[4];

		__builtin_memcpy(want, cfg->addr, sizeof(want));
		if (addr[0] != want[0])
			return EPROXY_NEXT;
		if (family == FAMILY_IPV6 &&
		    (addr[1] != want[1] || addr[2] != want[2] || addr[3] != want[3]))
			return EPROXY_NEXT;
	}
	count(skb, direction);
	return EPROXY_NEXT;
}

SEC("classifier")
int eproxy_ingress(struct __sk_buff *skb)
{
	return observe(skb, DIRECTION_IN);
}

SEC("classifier")
int eproxy_egress(struct __sk_buff *skb)
{
	return observe(skb, DIRECTION_OUT);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
