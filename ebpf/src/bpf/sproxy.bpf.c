// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
//
// SPROXY: spright's descriptor router, an sk_msg program attached to the chain's sockhash.
//
// It runs for every send on a registered function socket. The message must be exactly one
// 48-byte descriptor (docs/abi.md). SPROXY:
//   1. identifies the sender from the socket itself (its local port, registered by the
//      pool-manager), never from the descriptor, and stamps src_fn/src_instance;
//   2. checks that the destination is a function of the chain, then (sender, destination)
//      against the chain's allow map;
//   3. picks a destination instance (the one named, or one of the function's instances);
//   4. refuses it as BUSY if that instance already has queue_limit descriptors unread;
//   5. redirects the descriptor into that socket's receive queue and counts it.
// A descriptor it will not deliver is marked REFUSED with a reason and redirected back into the
// sender's own receive queue. It never returns SK_DROP: a dropped send leaves the socket's
// verdict cached and every later send on it fails with EACCES. What cannot be parsed (any send
// that is not exactly 48 bytes), and a refusal for a sender that leaves 2 x queue_limit of its
// own descriptors unread, are passed to the socket's TCP peer, which the pool-manager holds and
// audits: that path is plain TCP, bounded by socket buffers and flow control.
//
// Redirected data is not bounded by the receiver's socket buffer, so SPROXY bounds it: a
// second program (on the sock_recv_length tracepoint, which follows every receive on a socket)
// copies the queue length the kernel keeps (sk_psock.msg_tot_len) into `backlog` after each
// read of a chain socket, and SPROXY adds one for each descriptor it queues. A receiver that
// stops reading stops the count from falling: its queue holds at most queue_limit.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define MAX_FUNCTIONS 1024
#define MAX_INSTANCES 64
#define ANY_INSTANCE 0xFFFF
#define MAX_TRIES 4
// How long a full queue refuses everything before one descriptor is let through anyway.
#define PROBE_INTERVAL_NS (5ULL * 1000 * 1000 * 1000)
#define ABI_VERSION 1

#define KIND_REFUSED 3
#define REFUSE_FORBIDDEN 1
#define REFUSE_NO_DESTINATION 2
#define REFUSE_BAD_DESCRIPTOR 3
#define REFUSE_BUSY 4
#define DESCRIPTOR_SIZE 48

// Mirrors spright_core::descriptor::Descriptor.
struct descriptor {
	__u8 version;
	__u8 kind;
	__u8 status;
	__u8 hops;
	__u16 dst_fn;
	__u16 dst_instance;
	__u16 src_fn;
	__u16 src_instance;
	__u16 route;
	__u16 origin_instance;
	__u32 pool_tag;
	__u32 generation;
	__u64 request_id;
	__u64 offset;
	__u32 len;
	__u32 call_id;
};

_Static_assert(sizeof(struct descriptor) == 48, "descriptor ABI is 48 bytes");

struct endpoint {
	__u16 fn;
	__u16 instance;
};

struct instance_table {
	__u32 count;
	__u16 instances[MAX_INSTANCES];
};

struct fn_stats {
	__u64 sent;
	__u64 sent_bytes;
	__u64 received;
	__u64 refused;
};

struct chain_stats {
	__u64 malformed;
	__u64 unknown_sender;
	// Refusals passed to the audit path because their sender was not reading its own queue.
	__u64 overflow;
};

// The two fields of kernel structures the backlog program reads, relocated against the
// running kernel's BTF when loaded (CO-RE).
struct sk_psock {
	__u32 msg_tot_len;
} __attribute__((preserve_access_index));
struct sock {
	void *sk_user_data;
} __attribute__((preserve_access_index));

// Function sockets, keyed by endpoint (fn << 16 | instance).
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MAX_FUNCTIONS * MAX_INSTANCES);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

// Local TCP port of a registered socket -> its endpoint. The pool-manager creates every socket,
// so a port names exactly one socket of this chain while it is registered.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FUNCTIONS * MAX_INSTANCES);
	__type(key, __u32);
	__type(value, struct endpoint);
} identities SEC(".maps");

// The chain's functions (the gateway included), by id: a destination not in it is refused as
// NO_DESTINATION, not FORBIDDEN.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_FUNCTIONS);
	__type(key, __u32);
	__type(value, __u8);
} known SEC(".maps");

// Per registered socket (fn * MAX_INSTANCES + instance): descriptors queued and not yet read,
// and when a full queue last let one through (see PROBE_INTERVAL_NS).
struct backlog {
	__u32 queued;
	__u32 reserved;
	__u64 probed_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_FUNCTIONS * MAX_INSTANCES);
	__type(key, __u32);
	__type(value, struct backlog);
} backlog SEC(".maps");

// Socket cookie of a registered socket -> its backlog slot: how the read side finds the
// chain's sockets among every sockmap socket on the host.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FUNCTIONS * MAX_INSTANCES);
	__type(key, __u64);
	__type(value, __u32);
} owners SEC(".maps");

// Allowed (source, destination) pairs, key (src << 16 | dst).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} allow SEC(".maps");

// Registered instances of each function, for load balancing. A hash map without
// preallocation, not an array: an update links in a whole new element instead of overwriting
// the one a send may be reading (as an array's update does, under the reader). The old element
// goes back to the map's allocator, which may hand it to the next update at once: a send reads
// a torn table only if two updates of its function land within its one lookup. Either table's
// instances are registered, and a candidate whose socket is gone is passed over.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FUNCTIONS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct instance_table);
} instances SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_FUNCTIONS);
	__type(key, __u32);
	__type(value, struct fn_stats);
} stats SEC(".maps");

// Per pool buffer: the socket its last descriptor was routed to, as
// (generation << 32 | endpoint key). When an instance dies, the pool-manager reclaims exactly
// the buffers whose descriptors sat in its queue. Sized to the pool at load time.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} transit SEC(".maps");

// The pool's geometry, set by the loader before the program is verified.
volatile const __u64 pool_data_start = 0;
volatile const __u32 pool_buffer_size = 0;
volatile const __u32 pool_buffer_count = 0;
// Descriptors one socket may have queued unread (set by the loader from the chain file).
volatile const __u32 queue_limit = 1024;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct chain_stats);
} totals SEC(".maps");

static __always_inline struct fn_stats *fn_stats(__u16 fn)
{
	__u32 key = fn;
	return bpf_map_lookup_elem(&stats, &key);
}

static __always_inline void record_transit(struct descriptor *d, __u32 key)
{
	__u64 offset = d->offset;
	if (offset < pool_data_start || pool_buffer_size == 0)
		return;
	__u64 index = (offset - pool_data_start) / pool_buffer_size;
	if (index >= pool_buffer_count)
		return;
	__u32 i = index;
	__u64 *slot = bpf_map_lookup_elem(&transit, &i);
	if (slot)
		*slot = ((__u64)d->generation << 32) | key;
}

#define AUDIT_MALFORMED 0
#define AUDIT_UNKNOWN_SENDER 1
#define AUDIT_OVERFLOW 2

// Passes the send to the socket's TCP peer (the pool-manager), counting why.
static __always_inline int audit(int why)
{
	__u32 zero = 0;
	struct chain_stats *t = bpf_map_lookup_elem(&totals, &zero);
	if (t) {
		if (why == AUDIT_MALFORMED)
			t->malformed++;
		else if (why == AUDIT_UNKNOWN_SENDER)
			t->unknown_sender++;
		else
			t->overflow++;
	}
	return SK_PASS;
}

static __always_inline struct backlog *backlog_of(__u16 fn, __u32 instance)
{
	if (fn >= MAX_FUNCTIONS || instance >= MAX_INSTANCES)
		return 0;
	__u32 slot = (__u32)fn * MAX_INSTANCES + instance;
	return bpf_map_lookup_elem(&backlog, &slot);
}

SEC("sk_msg")
int sproxy(struct sk_msg_md *msg)
{
	// Exactly one descriptor per send. A short write is not held back for the next one: two
	// partial sends joined would route bytes the sender never framed as one descriptor.
	if (msg->size != sizeof(struct descriptor))
		return audit(AUDIT_MALFORMED);

	void *data = (void *)(long)msg->data;
	void *end = (void *)(long)msg->data_end;
	if (data + sizeof(struct descriptor) > end) {
		// The descriptor straddles two pages of the socket's buffer: make it contiguous.
		if (bpf_msg_pull_data(msg, 0, sizeof(struct descriptor), 0))
			return audit(AUDIT_MALFORMED);
		data = (void *)(long)msg->data;
		end = (void *)(long)msg->data_end;
		if (data + sizeof(struct descriptor) > end)
			return audit(AUDIT_MALFORMED);
	}
	struct descriptor *d = data;

	__u32 port = msg->local_port;
	struct endpoint *found = bpf_map_lookup_elem(&identities, &port);
	if (!found)
		return audit(AUDIT_UNKNOWN_SENDER);
	// Copied at once: the map element may be reused if the entry is replaced meanwhile.
	struct endpoint self = *found;
	d->src_fn = self.fn;
	d->src_instance = self.instance;
	struct fn_stats *src_stats = fn_stats(self.fn);

	__u8 reason;
	if (d->version != ABI_VERSION || d->kind == KIND_REFUSED) {
		reason = REFUSE_BAD_DESCRIPTOR;
		goto refuse;
	}

	__u32 dst_fn = d->dst_fn;
	__u8 *is_known = dst_fn < MAX_FUNCTIONS ? bpf_map_lookup_elem(&known, &dst_fn) : 0;
	if (!is_known || !*is_known) {
		reason = REFUSE_NO_DESTINATION;
		goto refuse;
	}

	__u32 pair = ((__u32)self.fn << 16) | d->dst_fn;
	if (!bpf_map_lookup_elem(&allow, &pair)) {
		reason = REFUSE_FORBIDDEN;
		goto refuse;
	}

	// Candidates: the instance named, or for ANY_INSTANCE up to MAX_TRIES of the function's
	// instances from a random one on. A candidate with a full queue, or whose socket just
	// closed (the kernel drops it from socks before the pool-manager updates the table), is
	// passed over for the next, so that one instance's death or backlog does not refuse
	// what another instance can take.
	__u32 instance = d->dst_instance;
	struct instance_table *table = 0;
	__u32 count = 1, slot = 0;
	if (instance == ANY_INSTANCE) {
		__u32 fn = d->dst_fn;
		table = bpf_map_lookup_elem(&instances, &fn);
		if (!table || table->count == 0 || table->count > MAX_INSTANCES) {
			reason = REFUSE_NO_DESTINATION;
			goto refuse;
		}
		count = table->count;
		slot = bpf_get_prandom_u32() % count;
	}
	reason = REFUSE_NO_DESTINATION;
	__u32 key = 0;
	struct backlog *queued = 0;
	int delivered = 0;
	for (int try = 0; try < MAX_TRIES && try < count; try++) {
		if (table) {
			instance = table->instances[slot & (MAX_INSTANCES - 1)];
			slot = slot + 1 < count ? slot + 1 : 0;
		}
		queued = backlog_of(d->dst_fn, instance);
		if (queued && queued->queued >= queue_limit) {
			// Full. After PROBE_INTERVAL_NS of being full, one descriptor goes through
			// anyway (up to twice the limit): the count is corrected only by the receiver's
			// reads, and a count the kernel did not honour (a queued message it dropped under
			// memory pressure) would otherwise refuse an empty queue for good. The read that
			// the probe causes sets the count right.
			__u64 now = bpf_ktime_get_ns();
			if (!queued->probed_ns) {
				queued->probed_ns = now; // full since now
				reason = REFUSE_BUSY;
				continue;
			}
			if (queued->queued >= 2 * queue_limit ||
			    now - queued->probed_ns < PROBE_INTERVAL_NS) {
				reason = REFUSE_BUSY;
				continue;
			}
			queued->probed_ns = now;
		} else if (queued && queued->probed_ns) {
			queued->probed_ns = 0; // not full any more
		}
		key = ((__u32)d->dst_fn << 16) | instance;
		if (bpf_msg_redirect_hash(msg, &socks, &key, BPF_F_INGRESS) == SK_PASS) {
			delivered = 1;
			break;
		}
	}
	if (!delivered)
		goto refuse;
	d->dst_instance = instance;
	if (queued)
		__sync_fetch_and_add(&queued->queued, 1);
	record_transit(d, key);
	if (src_stats) {
		src_stats->sent++;
		src_stats->sent_bytes += msg->size;
	}
	struct fn_stats *dst_stats = fn_stats(d->dst_fn);
	if (dst_stats)
		dst_stats->received++;
	return SK_PASS;

refuse:
	// The sender learns why (low nibble) and what it had sent (high nibble).
	d->status = reason | (d->kind << 4);
	d->kind = KIND_REFUSED;
	if (src_stats)
		src_stats->refused++;
	// Twice the limit: a sender that reads its queue always hears of its refusals, even with a
	// full queue of real work; one that does not read it stops costing kernel memory here.
	struct backlog *own = backlog_of(self.fn, self.instance);
	if (own && own->queued >= 2 * queue_limit)
		return audit(AUDIT_OVERFLOW);
	__u32 back = ((__u32)self.fn << 16) | self.instance;
	if (bpf_msg_redirect_hash(msg, &socks, &back, BPF_F_INGRESS) != SK_PASS)
		return audit(AUDIT_UNKNOWN_SENDER);
	if (own)
		__sync_fetch_and_add(&own->queued, 1);
	return SK_PASS;
}

// After every receive on a socket (the sock_recv_length tracepoint fires for each recvmsg,
// read and recv): if the socket is one of this chain's, its backlog becomes what the kernel
// says is still queued. A receiver that reads around the tracepoint (io_uring, splice) only
// keeps its own count high, and so its own senders refused as busy.
SEC("tp_btf/sock_recv_length")
int backlog_after_read(unsigned long long *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	__u64 cookie = bpf_get_socket_cookie(sk);
	__u32 *slot = bpf_map_lookup_elem(&owners, &cookie);
	if (!slot)
		return 0;
	// sk_user_data is the socket's sk_psock, with flags in its low 3 bits.
	unsigned long user_data = (unsigned long)BPF_CORE_READ(sk, sk_user_data);
	struct sk_psock *psock = (struct sk_psock *)(user_data & ~7UL);
	if (!psock)
		return 0;
	__u32 queued_bytes = BPF_CORE_READ(psock, msg_tot_len);
	struct backlog *queued = bpf_map_lookup_elem(&backlog, slot);
	if (queued)
		queued->queued = queued_bytes / DESCRIPTOR_SIZE;
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
