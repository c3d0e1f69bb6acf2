//go:build !linux

package pgtest

import "syscall"

// supported is false: Start relies on the parent-death signal and /proc,
// which are Linux's, and skips the test elsewhere.
const supported = false

func toolProcAttr(*account) *syscall.SysProcAttr   { return nil }
func serverProcAttr(*account) *syscall.SysProcAttr { return nil }
func clusterProcesses(string) []int                { return nil }
