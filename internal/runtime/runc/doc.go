// Package runc runs chat jobs in real OCI containers started with runc, from
// per-provider warm pools: the runtime.Executor for production.
//
// Each container runs the static polydev binary as 'polydev worker' from a
// shared read-only image (see Build), in its own user, PID, mount, IPC, UTS
// and network namespaces (loopback only), with no capabilities,
// no_new_privs, a seccomp deny-list, tmpfs for /tmp and memory, CPU and pid
// limits. Its worker listens on a socket the supervisor creates and hands in
// as an open file descriptor; the one host directory mounted in, read-only,
// holds the socket of the host-side egress gateway — the container's only
// way to the network.
//
// A request checks a container out, binds its gateway to the user's egress
// port, sends the task (sealed grant and runtime key) over the socket,
// streams the events back, waits for the worker to wipe, and returns the
// container to the pool. The reuse rule: a container that served user A is
// only ever handed to A again, and only within a short idle window; after
// that it is destroyed, never reset for someone else. Fresh containers come
// from a background refill.
//
// Everything a container needs on the host — its directory, sockets,
// cgroups, its runc state — is named after a prefix derived from the pool's
// root directory, so a start-up reclaim and a periodic reconcile can remove
// whatever an earlier, killed run left behind.
package runc
