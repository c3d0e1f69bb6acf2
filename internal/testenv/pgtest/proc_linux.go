package pgtest

import (
	"os"
	"strconv"
	"syscall"
)

// supported reports whether Start can run a server here: it relies on the
// parent-death signal and /proc, which are Linux's.
const supported = true

// toolProcAttr runs initdb and pg_ctl as the server's user. Groups is left
// empty on purpose: it clears the supplementary groups, which would
// otherwise be root's.
func toolProcAttr(a *account) *syscall.SysProcAttr {
	if a == nil {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.uid, Gid: a.gid}}
}

// serverProcAttr runs postgres as the server's user and has the kernel send
// it SIGQUIT, PostgreSQL's immediate shutdown, if the test process dies
// without running its cleanups. SIGQUIT rather than SIGKILL lets the
// postmaster stop its children and remove its shared memory.
func serverProcAttr(a *account) *syscall.SysProcAttr {
	attr := toolProcAttr(a)
	if attr == nil {
		attr = &syscall.SysProcAttr{}
	}
	attr.Pdeathsig = syscall.SIGQUIT
	return attr
}

// clusterProcesses lists the live processes whose working directory is
// dataDir. Postgres changes into its data directory at start-up and every
// server process inherits that, so this finds the postmaster and all its
// children, including any the postmaster has lost track of.
func clusterProcesses(dataDir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd") // fails for zombies, which are gone enough
		if err == nil && (cwd == dataDir || cwd == dataDir+" (deleted)") {
			pids = append(pids, pid)
		}
	}
	return pids
}
